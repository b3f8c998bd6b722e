"""Talking to a board through the mpremote CLI and its serial port, for deploy, pull and selftest.

Runs on: host.

Each `mpremote connect PORT ...` call is a subprocess under a timeout; a failure is a one-line
`UserError` with a hint. The commands name themselves in it with `board_errors`, e.g.
`deploy: copying on /dev/ttyACM0 failed: ... (is the board running MicroPython? ...)`.
"""

import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from microprop.firmware_tools.serialport import open_port
from microprop.firmware_tools.serialport import resolve_port as resolve_name
from microprop.host.errors import UserError

HINT = "is the board running MicroPython? is another program holding the port?"
PORT_HELP = "board port as mpremote names it: a path, auto, id:SERIAL, a0, u0, c0 (auto)"
_RESET_TIMEOUT = 5.0
BOARD_SCRIPTS = Path(__file__).resolve().parent / "board_scripts"


@contextmanager
def board_errors(command):
    """Name the command in a UserError raised inside: `<command>: message`, once."""
    try:
        yield
    except UserError as e:
        if e.message.startswith(command + ":"):
            raise
        raise UserError("%s: %s" % (command, e.message), hint=e.hint) from None


def board_script(name, *args):
    """The text `mpremote exec` runs for board_scripts/<name>.py: the file, then a call of its
    `main` with `args` (None, bool, int, str, and lists and tuples of them: their repr is the
    same literal in MicroPython)."""
    text = (BOARD_SCRIPTS / (name + ".py")).read_text()
    return text + "\nmain(%s)\n" % ", ".join(repr(a) for a in args)


def mpremote(port, args, what, timeout, stall=False):
    """Run `mpremote connect PORT args...`; stdout, or a one-line UserError.

    `timeout` bounds the whole call; with `stall`, it bounds the time without output instead
    (copies: mpremote draws a progress bar on a terminal, so it runs on a pty here).
    """
    cmd = [sys.executable, "-m", "mpremote", "connect", port, *args]
    try:
        if stall and os.name == "posix":
            status, out = _run_on_pty(cmd, timeout)
            err = ""
        else:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            status, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        how = "stalled for" if stall else "timed out after"
        raise UserError("%s on %s %s %.0f s (%s)" % (what, port, how, timeout, HINT)) from None
    if status != 0:
        lines = [ln.strip() for ln in re.split(r"[\r\n]", err + out) if ln.strip()]
        detail = lines[-1] if lines else "exit status %d" % status
        detail = detail.removeprefix("mpremote: ").replace(
            " (it may be in use by another program)", ""
        )
        raise UserError("%s on %s failed: %s (%s)" % (what, port, detail, HINT))
    return out


def _run_on_pty(cmd, stall):
    """Run `cmd` with its output on a pty; (status, output). TimeoutExpired after `stall`
    seconds without output."""
    import pty
    import select

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    finally:
        os.close(slave)
    out = bytearray()
    last = time.monotonic()
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the program has ended and closed the pty
                    data = b""
                if not data:
                    break
                out += data
                last = time.monotonic()
            elif proc.poll() is not None:
                break
            elif time.monotonic() - last > stall:
                raise subprocess.TimeoutExpired(cmd, stall)
        return proc.wait(), out.decode("utf-8", "replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def resolve_port(port):
    """An mpremote port name (auto, a0, u0, c0, id:..., a path) -> the device path."""
    try:
        device = resolve_name(port)
    except UserError as e:
        raise UserError(str(e)) from None
    if os.name == "posix" and "://" not in device and not os.path.exists(device):
        raise UserError(
            "no port %s: is the board plugged in? (`microprop ports` lists the ports)" % device
        )
    return device


def open_serial(port, what=""):
    """The board's serial port, for talking to the REPL or the app (0.1 s reads); UserError
    `<what>: reason` when it will not open."""
    try:
        return open_port(port, timeout=0.1)
    except UserError as e:
        raise UserError("%s: %s" % (what, e) if what else str(e)) from None


def soft_reset(port, timeout=_RESET_TIMEOUT):
    """Ctrl-D at the friendly REPL: a soft reset that runs main.py. True once it is seen."""
    with open_serial(port, "reset") as ser:
        ser.write(b"\r\x03\x02")  # interrupt whatever runs, friendly REPL
        time.sleep(0.1)
        ser.write(b"\x04")
        seen = b""
        deadline = time.monotonic() + timeout
        while b"soft reboot" not in seen and time.monotonic() < deadline:
            seen = (seen + ser.read(256))[-200:]
    return b"soft reboot" in seen


def reset_and_say(port, after=""):
    """Soft reset, and say on stdout whether the board came back running main.py."""
    if soft_reset(port):
        print("--- soft reset: the board runs main.py" + after)
    else:
        print("--- soft reset sent; no 'soft reboot' seen (reset the board by hand)")
