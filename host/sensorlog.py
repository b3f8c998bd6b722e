"""Sensor logs: CSV files of int16 sensor counts, one row per sample.

Runs on: host.

Format (written by `microprop record` and `write_sensor_log`, read by the trainer)::

    # sensor=mpu6050 rate_hz=50 values=counts full_scale=ax:8g,ay:8g,az:8g,gx:2000dps
    ax,ay,az,gx,label,subject,recording,t_ms
    4101,-12,230,-5,walking,anna,anna-1,0
    ...

- The optional first line starts with `#` and holds space-separated `key=value` pairs (no
  spaces inside a value). Known keys: `sensor` (free text), `rate_hz` (samples per second),
  `values` (`counts`, the default, or `physical`) and `full_scale`, a comma-separated list of
  `channel:<number><unit>` (for example `ax:8g`, `gx:2000dps`; the unit may be empty): the
  physical value that 32768 counts stand for. Other keys are kept in `SensorLog.meta`.
- The header row names the columns: channel columns, `label`, and optionally `subject`,
  `recording` and `t_ms`. Other columns are ignored unless named as channels.
- With `values=counts` each channel cell is an integer count in [-32768, 32767]. With
  `values=physical` (or when the caller passes `full_scale`) cells are physical values, turned
  into the counts a board would read at that full scale::

      counts = clip(round_half_away(value / full_scale * 32768), -32768, 32767)

  so +/-8 g gives 4096 counts per g, as an MPU6050 reports at that setting.
- Recordings: the `recording` column when present; otherwise one recording per subject (and
  the whole file is one recording when `subject` is absent too). Missing subjects read as "0".
  Windows are cut inside contiguous runs of one recording (see `host/features.py`).

Every data error is a `DataError` naming the file and, where it applies, the row (the 1-based
line number in the file) and the column.
"""

import csv
import gzip
import io
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataError

COUNTS_MIN = -32768
COUNTS_MAX = 32767
COUNTS_FULL = 32768
DEFAULT_SUBJECT = "0"

_NUMBER_UNIT = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)([A-Za-z/%_^*]*)$")


@dataclass
class SensorLog:
    """A sensor log in int16 counts: one row per sample, C channels."""

    channels: list  # channel names, length C
    counts: np.ndarray  # int64 (n, C), values in [-32768, 32767]
    labels: np.ndarray  # str (n,)
    subjects: np.ndarray  # str (n,)
    recordings: np.ndarray  # str (n,), recording id per sample
    rate_hz: float | None = None
    full_scale: dict | None = None  # channel -> (value, unit): what 32768 counts stand for
    meta: dict = field(default_factory=dict)  # other key=value pairs of the comment line
    t_ms: np.ndarray | None = None  # int64 (n,) when the file has a t_ms column
    path: str | None = None  # the file it was read from, for error messages

    def __len__(self):
        return len(self.counts)

    @property
    def classes(self):
        """Sorted distinct labels."""
        return sorted(set(self.labels.tolist()))


# ---------------------------------------------------------------------------------------------
# the comment line


def parse_full_scale(text, path=None):
    """'ax:8g,gx:2000dps' -> {'ax': (8.0, 'g'), 'gx': (2000.0, 'dps')}."""
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition(":")
        m = _NUMBER_UNIT.match(value.strip())
        if not sep or not name.strip() or not m:
            raise DataError(
                "sensor log: bad full_scale item %r, expected channel:<number><unit>" % item,
                path,
                1,
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
        raise DataError(
            "sensor log: full scale of %r must be a positive number, found %r" % (channel, value),
            path,
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


def parse_meta_line(line, path=None):
    """'# key=value key=value' -> dict of strings."""
    meta = {}
    for item in line.lstrip("#").split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise DataError("sensor log: bad comment item %r, expected key=value" % item, path, 1)
        meta[key] = value
    return meta


# ---------------------------------------------------------------------------------------------
# reading


def _open_text(path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass
class SensorTable:
    """A sensor log's cells before conversion to counts (channel values as float64)."""

    path: str
    meta: dict  # the comment line's key=value pairs, as strings
    channels: list
    values: np.ndarray  # float64 (n, C), finite
    labels: np.ndarray  # str (n,)
    subjects: np.ndarray  # str (n,)
    recordings: np.ndarray  # str (n,)
    t_ms: np.ndarray | None
    text: str = field(repr=False, default="")  # the file's text, to locate bad rows


def read_sensor_table(
    path,
    channels=None,
    label_col="label",
    subject_col="subject",
    recording_col="recording",
    time_col="t_ms",
):
    """Read a sensor log (.csv or .csv.gz) -> SensorTable of finite float channel values.

    `channels`: column names to use (default: every numeric column that is not the label,
    subject, recording or time column; numeric = a number among its first 100 cells).
    """
    path = str(path)
    if not os.path.exists(path):
        raise DataError("sensor log: file not found", path)
    try:
        with _open_text(path) as f:
            text = f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError("sensor log: cannot read file (%s)" % e, path) from None
    if not text.strip():
        raise DataError("sensor log: empty file", path)

    meta, body, offset = {}, text, 0
    if text.lstrip().startswith("#"):
        end = text.find("\n")
        end = len(text) if end < 0 else end + 1
        meta, body, offset = parse_meta_line(text[:end].strip(), path), text[end:], 1
    reader = csv.reader(io.StringIO(body))
    first = next(reader, None)
    while first is not None and not any(c.strip() for c in first):
        first = next(reader, None)
    if first is None:
        raise DataError("sensor log: no header row", path)
    header_line = reader.line_num + offset
    header = [c.strip() for c in first]
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError("sensor log: duplicate column %r in header" % dup, path, header_line)
    rows = [r for r in reader if r]
    if not rows:
        raise DataError("sensor log: no data rows after the header", path)
    _check_row_lengths(rows, header, path, text)

    col = {name: i for i, name in enumerate(header)}
    if label_col not in col:
        raise DataError(
            "sensor log: missing label column %r, found columns %s" % (label_col, header),
            path,
            header_line,
        )
    reserved = {label_col, subject_col, recording_col, time_col}
    if channels is None:
        sample = rows[:100]
        channels = [
            h for h in header if h not in reserved and any(_is_number(r[col[h]]) for r in sample)
        ]
        if not channels:
            raise DataError("sensor log: no numeric channel columns", path, header_line)
    else:
        channels = list(channels)
        for ch in channels:
            if ch not in col:
                raise DataError(
                    "sensor log: unknown channel %r, expected one of %s"
                    % (ch, [h for h in header if h not in reserved]),
                    path,
                    column=ch,
                )

    def strings(name):
        i = col[name]
        return np.array([r[i].strip() for r in rows])

    values = _parse_numbers(rows, [col[ch] for ch in channels], channels, path, text)
    n = len(rows)
    labels = strings(label_col)
    empty = np.flatnonzero(labels == "")
    if len(empty):
        raise DataError(
            "sensor log: empty label", path, _data_line(text, int(empty[0])), label_col
        )
    if subject_col in col:
        subjects = strings(subject_col)
    else:
        subjects = np.full(n, DEFAULT_SUBJECT)
    if recording_col in col:
        recordings = strings(recording_col)
    else:
        recordings = subjects.copy()
    t_ms = None
    if time_col in col:
        t_ms = _check_integers(
            _parse_numbers(rows, [col[time_col]], [time_col], path, text)[:, 0],
            time_col,
            path,
            text,
            lo=-(2**53),
            hi=2**53,
        )
    return SensorTable(path, meta, channels, values, labels, subjects, recordings, t_ms, text)


def read_sensor_log(
    path,
    channels=None,
    label_col="label",
    subject_col="subject",
    recording_col="recording",
    time_col="t_ms",
    full_scale=None,
    rate_hz=None,
):
    """Read a sensor log (.csv or .csv.gz) -> SensorLog in int16 counts.

    `channels`: column names to use (default: every numeric column that is not the label,
    subject, recording or time column). `full_scale`: channel -> physical full scale (a number,
    (number, unit) or '8g'); the listed channels hold physical values and are converted to
    counts, the others must hold integer counts. It overrides the file's declaration.
    `rate_hz` overrides the file's rate.
    """
    t = read_sensor_table(path, channels, label_col, subject_col, recording_col, time_col)
    return log_from_table(t, full_scale, rate_hz)


def log_from_table(t, full_scale=None, rate_hz=None):
    """SensorTable -> SensorLog in int16 counts (`full_scale`, `rate_hz`: as `read_sensor_log`)."""
    path, meta, channels = t.path, t.meta, t.channels

    # Full scale: the caller's declaration wins over the file's.
    declared = parse_full_scale(meta["full_scale"], path) if meta.get("full_scale") else {}
    if full_scale is not None:
        physical = _normalize_full_scale(full_scale, path)
        for ch in physical:
            if ch not in channels:
                raise DataError(
                    "sensor log: full scale given for unknown channel %r, expected one of %s"
                    % (ch, channels),
                    path,
                    column=ch,
                )
    elif meta.get("values", "counts") == "physical":
        physical = declared
        missing = [ch for ch in channels if ch not in physical]
        if missing:
            raise DataError(
                "sensor log: values=physical but no full scale for channel %r" % missing[0],
                path,
                1,
            )
    elif meta.get("values", "counts") == "counts":
        physical = {}
    else:
        raise DataError(
            "sensor log: values must be counts or physical, found %r" % meta["values"], path, 1
        )
    scale_info = {ch: v for ch, v in declared.items() if ch in channels}
    scale_info.update(physical)

    counts = np.empty(t.values.shape, dtype=np.int64)
    for j, ch in enumerate(channels):
        if ch in physical:
            counts[:, j] = to_counts(t.values[:, j], physical[ch][0])
        else:
            counts[:, j] = _check_integers(t.values[:, j], ch, path, t.text)

    if rate_hz is None and meta.get("rate_hz"):
        try:
            rate_hz = float(meta["rate_hz"])
        except ValueError:
            raise DataError(
                "sensor log: rate_hz must be a number, found %r" % meta["rate_hz"], path, 1
            ) from None
    if rate_hz is not None and not (math.isfinite(rate_hz) and rate_hz > 0):
        raise DataError("sensor log: rate_hz must be positive, found %r" % rate_hz, path)
    meta = {k: v for k, v in meta.items() if k not in ("rate_hz", "full_scale", "values")}
    return SensorLog(
        channels=channels,
        counts=counts,
        labels=t.labels,
        subjects=t.subjects,
        recordings=t.recordings,
        rate_hz=None if rate_hz is None else float(rate_hz),
        full_scale=scale_info or None,
        meta=meta,
        t_ms=t.t_ms,
        path=path,
    )


def _data_line(text, k):
    """1-based file line number of data row k (0-based; blank lines are not rows)."""
    offset = 0
    if text.lstrip().startswith("#"):
        end = text.find("\n")
        text, offset = text[end + 1 :], 1
    reader = csv.reader(io.StringIO(text))
    seen = -2  # the header row is the first non-blank row
    for r in reader:
        if r and (seen >= -1 or any(c.strip() for c in r)):
            seen += 1
            if seen == k:
                return reader.line_num + offset
    return None


def _check_row_lengths(rows, header, path, text):
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad = np.flatnonzero(lengths != len(header))
    if len(bad):
        k = int(bad[0])
        raise DataError(
            "sensor log: expected %d cells, found %d" % (len(header), lengths[k]),
            path,
            _data_line(text, k),
        )


def _parse_numbers(rows, idx, names, path, text):
    """Columns `idx` of the rows of string cells -> float64 (n, len(idx)); finite numbers only."""
    out = np.empty((len(rows), len(idx)), dtype=np.float64)
    for j, (i, name) in enumerate(zip(idx, names, strict=True)):
        column = [r[i] for r in rows]
        try:
            out[:, j] = np.array(column, dtype=np.float64)
        except ValueError:
            for k, cell in enumerate(column):
                if not _is_number(cell):
                    raise DataError(
                        "sensor log: expected a number, found %r" % str(cell),
                        path,
                        _data_line(text, k),
                        name,
                    ) from None
        bad = np.flatnonzero(~np.isfinite(out[:, j]))
        if len(bad):
            k = int(bad[0])
            raise DataError(
                "sensor log: expected a finite number, found %r" % str(column[k]),
                path,
                _data_line(text, k),
                name,
            )
    return out


def _check_integers(v, name, path, text, lo=COUNTS_MIN, hi=COUNTS_MAX):
    """Float column that must hold integers in [lo, hi] (default: int16 counts) -> int64."""
    bad = np.flatnonzero((v != np.floor(v)) | (v < lo) | (v > hi))
    if len(bad):
        k = int(bad[0])
        what = "int16 counts (declare a full scale for physical values)"
        if (lo, hi) != (COUNTS_MIN, COUNTS_MAX):
            what = "integers in [%d, %d]" % (lo, hi)
        raise DataError(
            "sensor log: expected %s, found %r" % (what, float(v[k])),
            path,
            _data_line(text, k),
            name,
        )
    return v.astype(np.int64)


def to_counts(values, full_scale):
    """Physical values -> int16 counts: round half away of value / fs * 32768, clipped."""
    x = np.asarray(values, dtype=np.float64) / float(full_scale) * COUNTS_FULL
    q = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.clip(q, COUNTS_MIN, COUNTS_MAX).astype(np.int64)


def check_classes(labels, path=None):
    """Raise DataError unless `labels` holds at least two classes (a classifier needs two)."""
    classes = sorted(set(np.asarray(labels).tolist()))
    if len(classes) < 2:
        raise DataError(
            "sensor log: expected at least 2 classes, found %d %s" % (len(classes), classes),
            path,
        )
    return classes


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
        raise DataError(
            "sensor log: expected %d channel columns, found %d" % (len(log.channels), c), path
        )
    for name, arr in (("labels", log.labels), ("subjects", log.subjects)):
        if len(arr) != n:
            raise DataError("sensor log: expected %d %s, found %d" % (n, name, len(arr)), path)
    counts = np.asarray(log.counts)
    if n and (counts.min() < COUNTS_MIN or counts.max() > COUNTS_MAX):
        raise DataError("sensor log: counts outside int16 range", path)
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
            raise DataError(
                "sensor log: meta %s=%r must be non-empty without spaces" % (key, value)
            )

    header = list(log.channels) + ["label", "subject", "recording"]
    columns = [counts[:, j].tolist() for j in range(c)]
    columns += [np.asarray(log.labels).tolist(), np.asarray(log.subjects).tolist()]
    columns.append(np.asarray(log.recordings).tolist())
    if log.t_ms is not None:
        header.append("t_ms")
        columns.append(np.asarray(log.t_ms, dtype=np.int64).tolist())

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + Path(path).name + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        if path.endswith(".gz"):
            f = gzip.open(tmp, "wt", newline="", encoding="utf-8")
        else:
            f = open(tmp, "w", newline="", encoding="utf-8")
        with f:
            f.write("# " + " ".join("%s=%s" % kv for kv in meta.items()) + "\n")
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(zip(*columns, strict=True))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
