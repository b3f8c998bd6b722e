"""`microprop record PORT --label L --seconds S --out log.csv`: labelled sensor data from a board.

Runs on: host.

Asks the app for `info` (its mode, sensor and rate), sends `mode record`, keeps the
`sample t=<ms> <ch>=<int> ...` lines for S seconds from the first sample, then sends the
previous mode back (`mode predict` when the app did not say). The samples are written in the
sensor-log CSV format the trainer reads (`host/sensorlog.py`): a `# sensor=... rate_hz=...`
line (the rate from `info`, else from the spacing of t), then the channels, `label`, `subject`,
`recording` and `t_ms` columns.

- The file is never half-written: the rows go to a temporary file beside the target, which then
  replaces it. An existing file is refused unless `--append` is given; with `--append` the rows
  are added below the existing ones (its header decides the column order).
- Ctrl-C keeps nothing: the board is put back in its previous mode, the target file is left as
  it was, and the command ends with status 130. A recording of the wrong length under the right
  label is worse than none; run the command again.
- Each run is its own recording (default `<label>-<YYYYmmdd-HHMMSS>`), so that training windows
  never span two sessions; after a board restart (t starts again) it goes on as `<recording>.2`.
- Stderr reports samples per second and the lines dropped: gaps in t (samples the board printed
  but the host lost, or the board skipped) and unparsable lines.

A port lost mid-recording is reopened and `mode record` sent again; so is a board that stops
sending samples for 2 s (a reset puts the app back in its default mode).
"""

import argparse
import csv
import gzip
import io
import os
import statistics
import time

import numpy as np

from microprop.host import outputs
from microprop.host.errors import UserError
from microprop.host.sensorlog import (
    DEFAULT_SUBJECT,
    SensorLog,
    parse_full_scale,
    parse_meta_line,
    write_sensor_log,
)

from . import protocol
from .serialport import (
    BAUDRATE,
    LineReader,
    add_port_argument,
    open_port,
    positive_seconds,
    status,
)

_INFO_WAIT = 1.0  # seconds to wait for the answer to `info`
_SILENCE = 2.0  # seconds without samples before `mode record` is sent again


def add_arguments(parser):
    """Options of `microprop record`."""
    add_port_argument(parser)
    parser.add_argument("--label", required=True, type=_field, help="class of what is recorded")
    parser.add_argument(
        "--seconds", required=True, type=positive_seconds, help="how long to record"
    )
    parser.add_argument("--out", required=True, metavar="LOG.csv", help="sensor-log CSV file")
    parser.add_argument(
        "--subject", default=DEFAULT_SUBJECT, type=_field, help="who or what (default: 0)"
    )
    parser.add_argument(
        "--recording", type=_field, help="recording id (default: <label>-<date>-<time>)"
    )
    parser.add_argument("--append", action="store_true", help="add to an existing log")
    parser.add_argument("--baud", type=int, default=BAUDRATE, help="baud rate (115200)")
    parser.add_argument(
        "--wait",
        type=positive_seconds,
        default=5.0,
        help="seconds to wait for the first sample (default: 5)",
    )


def _field(text):
    if not text.strip() or any(ch in text for ch in '\r\n,"') or not text.isprintable():
        raise argparse.ArgumentTypeError(
            "expected a non-empty name without commas, quotes or line breaks, found %r" % text
        )
    return text.strip()


def run(args):
    """Record, write the log, report; 0 on success, UserError when there is nothing to keep."""
    recording = args.recording or "%s-%s" % (args.label, time.strftime("%Y%m%d-%H%M%S"))
    existing = read_existing(args.out) if args.append and os.path.exists(args.out) else None
    if os.path.exists(args.out) and existing is None:
        raise UserError(
            "%s exists: pass --append to add to it, or choose another --out" % args.out
        )
    folder = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(folder):
        raise UserError("no folder %s for --out %s" % (folder, args.out))

    rec = Recorder(lambda: open_port(args.port, args.baud), args.seconds, args.wait)
    try:
        rec.run()
    except KeyboardInterrupt:
        rec.close()
        status("interrupted: nothing written, %s unchanged" % args.out)
        raise
    finally:
        rec.close()  # the previous mode back, once

    rate_hz = rec.rate_hz()
    n = len(rec.samples)
    if existing is not None:
        append_rows(args.out, existing, rec, args.label, args.subject, recording, rate_hz)
    else:
        log = SensorLog(
            channels=rec.channels,
            counts=np.array([s.values_list for s in rec.samples], dtype=np.int64),
            labels=np.full(n, args.label),
            subjects=np.full(n, args.subject),
            recordings=np.array(rec.recording_ids(recording)),
            rate_hz=rate_hz,
            full_scale=rec.full_scale(),
            meta={"sensor": rec.info["sensor"]} if _meta_ok(rec.info.get("sensor")) else {},
            t_ms=np.array([s.t_ms for s in rec.samples], dtype=np.int64),
        )
        write_sensor_log(args.out, log)
    gaps = rec.gaps()
    dropped = gaps + rec.unparsable
    status(
        "%d samples in %.1f s (%.1f samples/s, %s Hz), %d dropped (%d in gaps of t, "
        "%d unparsable lines)%s -> %s"
        % (
            n,
            rec.duration,
            n / rec.duration if rec.duration else 0.0,
            _format_rate(rate_hz),
            dropped,
            gaps,
            rec.unparsable,
            ", %d board restarts" % rec.restarts if rec.restarts else "",
            args.out,
        )
    )
    return 0


def _meta_ok(value):
    return bool(value) and not any(ch.isspace() for ch in value)


def _format_rate(rate):
    if rate is None:
        return "?"
    return "%d" % rate if float(rate).is_integer() else "%.2f" % rate


class _Row:
    __slots__ = ("t_ms", "values_list")

    def __init__(self, t_ms, values_list):
        self.t_ms = t_ms
        self.values_list = values_list


class Recorder:
    """Talks to the app: info, `mode record`, samples for `seconds`, previous mode back."""

    def __init__(self, opener, seconds, wait=5.0):
        self.reader = LineReader(opener, status=status, on_reconnect=self._ask_record)
        self.seconds = seconds
        self.wait = wait
        self.info = {}
        self.previous_mode = protocol.PREDICT
        self.channels = None
        self.samples = []
        self.unparsable = 0
        self.restarts = 0
        self.restart_at = []  # index of the first sample after each board restart
        self.duration = 0.0
        self.last_err = None

    def run(self):
        self._query_info()
        self._ask_record(self.reader)
        self._capture()

    def close(self):
        """Put the app back in its previous mode and let go of the port."""
        if self.reader.connected:
            line = protocol.command(protocol.CMD_MODE, self.previous_mode)
            self.reader.write(line)
            status("sent: " + line.strip())
        self.reader.close()

    def _ask_record(self, reader):
        reader.write(protocol.command(protocol.CMD_MODE, protocol.RECORD))

    def _query_info(self):
        self.reader.write(protocol.command(protocol.CMD_INFO))
        end = time.monotonic() + _INFO_WAIT
        while time.monotonic() < end:
            msg = protocol.parse_line(self.reader.readline(end - time.monotonic()) or "")
            if isinstance(msg, protocol.Info):
                self.info.update(msg.fields)
                if "rate_hz" in self.info or "sensor" in self.info:
                    end = min(end, time.monotonic() + 0.1)  # the rest of the answer, if any
        mode = self.info.get("mode")
        if mode in protocol.MODES and mode != protocol.RECORD:
            self.previous_mode = mode

    def _capture(self):
        start = None  # host time of the first sample
        last = time.monotonic()  # host time of the last sample (or of asking for them)
        while True:
            now = time.monotonic()
            if start is not None and now - start >= self.seconds:
                break
            if start is None and now - last > self.wait:
                raise UserError(
                    "no sample lines from the board in %g s: is the microprop app running "
                    "on it?%s"
                    % (self.wait, " (it said: err %s)" % self.last_err if self.last_err else "")
                )
            if start is not None and now - last > _SILENCE:
                status("no samples for %g s, asking for them again" % _SILENCE)
                self._ask_record(self.reader)
                last = now
            line = self.reader.readline(0.1)
            if line is None:
                continue
            msg = protocol.parse_line(line)
            if isinstance(msg, protocol.Sample) and self.take(msg):
                if start is None:
                    start = time.monotonic()
                    status(
                        "recording %d channels: %s" % (len(self.channels), ",".join(self.channels))
                    )
                last = time.monotonic()
            elif isinstance(msg, protocol.Err):
                self.last_err = "%s %s" % (msg.code, msg.message)
                status("board: err %s" % self.last_err)
            elif msg is None and line.strip() and start is not None:
                self.unparsable += 1
        self.duration = time.monotonic() - start

    def take(self, sample):
        names = list(sample.values)
        if self.channels is None:
            self.channels = names
        elif names != self.channels:
            self.unparsable += 1
            return False
        if self.samples and sample.t_ms < self.samples[-1].t_ms:
            self.restarts += 1
            self.restart_at.append(len(self.samples))
            status("the board restarted (t went back), recording on")
        self.samples.append(_Row(sample.t_ms, list(sample.values.values())))
        return True

    def recording_ids(self, recording):
        """Recording id per sample: `recording`, then `recording.2`, ... after each board
        restart (t starts again there, and a recording's t may not go back)."""
        ids = [recording] * len(self.samples)
        for k, i in enumerate(self.restart_at):
            ids[i:] = ["%s.%d" % (recording, k + 2)] * (len(ids) - i)
        return ids

    def spacing_ms(self):
        """Milliseconds between samples: from the app's rate, else the median step of t."""
        rate = _number(self.info.get("rate_hz"))
        if rate:
            return 1000.0 / rate
        steps = [b.t_ms - a.t_ms for a, b in zip(self.samples, self.samples[1:], strict=False)]
        steps = [d for d in steps if d > 0]
        return float(statistics.median(steps)) if steps else None

    def rate_hz(self):
        rate = _number(self.info.get("rate_hz"))
        if rate:
            return rate
        spacing = self.spacing_ms()
        if not spacing:
            return None
        return round(1000.0 / spacing, 2)

    def gaps(self):
        """Samples missing from t: each step of t longer than 1.5 spacings counts as lost."""
        spacing = self.spacing_ms()
        if not spacing:
            return 0
        lost = 0
        for a, b in zip(self.samples, self.samples[1:], strict=False):
            step = b.t_ms - a.t_ms
            if step > 1.5 * spacing:
                lost += round(step / spacing) - 1
        return lost

    def full_scale(self):
        text = self.info.get("full_scale")
        if not text:
            return None
        try:
            scale = parse_full_scale(text)
        except UserError:
            return None
        return {ch: v for ch, v in scale.items() if ch in (self.channels or [])} or None


def _number(text):
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and v < 1e6 else None


# -- appending -------------------------------------------------------------------------------


def _open_text(path, mode, gz=None):
    if path.endswith(".gz") if gz is None else gz:
        return gzip.open(path, mode + "t", newline="", encoding="utf-8")
    return open(path, mode, newline="", encoding="utf-8")


def read_existing(path):
    """(text, meta, header) of an existing sensor log, for --append."""
    try:
        with _open_text(path, "r") as f:
            text = f.read()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError("cannot read %s to append to it: %s" % (path, e)) from None
    meta, body = {}, text
    if text.lstrip().startswith("#"):
        first, _, body = text.lstrip().partition("\n")
        try:
            meta = parse_meta_line(first.strip(), path)
        except UserError as e:
            raise UserError(str(e)) from None
    header = next((row for row in csv.reader(io.StringIO(body)) if row), None)
    if not header or "label" not in [h.strip() for h in header]:
        raise UserError("%s is not a sensor log (no header with a label column)" % path)
    return text, meta, [h.strip() for h in header]


def append_rows(path, existing, rec, label, subject, recording, rate_hz):
    text, meta, header = existing
    missing = [ch for ch in rec.channels if ch not in header]
    if missing:
        raise UserError(
            "%s has no column for channel %s (its columns: %s): record into another --out"
            % (path, ",".join(missing), ",".join(header))
        )
    old_rate = _number(meta.get("rate_hz"))
    if old_rate and rate_hz and abs(old_rate - rate_hz) > 0.01 * old_rate:
        status(
            "warning: %s says rate_hz=%g, this recording is at %g Hz" % (path, old_rate, rate_hz)
        )
    if "recording" not in header:
        status("warning: %s has no recording column; the rows join its last recording" % path)
    index = {ch: i for i, ch in enumerate(rec.channels)}
    fixed = {"label": label, "subject": subject, "recording": recording}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for s, recording_id in zip(rec.samples, rec.recording_ids(recording), strict=True):
        fixed["recording"] = recording_id
        row = []
        for h in header:
            if h in index:
                row.append(s.values_list[index[h]])
            elif h == "t_ms":
                row.append(s.t_ms)
            else:
                row.append(fixed.get(h, ""))
        w.writerow(row)
    if text and not text.endswith("\n"):
        text += "\n"
    _replace(path, text + buf.getvalue())


def _replace(path, text):
    """Write `text` to a temporary file beside `path`, then put it in place of `path`."""
    with outputs.replacing(path) as tmp, _open_text(tmp, "w", gz=path.endswith(".gz")) as f:
        f.write(text)
