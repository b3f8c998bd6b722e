"""device/ type-checks against each board's own MicroPython stubs (RP2040 and ESP32), with mypy,
and so do the scripts the tools run on a board (firmware_tools/board_scripts/).

Runs on: host (pytest, mypy). A call, constant or module that the board's firmware lacks fails
here, before anyone flashes a board: `machine.ADC(4).read_uv()` is an error for the Pico
and fine for an ESP32.

The stubs come from PyPI, pinned in tests/stubcheck/requirements-<board>.txt, one folder per
board (the two packages install the same file names, so they cannot share site-packages):

    python tests/stubcheck/install_stubs.py      # once, like pip install -e .[dev]

This test installs nothing: missing stubs fail in CI and skip elsewhere, with that command.
By hand (prints mypy's report): python tests/test_device_typecheck.py rp2 [root]

mypy runs with the board's `stdlib/` as typeshed and the board folder on MYPYPATH, settings
in tests/stubcheck/mypy.ini. One stub is patched into an overlay folder: the stubs declare
`micropython.viper` as keeping the function's signature, so a viper parameter annotated
`ptr8` would refuse the bytearray or array the caller passes, which viper accepts at run time
(any buffer, or an int address). The overlay declares viper functions as callable with any
arguments; the viper bodies are still checked.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STUBCHECK = ROOT / "tests" / "stubcheck"
BOARDS = ("rp2", "esp32")
IN_CI = bool(os.environ.get("CI"))
_VIPER = re.compile(
    r"^def viper\(_func: Callable\[_Param, _Ret\], /\) -> Callable\[_Param, _Ret\]:", re.M
)


def stub_folder(board):
    base = os.environ.get("MICROPROP_STUBS")
    return (Path(base) if base else STUBCHECK / ".stubs") / board


def pinned(board):
    """[(distribution, version)] from requirements-<board>.txt."""
    out = []
    for line in (STUBCHECK / ("requirements-%s.txt" % board)).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out.append((name.strip(), version.strip()))
    return out


def missing_stubs(board):
    """None if the pinned stubs are installed for `board`, else what is wrong and the fix."""
    folder = stub_folder(board)
    fix = "install them with: python tests/stubcheck/install_stubs.py"
    if not (folder / "machine.pyi").exists() or not (folder / "stdlib" / "VERSIONS").exists():
        return "%s stubs not found in %s; %s" % (board, folder, fix)
    for name, version in pinned(board):
        info = "%s-%s.dist-info" % (name.replace("-", "_"), version)
        if not (folder / info).is_dir():
            return "%s stubs in %s are not the pinned %s==%s; %s" % (
                board,
                folder,
                name,
                version,
                fix,
            )
    return None


def write_overlay(board, folder):
    """The board's micropython.pyi with viper functions callable with any arguments."""
    text = (stub_folder(board) / "micropython.pyi").read_text()
    patched, n = _VIPER.subn(
        "def viper(_func: Callable[_Param, _Ret], /) -> Callable[..., _Ret]:", text
    )
    if n != 1:
        raise AssertionError(
            "stubcheck: the %s stub of micropython.viper changed, expected the signature %r;"
            " update _VIPER in tests/test_device_typecheck.py" % (board, _VIPER.pattern)
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "micropython.pyi").write_text(patched)
    return folder


def write_config(board, path):
    """tests/stubcheck/mypy.ini plus: no errors reported inside the board's stub modules."""
    stubs = stub_folder(board)
    names = set()
    for p in stubs.iterdir():
        if p.suffix == ".pyi":
            names.add(p.stem)
        elif p.is_dir() and any(p.glob("*.pyi")):
            names.update((p.name, p.name + ".*"))
    text = (STUBCHECK / "mypy.ini").read_text()
    text += "\n[mypy-%s]\nignore_errors = True\n" % ",".join(sorted(names))
    path.write_text(text)
    return path


def run_mypy(board, root, work):
    """mypy over root/device and root/firmware_tools/board_scripts (where `root` has them)
    against `board`'s stubs -> (exit status, report lines)."""
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.fail("mypy is missing: pip install -e .[dev]")
    overlay = write_overlay(board, work / "overlay")
    config = write_config(board, work / "mypy.ini")
    stubs = stub_folder(board)
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(config)]
    cmd += ["--custom-typeshed-dir", str(stubs), "--cache-dir", str(work / "cache")]
    scripts = "firmware_tools/board_scripts"  # what the tools run on a board
    cmd += ["device"] + ([scripts] if (root / scripts).is_dir() else [])
    env = dict(os.environ, MYPYPATH=os.pathsep.join([str(overlay), str(stubs)]))
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, 1):
        raise AssertionError(
            "mypy crashed (%d):\n%s%s" % (proc.returncode, proc.stdout, proc.stderr)
        )
    return proc.returncode, proc.stdout.splitlines()


def errors(lines):
    """{(file, line): {error code, ...}} of the report's error lines."""
    out = {}
    for line in lines:
        m = re.match(r"^(.+?):(\d+): error: .*\[([a-z-]+)\]$", line)
        if m:
            key = (m.group(1).replace("\\", "/"), int(m.group(2)))
            out.setdefault(key, set()).add(m.group(3))
    return out


@pytest.fixture(params=BOARDS)
def board(request):
    problem = missing_stubs(request.param)
    if problem:
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return request.param


def test_requirements_pin_the_board_stubs():
    for board, package in (
        ("rp2", "micropython-rp2-rpi-pico-stubs"),
        ("esp32", "micropython-esp32-stubs"),
    ):
        pins = dict(pinned(board))
        assert re.fullmatch(r"1\.29\.\d+(\.post\d+)?", pins[package]), pins
        assert "micropython-stdlib-stubs" in pins


def test_device_typechecks(board, tmp_path):
    status, lines = run_mypy(board, ROOT, tmp_path)
    assert status == 0 and not errors(lines), "\n".join(lines)


# Each marked line must be an error (code in brackets) for the boards listed, and only them.
WRONG = '''"""Deliberate mistakes for the type check, plus correct lines it must accept."""

from array import array

import micropython
from micropython import const

try:
    import machine
except ImportError:  # CPython
    machine = None

_ADDR = const(0x68)


@micropython.viper
def twice(x: ptr8, n: int):  # noqa: F821
    for i in range(n):
        x[i] = int(x[i]) << 1


def sample():
    twice(bytearray(4), 4)  # ok: a viper ptr8 parameter takes any buffer
    twice(array("b", bytes(4)), 4)  # ok
    i2c = machine.I2C(0, scl=machine.Pin(1), sda=machine.Pin(0), freq=400000)  # ok
    i2c.readfrom_mem_into(_ADDR, 0x3B, bytearray(14))  # ok
    i2c.readfrom_mem_into_wrong(_ADDR, 0x3B, bytearray(14))  # rp2 esp32 [attr-defined]
    machine.ADC(4).read_u16()  # ok
    machine.ADC(4).read_volts()  # rp2 esp32 [attr-defined]
    machine.ADC(machine.Pin(26)).read_uv()  # rp2 [attr-defined]
    machine.I2C(0, freq=400000, baud=9600)  # rp2 esp32 [call-overload]
    machine.Pin(2).value(1, 2)  # rp2 esp32 [call-overload]


def network_time():
    import network  # rp2 [import-not-found]

    return network.WLAN
'''


def expected_errors(board):
    out = {}
    for k, line in enumerate(WRONG.splitlines(), start=1):
        m = re.search(r"#(?: [a-z0-9]+)+ \[([a-z-]+)\]$", line)
        if m and re.search(r"# .*\b%s\b" % board, line):
            out[("device/_wrong.py", k)] = {m.group(1)}
    return out


def test_the_check_catches_calls_the_board_lacks(board, tmp_path):
    root = tmp_path / "scratch"
    shutil.copytree(ROOT / "device", root / "device", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "device" / "_wrong.py").write_text(WRONG)
    status, lines = run_mypy(board, root, tmp_path / "work")
    wanted = expected_errors(board)
    assert len(wanted) >= (6 if board == "rp2" else 4)
    found = {k: v for k, v in errors(lines).items() if k[0] == "device/_wrong.py"}
    assert status == 1
    assert found == wanted, "\n".join(lines)


def main(argv):
    board = argv[1] if len(argv) > 1 else "rp2"
    root = Path(argv[2]) if len(argv) > 2 else ROOT
    problem = missing_stubs(board)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        status, lines = run_mypy(board, root, Path(work))
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
