"""Emulated boards: MicroPython's qemu port on a Cortex-M0, Cortex-M3 or RV32, on a pty.

Runs on: host (Linux, macOS).

`microprop board --cpu cortex-m0` prints a /dev/pts path that mpremote, pyserial and the
microprop tools use as a board's port; Python code uses
`EmulatedBoard("cortex-m0", flash_dir=None, heap="140k", icount=False)` as a context manager,
with `.port`. The firmware (../shared/firmware/qemu, see its README) is MicroPython's own qemu
port with a littlefs flash kept in emulated RAM: 32-bit objects and small ints, the board's own
native code for viper, a 140 kB heap (143360 bytes).

    client (mpremote, pyserial) <-> /dev/pts/N | supervisor | stdin/stdout <-> qemu (UART)

The supervisor makes qemu's UART behave like a board's serial port that outlives resets:

- Start. qemu boots the firmware (banner, friendly REPL). If there is anything to put on the
  emulated flash (the files of `flash_dir`, a heap blocker), the supervisor writes it through
  the raw REPL, then soft-resets in the friendly REPL so that boot.py and main.py run, as at a
  board's power-on. None of this reaches the client.
- Heap. The firmware's heap is fixed at build time. A smaller `heap` is emulated by a blocker at
  the top of `/boot.py` (a bytearray that leaves `heap` bytes to Python), kept across soft resets
  and deploys (which do not touch boot.py). Raw-REPL sessions (mpremote) skip boot.py, as on a
  board, and see the full heap.
- `machine.reset()` ends qemu (the firmware has no reset): the supervisor starts a new qemu,
  re-makes the flash from `flash_dir` and says on stderr that the flash was lost. Input that
  arrives meanwhile waits for the new board.
- No client, no output: qemu's output is dropped while no program has the port open.
- `icount=True` runs qemu with `-icount shift=0,sleep=off`: the clock advances 1 ns per guest
  instruction, so `time.ticks_us()` counts instructions (`Cpu.insn_per_tick` per tick), exactly
  and repeatably, slower than real time.
- qemu is stopped on every exit of the supervisor; on Linux it also dies with the process that
  started it (PR_SET_PDEATHSIG), so a killed `microprop board` leaves no qemu behind.
"""

import binascii
import collections
import fcntl
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from microprop import shared_folder

from .virtualboard import (
    PtyBoard,
    UserError,
    open_raw_pty,
    read_available,
    size_bytes,
)

Cpu = collections.namedtuple(
    "Cpu", "name qemu machine firmware insn_per_tick arch stands_for elf_machine"
)
_ELF_MACHINES = {40: "Arm", 243: "RISC-V"}  # ELF e_machine

# name -> how qemu runs it. insn_per_tick: guest instructions per `time.ticks_us()` tick under
# -icount shift=0 (microbit's SysTick runs at 16 MHz where the port assumes 25).
CPUS = {
    "cortex-m0": Cpu(
        "cortex-m0",
        "qemu-system-arm",
        (
            "-machine",
            "microbit",
            "-global",
            "nrf51-soc.flash-size=1048576",
            "-global",
            "nrf51-soc.sram-size=524288",
        ),
        "microbit-cortex-m0.elf",
        1562.5,
        "armv6m",
        "RP2040 (Cortex-M0+)",
        40,
    ),
    "cortex-m3": Cpu(
        "cortex-m3",
        "qemu-system-arm",
        ("-machine", "mps2-an385"),
        "mps2-an385-cortex-m3.elf",
        1000.0,
        "armv7em",
        "STM32 / RP2350 Arm",
        40,
    ),
    "rv32": Cpu(
        "rv32",
        "qemu-system-riscv32",
        ("-machine", "virt", "-bios", "none", "-cpu", "rv32"),
        "virt-rv32.elf",
        1000.0,
        "rv32imc",
        "ESP32-C3 / C6",
        243,
    ),
}
FIRMWARE_HEAP = 143360  # the firmware's MICROPY_HEAP_SIZE, the same on all three
FIRMWARE_ENV = "MICROPROP_FIRMWARE"
# ../shared/firmware/qemu beside a source checkout; None from an installed wheel (no firmware).
_SHARED = shared_folder()
DEFAULT_FIRMWARE = None if _SHARED is None else _SHARED / "firmware" / "qemu"
INSTALL_QEMU = (
    "apt-get install qemu-system-arm qemu-system-misc on Debian/Ubuntu, brew install qemu on macOS"
)

_BOOT_TIMEOUT = 30.0
_REPL_TIMEOUT = 20.0
_CRASH_LOOP = 2.0  # seconds: qemu failing again this soon after a boot is not restarted
# Bytes queued for a slow client before qemu's output is left in its pipe. Keep it large:
# qemu's emulated UARTs drop what the guest sends while their backend cannot take it (a board's
# USB serial would make the sender wait), so a full pipe loses lines mid-stream.
_OUT_LIMIT = 1 << 22
_PIPE_SIZE = 1 << 20  # qemu's stdout pipe, where the system allows it
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Python 3.10+ names it; Linux only)
_CHUNK = 3072  # file bytes per raw-REPL command when making the flash
_FRIENDLY_PROMPT = b"\r\n>>> "
_RAW_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"
_BLOCKER = (
    "import sys; sys.modules['_microprop_heap'] = bytearray(%d)"
    "  # microprop board --heap %s: leaves %d bytes of the heap to Python\n"
)
_BLOCKER_LINE = re.compile(r"^import sys; sys\.modules\['_microprop_heap'\].*\n", re.M)

# Started by qemu's launcher on Linux: die with the parent, then become qemu.
_LAUNCHER = """\
import ctypes, os, signal, sys
from microprop.host.errors import UserError
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() == int(sys.argv[1]):
    os.execvp(sys.argv[2], sys.argv[2:])
"""


def cpu_spec(name):
    """'cortex-m0' -> its Cpu; UserError naming the choices otherwise."""
    if name not in CPUS:
        raise UserError(
            "emulated board: unknown cpu %r, expected one of %s" % (name, ", ".join(CPUS))
        )
    return CPUS[name]


def parse_heap(text):
    """'96k' -> 98304: a heap the firmware's 140 kB can emulate; UserError otherwise."""
    try:
        size, _ = size_bytes(text, "heap size", "96k or 143360")
    except UserError as e:
        raise UserError(e.message.replace("virtual board", "emulated board")) from None
    if size > FIRMWARE_HEAP:
        raise UserError(
            "emulated board: heap %s is larger than the firmware's 140k (%d bytes); a smaller "
            "heap is emulated, a larger one is not" % (text, FIRMWARE_HEAP)
        )
    if size < 16 * 1024:
        raise UserError(
            "emulated board: heap %s is too small to boot, expected 16k to 140k" % text
        )
    return size


def find_firmware(cpu, firmware=None):
    """The firmware file for `cpu`: `firmware` (a file, or a folder holding the three files),
    else $MICROPROP_FIRMWARE (the same), else ../shared/firmware/qemu beside a source checkout
    (DEFAULT_FIRMWARE; an installed wheel has none)."""
    spec = cpu_spec(cpu)
    names = ", ".join(c.firmware for c in CPUS.values())
    where = firmware or os.environ.get(FIRMWARE_ENV)
    if not where and DEFAULT_FIRMWARE is None:
        raise UserError(
            "emulated board: no %s firmware: give --firmware FILE_OR_FOLDER or set %s to the "
            "folder holding %s" % (cpu, FIRMWARE_ENV, names)
        )
    source = (
        "--firmware %s" % firmware
        if firmware
        else ("%s=%s" % (FIRMWARE_ENV, where) if where else "the source checkout's shared/")
    )
    path = Path(where) if where else DEFAULT_FIRMWARE
    if path.is_dir():
        path = path / spec.firmware
    if not path.is_file():
        raise UserError(
            "emulated board: no %s firmware %s (from %s): give --firmware FILE_OR_FOLDER or set "
            "%s to the folder holding %s" % (cpu, path, source, FIRMWARE_ENV, names)
        )
    with open(path, "rb") as f:
        head = f.read(20)
    machine = int.from_bytes(head[18:20], "little") if len(head) == 20 else None
    if head[:4] != b"\x7fELF" or machine != spec.elf_machine:
        found = (
            "not an ELF file"
            if head[:4] != b"\x7fELF"
            else "an ELF file for %s" % (_ELF_MACHINES.get(machine, "machine %s" % machine))
        )
        raise UserError(
            "emulated board: firmware %s is %s, expected the %s ELF file for --cpu %s (%s)"
            % (path, found, _ELF_MACHINES[spec.elf_machine], cpu, spec.firmware)
        )
    return path


def find_qemu(cpu):
    """The qemu binary for `cpu`; UserError saying how to install it otherwise."""
    spec = cpu_spec(cpu)
    path = shutil.which(spec.qemu)
    if not path:
        raise UserError(
            "emulated board: %s is missing (needed for --cpu %s): %s"
            % (spec.qemu, cpu, INSTALL_QEMU)
        )
    return path


def qemu_command(cpu, firmware, icount=False, qemu=None):
    """The qemu command line: the machine, its UART on stdio, no display, no monitor."""
    spec = cpu_spec(cpu)
    cmd = [qemu or spec.qemu, *spec.machine, "-display", "none", "-monitor", "none"]
    cmd += ["-serial", "stdio", "-semihosting", "-kernel", str(firmware)]
    if icount:
        cmd += ["-icount", "shift=0,sleep=off"]
    return cmd


def flash_files(flash_dir):
    """(board path, local file) for every file under `flash_dir`, folders first in order."""
    root = Path(flash_dir)
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out.append(("/" + p.relative_to(root).as_posix(), p))
    return out


def blocker_line(heap):
    """The boot.py line that leaves `heap` bytes (of FIRMWARE_HEAP) to Python, or ''."""
    if heap >= FIRMWARE_HEAP:
        return ""
    # A bytearray costs one 16-byte object plus its data, rounded to 16-byte GC blocks.
    return _BLOCKER % (FIRMWARE_HEAP - heap - 16, _human(heap), heap)


def _human(n):
    return "%dk" % (n >> 10) if n % 1024 == 0 else str(n)


class EmulatedBoard(PtyBoard):
    """qemu running MicroPython as a board on a pseudo-terminal: `with EmulatedBoard(cpu) as b:
    b.port`."""

    def __init__(self, cpu, flash_dir=None, heap=None, firmware=None, icount=False, log=None):
        self.cpu = cpu_spec(cpu)
        self.flash_dir = Path(flash_dir).resolve() if flash_dir else None
        self.heap = FIRMWARE_HEAP if heap is None else parse_heap(heap)
        self.firmware = find_firmware(cpu, firmware)
        self.qemu = find_qemu(cpu)
        self.icount = icount
        self.port = None
        self.boots = 0  # qemu processes started so far
        self._log = log or (lambda text: print("--- " + text, file=sys.stderr, flush=True))
        self._proc = None
        self._client = None
        self._wake_r = self._wake_w = None
        self._thread = None
        self._stop = threading.Event()
        self._error = None
        self._booted_at = 0.0
        self._pending = bytearray()  # client input not yet given to qemu
        self._out = bytearray()  # qemu output not yet given to the client

    # -- public API -------------------------------------------------------------------------

    def command(self):
        """The qemu command line this board runs."""
        return qemu_command(self.cpu.name, self.firmware, self.icount, self.qemu)

    def start(self):
        """Boot qemu, make the flash, open the port, serve in a thread; return once it runs."""
        if self._thread:
            return self
        if self.flash_dir and not self.flash_dir.is_dir():
            raise UserError("emulated board: --flash %s is not a folder" % self.flash_dir)
        self._stop.clear()
        self._error = None
        self._client, slave, self.port = open_raw_pty()
        os.close(slave)  # the client side stays closed until a client opens it
        self._wake_r, self._wake_w = os.pipe()
        try:
            self._boot()
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._serve, name="emulatedboard", daemon=True)
        self._thread.start()
        return self

    # -- qemu -------------------------------------------------------------------------------

    def _spawn(self):
        cmd = self.command()
        if sys.platform.startswith("linux"):
            cmd = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *cmd]
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C is for the command, not for qemu
        )
        for f in (self._proc.stdout, self._proc.stderr):
            os.set_blocking(f.fileno(), False)
        try:  # room for a second of a fast app's output while this process is busy (Linux)
            fcntl.fcntl(self._proc.stdout.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)
        except (OSError, AttributeError):
            pass
        self.boots += 1

    def _end_process(self):
        proc, self._proc = self._proc, None
        if not proc:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def _boot(self):
        """Start qemu, wait for the REPL, make the flash, and soft-reset into boot.py/main.py."""
        self._spawn()
        self._read_until(_FRIENDLY_PROMPT, _BOOT_TIMEOUT, "boot to the REPL")
        self._booted_at = time.monotonic()
        files = flash_files(self.flash_dir) if self.flash_dir else []
        blocker = blocker_line(self.heap)
        if not files and not blocker:
            return
        self._send(b"\r\x03\x03\x01")
        self._read_until(_RAW_PROMPT, _REPL_TIMEOUT, "enter the raw REPL")
        boot_py = blocker.encode()
        made = set()
        for target, local in files:
            parts = target.split("/")[1:-1]
            for i in range(1, len(parts) + 1):
                folder = "/" + "/".join(parts[:i])
                if folder not in made:
                    self._exec("import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass" % folder)
                    made.add(folder)
            data = local.read_bytes()
            if target == "/boot.py":
                boot_py += _BLOCKER_LINE.sub("", data.decode("utf-8", "replace")).encode()
                continue
            self._write_file(target, data)
        if boot_py:
            self._write_file("/boot.py", boot_py)
        # Friendly REPL, then a soft reset: boot.py and main.py run, as at power-on.
        self._send(b"\x02")
        self._read_until(b">>> ", _REPL_TIMEOUT, "leave the raw REPL")
        self._send(b"\x04")
        self._read_until(b"soft reboot\r\n", _REPL_TIMEOUT, "soft-reset after making the flash")
        self._booted_at = time.monotonic()

    def _write_file(self, target, data):
        self._exec("f = open(%r, 'wb')" % target)
        for i in range(0, len(data), _CHUNK):
            text = binascii.b2a_base64(data[i : i + _CHUNK], newline=False).decode()
            self._exec("import binascii\nf.write(binascii.a2b_base64(%r))" % text)
        self._exec("f.close()")

    def _exec(self, code):
        """Run `code` in the raw REPL; UserError with the board's error if it fails."""
        self._send(code.encode() + b"\x04")
        reply = self._read_until(b"\x04>", _REPL_TIMEOUT, "run %r" % code[:40])
        ok, _, rest = reply.partition(b"OK")
        out, _, err = rest.rpartition(b"\x04>")[0].partition(b"\x04")
        if not ok.strip(b"\r\n>") == b"" or err.strip():
            raise UserError(
                "emulated board: making the flash failed: %s"
                % " ".join((err or reply).decode("utf-8", "replace").split())[-300:]
            )

    def _send(self, data):
        try:
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except OSError:  # BrokenPipeError: qemu has ended
            self._failed("qemu ended while starting")

    def _read_until(self, marker, timeout, what):
        """Read qemu's output until it holds `marker`; return it all (not passed on)."""
        seen = b""
        deadline = time.monotonic() + timeout
        out = self._proc.stdout.fileno()
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                self._failed("timeout waiting for the board to %s" % what)
            ready, _, _ = select.select([out], [], [], min(left, 0.5))
            if ready:
                data = read_available(out)
                if not data and self._proc.poll() is not None:
                    self._failed("qemu ended while the board should %s" % what)
                seen += data
            elif self._proc.poll() is not None:
                self._failed("qemu ended while the board should %s" % what)
        return seen

    def _failed(self, why):
        err = b""
        if self._proc and self._proc.stderr:
            err = read_available(self._proc.stderr.fileno())
        detail = " ".join(err.decode("utf-8", "replace").split())
        raise UserError(
            "emulated board: %s%s" % (why, ": qemu says %s" % detail[-300:] if detail else "")
        )

    def _restart(self):
        """qemu has ended (machine.reset(), or a crash): start a new one, re-make the flash."""
        rc = self._proc.poll()
        self._end_process()
        if rc != 0 and time.monotonic() - self._booted_at < _CRASH_LOOP:
            self._failed("qemu exited with status %s right after booting" % rc)
        cause = "machine.reset() ended qemu" if rc == 0 else "qemu exited with status %s" % rc
        flash = "re-made from %s" % self.flash_dir if self.flash_dir else "empty again"
        self._log("emulated board: %s; restarted it, the flash was lost (%s)" % (cause, flash))
        self._boot()

    # -- the loop ---------------------------------------------------------------------------

    def _serve(self):
        try:
            while not self._stop.is_set():
                self._step()
        except Exception as e:  # report, do not die silently in the thread
            self._error = str(e) if isinstance(e, UserError) else repr(e)
            self._log(self._error)

    def _step(self):
        present = self._client_present()
        if not present:
            self._out.clear()
        out = self._proc.stdout.fileno()
        inp = self._proc.stdin.fileno()
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        p.register(out, select.POLLIN if len(self._out) < _OUT_LIMIT else 0)
        if self._pending:
            p.register(inp, select.POLLOUT)
        if present:
            p.register(self._client, select.POLLIN | (select.POLLOUT if self._out else 0))
        events = dict(p.poll(100 if present else 20))
        if self._wake_r in events:
            os.read(self._wake_r, 64)
        if present and events.get(self._client, 0) & select.POLLIN:
            self._pending += read_available(self._client)
        if events.get(out, 0) & (select.POLLIN | select.POLLHUP):
            for _ in range(64):  # drain the pipe: a full one makes the UART drop bytes
                data = read_available(out)
                if present:
                    self._out += data
                if len(data) < 4096:
                    break
        if self._proc.poll() is not None:
            self._restart()
            return
        if self._pending and events.get(inp, 0) & select.POLLOUT:
            try:
                n = os.write(inp, self._pending[:512])  # POLLOUT: room for this much
                del self._pending[:n]
            except BlockingIOError:
                pass
            except OSError:  # qemu is gone: the next step restarts it
                pass
        if self._out and present:
            try:
                n = os.write(self._client, self._out)
                del self._out[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._out.clear()
