"""Install each board's MicroPython stubs into its own folder, for the device type check.

Runs on: host (a setup step, like `pip install -e .[dev]`; needs the package index).

    python tests/stubcheck/install_stubs.py            # -> tests/stubcheck/.stubs/<board>/

The boards' stub packages cannot share one site-packages: each installs top-level
`machine.pyi`, `micropython.pyi`, ... and the second would overwrite the first. So each goes
into its own folder with `pip install --target`, pinned by requirements-<board>.txt.
MICROPROP_STUBS=/path puts the folders under /path instead.
"""

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOARDS = ("rp2", "esp32")


def main():
    root = Path(os.environ.get("MICROPROP_STUBS") or HERE / ".stubs")
    for board in BOARDS:
        target = root / board
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--upgrade", "--no-deps"]
        cmd += ["--target", str(target), "-r", str(HERE / ("requirements-%s.txt" % board))]
        print("--- " + " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
