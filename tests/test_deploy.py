"""`microprop deploy` against the virtual board, with the real mpremote CLI and mpy-cross.

Runs on: host (pytest, Linux: the virtual board needs a pty and /proc).

Deploys run in-process (`deploy.run`) on a copy of device/, so that a test can change a module
and a thread can kill the board's VM in the middle of a copy. Every mpremote call has a timeout.
"""

import json
import os
import pty
import shutil
import sys
import threading
import time

import pytest

from microprop.firmware_tools import deploy, mpy
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host.errors import UserError

from .conftest import ROOT, mpremote
from .helpers import GOLDEN
from .helpers import parse_deploy as parse

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board's Ctrl-C needs /proc"
)


def run_deploy(capsys, *argv):
    """Deploy in-process; (status, stdout)."""
    capsys.readouterr()
    status = deploy.run(parse(*argv))
    return status, capsys.readouterr().out


@pytest.fixture
def device_dir(tmp_path, monkeypatch):
    """A copy of device/ that deploy reads instead of the real one."""
    d = tmp_path / "device"
    shutil.copytree(ROOT / "device", d, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(deploy, "DEVICE_DIR", d)
    return d


@pytest.fixture
def build_dir(tmp_path):
    return tmp_path / "build"


@pytest.fixture
def data(tmp_path):
    """A sensor log for golden.mpm (channels ax, ay; int16 counts), as the board reads it."""
    path = tmp_path / "log.csv"
    path.write_text("ax,ay,label\n1,2,a\n3,4,b\n")
    return path


@pytest.fixture
def flash(tmp_path):
    d = tmp_path / "flash"
    d.mkdir()
    return d


@pytest.fixture
def board(flash):
    with VirtualBoard(flash) as b:
        yield b


def n_files(device_dir, extra):
    """Files a deploy puts on the board: the package, main.py if any, board.json, extras."""
    return len(deploy.package_files(device_dir)) + (device_dir / "main.py").exists() + 1 + extra


# -- against the virtual board ------------------------------------------------------------


def test_deploy_then_nothing_to_copy_then_one_changed_file(
    board, flash, device_dir, build_dir, data, capsys
):
    # leftovers of a source install: MicroPython would import infer.py before infer.mpy
    (flash / "lib" / "device").mkdir(parents=True)
    (flash / "lib" / "device" / "infer.py").write_text("raise ImportError('stale')\n")
    (flash / "lib" / "device" / "gone.mpy").write_bytes(b"M\x06\x00\x1f")
    common = (board.port, "--model", GOLDEN, "--build-dir", build_dir, "--no-reset")
    flags = ("--data", data, "--sensor", "replay", "--rate", "52.5", "--smoothing", "3")
    t0 = time.monotonic()
    status, out = run_deploy(capsys, *common, *flags)
    first = time.monotonic() - t0
    n = n_files(device_dir, 2)
    assert status == 0
    assert "deployed: %d copied" % n in out, out
    assert ", 0 unchanged, 2 removed; verified by sha256;" in out, out
    assert "native x64" in out  # kernel_viper: the board reads 6.3, as mpy-cross emits

    code = (
        "import device.infer as i, device.kernel_viper as k\n"
        "m = i.Model('/model.mpm')\n"
        "print(i.__file__, k.__file__, m.kernel, m.n_inputs)"
    )
    assert mpremote(board.port, "exec", code).split() == [
        "/lib/device/infer.mpy",
        "/lib/device/kernel_viper.mpy",
        "viper",
        "4",
    ]
    assert json.loads((flash / "board.json").read_text()) == {
        "model": "/model.mpm",
        "rehearsal": "/model.rh",
        "sensor": "replay",
        "file": "/data.csv",
        "rate_hz": 52.5,
        "smoothing": 3,
        "realtime": True,
    }
    assert (flash / "model.mpm").read_bytes() == GOLDEN.read_bytes()
    assert (flash / "data.csv").read_bytes() == data.read_bytes()
    assert not (flash / "lib" / "device" / "infer.py").exists()
    assert not (flash / "lib" / "device" / "gone.mpy").exists()

    t0 = time.monotonic()
    status, out = run_deploy(capsys, *common, *flags)
    again = time.monotonic() - t0
    assert "deployed: 0 copied (0 bytes), %d unchanged, 0 removed" % n in out, out

    # a change that changes the bytecode: only that module is copied
    src = device_dir / "fixedpoint.py"
    src.write_text(src.read_text() + "\nDEPLOY_TEST = 12345\n")
    status, out = run_deploy(capsys, *common, *flags)
    assert "deployed: 1 copied" in out and "%d unchanged" % (n - 1) in out, out
    assert [ln.split()[:2] for ln in out.splitlines() if ln.strip().startswith("copy ")] == [
        ["copy", "/lib/device/fixedpoint.mpy"]
    ]
    assert mpremote(board.port, "exec", "import device.fixedpoint as f; print(f.DEPLOY_TEST)") == (
        "12345\n"
    )
    # only the board settings change: only board.json is copied
    status, out = run_deploy(capsys, *common, *flags[:-2], "--smoothing", "5", "--no-realtime")
    assert "deployed: 1 copied" in out and "copy         /board.json" in out, out
    cfg = json.loads((flash / "board.json").read_text())
    assert cfg["smoothing"] == 5 and cfg["realtime"] is False
    with capsys.disabled():
        print("\n--- deploy: first %.2f s, unchanged %.2f s" % (first, again))


def test_killed_board_mid_copy_then_redeploy_verifies(
    board, flash, device_dir, build_dir, tmp_path
):
    data = tmp_path / "big.csv"
    data.write_text("ax,label\n" + "".join("%d,a\n" % (i % 1000) for i in range(40000)))
    argv = (board.port, "--data", data, "--build-dir", build_dir, "--no-reset", "--timeout", 5)
    killed = threading.Event()

    def kill_when_copying():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not killed.is_set():
            if (flash / "data.csv").exists():
                board.kill_vm()
                killed.set()
                return
            time.sleep(0.002)

    killer = threading.Thread(target=kill_when_copying)
    killer.start()
    try:
        with pytest.raises(UserError) as e:
            deploy.run(parse(*argv))
    finally:
        killed.set()
        killer.join()
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("deploy: copying on %s " % board.port), message
    assert "is another program holding the port?" in message
    assert (flash / "data.csv").stat().st_size < data.stat().st_size  # cut short

    assert deploy.run(parse(*argv)) == 0
    assert (flash / "data.csv").read_bytes() == data.read_bytes()
    out = mpremote(board.port, "exec", "import device.infer as i; print(i.__file__)")
    assert out == "/lib/device/infer.mpy\n"


def test_small_heap_gets_compiled_modules(flash, device_dir, build_dir, data, capsys):
    with VirtualBoard(flash, heap="64k") as b:
        argv = (b.port, "--model", GOLDEN, "--data", data, "--build-dir", build_dir)
        status, out = run_deploy(capsys, *argv)
        assert status == 0 and "verified by sha256" in out
        code = (
            "import gc, device.infer as i\n"
            "m = i.Model('/model.mpm')\n"
            "gc.collect()\n"
            "print(i.__file__, m.n_outputs, gc.mem_free() > 0)"
        )
        assert mpremote(b.port, "exec", code) == "/lib/device/infer.mpy 2 True\n"
    names = {p.name for p in (flash / "lib" / "device").iterdir()}
    assert names == {p.stem + ".mpy" for p in deploy.package_files(device_dir)}


def test_main_py_goes_to_the_root_and_runs_after_the_reset(
    board, flash, device_dir, build_dir, data, capsys
):
    main = "with open('/ran.txt', 'w') as f:\n    f.write('main ran')\n"
    (device_dir / "main.py").write_text(main)
    status, out = run_deploy(capsys, board.port, "--data", data, "--build-dir", build_dir)
    assert "soft reset: the board runs main.py" in out, out
    assert (flash / "main.py").read_text() == main  # as source
    assert not (flash / "lib" / "device" / "main.mpy").exists()
    deadline = time.monotonic() + 5
    while not (flash / "ran.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (flash / "ran.txt").read_text() == "main ran"


def test_dry_run_reads_the_board_and_copies_nothing(
    board, flash, device_dir, build_dir, data, capsys
):
    argv = (board.port, "--dry-run", "--data", data, "--build-dir", build_dir)
    status, out = run_deploy(capsys, *argv)
    assert status == 0
    assert "--- board %s: MicroPython " % board.port in out
    assert "would copy" in out and "dry run: %d would be copied" % n_files(device_dir, 1) in out
    assert list(flash.iterdir()) == []


# -- errors ---------------------------------------------------------------------------------


def test_missing_port_is_a_one_line_error(build_dir):
    with pytest.raises(UserError) as e:
        deploy.run(parse("/dev/no-such-board", "--sensor", "rp2_temp", "--build-dir", build_dir))
    assert str(e.value) == (
        "deploy: no port /dev/no-such-board: is the board plugged in? "
        "(`microprop ports` lists the ports)"
    )


def test_port_that_is_no_serial_port_is_a_one_line_error(tmp_path, build_dir):
    not_a_port = tmp_path / "file"
    not_a_port.write_text("")
    with pytest.raises(UserError) as e:
        deploy.run(parse(not_a_port, "--sensor", "rp2_temp", "--build-dir", build_dir))
    message = str(e.value)
    assert "\n" not in message
    assert message == (
        "deploy: reading the board on %s failed: failed to access %s "
        "(is the board running MicroPython? is another program holding the port?)"
        % (not_a_port, not_a_port)
    )


def test_silent_port_times_out_with_a_hint(build_dir):
    master, slave = pty.openpty()  # nothing answers on the other side
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match="timed out after 2 s .is the board running"):
            argv = (os.ttyname(slave), "--sensor", "rp2_temp", "--timeout", 2)
            deploy.run(parse(*argv, "--build-dir", build_dir))
        assert time.monotonic() - t0 < 10
    finally:
        os.close(master)
        os.close(slave)


def test_bad_model_file_is_refused_before_the_board(tmp_path, build_dir):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(UserError, match="is not a model file microprop export wrote"):
        deploy.run(parse("--dry-run", "--arch", "x64", "--model", bad, "--build-dir", build_dir))


def test_arch_override_is_for_dry_runs_only(build_dir):
    with pytest.raises(UserError, match="--arch is for --dry-run only"):
        deploy.run(parse("auto", "--arch", "armv6m"))


def test_adc_needs_pins():
    with pytest.raises(UserError, match="--sensor adc needs --pins"):
        deploy.board_config(parse("--sensor", "adc"))


# -- .mpy formats, without a board ----------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (0x0B06, (6, 3, "x64")),  # the virtual board (Unix port, x86-64)
        (0x1306, (6, 3, "armv6m")),  # RP2040, MicroPython 1.23+
        (0x2A06, (6, 2, "xtensawin")),  # ESP32, MicroPython 1.22
        (0x2B06, (6, 3, "xtensawin")),
        (0x2F06, (6, 3, "rv32imc")),  # ESP32-C3 / C6
        (0x1F06, (6, 3, "armv7emsp")),  # STM32F4, RP2350 (Cortex-M33 in armv7emsp mode)
        (0x0306, (6, 3, None)),  # a port without the native emitter
        (0x0005, (5, 0, None)),
    ],
)
def test_decode_mpy(value, expected):
    assert tuple(mpy.decode_mpy(value)) == expected
    assert mpy.encode_mpy(*expected) == value


@pytest.mark.parametrize(
    "value, expected",
    [
        (0x32F06, (6, 3, "rv32imc")),  # RP2350 RISC-V / ESP32-P4 (1.27+): Zba and Zcmp flags
        (0x12F06, (6, 3, "rv32imc")),
        (0xFF1B06, (6, 3, "armv7em")),  # flags, whatever they are, never change the arch
    ],
)
def test_decode_mpy_ignores_the_architecture_flags(value, expected):
    assert tuple(mpy.decode_mpy(value)) == expected


def test_decode_mpy_refuses_unknown_values():
    with pytest.raises(UserError, match="unknown native architecture 13"):
        mpy.decode_mpy(13 << 10 | 0x306)
    with pytest.raises(UserError, match="bad sys.implementation._mpy"):
        mpy.decode_mpy("6.3")


def test_arch_numbers_are_those_of_mpy_cross(tmp_path):
    src = tmp_path / "native.py"
    src.write_text("import micropython\n@micropython.viper\ndef f(x: int) -> int:\n    return x\n")
    cross = mpy.mpy_cross_version()
    for arch in mpy.ARCHS[1:-1]:  # mpy-cross has no rv64imc emitter
        out = mpy.compile_file(src, tmp_path / "build", arch)
        assert mpy.read_header(out.read_bytes()) == (cross[0], cross[1], arch)
    plain = tmp_path / "plain.py"
    plain.write_text("def f(x):\n    return x\n")
    header = mpy.read_header(mpy.compile_file(plain, tmp_path / "build").read_bytes())
    assert header == (6, 0, None)  # bytecode only: no arch, no sub-version: any 6.x


def test_native_code_is_found_by_its_decorators():
    assert mpy.has_native_code("import micropython\n\n@micropython.viper\ndef f(): pass\n")
    assert mpy.has_native_code("class A:\n    @micropython.native\n    def f(self): pass\n")
    assert not mpy.has_native_code("# @micropython.viper would be faster\nx = 1\n")
    assert not mpy.has_native_code("'''\n    uses no @micropython.viper code\n'''\n")
    assert mpy.has_native_code((ROOT / "device" / "kernel_viper.py").read_text())
    assert not mpy.has_native_code((ROOT / "device" / "infer.py").read_text())


@pytest.mark.parametrize(
    "value, native, expected",
    [
        (0x0B06, False, ("mpy", None)),
        (0x0B06, True, ("mpy", "x64")),
        (0x1306, True, ("mpy", "armv6m")),
        (0x2A06, True, ("py", "board reads mpy 6.2, mpy-cross emits 6.3")),
        (0x2A06, False, ("mpy", None)),  # bytecode works on any 6.x
        (0x0306, True, ("py", "no native emitter on the board")),
    ],
)
def test_module_form(value, native, expected):
    assert deploy.module_form(native, mpy.decode_mpy(value), 3) == expected


@pytest.mark.parametrize(
    "arch, version, viper_line",
    [
        ("armv6m", "6.3", "/lib/device/kernel_viper.mpy"),
        ("rv32imc", "6.3", "/lib/device/kernel_viper.mpy"),
        ("xtensawin", "6.2", "/lib/device/kernel_viper.py"),
        ("armv7emsp", "6.2", "/lib/device/kernel_viper.py"),
    ],
)
def test_dry_run_for_an_architecture(arch, version, viper_line, build_dir, data, capsys):
    status, out = run_deploy(
        capsys, "--dry-run", "--arch", arch, "--mpy-version", version, "--data", data,
        "--build-dir", build_dir,
    )  # fmt: skip
    assert status == 0
    assert "--- dry run for mpy %s %s (no board read)" % (version, arch) in out
    rows = {ln.split()[2]: ln for ln in out.splitlines() if ln.startswith("  would copy")}
    assert viper_line in rows, out
    if viper_line.endswith(".py"):
        assert "board reads mpy %s, mpy-cross emits 6.3" % version in rows[viper_line]
    else:
        assert "native %s" % arch in rows[viper_line]
        built = list((build_dir / "mpy6.3" / arch).glob("kernel_viper-*.mpy"))
        assert [mpy.read_header(p.read_bytes()).arch for p in built] == [arch]
    assert "bytecode" in rows["/lib/device/infer.mpy"]
    assert "/board.json" in rows


def test_board_json_from_flags():
    cfg = deploy.board_config(
        parse(
            "--sensor", "mpu6050", "--i2c", "1", "--scl", "5", "--sda", "4", "--addr", "0x69",
            "--accel-fs", "8", "--gyro-fs", "2000", "--rate", "100",
        )
    )  # fmt: skip
    assert cfg == {
        "model": "/model.mpm",
        "rehearsal": "/model.rh",
        "sensor": "mpu6050",
        "i2c": 1,
        "scl": 5,
        "sda": 4,
        "addr": 0x69,
        "accel_fs_g": 8,
        "gyro_fs_dps": 2000,
        "rate_hz": 100,
        "smoothing": 1,
        "realtime": True,
    }
    cfg = deploy.board_config(parse("--sensor", "adc", "--pins", "26,27"))
    assert cfg["pins"] == [26, 27] and "i2c" not in cfg and "file" not in cfg


def test_compiled_files_are_cached(tmp_path):
    src = ROOT / "device" / "fixedpoint.py"
    first = mpy.compile_file(src, tmp_path, None, "device/fixedpoint.py")
    stamp = first.stat().st_mtime_ns
    again = mpy.compile_file(src, tmp_path, None, "device/fixedpoint.py")
    assert again == first and again.stat().st_mtime_ns == stamp
    assert mpy.compile_file(src, tmp_path, "armv6m", "device/fixedpoint.py") != first


@pytest.mark.parametrize(
    "value, message",
    [
        (0x0005, "deploy: the board reads .mpy version 5, expected 6 (MicroPython 1.19 or later)"),
        (-1, "deploy: the board cannot load .mpy files (no sys.implementation._mpy)"),
        (0x3406, "deploy: mpy: unknown native architecture 13"),
    ],
)
def test_boards_that_cannot_take_our_mpy_files_are_refused(value, message):
    state = deploy.BoardState(value, 1 << 20, "sha256", "rp2", "1.18.0")
    with pytest.raises(UserError) as e:
        deploy.board_format(state)
    assert str(e.value).startswith(message) and "--source" in str(e.value)


def test_probe_output_is_parsed():
    out = (
        "I 4870 1409024 sha256 rp2 1.24.1\r\n"
        "H 1499 ab12 /model.mpm\r\n"
        "H 33 cd34 /lib/device/__init__.mpy\r\n"
        "D /lib\r\n"
    )
    state = deploy.parse_probe(out)
    assert (state.mpy_value, state.free, state.algo, state.platform) == (
        4870,
        1409024,
        "sha256",
        "rp2",
    )
    assert state.files == {"/model.mpm": (1499, "ab12"), "/lib/device/__init__.mpy": (33, "cd34")}
    assert state.dirs == {"/lib"}
    with pytest.raises(UserError, match="did not answer the probe"):
        deploy.parse_probe("Traceback (most recent call last):\r\nMemoryError:\r\n")
