"""`microprop board` as a user runs it: the options it refuses, `auto` and `microprop ports`
finding the boards it serves, and no qemu left behind by SIGTERM, Ctrl-C or a killed command.

Runs on: host (pytest, Linux: the boards need a pty and /proc), with the real mpremote CLI.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from microprop.firmware_tools import cli, mpremote_run, running_boards, serialport
from microprop.firmware_tools.emulated import (
    CPUS,
    EmulatedBoard,
    blocker_line,
    find_firmware,
)
from microprop.host.errors import UserError

from .conftest import ROOT, mpremote, require_emulated

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the boards' ptys and /proc are Linux's"
)


def board_cli(*argv, env=None):
    """`microprop board ...` as a subprocess in its own session (as a shell job is)."""
    return subprocess.Popen(
        [sys.executable, "-m", "microprop", "board", *map(str, argv)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )


def first_line(proc, timeout=30):
    """The port the command prints first (or fail with its stderr)."""
    line = proc.stdout.readline().strip()
    if not line:
        proc.wait(timeout)
        pytest.fail("no port printed: %s" % proc.stderr.read())
    return line


def qemu_children(pid):
    """The pids of qemu processes whose parent is `pid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(fields[1]) == pid and os.path.basename(cmd.split(b"\0")[0]).startswith(b"qemu-"):
            out.append(int(entry))
    return out


def gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True  # a zombie has ended: only its parent has not reaped it yet
        except OSError:
            return True
        time.sleep(0.05)
    return False


def cli_error(capsys, *argv):
    capsys.readouterr()
    status = cli.main(list(map(str, argv)))
    return status, capsys.readouterr().err


# -- refused options: one line, nothing started ---------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--cpu", "cortex-m0", "--heap", "256k"],
            "microprop: emulated board: heap 256k is larger than the firmware's 140k",
        ),
        (["--cpu", "rv32", "--heap", "12k"], "microprop: emulated board: heap 12k is too small"),
        (["--cpu", "rv32", "--heap", "lots"], "microprop: emulated board: bad heap size 'lots'"),
        (
            ["--cpu", "cortex-m3", "--flash-size", "1M"],
            "microprop: board: --flash-size is for the virtual board",
        ),
        (["--flash", "x", "--icount"], "microprop: board: --icount needs --cpu"),
        (["--flash", "x", "--firmware", "y"], "microprop: board: --firmware needs --cpu"),
        ([], "microprop: board: --flash DIR is required without --cpu"),
        (
            ["--cpu", "cortex-m0", "--firmware", "/no/such/folder"],
            "microprop: emulated board: no cortex-m0 firmware /no/such/folder (from --firmware "
            "/no/such/folder): give --firmware",
        ),
    ],
)
def test_refused_options_are_one_line(capsys, monkeypatch, tmp_path, argv, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", os.environ["PATH"])
    status, err = cli_error(capsys, "board", *argv)
    assert status == 1 and err.startswith(message) and err.count("\n") == 1, err
    assert not list(tmp_path.iterdir())  # nothing made


def test_missing_qemu_says_how_to_get_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu here
    status, err = cli_error(capsys, "board", "--cpu", "rv32")
    assert status == 1 and err.count("\n") == 1, err
    assert err.startswith("microprop: emulated board: qemu-system-riscv32 is missing")
    assert "apt-get install qemu-system-arm qemu-system-misc" in err and "brew install qemu" in err


def test_firmware_comes_from_the_option_the_environment_or_shared(monkeypatch, tmp_path):
    elf = bytearray(64)
    elf[:4], elf[18:20] = b"\x7fELF", (243).to_bytes(2, "little")  # e_machine: RISC-V
    (tmp_path / "virt-rv32.elf").write_bytes(elf)
    monkeypatch.setenv("MICROPROP_FIRMWARE", str(tmp_path))
    assert find_firmware("rv32") == tmp_path / "virt-rv32.elf"
    assert find_firmware("rv32", tmp_path / "virt-rv32.elf") == tmp_path / "virt-rv32.elf"
    monkeypatch.delenv("MICROPROP_FIRMWARE")
    shared = ROOT.parent / "shared" / "firmware" / "qemu" / "virt-rv32.elf"
    if shared.exists():
        assert find_firmware("rv32") == shared
    elf[18:20] = (40).to_bytes(2, "little")  # Arm
    (tmp_path / "arm.elf").write_bytes(elf)
    with pytest.raises(UserError, match=r"is an ELF file for Arm, expected the RISC-V"):
        find_firmware("rv32", tmp_path / "arm.elf")
    with pytest.raises(UserError, match=r"is not an ELF file, expected the Arm"):
        find_firmware("cortex-m3", ROOT / "README.md")


def test_blocker_leaves_the_heap_asked_for():
    assert blocker_line(143360) == ""
    line = blocker_line(96 * 1024)
    assert line.startswith("import sys; sys.modules['_microprop_heap'] = bytearray(45040)")
    # the bytearray's object (16 bytes) and its data leave exactly 96k of the 143360 bytes
    assert 143360 - 45040 - 16 == 96 * 1024


# -- auto and ports find the boards `microprop board` serves --------------------------------


def test_auto_and_ports_find_a_running_virtual_board(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(serialport.serial.tools.list_ports, "comports", lambda: [])
    with pytest.raises(UserError, match="no board found: .*microprop board"):
        serialport.resolve_port("auto")
    proc = board_cli("--flash", tmp_path / "flash")
    try:
        port = first_line(proc)
        assert serialport.resolve_port("auto") == port
        capsys.readouterr()
        assert cli.main(["ports"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(
            "%s  -          virtual (unix) (microprop board, pid %d)" % (port, proc.pid)
        )
        assert mpremote_run.resolve_port("auto") == port  # what deploy, pull, selftest take
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert running_boards.running() == []  # its entry went with it
    with pytest.raises(UserError, match="no board found"):
        serialport.resolve_port("auto")


def test_stale_entries_are_ignored_and_the_newest_board_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROPROP_RUNTIME_DIR", str(tmp_path))
    old = running_boards.register("/dev/null", "virtual (rv32)")
    time.sleep(0.01)
    new = running_boards.register("/dev/zero", "virtual (cortex-m0)")
    (tmp_path / "board-1-x.json").write_text(
        '{"port": "/dev/null", "kind": "k", "pid": 999999999, "started": 1}'
    )
    (tmp_path / "board-2-y.json").write_text("not json")
    assert [b.port for b in running_boards.running()] == ["/dev/zero", "/dev/null"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([old.name, new.name])
    monkeypatch.setattr(serialport.serial.tools.list_ports, "comports", lambda: [])
    assert serialport.resolve_port("auto") == "/dev/zero"
    running_boards.unregister(new)
    assert serialport.resolve_port("auto") == "/dev/null"


# -- the emulated board's command: no qemu left behind --------------------------------------


@pytest.mark.emulated
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c", "sigkill"])
def test_no_qemu_is_left_after_the_command_ends(how):
    require_emulated("cortex-m0")
    proc = board_cli("--cpu", "cortex-m0")
    try:
        port = first_line(proc)
        assert mpremote(port, "eval", "1 + 1") == "2\n"
        [qemu] = qemu_children(proc.pid)
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        elif how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)  # a terminal sends it to the whole job
        else:
            proc.kill()  # no handler runs: qemu dies with its parent (PR_SET_PDEATHSIG)
        status = proc.wait(10)
        assert status == (-9 if how == "sigkill" else 0), proc.stderr.read()
        assert gone(qemu), "qemu %d still runs after %s" % (qemu, how)
        if how != "sigkill":
            assert proc.stderr.read().endswith("--- virtual (cortex-m0) stopped\n")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.emulated
def test_flash_heap_and_machine_reset(tmp_path):
    """--flash files land on the emulated flash, main.py runs at the start's soft reset with the
    heap asked for, and machine.reset() (which ends qemu) brings the same board back."""
    require_emulated("rv32")
    flash = tmp_path / "flash"
    (flash / "lib" / "pkg").mkdir(parents=True)
    (flash / "lib" / "pkg" / "m.py").write_text("V = 7\n")
    (flash / "boot.py").write_text("BOOTED = 1\n")
    (flash / "main.py").write_text(
        "import gc, pkg.m\ngc.collect()\nprint('main free=%d v=%d' % (gc.mem_free(), pkg.m.V))\n"
    )
    log = []
    with EmulatedBoard("rv32", flash_dir=flash, heap="64k", log=log.append) as board:
        out = friendly_soft_reset(board.port)
        free = int(out.split("main free=")[1].split()[0])
        assert 64 * 1024 - 8192 < free < 64 * 1024, out  # 64k less what boot and main hold
        assert "v=7" in out
        boot = mpremote(board.port, "exec", "print(open('/boot.py').read())")
        assert boot.startswith("import sys; sys.modules['_microprop_heap'] = bytearray(")
        assert boot.endswith("BOOTED = 1\n\n")
        # mpremote's raw REPL skips boot.py: the whole heap, as a board shows it there
        free = mpremote(board.port, "exec", "import gc; gc.collect(); print(gc.mem_free())")
        assert int(free) > 130 * 1024
        first = board.boots
        mpremote(board.port, "reset")
        deadline = time.monotonic() + 20
        while board.boots == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert board.boots == first + 1 and board.error is None
        assert log == [
            "emulated board: machine.reset() ended qemu; restarted it, the flash was lost "
            "(re-made from %s)" % flash
        ]
        assert "main free=" in friendly_soft_reset(board.port)
        assert mpremote(board.port, "exec", "import os; print(sorted(os.listdir('/')))") == (
            "['boot.py', 'lib', 'main.py']\n"
        )


def friendly_soft_reset(port, timeout=15):
    """Ctrl-D at the friendly REPL, as a terminal sends it; the text up to the next prompt."""
    import serial

    with serial.Serial(port, timeout=0.1) as ser:
        ser.write(b"\r\x03\x02")
        time.sleep(0.3)
        ser.reset_input_buffer()
        ser.write(b"\x04")
        out = b""
        deadline = time.monotonic() + timeout
        while not out.rstrip().endswith(b">>>") and time.monotonic() < deadline:
            out += ser.read(256)
    assert b"soft reboot" in out, out
    return out.decode("ascii", "replace")


def test_cpus_name_the_firmware_of_the_shared_folder():
    assert sorted(CPUS) == ["cortex-m0", "cortex-m3", "rv32"]
    assert {c.arch for c in CPUS.values()} == {"armv6m", "armv7em", "rv32imc"}
