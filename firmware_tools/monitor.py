"""`microprop monitor PORT`: a live view of the board app's lines, and a CSV log of predictions.

Runs on: host.

Device data goes to stdout, so it pipes; status goes to stderr prefixed `--- `, as in pyserial's
miniterm. A `pred` line shows as the class, a score bar, the score, the board's inference time
and the prediction rate; other lines (info, err, train, anything else) pass through as they are,
and `--raw` passes every line through. Lines typed on stdin go to the board (`mode record`,
`label walking`, `info`) when stdin is a terminal or a pipe; `--send` sends lines at the start
and again after each reconnect.

`--log out.csv` appends one row per prediction, flushed per row, with a header when the file is
new: `host_time,t_ms,class,score,us,<class>...` (host_time: Unix time in seconds, 3 decimals;
one column per class score, in the board's order on the first prediction).

The monitor survives an unplugged cable and board resets: it reopens the port with a backoff
(`--- port lost, reconnecting` / `--- reconnected`) and carries on, log file included. It ends
on Ctrl-C (status 0), or after `--seconds N`.
"""

import csv
import os
import queue
import stat
import sys
import threading
import time
from collections import deque

from microprop.host.errors import UserError

from . import protocol
from .serialport import (
    BAUDRATE,
    LineReader,
    add_port_argument,
    open_port,
    positive_seconds,
    status,
)

_BAR = 20  # characters of the score bar
_RATE_WINDOW = 3.0  # seconds of predictions the rate is measured over
_LOG_COLUMNS = ["host_time", "t_ms", "class", "score", "us"]


def add_arguments(parser):
    """Options of `microprop monitor`."""
    add_port_argument(parser)
    parser.add_argument("--baud", type=int, default=BAUDRATE, help="baud rate (115200)")
    parser.add_argument("--log", metavar="OUT.csv", help="append every prediction to this CSV")
    parser.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="LINE",
        help="send this line at the start and after each reconnect, e.g. 'mode predict' "
        "(repeatable)",
    )
    parser.add_argument("--seconds", type=positive_seconds, help="stop after this many seconds")
    parser.add_argument("--raw", action="store_true", help="show every line as it comes")


def run(args):
    """Monitor until Ctrl-C or --seconds; 0 on a clean end, UserError if the port won't open."""
    for line in args.send:
        protocol.command(line)  # refuse a bad --send before opening anything
    log = PredictionLog(args.log) if args.log else None
    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(errors="replace")  # a terminal that cannot show U+FFFD gets '?'

    def send_start(reader):
        for line in args.send:
            _send(reader, line)

    try:
        reader = LineReader(
            lambda: open_port(args.port, args.baud), status=status, on_reconnect=send_start
        )
    except BaseException:
        if log:
            log.close()
        raise
    view = View(raw=args.raw)
    typed = _stdin_lines()
    logging = ", logging to %s" % args.log if log else ""
    status("monitor on %s%s; Ctrl-C to quit" % (reader.port.port, logging))
    send_start(reader)
    deadline = time.monotonic() + args.seconds if args.seconds else None
    preds = lines = 0
    try:
        while True:
            wait = 0.1
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    break
            line = reader.readline(wait)
            if line is not None:
                lines += 1
                msg = protocol.parse_line(line)
                if isinstance(msg, protocol.Pred):
                    preds += 1
                    if log:
                        log.write(msg, time.time())
                out.write(view.show(line, msg) + "\n")
                out.flush()
            while typed is not None and not typed.empty():
                _send(reader, typed.get_nowait())
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `microprop monitor | head`: the reader has gone
        _silence_stdout()
    finally:
        reader.close()
        if log:
            log.close()
    extra = ""
    if reader.reconnects:
        extra += ", %d reconnects" % reader.reconnects
    if reader.cut or reader.overlong:
        extra += ", %d lines dropped" % (reader.cut + reader.overlong)
    status("%d lines, %d predictions%s" % (lines, preds, extra))
    return 0


def _send(reader, line):
    line = line.strip()
    if not line:
        return
    try:
        data = protocol.command(line)
    except UserError:
        status("not sent (one line of ASCII only): %r" % line)
        return
    if reader.write(data):
        status("sent: %s" % line)
    else:
        status("not sent (port lost): %s" % line)


def _stdin_lines():
    """A queue of lines typed on stdin (a terminal or a pipe), read by a thread; else None."""
    try:
        fd = sys.stdin.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # no stdin, or pytest's stand-in
        return None
    if not (os.isatty(fd) or stat.S_ISFIFO(mode)):
        return None
    lines = queue.Queue()

    def pump():
        for line in sys.stdin:
            lines.put(line)

    threading.Thread(target=pump, name="monitor-stdin", daemon=True).start()
    return lines


def _silence_stdout():
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


class View:
    """How a line shows on stdout: predictions formatted, the rest as received."""

    def __init__(self, raw=False):
        self.raw = raw
        self.width = 0  # widest class name seen
        self.times = deque()  # host arrival times of recent predictions

    def show(self, line, msg):
        if self.raw or not isinstance(msg, protocol.Pred):
            return visible(line)
        now = time.monotonic()
        self.times.append(now)
        while now - self.times[0] > _RATE_WINDOW:
            self.times.popleft()
        span = self.times[-1] - self.times[0]
        rate = (len(self.times) - 1) / span if span > 0 else 0.0
        self.width = max([self.width, len(msg.class_name), *map(len, msg.scores)])
        filled = (msg.score * _BAR + 127) // 255
        return "t=%-9d %-*s [%s%s] %3d  %6d us  %5.1f/s" % (
            msg.t_ms,
            self.width,
            msg.class_name,
            "#" * filled,
            "." * (_BAR - filled),
            msg.score,
            msg.us,
            rate,
        )


def visible(line):
    """Control characters (but tab) as \\xNN, so that garbage cannot upset the terminal."""
    if all(" " <= ch or ch == "\t" for ch in line) and "\x7f" not in line:
        return line
    return "".join(
        ch if (" " <= ch and ch != "\x7f") or ch == "\t" else "\\x%02x" % ord(ch) for ch in line
    )


class PredictionLog:
    """Appends predictions to a CSV file, one flushed row each; the header once, when new."""

    def __init__(self, path):
        self.path = path
        self.classes = None
        self.ignored = set()
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f), [])
            if header[: len(_LOG_COLUMNS)] != _LOG_COLUMNS:
                raise UserError(
                    "log %s exists and is not a prediction log (its header is %s), "
                    "expected one starting %s: choose another --log"
                    % (path, ",".join(header[:6]), ",".join(_LOG_COLUMNS))
                )
            self.classes = header[len(_LOG_COLUMNS) :]
        self.file = open(path, "a", newline="", encoding="utf-8")
        self.csv = csv.writer(self.file, lineterminator="\n")

    def write(self, pred, host_time):
        if self.classes is None:
            self.classes = list(pred.scores)
            self.csv.writerow(_LOG_COLUMNS + self.classes)
        new = set(pred.scores) - set(self.classes) - self.ignored
        if new:
            self.ignored |= new
            status("log: class %s not in the log's header, not logged" % ",".join(sorted(new)))
        row = ["%.3f" % host_time, pred.t_ms, pred.class_name, pred.score, pred.us]
        row += [pred.scores.get(c, "") for c in self.classes]
        self.csv.writerow(row)
        self.file.flush()

    def close(self):
        self.file.close()
