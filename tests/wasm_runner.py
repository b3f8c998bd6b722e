"""Run Python scripts on the 32-bit MicroPython WebAssembly port, through Node.js.

Runs on: host (pytest helpers).

The npm package `@micropython/micropython-webassembly-pyscript` (pinned in tests/wasm/) is a
32-bit MicroPython VM: its small ints end at 2**30 - 1 like those of ESP32 and RP2040, so
under `micropython.heap_lock()` any value outside [-2**30, 2**30) raises MemoryError. It has
no viper. `tests/wasm/run.mjs` loads it, copies the project's `device/` package to `/lib/device`
in the VM's in-memory filesystem, and runs one script.

Install once: `npm ci --prefix tests/wasm`. Tests that need the port call `require_wasm()`:
it fails in CI (the CI environment variable is set) and skips with that hint elsewhere.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASM_DIR = ROOT / "tests" / "wasm"
RUNNER = WASM_DIR / "run.mjs"
PACKAGE_DIR = WASM_DIR / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
INSTALL_HINT = "npm ci --prefix tests/wasm"


def node_path():
    """Path of the `node` command (NODE=/path overrides), or None."""
    return shutil.which(os.environ.get("NODE") or "node")


def missing_reason():
    """Why the WebAssembly port cannot run here, or None when it can."""
    if not node_path():
        return "Node.js (`node`) is not installed; install Node.js >= 18, then " + INSTALL_HINT
    if not (PACKAGE_DIR / "micropython.mjs").exists():
        return "the MicroPython WebAssembly port is not installed: run " + INSTALL_HINT
    return None


def wasm_available():
    """True when Node.js and the npm package are both there."""
    return missing_reason() is None


def require_wasm():
    """Fail (in CI) or skip (elsewhere) the calling test when the port cannot run."""
    import pytest

    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def run_wasm(script_text, files=None, timeout=600, heapsize=None, args=(), packages=None):
    """Run `script_text` on the WebAssembly port; return its stdout as text.

    `files` maps VM paths to bytes written before the script starts; a relative path lands
    in the script's working folder `/run`. `device/` is importable (override with
    `packages`, a list of host folders each copied to `/lib/NAME`). `heapsize` is the initial
    MicroPython heap (the port grows it on demand). Raises AssertionError with the VM's
    stderr (the Python traceback) when the script raises or the runner fails.
    """
    reason = missing_reason()
    if reason:
        raise AssertionError(reason)
    with tempfile.TemporaryDirectory(prefix="microprop-wasm-") as tmp:
        tmp = Path(tmp)
        script = tmp / "script.py"
        script.write_text(script_text)
        cmd = [node_path(), str(RUNNER)]
        if heapsize:
            cmd += ["--heapsize", str(heapsize)]
        for pkg in packages or ():
            cmd += ["--package", str(pkg)]
        for i, (vm_path, data) in enumerate((files or {}).items()):
            host = tmp / ("file%d" % i)
            host.write_bytes(data)
            if not vm_path.startswith("/"):
                vm_path = "/run/" + vm_path
            cmd += ["--put", "%s=%s" % (host, vm_path)]
        cmd += [str(script), *args]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired as e:
            raise AssertionError("wasm port: timed out after %ss" % timeout) from e
    stdout = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise AssertionError(
            "wasm port failed (%d):\nstdout:\n%s\nstderr:\n%s"
            % (proc.returncode, stdout[-4000:], proc.stderr.decode("utf-8", "replace")[-4000:])
        )
    return stdout
