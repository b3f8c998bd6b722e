"""Serial ports by name, recognised boards, and a line reader that survives unplug and reset.

Runs on: host.

Port names follow mpremote: `auto` (the first recognised board, else the first USB serial
port, else the newest virtual or emulated board that `microprop board` serves), a device path
(`/dev/ttyACM0`, `COM3`, a virtual board's `/dev/pts/5`), the shortcuts `a0` -> /dev/ttyACM0,
`u0` -> /dev/ttyUSB0, `c0` -> COM0, `id:<serial number>`, `port:<path>`, and pyserial URLs
(`loop://`, `socket://host:port`, `rfc2217://host:port`).

Ports open with an exclusive lock on POSIX (Windows ports are exclusive anyway), so that a
second program gets a clear "is another program holding the port?" instead of stolen bytes.
Every failure here is a `UserError` with a one-line message and a hint.
"""

import argparse
import errno
import os
import re
import sys
import time
from dataclasses import dataclass

import serial
import serial.tools.list_ports

from microprop.host.errors import UserError

from . import running_boards
from .protocol import MAX_LINE, decode

BAUDRATE = 115200

# USB VID:PID -> what is on the other end.
BOARDS = {
    (0x2E8A, 0x0005): "RP2 (MicroPython)",
    (0x10C4, 0xEA60): "CP210x USB-UART (ESP32 boards)",
    (0x1A86, 0x7523): "CH340 USB-UART (ESP32 boards)",
    (0x1A86, 0x55D4): "CH9102 USB-UART (ESP32 boards)",
    (0x0403, 0x6001): "FTDI FT232R USB-UART",
    (0x0403, 0x6010): "FTDI FT2232 USB-UART",
    (0x0403, 0x6014): "FTDI FT232H USB-UART",
    (0x0403, 0x6015): "FTDI FT-X USB-UART",
    (0x303A, 0x1001): "Espressif USB JTAG/serial (ESP32-S3/C3/C6)",
    (0x303A, 0x4001): "Espressif USB CDC (ESP32-S2/S3)",
}

_SHORTCUTS = {"a": "/dev/ttyACM", "u": "/dev/ttyUSB", "c": "COM"}
_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)  # seconds between reopen attempts, the last repeats


@dataclass(frozen=True)
class PortInfo:
    """One serial port as `list_ports` reports it."""

    device: str
    description: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    board: str | None = None  # a recognised board, from BOARDS, or "virtual (cortex-m0)"
    virtual: bool = False  # served by a `microprop board` command on this machine

    @property
    def usb_id(self):
        """'2E8A:0005', or '' for a port that is not on USB."""
        return "" if self.vid is None else "%04X:%04X" % (self.vid, self.pid or 0)


def list_ports():
    """Serial ports: recognised boards first, then other USB ports, then the rest by name, then
    the virtual and emulated boards `microprop board` serves, newest first."""
    ports = []
    for p in serial.tools.list_ports.comports():
        board = BOARDS.get((p.vid, p.pid)) if p.vid is not None else None
        desc = p.description if p.description and p.description != "n/a" else ""
        ports.append(PortInfo(p.device, desc, p.vid, p.pid, p.serial_number, board))
    ports.sort(key=lambda p: (p.board is None, p.vid is None, _natural(p.device)))
    return ports + [
        PortInfo(b.port, "microprop board, pid %d" % b.pid, board=b.kind, virtual=True)
        for b in running_boards.running()
    ]


def _natural(name):
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


def resolve_port(name):
    """A port name as mpremote takes it -> a device path or pyserial URL."""
    name = name.strip()
    if not name:
        raise UserError("no port given: expected auto, a path like /dev/ttyACM0, or a0, u0, c0")
    if name == "auto":
        ports = list_ports()
        usable = (
            [p for p in ports if p.board and not p.virtual]
            or [p for p in ports if p.vid is not None]
            or [p for p in ports if p.virtual]
        )
        if not usable:
            raise UserError(
                "no board found: plug one in, start one with `microprop board`, or name the "
                "port (`microprop ports` lists them)"
            )
        return usable[0].device
    if name.startswith("id:"):
        wanted = name[3:]
        for p in list_ports():
            if p.serial_number == wanted:
                return p.device
        raise UserError("no port with serial number %s: is the board plugged in?" % wanted)
    if name.startswith("port:"):
        return name[5:]
    m = re.fullmatch(r"([auc])(\d{1,2})", name)
    if m:
        return _SHORTCUTS[m.group(1)] + m.group(2)
    return name


def open_port(name, baudrate=BAUDRATE, timeout=0.05):
    """Open the port `name` (see `resolve_port`) -> serial.Serial; UserError with a hint."""
    device = resolve_port(name)
    try:
        if "://" in device:
            return serial.serial_for_url(device, baudrate=baudrate, timeout=timeout)
        kwargs = {"exclusive": True} if os.name == "posix" else {}
        return serial.Serial(device, baudrate=baudrate, timeout=timeout, **kwargs)
    except (serial.SerialException, OSError, ValueError) as e:
        raise UserError(_open_error(device, e)) from None


def _open_error(device, e):
    code = getattr(e, "errno", None)
    text = str(e)
    # Windows says "Access is denied" (PermissionError) for a port another program has open.
    busy_on_windows = os.name == "nt" and "PermissionError" in text
    locked = code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY) or "exclusively lock" in text
    if locked or busy_on_windows:
        return "port %s is busy: is another program holding the port?" % device
    if code == errno.ENOENT or "FileNotFoundError" in text or "cannot find" in text:
        return "no port %s: is the board plugged in? (`microprop ports` lists the ports)" % device
    if code in (errno.EACCES, errno.EPERM) or "PermissionError" in text:
        return "permission denied on %s: is your user in the dialout (or uucp) group?" % device
    reason = " ".join((getattr(e, "strerror", None) or text).split())
    return "cannot open port %s: %s (is another program holding the port?)" % (device, reason)


class LineReader:
    """Lines from a serial port, reopening it when it goes away (unplug, USB reset).

    `opener()` returns an open serial port; it is called again after the port fails, with a
    backoff, until it works. `status(text)` hears about it ("port lost, reconnecting",
    "reconnected"); `on_reconnect(reader)` may send commands to the reopened port.

    Lines are decoded as ASCII with errors replaced, returned without their `\\n` / `\\r\\n`.
    A partial line is kept across reads; a line cut by a lost port is dropped (counted in
    `cut`); a line longer than MAX_LINE is dropped up to its end (counted in `overlong`).
    """

    def __init__(self, opener, status=None, on_reconnect=None, max_line=MAX_LINE):
        self.opener = opener
        self.status = status or (lambda text: None)
        self.on_reconnect = on_reconnect
        self.max_line = max_line
        self.port = opener()  # the first failure is the caller's: no port, busy port
        self.reconnects = 0
        self.cut = 0  # partial lines lost with the port
        self.overlong = 0  # lines dropped for being longer than max_line
        self._buf = bytearray()
        self._skipping = False  # inside an overlong line: drop up to its end
        self._next_try = 0.0
        self._tries = 0

    @property
    def connected(self):
        return self.port is not None

    def readline(self, timeout=0.1):
        """The next complete line (str), or None if none came within about `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            now = time.monotonic()
            if now >= deadline:
                return None
            if self.port is None:
                self._reopen(deadline)
                continue
            try:
                data = self.port.read(self.port.in_waiting or 1)
            except (serial.SerialException, OSError) as e:
                self._lost(e)
                continue
            if data:
                self._take(data)

    def write(self, data):
        """Send bytes (or str); False if the port is lost at the moment (nothing sent)."""
        if isinstance(data, str):
            data = data.encode("ascii", errors="replace")
        if self.port is None:
            return False
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            self._lost(e)
            return False
        return True

    def close(self):
        if self.port is not None:
            try:
                self.port.close()
            except (serial.SerialException, OSError):
                pass
            self.port = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- inside ------------------------------------------------------------------------------

    def _take(self, data):
        self._buf += data
        if len(self._buf) > self.max_line and b"\n" not in self._buf:
            self._buf.clear()
            if not self._skipping:
                self.overlong += 1
            self._skipping = True

    def _pop_line(self):
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                return None
            raw = bytes(self._buf[:i])
            del self._buf[: i + 1]
            if self._skipping:  # the end of an overlong line
                self._skipping = False
                continue
            if len(raw) > self.max_line:
                self.overlong += 1
                continue
            return decode(raw).rstrip("\r")

    def _lost(self, e):
        self.close()
        if self._buf or self._skipping:
            self.cut += 1
        self._buf.clear()
        self._skipping = False
        self._tries = 0
        self._next_try = time.monotonic() + _BACKOFF[0]
        self.status("port lost, reconnecting (%s)" % " ".join(str(e).split()))

    def _reopen(self, deadline):
        now = time.monotonic()
        if now < self._next_try:
            time.sleep(max(0.0, min(self._next_try, deadline) - now))
            return
        try:
            self.port = self.opener()
        except (UserError, serial.SerialException, OSError):
            self._tries += 1
            self._next_try = time.monotonic() + _BACKOFF[min(self._tries, len(_BACKOFF) - 1)]
            return
        self.reconnects += 1
        self.status("reconnected")
        if self.on_reconnect:
            self.on_reconnect(self)


# -- what the commands share ------------------------------------------------------------------


def add_port_argument(parser, help="auto, a path, a0, u0, c0 (default: auto)"):
    """The optional PORT argument of every command that talks to a board."""
    parser.add_argument("port", nargs="?", default="auto", help=help)


def positive_seconds(text):
    """argparse type: a positive number of seconds."""
    try:
        v = float(text)
    except ValueError:
        v = 0.0
    if not v > 0:
        raise argparse.ArgumentTypeError("expected a positive number of seconds, found %r" % text)
    return v


def status(text):
    """A status line: on stderr, prefixed `--- ` (device data has stdout, as in miniterm)."""
    print("--- " + text, file=sys.stderr, flush=True)
