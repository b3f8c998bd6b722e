"""Replay of a sensor log (CSV) from the board's filesystem, as if it were a live sensor.

Runs on: board and host (MicroPython; CPython for tests).

The file is the sensor-log format of `host/sensorlog.py`: an optional first line
`# key=value ...`, a header row, then one row per sample with channel columns, `label` and
optionally `subject`, `recording`, `t_ms`. Rows are streamed: the file is read in chunks into
a preallocated buffer and each row is parsed in place, so `read` allocates nothing in steady
state for count files (a board cannot hold a 244k-row log, and need not). At the end of the
file it starts again after the header (`loops` counts the passes).

- Cells with `values=counts` (the default) must be integers in [-32768, 32767] ("12", "12.0"
  and "1.2e1" all read as 12, like the host).
- With `values=physical` and `full_scale=ax:8g,...` in the first line, cells are physical
  values turned into counts by the rule of `host/sensorlog.to_counts`: round half away from
  zero of value / full_scale * 32768, clipped to int16. Here the rule is applied exactly, to
  the cell's decimal digits (up to 40 significant digits) in integers; the host computes it in
  float64, which can land on either side of an exact decimal tie (23.455 C at 327.68 C full
  scale is 2345.5 counts), so the two may differ by 1 count on such ties. On a board, cells of
  more than about 4 significant digits need long integers (heap allocations), so count files
  are the better choice there (`microprop record` writes them).
- A row that cannot be read (wrong number of cells, a bad or out-of-range number, longer than
  `line_max` bytes) is skipped and counted in `bad_rows`; blank lines are skipped silently.
  `read` raises OSError when a whole pass over the file yields no good row.
"""

from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_CHUNK = const(256)
_LABEL_MAX = const(64)
_SIG_COUNTS = const(9)  # significant digits kept per count cell: mantissa below 2**30
_SIG_PHYSICAL = const(40)  # per physical cell: every float64 text is exact
_SKIP = const(-1)  # column slot: ignored
_LABEL = const(-2)  # column slot: the label
_COMMA = const(44)
_QUOTE = const(34)
RESERVED = ("label", "subject", "recording", "t_ms")


def parse_decimal(text, sig=_SIG_COUNTS):
    """'8', '2000', '0.5', '1e3' -> (m, e), value = m * 10**e, |m| < 10**sig; else None."""
    r = _DecimalReader(bytearray(text.strip().encode()), sig)
    if r.number(0, len(r.line)) != len(r.line) or r.inexact:
        return None
    return r.m, r.e


class _DecimalReader:
    """Parses a decimal number in line[i:end] into (self.m, self.e): value = m * 10**e.

    Keeps `sig` significant digits; `inexact` tells that a nonzero digit past them was dropped.
    """

    def __init__(self, line, sig):
        self.line = line
        self.sig = sig
        self.m = 0
        self.e = 0
        self.inexact = False  # a nonzero digit past the significant ones was dropped

    def number(self, i, end):
        """Parse from i (spaces around allowed); index after it (at ',' or end), or -1."""
        ln = self.line
        while i < end and (ln[i] == 32 or ln[i] == 9):
            i += 1
        neg = False
        if i < end and (ln[i] == 45 or ln[i] == 43):  # - +
            neg = ln[i] == 45
            i += 1
        m = 0
        e = 0
        kept = 0
        sig = self.sig
        digits = 0
        point = False
        self.inexact = False
        while i < end:
            c = ln[i]
            if 48 <= c <= 57:
                digits += 1
                if kept < sig:
                    m = m * 10 + c - 48
                    if m:
                        kept += 1
                    if point:
                        e -= 1
                else:
                    if not point:
                        e += 1
                    if c != 48:
                        self.inexact = True
            elif c == 46 and not point:  # .
                point = True
            else:
                break
            i += 1
        if digits == 0:
            return -1
        if i < end and (ln[i] == 101 or ln[i] == 69):  # e E
            i += 1
            eneg = False
            if i < end and (ln[i] == 45 or ln[i] == 43):
                eneg = ln[i] == 45
                i += 1
            x = 0
            xd = 0
            while i < end and 48 <= ln[i] <= 57:
                if x < 100000:
                    x = x * 10 + ln[i] - 48
                xd += 1
                i += 1
            if xd == 0:
                return -1
            e = e - x if eneg else e + x
        while i < end and (ln[i] == 32 or ln[i] == 9):
            i += 1
        if i < end and ln[i] != _COMMA:
            return -1
        self.m = -m if neg else m
        self.e = e
        return i


def to_counts(m, e, fm, fe):
    """Physical value m * 10**e at full scale fm * 10**fe (0 < fm < 10**9) -> int16 counts.

    Round half away from zero of value / full_scale * 32768, clipped to [-32768, 32767]:
    `host/sensorlog.to_counts`, in exact integers.
    """
    if m == 0:
        return 0
    neg = m < 0
    if neg:
        m = -m
    k = e - fe
    q = -1
    if k > 9 or k < -30:  # far exponents: decide from the digit count d of m
        d = 0
        x = m
        while x:
            x //= 10
            d += 1
        if d + k >= 10:  # |value| / fs >= 10**(d - 1 + k) / fm > 1: saturated
            q = 32768
        elif d + k < -5:  # |value| / fs * 32768 < 10**(d + k) * 32768 < 0.5
            q = 0
    if q < 0:
        num = m * 32768
        den = fm
        if k >= 0:
            num *= 10**k
        else:
            den *= 10**-k
        q = (2 * num + den) // (2 * den)
    if neg:
        return -32768 if q > 32768 else -q
    return 32767 if q > 32767 else q


class Replay:
    """Sensor log `path` replayed row by row; `channels`: column names (default: all numeric
    columns but label, subject, recording and t_ms). `last_label` is the label of the row last
    read (None when the file has no label column).
    """

    def __init__(self, path="data.csv", channels=None, line_max=256):
        self.path = path
        self.bad_rows = 0
        self.rows = 0
        self.loops = 0
        try:
            self._f = open(path, "rb")
        except OSError as err:
            raise OSError("replay: cannot open %r (%s)" % (path, err)) from None
        try:
            self._setup(channels, line_max)
        except BaseException:
            self._f.close()
            raise

    def _setup(self, channels, line_max):
        f = self._f
        start = 0
        meta = {}
        header = None
        while header is None:
            raw = f.readline()
            if not raw:
                raise ValueError("replay: %s has no header row" % self.path)
            start += len(raw)
            text = raw.decode().strip()
            if not text:
                continue
            if text[0] == "#" and start == len(raw):
                for item in text[1:].split():
                    key, _, value = item.partition("=")
                    meta[key] = value
                continue
            header = [h.strip() for h in text.split(",")]
        self._start = start
        self._ncols = len(header)
        if channels is None:
            channels = self._numeric_columns(header)
        if not channels:
            raise ValueError("replay: %s has no numeric channel columns" % self.path)
        slot = array("b", [_SKIP] * self._ncols)
        if "label" in header:
            slot[header.index("label")] = _LABEL
        for k in range(len(channels)):
            if channels[k] in channels[:k]:
                raise ValueError("replay: channel %r named twice" % channels[k])
            if channels[k] not in header or channels[k] in RESERVED:
                raise ValueError(
                    "replay: unknown channel %r, expected one of %s"
                    % (channels[k], [h for h in header if h not in RESERVED])
                )
            slot[header.index(channels[k])] = k
        self._slot = slot
        self.channels = tuple(channels)
        self.n = len(channels)
        self._setup_scale(meta)

        self.line = bytearray(max(line_max, 4 * len(text)))
        self._num = _DecimalReader(self.line, _SIG_PHYSICAL if self.physical else _SIG_COUNTS)
        self._row = array("h", bytes(2 * self.n))
        self._label = bytearray(_LABEL_MAX)
        self._label_len = -1 if "label" not in header else 0
        self._buf = bytearray(_CHUNK)
        self._mv = memoryview(self._buf)
        self._pos = 0
        self._end = 0
        self._good_in_pass = 0
        f.seek(start)

    def _numeric_columns(self, header):
        """Non-reserved columns with a number among the first 100 data rows (as the host)."""
        numeric = [False] * len(header)
        for _ in range(100):
            raw = self._f.readline()
            if not raw:
                break
            cells = raw.decode().split(",")
            for j in range(min(len(cells), len(header))):
                if not numeric[j]:
                    try:
                        float(cells[j])
                        numeric[j] = True
                    except ValueError:
                        pass
        return [h for j, h in enumerate(header) if numeric[j] and h not in RESERVED]

    def _setup_scale(self, meta):
        """Full scale per channel from `full_scale=`; physical-value conversion if declared."""
        declared = {}
        for item in meta.get("full_scale", "").split(","):
            name, _, value = item.partition(":")
            if name and value:
                j = 0
                while j < len(value) and value[j] in "0123456789.+-eE":
                    j += 1
                while j > 0 and value[j - 1] in "eE":  # '8e' is not a number: unit 'e...'
                    j -= 1
                number = parse_decimal(value[:j])
                if number is None or number[0] <= 0:
                    raise ValueError("replay: bad full_scale item %r" % item)
                declared[name] = (number, value[j:])
        self.physical = meta.get("values", "counts") == "physical"
        if meta.get("values", "counts") not in ("counts", "physical"):
            raise ValueError(
                "replay: values must be counts or physical, found %r" % meta["values"]
            )
        fs = []
        units = []
        self._fm = []
        self._fe = []
        for name in self.channels:
            (m, e), unit = declared.get(name, ((0, 0), ""))
            if self.physical and not m:
                raise ValueError("replay: values=physical but no full scale for %r" % name)
            fs.append(m * 10.0**e if m else 0)
            units.append(unit)
            self._fm.append(m)
            self._fe.append(e)
        self.full_scale = tuple(fs)
        self.units = tuple(units)

    @property
    def last_label(self):
        """The label of the row last read (allocates a str; not for the sample loop)."""
        if self._label_len < 0:
            return None
        return bytes(self._label[: self._label_len]).decode()

    def close(self):
        self._f.close()

    def read(self, out):
        """The next good row's channel values -> out[0..n-1] as int16 counts."""
        while True:
            n = self._next_line()
            if n < 0:
                self._rewind()
            elif n > 0 and self._parse(n):
                break
        row = self._row
        for k in range(self.n):
            out[k] = row[k]
        self.rows += 1
        self._good_in_pass += 1

    def _rewind(self):
        if self._good_in_pass == 0:
            raise OSError("replay: no valid rows in %s" % self.path)
        self._good_in_pass = 0
        self.loops += 1
        self._f.seek(self._start)
        self._pos = 0
        self._end = 0

    def _next_line(self):
        """Copy the next line (without its \\n or \\r\\n) into self.line; return its length.

        0 for a blank line, -1 at the end of the file. A line longer than the buffer is
        consumed, counted in bad_rows and reported as blank.
        """
        buf = self._buf
        line = self.line
        cap = len(line)
        pos = self._pos
        end = self._end
        n = 0
        too_long = False
        while True:
            if pos >= end:
                end = self._f.readinto(self._mv) or 0
                pos = 0
                if end == 0:
                    if n == 0 and not too_long:
                        self._pos = self._end = 0
                        return -1
                    break
            c = buf[pos]
            pos += 1
            if c == 10:
                break
            if n < cap:
                line[n] = c
                n += 1
            else:
                too_long = True
        self._pos = pos
        self._end = end
        if too_long:
            self.bad_rows += 1
            return 0
        if n > 0 and line[n - 1] == 13:
            n -= 1
        i = 0
        while i < n and (line[i] == 32 or line[i] == 9):
            i += 1
        return 0 if i == n else n

    def _parse(self, n):
        """Parse self.line[:n] into self._row (and the label); False (counted) if it is bad."""
        slot = self._slot
        last = self._ncols - 1
        i = 0
        col = 0
        while True:
            s = slot[col]
            if s >= 0:
                i = self._num.number(i, n)
                if i < 0 or not self._store(s):
                    self.bad_rows += 1
                    return False
            else:
                i = self._skip(i, n, s == _LABEL)
            if i >= n:
                break
            i += 1  # the comma
            if col == last:
                self.bad_rows += 1
                return False
            col += 1
        if col != last:
            self.bad_rows += 1
            return False
        return True

    def _skip(self, i, n, keep):
        """Skip a cell (commas inside double quotes do not end it); keep it as the label."""
        ln = self.line
        quoted = False
        k = 0
        while i < n:
            c = ln[i]
            if c == _QUOTE:
                quoted = not quoted
            elif c == _COMMA and not quoted:
                break
            elif keep and k < _LABEL_MAX and (k > 0 or (c != 32 and c != 9)):
                self._label[k] = c
                k += 1
            i += 1
        if keep:
            while k > 0 and (self._label[k - 1] == 32 or self._label[k - 1] == 9):
                k -= 1
            self._label_len = k
        return i

    def _store(self, s):
        """The parsed number -> counts in self._row[s]; False if it is not valid."""
        m = self._num.m
        e = self._num.e
        if self.physical:
            self._row[s] = to_counts(m, e, self._fm[s], self._fe[s])
            return True
        if self._num.inexact:
            return False
        if m != 0:
            if e > 0:
                if e > 4 or m > 32768 or m < -32768:
                    return False
                m *= 10**e
            elif e < 0:
                if e < -_SIG_COUNTS:
                    return False
                p = 10**-e
                if m % p:
                    return False
                m //= p
            if m < -32768 or m > 32767:
                return False
        self._row[s] = m
        return True
