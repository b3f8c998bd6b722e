"""The serial line of the board app: every word of its protocol, output lines built without
allocation, command lines read without blocking.

Runs on: board and host (MicroPython; CPython for tests of the host tools).

The words (DESIGN.md, "The board app and the serial line") are written here and nowhere else:
the board's writer below and command handlers (device/commands.py) and the host's parser
(firmware_tools/protocol.py) import them. Board -> host, a line kind then its fields::

    pred t=<ms> class=<name> score=<0..255> us=<int> <name>:<0..255> ...
    sample t=<ms> <channel>=<int> ...
    train step=<n> label=<name> correct=<0/1> acc=<0..100>
    info <key>=<value> ...
    err <code> <message>

The kinds and field tags are bytes, so that writing them allocates nothing. Host -> board, a
command word then its arguments, in str as the board reads command lines (device/commands.py):
`mode predict|record|idle` (MODES), `label <class name>`, `save`, `reset-model`, `info`,
`rate <hz>`, `mount [search|pick|cancel|<orientation>]` (MOUNT_WORDS; device/mount.py names
the orientations).

`LineWriter` builds one line in a preallocated bytearray (fixed byte strings copied in, ints
written as decimal digits) and hands it to the stream in one `write(buf, n)` call, the
MicroPython stream form that writes the first n bytes without slicing. Its `pred`, `sample`
and `train` methods write those lines and allocate nothing (checked with
`micropython.heap_lock()`); `info` and `err` lines are built from `str` and allocate, which is
fine for lines that answer commands.

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

# Board -> host: the line kinds, and the tags of their fixed fields (` <tag>=<value>`).
PRED = b"pred"
SAMPLE = b"sample"
TRAIN = b"train"
INFO = b"info"
ERR = b"err"
T = b"t"  # pred, sample: milliseconds since the app started
CLASS = b"class"  # pred: the reported class, its score and the time features + inference took
SCORE = b"score"
US = b"us"
STEP = b"step"  # train
LABEL = b"label"
CORRECT = b"correct"
ACC = b"acc"

# Host -> board: the command words, and the app's modes (`mode <name>`, board.json "mode").
CMD_MODE = "mode"
CMD_LABEL = "label"
CMD_SAVE = "save"
CMD_RESET_MODEL = "reset-model"
CMD_INFO = "info"
CMD_RATE = "rate"
CMD_MOUNT = "mount"
COMMANDS = (CMD_MODE, CMD_LABEL, CMD_SAVE, CMD_RESET_MODEL, CMD_INFO, CMD_RATE, CMD_MOUNT)
MOUNT_SEARCH = "search"  # `mount search`: labels score the orientations from now on
MOUNT_PICK = "pick"  # `mount pick`: take the best and end the search
MOUNT_CANCEL = "cancel"  # `mount cancel`: end the search, the mount unchanged
MOUNT_WORDS = (MOUNT_SEARCH, MOUNT_PICK, MOUNT_CANCEL)
MOUNT_WINDOW = "mount_window"  # info key of a label's answer while searching: windows scored
PREDICT = "predict"
RECORD = "record"
IDLE = "idle"
MODES = (PREDICT, RECORD, IDLE)  # the app's mode is one of these words


def line_sizes(names, channels):
    """(LineWriter size, LineReader size) of the board app with these class and channel names
    (bytes): its longest pred, sample or train line, and its longest command (`label <name>`)."""
    longest = 0
    for s in names:
        longest = max(longest, len(s))
    size = 80 + longest + len(names) * (longest + 6)  # pred: ` <name>:<score>` per class
    sample = 32
    for s in channels:
        sample += len(s) + 8  # ` <channel>=<int16>`
    return max(size, sample), max(64, longest + 8)


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

    def put_key(self, key, sep=b"="):
        """Append ` <key>=` (or ` <key>:` with `sep` b":"): a field's tag, its value to follow."""
        self.put(b" ")
        self.put(key)
        self.put(sep)

    def put_field(self, key, v):
        """Append ` <key>=<v>` for the small int `v`."""
        self.put_key(key)
        self.put_int(v)

    # -- the line kinds ------------------------------------------------------------------------

    def pred(self, t_ms, names, cls, scores, us):
        """`pred t=<ms> class=<name> score=<0..255> us=<int> <name>:<0..255> ...`: `names[j]`
        (bytes) and `scores[j]` of every class j, `cls` the class reported."""
        self.put(PRED)
        self.put_field(T, t_ms)
        self.put_key(CLASS)
        self.put(names[cls])
        self.put_field(SCORE, scores[cls])
        self.put_field(US, us)
        for j in range(len(names)):
            self.put_key(names[j], b":")
            self.put_int(scores[j])
        self.end()

    def sample(self, t_ms, names, values):
        """`sample t=<ms> <channel>=<int> ...`: `names[i]` (bytes) and `values[i]` per channel."""
        self.put(SAMPLE)
        self.put_field(T, t_ms)
        for i in range(len(names)):
            self.put_field(names[i], values[i])
        self.end()

    def train(self, step, label, correct, acc):
        """`train step=<n> label=<name> correct=<0/1> acc=<0..100>`, `label` in bytes."""
        self.put(TRAIN)
        self.put_field(STEP, step)
        self.put_key(LABEL)
        self.put(label)
        self.put_field(CORRECT, correct)
        self.put_field(ACC, acc)
        self.end()

    def info(self, text):
        """`info <text>`, `text` the key=value pairs (allocates: any length)."""
        self._text(INFO, text)

    def info_pairs(self, pairs):
        """`info <key>=<value> ...` from (key, value) pairs (allocates: any length)."""
        self._text(INFO, " ".join(["%s=%s" % kv for kv in pairs]))

    def err(self, code, message):
        """`err <code> <message>` (allocates: any length)."""
        self._text(ERR, "%s %s" % (code, message))

    def _text(self, kind, text):
        line = kind + b" " + text.encode() + b"\n"
        self._out.write(line.decode() if self._text_out else line)


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
            self._on_error("too long: dropped, max %d bytes" % self.size)
        elif bad >= 0:
            self._on_error("bad byte 0x%02x: dropped, expected printable ASCII" % bad)
        elif n:
            self._on_line(self.buf, n)
