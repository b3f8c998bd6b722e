"""The serial line of the board app: output lines built without allocation, command lines read
without blocking.

Runs on: board and host (MicroPython; CPython for tests of the host tools).

`LineWriter` builds one line in a preallocated bytearray (fixed byte strings copied in, ints
written as decimal digits) and hands it to the stream in one `write(buf, n)` call, the
MicroPython stream form that writes the first n bytes without slicing. Writing a `pred` or
`sample` line therefore allocates nothing (checked with `micropython.heap_lock()`); `text` lines
(info, err) are built from `str` and allocate, which is fine for lines that answer commands.

`LineReader` collects bytes from a non-blocking source into a preallocated line buffer and
calls back once per complete line. Lines end at `\\n` or `\\r` (so `\\r\\n` gives a line and an
empty one, and empty lines are ignored). A line longer than the buffer is dropped whole with
the error callback; so is a line with a byte outside printable ASCII (tab counts as a space).

`StdinSource` is the board's source: `select.poll` on `sys.stdin`, then one byte at a time
from `sys.stdin.buffer` (a board's stdin blocks until a readinto's buffer is full). Any object
with `readinto(buf) -> count` that never blocks, such as `io.BytesIO`, serves as a source.
"""

import sys

try:
    import select
except ImportError:  # a port without select: no commands, the app still runs
    select = None

_MICROPYTHON = sys.implementation.name == "micropython"
_INT_DIGITS = 12  # "-1073741824" and a spare
_CHUNK = 16


class LineWriter:
    """One output line at a time in a preallocated buffer of `size` bytes, then one write.

    Lines longer than the buffer are cut (the app sizes it for its longest line).
    """

    def __init__(self, out, size):
        out = getattr(out, "buffer", out)  # sys.stdout -> its byte stream
        self._out = out
        self._text_out = not _MICROPYTHON and not hasattr(out, "readinto")
        self.buf = bytearray(size + 1)  # + the newline
        self.size = size
        self.n = 0
        self._digits = bytearray(_INT_DIGITS)

    def put(self, b):
        """Append the bytes `b` (bytes or bytearray)."""
        buf = self.buf
        n = self.n
        k = len(b)
        if n + k > self.size:
            k = self.size - n
        for i in range(k):
            buf[n + i] = b[i]
        self.n = n + k

    def put_int(self, v):
        """Append the small int `v` in decimal."""
        if self.n + _INT_DIGITS > self.size:
            return
        buf = self.buf
        n = self.n
        if v < 0:
            buf[n] = 45  # '-'
            n += 1
            v = -v
        d = self._digits
        k = 0
        while True:
            d[k] = 48 + v % 10
            v //= 10
            k += 1
            if not v:
                break
        while k:
            k -= 1
            buf[n] = d[k]
            n += 1
        self.n = n

    def end(self):
        """Terminate the line with `\\n` and write it."""
        n = self.n
        self.buf[n] = 10
        self.n = 0
        if _MICROPYTHON:
            self._out.write(self.buf, n + 1)
        elif self._text_out:
            self._out.write(self.buf[: n + 1].decode())
        else:
            self._out.write(bytes(self.buf[: n + 1]))

    def line(self, text):
        """Write a whole line from a str, any length (allocates: for info and err lines)."""
        text += "\n"
        self._out.write(text if self._text_out else text.encode())


class StdinSource:
    """Non-blocking bytes from sys.stdin: `readinto` gives 0 or 1 byte; 0 for ever after EOF."""

    def __init__(self, stream=None):
        self._stream = stream or sys.stdin
        self._raw = getattr(self._stream, "buffer", self._stream)
        self._poll = None
        self._one = bytearray(1)
        if select is not None and _MICROPYTHON:
            try:
                self._poll = select.poll()
                self._poll.register(self._stream, select.POLLIN)
                self._ready()  # ipoll makes its result tuple on the first call
            except Exception:
                self._poll = None

    def _ready(self):
        for ev in self._poll.ipoll(0):
            return ev[1]
        return 0

    def readinto(self, buf):
        if self._poll is None or not self._ready():
            return 0
        if not self._raw.readinto(self._one):  # readable with no byte: end of input
            self._poll.unregister(self._stream)
            self._poll = None
            return 0
        buf[0] = self._one[0]
        return 1


class LineReader:
    """Lines of at most `size` bytes from `source`; `on_line(mv, n)` and `on_error(text)`."""

    def __init__(self, source, size, on_line, on_error):
        self._source = source
        self.buf = bytearray(size)
        self.size = size
        self.n = 0
        self._chunk = bytearray(_CHUNK)
        self._overlong = False
        self._bad = -1  # first non-printable byte of the line, or -1
        self._on_line = on_line
        self._on_error = on_error

    def poll(self, limit=64):
        """Read at most `limit` bytes that are already there; handle each complete line."""
        if self._source is None:
            return
        chunk = self._chunk
        while limit > 0:
            got = self._source.readinto(chunk)
            if not got:
                return
            limit -= got
            for i in range(got):
                self._byte(chunk[i])

    def _byte(self, c):
        if c == 10 or c == 13:
            self._end_line()
        elif self._overlong:
            pass
        elif self.n >= self.size:
            self._overlong = True
        else:
            if c == 9:
                c = 32
            elif (c < 32 or c > 126) and self._bad < 0:
                self._bad = c
            self.buf[self.n] = c
            self.n += 1

    def _end_line(self):
        n, bad, overlong = self.n, self._bad, self._overlong
        self.n = 0
        self._bad = -1
        self._overlong = False
        if overlong:
            self._on_error("line too long: dropped, max %d bytes" % self.size)
        elif bad >= 0:
            self._on_error("line bad byte 0x%02x: dropped, expected printable ASCII" % bad)
        elif n:
            self._on_line(self.buf, n)
