"""Sensor logs: CSV files of int16 sensor counts, one row per sample.

Runs on: host.

Format (written by `microprop record` and `write_sensor_log`, read by the trainer)::

    # sensor=mpu6050 rate_hz=50 values=counts full_scale=ax:8g,ay:8g,az:8g,gx:2000dps
    ax,ay,az,gx,label,subject,recording,t_ms
    4101,-12,230,-5,walking,anna,anna-1,0
    ...

- The file is UTF-8; a byte-order mark at its start is dropped.
- The optional first line starts with `#` and holds space-separated `key=value` pairs (no
  spaces inside a value). Known keys: `sensor` (free text), `rate_hz` (samples per second),
  `values` (`counts`, the default, or `physical`) and `full_scale`, a comma-separated list of
  `channel:<number><unit>` (for example `ax:8g`, `gx:2000dps`, `gx:34.9rad/s`; the unit may be
  empty): the physical value that 32768 counts stand for. `--full-scale` takes the same
  syntax. Other keys are kept in `SensorLog.meta`.
- The header row names the columns: channel columns, `label`, and optionally `subject`,
  `recording` and `t_ms`. Other columns are ignored unless named as channels.
- With `values=counts` each channel cell is an integer count in [-32768, 32767]. With
  `values=physical` (or when the caller passes `full_scale`) cells are physical values, turned
  into the counts a board would read at that full scale::

      counts = clip(round_half_away(value / full_scale * 32768), -32768, 32767)

  so +/-8 g gives 4096 counts per g, as an MPU6050 reports at that setting.
- Recordings: the `recording` column when present; otherwise one recording per subject (and
  the whole file is one recording when `subject` is absent too). Missing subjects read as "0".
- Rows with an empty label, or a label the caller ignores (`ignore_labels`, for example the
  unlabelled transitions of a public data set), are left out, and their recording is split
  where they were. When the rate is known, a recording is also split where `t_ms` jumps by more
  than 1.5 sample periods (dropped rows); `t_ms` going back inside a recording is refused.
  Windows are cut inside the pieces (see `host/features.py`).
- Labels and subject ids that are numbers sort as numbers (`-1, 1, 2, 10`), before text.

Every data error is a `UserError` naming the file and, where it applies, the row (the 1-based
line number in the file) and the column.
"""

import csv
import gzip
import math
import os
import re
import warnings
from dataclasses import dataclass, field

import numpy as np

from . import outputs
from .errors import UserError

COUNTS_MIN = -32768
COUNTS_MAX = 32767
COUNTS_FULL = 32768
DEFAULT_SUBJECT = "0"

_NUMBER_UNIT = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)([A-Za-z/%_^*]*)$")


@dataclass
class SensorLog:
    """A sensor log in int16 counts: one row per sample, C channels."""

    channels: list  # channel names, length C
    counts: np.ndarray  # integers (n, C) in [-32768, 32767] (int32 from the reader)
    labels: np.ndarray  # str (n,) (object arrays of shared str from the reader)
    subjects: np.ndarray  # str (n,)
    recordings: np.ndarray  # str (n,), recording id per sample
    rate_hz: float | None = None
    full_scale: dict | None = None  # channel -> (value, unit): what 32768 counts stand for
    meta: dict = field(default_factory=dict)  # other key=value pairs of the comment line
    t_ms: np.ndarray | None = None  # int64 (n,) when the file has a t_ms column
    path: str | None = None  # the file it was read from, for error messages
    # Sorted row indices where a recording is split (after a gap in t_ms or left-out rows): no
    # window spans row i - 1 and row i. None: no splits.
    breaks: np.ndarray | None = None
    # What reading did: "rows" read, "ignored" {label: rows left out}, "gap_ms" (the t_ms step
    # that splits, None without a rate), "gap_splits" and "ignore_splits" (the breaks' causes).
    splits: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.counts)

    @property
    def classes(self):
        """Distinct labels, numbers sorted as numbers (`sort_labels`)."""
        return sort_labels(set(self.labels.tolist()))


def label_key(value):
    """Sort key of a label or subject id: numbers by value (-1, 1, 2, 10), then text."""
    value = str(value)
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if math.isfinite(x):
        return (0, x, value)
    return (1, 0.0, value)


def sort_labels(values):
    """Labels or subject ids in `label_key` order: ['-1', '1', '2', '10', 'walk']."""
    return sorted((str(v) for v in values), key=label_key)


# ---------------------------------------------------------------------------------------------
# the comment line


def parse_full_scale(text, path=None, what="sensor log: full_scale"):
    """'ax:8g,gx:2000dps' -> {'ax': (8.0, 'g'), 'gx': (2000.0, 'dps')}.

    The `ax=8` form is refused with the hint `ax:8`; `what` prefixes the messages.
    """
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition(":")
        m = _NUMBER_UNIT.match(value.strip())
        if not sep or not name.strip() or not m:
            left, eq, right = item.partition("=")
            hint = " (write %s:%s)" % (left.strip(), right.strip()) if eq and not sep else ""
            raise UserError(
                "%s: bad item %r, expected channel:<number><unit> like ax:8g or gx:2000dps%s"
                % (what, item, hint),
                path=path,
                row=1 if path is not None else None,
            )
        out[name.strip()] = _check_full_scale(name.strip(), float(m.group(1)), m.group(2), path)
    return out


def format_full_scale(full_scale):
    """{'ax': (8.0, 'g')} -> 'ax:8g' (the inverse of `parse_full_scale`)."""
    return ",".join("%s:%s%s" % (ch, _format_number(v), u) for ch, (v, u) in full_scale.items())


def _format_number(v):
    return "%d" % v if float(v).is_integer() else repr(float(v))


def _check_full_scale(channel, value, unit, path=None):
    if not (math.isfinite(value) and value > 0):
        raise UserError(
            "sensor log: full scale of %r must be a positive number, found %r" % (channel, value),
            path=path,
        )
    return (float(value), unit)


def _normalize_full_scale(full_scale, path):
    """User full scale: channel -> number, (number, unit) or '8g' -> channel -> (value, unit)."""
    out = {}
    for ch, v in full_scale.items():
        if isinstance(v, str):
            out.update(parse_full_scale("%s:%s" % (ch, v), path))
        elif isinstance(v, (tuple, list)):
            out[ch] = _check_full_scale(ch, float(v[0]), str(v[1]), path)
        else:
            out[ch] = _check_full_scale(ch, float(v), "", path)
    return out


def parse_meta_line(line, path=None, row=1):
    """'# key=value key=value' -> dict of strings."""
    meta = {}
    for item in line.lstrip("#").split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(
                "sensor log: bad comment item %r, expected key=value" % item, path=path, row=row
            )
        meta[key] = value
    return meta


# ---------------------------------------------------------------------------------------------
# reading
#
# A log is read in blocks of 256 kB of text, so that memory grows with the rows kept, not
# with the file's text: each block is parsed by NumPy's C reader (np.loadtxt) and checked as a
# whole; a block that it refuses, or that holds quotes, is parsed again by the csv module cell by
# cell, which names the exact row and column of the problem. Rows go into arrays sized once from
# the file's line count (a first pass that counts newlines): channel counts as int32, `t_ms` as
# int64 and the label, subject and recording columns as object arrays whose items are one shared
# str per distinct value, so 6 channels and a time column cost 56 bytes per row.

_BLOCK = 1 << 18  # bytes of text parsed at a time (about 5000 rows)
_MAX_LABELS = 1000  # distinct values of a label column before it is refused as one
_GAP_PERIODS = 1.5  # a t_ms step over 1.5 sample periods inside a recording splits it
_LOADTXT = {"comments": None, "delimiter": ",", "ndmin": 2}


def _open_text(path):
    """Text of a .csv or .csv.gz file; a UTF-8 byte-order mark is dropped."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8-sig")
    return open(path, newline="", encoding="utf-8-sig")


def _count_lines(path):
    """Number of lines of the file (newlines + 1): an upper bound on its rows."""
    opener = gzip.open if str(path).endswith(".gz") else open
    n = 1
    with opener(path, "rb") as f:
        while True:
            block = f.read(_BLOCK * 4)
            if not block:
                return n
            n += block.count(b"\n")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _blank(cells):
    return not cells or (len(cells) == 1 and not cells[0].strip())


@dataclass
class SensorTable:
    """A sensor log's cells before conversion to counts (channel values as float64)."""

    path: str
    meta: dict  # the comment line's key=value pairs, as strings
    channels: list
    values: np.ndarray  # float64 (n, C), finite
    labels: np.ndarray  # object (n,) of str
    subjects: np.ndarray  # object (n,) of str
    recordings: np.ndarray  # object (n,) of str
    t_ms: np.ndarray | None
    lines: np.ndarray = field(repr=False, default=None)  # int64 (n,): file line of each row
    breaks: np.ndarray | None = None  # as SensorLog.breaks
    splits: dict = field(default_factory=dict)  # as SensorLog.splits


class _Distinct:
    """The distinct values of one text column: a small int code per value, one str object each."""

    def __init__(self):
        self.by_cell = {}  # cell as read (spaces kept) -> code
        self.by_value = {}  # stripped value -> code
        self.values = []
        self.objects = np.empty(0, dtype=object)

    def codes(self, cells):
        """U array of cells (k,) -> int32 codes (k,); one dictionary look-up per run of equals."""
        k = len(cells)
        if k == 0:
            return np.zeros(0, dtype=np.int32)
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        run = np.empty(len(starts), dtype=np.int32)
        grew = False
        for j, cell in enumerate(cells[starts].tolist()):
            code = self.by_cell.get(cell)
            if code is None:
                value = cell.strip()
                code = self.by_value.get(value)
                if code is None:
                    code = self.by_value[value] = len(self.values)
                    self.values.append(value)
                    grew = True
                self.by_cell[cell] = code
            run[j] = code
        if grew:
            self.objects = np.empty(len(self.values), dtype=object)
            self.objects[:] = self.values
        return np.repeat(run, np.diff(np.r_[starts, k]))


class _Reader:
    """One pass over a sensor log: header, then blocks of rows into preallocated arrays."""

    def __init__(
        self, path, names, ignore_labels=(), rate_hz=None, progress=None, default_rate=None
    ):
        self.path = str(path)
        self.names = names  # dict: channels, label, subject, recording, time
        self.ignore = {str(v).strip() for v in ignore_labels}
        self.rate_arg, self.default_rate = rate_hz, default_rate
        self.progress = progress

    # -- the comment line and the header --

    def open(self):
        path = self.path
        if not os.path.exists(path):
            raise UserError("sensor log: file not found", path=path)
        try:
            self.n_lines = _count_lines(path)
            self.f = _open_text(path)
        except (OSError, EOFError) as e:
            raise UserError("sensor log: cannot read file (%s)" % e, path=path) from None
        try:
            self._read_header()
        except (OSError, EOFError, UnicodeDecodeError) as e:
            self.f.close()
            raise UserError("sensor log: cannot read file (%s)" % e, path=path) from None
        except BaseException:
            self.f.close()
            raise

    def _read_header(self):
        path, line, ln = self.path, "", 0
        self.meta = {}
        while not line.strip():
            line = self.f.readline()
            ln += 1
            if not line:
                raise UserError("sensor log: empty file", path=path)
        if line.lstrip().startswith("#"):
            self.meta = parse_meta_line(line.strip(), path, ln)
            line = ""
            while not line.strip():
                line = self.f.readline()
                ln += 1
                if not line:
                    raise UserError("sensor log: no header row", path=path)
        header = [c.strip() for c in next(csv.reader([line]))]
        self.header_line, self.line = ln, ln + 1
        if len(set(header)) != len(header):
            dup = next(h for h in header if header.count(h) > 1)
            raise UserError("sensor log: duplicate column %r in header" % dup, path=path, row=ln)
        names = self.names
        col = {name: i for i, name in enumerate(header)}
        if names["label"] not in col:
            raise UserError(
                "sensor log: missing label column %r, found columns %s" % (names["label"], header),
                path=path,
                row=ln,
            )
        self.header, self.col = header, col
        self.reserved = {names[k] for k in ("label", "subject", "recording", "time")}
        if names["channels"] is not None:
            channels = list(names["channels"])
            if not channels:
                raise UserError("sensor log: no channel columns given", path=path)
            dup = [ch for ch in channels if channels.count(ch) > 1]
            if dup:
                raise UserError("sensor log: channel %r given twice" % dup[0], path=path)
            for ch in channels:
                if ch not in col:
                    raise UserError(
                        "sensor log: unknown channel %r, expected one of %s"
                        % (ch, [h for h in header if h not in self.reserved]),
                        path=path,
                        column=ch,
                    )
            self.channels = channels

    def _guess_channels(self, lines):
        """Every column that is not label, subject, recording or time and holds a number among
        its first 100 cells."""
        rows = []
        for cells in csv.reader(lines):
            if not _blank(cells):
                rows.append(cells)
                if len(rows) == 100:
                    break
        if not rows:
            raise UserError("sensor log: no data rows after the header", path=self.path)
        channels = [
            h
            for i, h in enumerate(self.header)
            if h not in self.reserved and any(i < len(r) and _is_number(r[i]) for r in rows)
        ]
        if not channels:
            raise UserError(
                "sensor log: no numeric channel columns", path=self.path, row=self.header_line
            )
        return channels

    # -- the rows --

    def read(self, converter, keep_lines=False):
        """Read every row -> dict of arrays; `converter(meta, channels)` -> (dtype, convert), and
        convert(values (k, C) float64, line_of) -> the channel array of the kept rows."""
        try:
            return self._read(converter, keep_lines)
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise UserError("sensor log: cannot read file (%s)" % e, path=self.path) from None
        finally:
            self.f.close()

    def _read(self, converter, keep_lines):
        names, col = self.names, self.col
        first = self.f.readlines(_BLOCK)
        if names["channels"] is None:
            self.channels = self._guess_channels(first)
        channels = self.channels
        self.rate = _rate(self.meta, self.rate_arg, self.path)
        if self.rate is None and self.default_rate:
            self.rate = float(self.default_rate)
        dtype, self.convert = converter(self.meta, channels)
        self.num_cols = [col[ch] for ch in channels]
        self.has_t = names["time"] in col
        if self.has_t:
            self.num_cols.append(col[names["time"]])
        self.text_keys = ["label"] + [k for k in ("subject", "recording") if names[k] in col]
        self.str_cols = [col[names[k]] for k in self.text_keys]
        self.distinct = {k: _Distinct() for k in self.text_keys}
        self.ignored_code = np.zeros(0, dtype=bool)

        n_max = max(1, self.n_lines - self.header_line)
        self.out = {
            "values": np.empty((n_max, len(channels)), dtype=dtype),
            "t_ms": np.empty(n_max, dtype=np.int64) if self.has_t else None,
            "lines": np.empty(n_max, dtype=np.int64) if keep_lines else None,
        }
        for k in self.text_keys:
            self.out[k] = np.empty(n_max, dtype=object)
        self.pos, self.rows, self.breaks = 0, 0, []
        self.ignored = np.zeros(0, dtype=np.int64)  # rows dropped per label code
        self.gap_splits = self.drop_splits = 0
        self.gap_ms = 1000.0 * _GAP_PERIODS / self.rate if self.rate else None
        # the previous row (all rows) and the previous kept row, across blocks
        self.last = {"subject": -1, "recording": -1, "t": 0, "dropped": False, "gaps": 0}
        self.last.update(drops=0, kept_subject=-1, kept_recording=-1, kept_gaps=0, kept_drops=0)

        lines = first
        while lines:
            self._block(lines, keep_lines)
            self.line += len(lines)
            if self.progress is not None:
                self.progress(self.line - 1, self.n_lines)
            lines = self.f.readlines(_BLOCK)
        return self._finish()

    def _block(self, lines, keep_lines):
        nums, cells, line_of = self._parse(lines)
        k = len(nums)
        if k == 0:
            return
        self.rows += k
        codes = {key: self.distinct[key].codes(cells[j]) for j, key in enumerate(self.text_keys)}
        labels = self.distinct["label"]
        if len(labels.values) > _MAX_LABELS:
            raise UserError(
                "sensor log: column %r holds more than %d distinct labels; is it the label "
                "column?" % (self.names["label"], _MAX_LABELS),
                path=self.path,
            )
        if len(self.ignored_code) < len(labels.values):
            self.ignored_code = np.array([v == "" or v in self.ignore for v in labels.values])
            more = len(labels.values) - len(self.ignored)
            self.ignored = np.r_[self.ignored, np.zeros(more, dtype=np.int64)]
        keep = ~self.ignored_code[codes["label"]]
        dropped = np.flatnonzero(~keep)
        if len(dropped):
            self.ignored = self.ignored + np.bincount(
                codes["label"][dropped], minlength=len(self.ignored)
            )
        zeros = np.zeros(k, dtype=np.int32)
        subject = codes.get("subject", zeros)
        recording = codes.get("recording", zeros)
        t = self._times(nums[:, -1], line_of) if self.has_t else None
        gap = self._gaps(t, subject, recording, line_of)
        kept = np.flatnonzero(keep)
        self._cuts(keep, kept, gap, subject, recording)
        m = len(kept)
        if m == 0:
            return
        self._fit(m)
        out, pos = self.out, self.pos
        values = nums[kept, : len(self.channels)]
        out["values"][pos : pos + m] = self.convert(values, lambda i: line_of(kept[i]))
        if t is not None:
            out["t_ms"][pos : pos + m] = t[kept]
        for key in self.text_keys:
            out[key][pos : pos + m] = self.distinct[key].objects[codes[key][kept]]
        if keep_lines:
            out["lines"][pos : pos + m] = [line_of(i) for i in kept.tolist()]
        self.pos += m

    def _parse(self, lines):
        """A block of text lines -> (float64 (k, channels + time), [U (k,) per text column],
        line_of(i) -> file line of row i). Blank lines are no rows."""
        first = self.line
        text = "".join(lines)
        if '"' not in text:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Input line N contained no data"
                    nums = np.loadtxt(lines, np.float64, usecols=self.num_cols, **_LOADTXT)
                    cells = np.loadtxt(lines, str, usecols=self.str_cols, **_LOADTXT)
            except ValueError:
                pass
            else:
                k = len(nums)
                if (
                    len(cells) == k
                    and text.count(",") == k * (len(self.header) - 1)
                    and np.isfinite(nums).all()
                ):
                    return nums, list(cells.T), _LineOf(lines, first)
        return self._parse_cells(lines, first)

    def _parse_cells(self, lines, first):
        """The slow path, cell by cell, with the exact row and column of any bad cell."""
        path, n_cols = self.path, len(self.header)
        reader = csv.reader(lines)
        rows, at = [], []
        try:
            for cells in reader:
                where = first + reader.line_num - 1
                if _blank(cells):
                    continue
                if len(cells) != n_cols:
                    raise UserError(
                        "sensor log: expected %d cells, found %d" % (n_cols, len(cells)),
                        path=path,
                        row=where,
                    )
                rows.append(cells)
                at.append(where)
        except csv.Error as e:
            raise UserError(
                "sensor log: %s" % e, path=path, row=first + reader.line_num - 1
            ) from None
        nums = np.empty((len(rows), len(self.num_cols)), dtype=np.float64)
        for j, i in enumerate(self.num_cols):
            column = [r[i] for r in rows]
            try:
                nums[:, j] = np.array(column, dtype=np.float64)
            except ValueError:
                pass
            else:
                if np.isfinite(nums[:, j]).all():
                    continue
            for k, cell in enumerate(column):
                if not _is_number(cell) or not math.isfinite(float(cell)):
                    what = "a finite number" if _is_number(cell) else "a number"
                    raise UserError(
                        "sensor log: expected %s, found %r" % (what, cell),
                        path=path,
                        row=at[k],
                        column=self.header[i],
                    )
        cells = [np.array([r[i] for r in rows], dtype=str) for i in self.str_cols]
        return nums, cells, at.__getitem__

    def _times(self, t, line_of):
        bad = np.flatnonzero((t != np.floor(t)) | (np.abs(t) > 2**53))
        if len(bad):
            raise UserError(
                "sensor log: expected integers in [%d, %d], found %r"
                % (-(2**53), 2**53, float(t[bad[0]])),
                path=self.path,
                row=line_of(int(bad[0])),
                column=self.names["time"],
            )
        return t.astype(np.int64)

    def _gaps(self, t, subject, recording, line_of):
        """Bool (k,): row i follows a gap in t_ms inside its recording; refuses a step back."""
        k, last = len(subject), self.last
        same = (subject == np.r_[last["subject"], subject[:-1]]) & (
            recording == np.r_[last["recording"], recording[:-1]]
        )
        last["subject"], last["recording"] = subject[-1], recording[-1]
        if t is None:
            return np.zeros(k, dtype=bool)
        before = np.r_[last["t"], t[:-1]]
        step = t - before
        last["t"] = t[-1]
        back = np.flatnonzero(same & (step < 0))
        if len(back):
            i = int(back[0])
            raise UserError(
                "sensor log: %s goes back from %d to %d inside one recording"
                % (self.names["time"], before[i], t[i]),
                path=self.path,
                row=line_of(i),
                column=self.names["time"],
            )
        if self.gap_ms is None:
            return np.zeros(k, dtype=bool)
        return same & (step > self.gap_ms)

    def _cuts(self, keep, kept, gap, subject, recording):
        """Record a break before each kept row that follows a gap or dropped rows (since the
        previous kept row) inside the same recording."""
        last = self.last
        dropped_before = np.r_[last["dropped"], ~keep[:-1]]
        gaps = last["gaps"] + np.cumsum(gap)
        drops = last["drops"] + np.cumsum(dropped_before)
        last["dropped"], last["gaps"], last["drops"] = not keep[-1], gaps[-1], drops[-1]
        if len(kept) == 0:
            return
        g, d, s, r = gaps[kept], drops[kept], subject[kept], recording[kept]
        same = (s == np.r_[last["kept_subject"], s[:-1]]) & (
            r == np.r_[last["kept_recording"], r[:-1]]
        )
        by_gap = same & (g > np.r_[last["kept_gaps"], g[:-1]])
        by_drop = same & (d > np.r_[last["kept_drops"], d[:-1]])
        last.update(kept_subject=s[-1], kept_recording=r[-1], kept_gaps=g[-1], kept_drops=d[-1])
        cut = np.flatnonzero(by_gap | by_drop)
        if len(cut):
            self.breaks.append(self.pos + cut)
            self.gap_splits += int(by_gap.sum())
            self.drop_splits += int((by_drop & ~by_gap).sum())

    def _fit(self, m):
        """Grow the output arrays when the line count was no bound (lone \\r line ends)."""
        n = len(self.out["values"])
        if self.pos + m <= n:
            return
        size = max(2 * n, self.pos + m)
        for key, a in self.out.items():
            if a is not None:
                b = np.empty((size,) + a.shape[1:], dtype=a.dtype)
                b[: self.pos] = a[: self.pos]
                self.out[key] = b

    def _finish(self):
        n, out, path = self.pos, self.out, self.path
        if self.rows == 0:
            raise UserError("sensor log: no data rows after the header", path=path)
        ignored = {
            v: int(c)
            for v, c in zip(self.distinct["label"].values, self.ignored, strict=True)
            if c
        }
        if n == 0:
            raise UserError(
                "sensor log: every row has an ignored or empty label (%s)"
                % ", ".join("%r" % v for v in ignored),
                path=path,
            )
        res = {key: (None if a is None else a[:n]) for key, a in out.items()}
        if "subject" not in res:
            res["subject"] = np.full(n, DEFAULT_SUBJECT, dtype=object)
        if "recording" not in res:
            res["recording"] = res["subject"]
        res["breaks"] = np.concatenate(self.breaks) if self.breaks else None
        res["splits"] = {
            "rows": self.rows,
            "ignored": ignored,
            "gap_ms": self.gap_ms,
            "gap_splits": self.gap_splits,
            "ignore_splits": self.drop_splits,
        }
        res.update(meta=self.meta, channels=self.channels, rate=self.rate)
        return res


class _LineOf:
    """File line of row i of a block parsed by NumPy (blank lines are no rows)."""

    def __init__(self, lines, first):
        self.lines, self.first, self.at = lines, first, None

    def __call__(self, i):
        if self.at is None:
            self.at = [self.first + j for j, s in enumerate(self.lines) if s.strip()]
        return self.at[i]


def _names(channels, label_col, subject_col, recording_col, time_col):
    return {
        "channels": None if channels is None else list(channels),
        "label": label_col,
        "subject": subject_col,
        "recording": recording_col,
        "time": time_col,
    }


def _rate(meta, rate_hz, path):
    """The sample rate: `rate_hz` if given, else the comment line's, else None."""
    if rate_hz is None and meta.get("rate_hz"):
        try:
            rate_hz = float(meta["rate_hz"])
        except ValueError:
            raise UserError(
                "sensor log: rate_hz must be a number, found %r" % meta["rate_hz"],
                path=path,
                row=1,
            ) from None
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise UserError("sensor log: rate_hz must be positive, found %r" % rate_hz, path=path)
    return None if rate_hz is None else float(rate_hz)


def read_sensor_table(
    path,
    channels=None,
    label_col="label",
    subject_col="subject",
    recording_col="recording",
    time_col="t_ms",
    ignore_labels=(),
    rate_hz=None,
):
    """Read a sensor log (.csv or .csv.gz) -> SensorTable of finite float channel values.

    `channels`: column names to use (default: every numeric column that is not the label,
    subject, recording or time column; numeric = a number among its first 100 cells). Rows
    labelled with one of `ignore_labels`, or with an empty label, are left out.
    """
    names = _names(channels, label_col, subject_col, recording_col, time_col)
    r = _Reader(path, names, ignore_labels, rate_hz)
    r.open()
    res = r.read(lambda meta, channels: (np.float64, lambda v, line_of: v), keep_lines=True)
    return SensorTable(
        r.path,
        res["meta"],
        res["channels"],
        res["values"],
        res["label"],
        res["subject"],
        res["recording"],
        res["t_ms"],
        res["lines"],
        res["breaks"],
        res["splits"],
    )


def read_sensor_log(
    path,
    channels=None,
    label_col="label",
    subject_col="subject",
    recording_col="recording",
    time_col="t_ms",
    full_scale=None,
    rate_hz=None,
    ignore_labels=(),
    progress=None,
    default_rate_hz=None,
):
    """Read a sensor log (.csv or .csv.gz) -> SensorLog in int16 counts.

    `channels`: column names to use (default: every numeric column that is not the label,
    subject, recording or time column). `full_scale`: channel -> physical full scale (a number,
    (number, unit) or '8g'); the listed channels hold physical values and are converted to
    counts, the others must hold integer counts. It overrides the file's declaration.
    `rate_hz` overrides the file's rate. Rows labelled with one of `ignore_labels`, or with an
    empty label, are left out; each recording is split where rows were left out and, when the
    rate is known, where `t_ms` jumps by more than 1.5 sample periods (`SensorLog.breaks`,
    counted in `SensorLog.splits`); `t_ms` going back inside a recording is refused.
    `progress(lines_read, lines_total)` is called after each block of 256 kB.
    `default_rate_hz`: the rate when neither `rate_hz` nor the file gives one (a model's).
    """
    names = _names(channels, label_col, subject_col, recording_col, time_col)
    r = _Reader(path, names, ignore_labels, rate_hz, progress, default_rate_hz)
    r.open()
    scales = {}

    def converter(meta, channels):
        physical, info = _scales(meta, channels, full_scale, r.path)
        scales.update(info)
        fs = [physical[ch][0] if ch in physical else None for ch in channels]
        return np.int32, lambda v, line_of: _counts_of(v, fs, channels, r.path, line_of)

    res = r.read(converter)
    return SensorLog(
        channels=res["channels"],
        counts=res["values"],
        labels=res["label"],
        subjects=res["subject"],
        recordings=res["recording"],
        rate_hz=res["rate"],
        full_scale=scales or None,
        meta=_other_meta(res["meta"]),
        t_ms=res["t_ms"],
        path=r.path,
        breaks=res["breaks"],
        splits=res["splits"],
    )


def _other_meta(meta):
    return {k: v for k, v in meta.items() if k not in ("rate_hz", "full_scale", "values")}


def _scales(meta, channels, full_scale, path):
    """-> (channel -> (fs, unit) of the channels holding physical values, the full scale of
    every channel that has one). The caller's `full_scale` wins over the file's declaration."""
    declared = parse_full_scale(meta["full_scale"], path) if meta.get("full_scale") else {}
    if full_scale is not None:
        physical = _normalize_full_scale(full_scale, path)
        for ch in physical:
            if ch not in channels:
                raise UserError(
                    "sensor log: full scale given for unknown channel %r, expected one of %s"
                    % (ch, channels),
                    path=path,
                    column=ch,
                )
    elif meta.get("values", "counts") == "physical":
        physical = declared
        missing = [ch for ch in channels if ch not in physical]
        if missing:
            raise UserError(
                "sensor log: values=physical but no full scale for channel %r" % missing[0],
                path=path,
                row=1,
            )
    elif meta.get("values", "counts") == "counts":
        physical = {}
    else:
        raise UserError(
            "sensor log: values must be counts or physical, found %r" % meta["values"],
            path=path,
            row=1,
        )
    info = {ch: v for ch, v in declared.items() if ch in channels}
    info.update(physical)
    return physical, info


def _counts_of(values, full_scales, channels, path, line_of):
    """float (k, C) -> int32 counts: physical values at a full scale, or integer counts."""
    out = np.empty(values.shape, dtype=np.int32)
    for j, fs in enumerate(full_scales):
        v = values[:, j]
        if fs is not None:
            out[:, j] = to_counts(v, fs)
            continue
        bad = np.flatnonzero((v != np.floor(v)) | (v < COUNTS_MIN) | (v > COUNTS_MAX))
        if len(bad):
            k = int(bad[0])
            raise UserError(
                "sensor log: expected int16 counts (declare a full scale for physical values), "
                "found %r" % float(v[k]),
                path=path,
                row=line_of(k),
                column=channels[j],
            )
        out[:, j] = v
    return out


def log_from_table(t, full_scale=None, rate_hz=None):
    """SensorTable -> SensorLog in int16 counts (`full_scale`, `rate_hz`: as `read_sensor_log`)."""
    physical, info = _scales(t.meta, t.channels, full_scale, t.path)
    fs = [physical[ch][0] if ch in physical else None for ch in t.channels]
    counts = _counts_of(t.values, fs, t.channels, t.path, lambda i: int(t.lines[i]))
    return SensorLog(
        channels=t.channels,
        counts=counts,
        labels=t.labels,
        subjects=t.subjects,
        recordings=t.recordings,
        rate_hz=_rate(t.meta, rate_hz, t.path),
        full_scale=info or None,
        meta=_other_meta(t.meta),
        t_ms=t.t_ms,
        path=t.path,
        breaks=t.breaks,
        splits=t.splits,
    )


def check_classes(labels, path=None):
    """Raise UserError unless `labels` holds at least two classes (a classifier needs two)."""
    classes = sort_labels(set(np.asarray(labels).tolist()))
    if len(classes) < 2:
        raise UserError(
            "sensor log: expected at least 2 classes, found %d %s" % (len(classes), classes),
            path=path,
        )
    return classes


def to_counts(values, full_scale):
    """Physical values -> int16 counts: round half away of value / fs * 32768, clipped."""
    x = np.asarray(values, dtype=np.float64) / float(full_scale) * COUNTS_FULL
    q = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.clip(q, COUNTS_MIN, COUNTS_MAX).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# writing


def write_sensor_log(path, log):
    """Write `log` as a sensor log (.csv, or gzip for .csv.gz) atomically (temp file + replace).

    Writes the comment line (sensor meta, rate_hz, values=counts, full_scale), the header
    `channels..., label, subject, recording[, t_ms]` and one row of integer counts per sample.
    """
    path = str(path)
    n, c = np.shape(log.counts)
    if c != len(log.channels):
        raise UserError(
            "sensor log: expected %d channel columns, found %d" % (len(log.channels), c), path=path
        )
    for name, arr in (("labels", log.labels), ("subjects", log.subjects)):
        if len(arr) != n:
            raise UserError(
                "sensor log: expected %d %s, found %d" % (n, name, len(arr)), path=path
            )
    counts = np.asarray(log.counts)
    if n and (counts.min() < COUNTS_MIN or counts.max() > COUNTS_MAX):
        raise UserError("sensor log: counts outside int16 range", path=path)
    meta = {}
    for key, value in (log.meta or {}).items():
        if isinstance(value, (str, int, float)) and key not in ("rate_hz", "values", "full_scale"):
            meta[key] = str(value)
    if log.rate_hz is not None:
        meta["rate_hz"] = _format_number(log.rate_hz)
    meta["values"] = "counts"
    if log.full_scale:
        meta["full_scale"] = format_full_scale(log.full_scale)
    for key, value in meta.items():
        if not value or any(ch.isspace() for ch in value) or any(ch.isspace() for ch in key):
            raise UserError(
                "sensor log: meta %s=%r must be non-empty without spaces" % (key, value)
            )

    header = list(log.channels) + ["label", "subject", "recording"]
    columns = [counts[:, j].tolist() for j in range(c)]
    columns += [np.asarray(log.labels).tolist(), np.asarray(log.subjects).tolist()]
    columns.append(np.asarray(log.recordings).tolist())
    if log.t_ms is not None:
        header.append("t_ms")
        columns.append(np.asarray(log.t_ms, dtype=np.int64).tolist())

    with outputs.replacing(path) as tmp:
        if str(path).endswith(".gz"):
            f = gzip.open(tmp, "wt", newline="", encoding="utf-8")
        else:
            f = open(tmp, "w", newline="", encoding="utf-8")
        with f:
            f.write("# " + " ".join("%s=%s" % kv for kv in meta.items()) + "\n")
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(zip(*columns, strict=True))
