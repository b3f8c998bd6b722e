"""`microprop teach PORT --classes walking,idle`: guided calibration on the board.

Runs on: host.

    microprop teach /dev/ttyACM0 --classes walking,idle,running --seconds 20
    microprop teach auto --classes walking,idle --seconds 5 --start now     (scripts, replays)
    microprop teach auto --classes walking,idle --find-mount      (the sensor mounted turned)

For each class in turn teach says what to do and waits for Enter (`--start now`: no wait),
then, for `--seconds` of the board's samples, answers every window the board predicts with
`label <class>`: the board takes one training step on its newest window and prints a `train`
line, which teach shows with the board's running accuracy. Only windows that lie wholly inside
the class's seconds are labelled, none across a change of activity. The seconds are counted in
the board's samples (the model's rate), not on the host's clock.

`--find-mount` first finds how the sensor is mounted (device/mount_app.py): teach sends `mount
search`, then runs one pass over the classes, the same seconds per class and the same
labelling rules, in which each `label` makes the board score its 24 axis-aligned orientations
on the window (`info mount_window=<n> best=<orientation>`) and learn nothing; then `mount pick`:
the board turns every sample by the best one from then on, and teach prints it with its sum of
the labelled classes' scores against the mount's before. The board's window restarts there (at
the sample the pick line names), so the next `pred` lines count from that sample. Then the
normal teaching pass, in the new mount; its `save` keeps the mount with the weights (a
checkpoint's mount overrides board.json's at the start).

Then teach sends `save` and prints, per class and overall, the accuracy before and after:
"before" is what the board predicted for each window it was told the class of (its `pred`
line, before the `label`). "After" depends on the sensor:

- a replay sensor (board.json "sensor": "replay"): teach pulls the saved weights back (as
  `microprop pull` does, with the board's own checkpoint code) and runs them on the host over
  the same windows of the same log, which it copied from the board at the start, with the
  board's integer pipeline (host/boardeval.py), with the samples turned by the checkpoint's
  mount as the board turns them: bit-exact with what the board would predict;
- a live sensor: the host never sees the samples, so teach runs a check pass, `--check-seconds`
  per class (default 5, the classes again, in order), in which the board predicts with its new
  weights and learns nothing, and reports those predictions. `--check-seconds` given with a
  replay runs the check pass too.

Steps: `mpremote exec` reads board.json (and for a replay `mpremote fs cp` copies the model and
the log); then teach soft-resets the board on its serial port, so that the app starts afresh
with its newest checkpoint (and a replay plays its log from the first row; with `--start now`
the first class starts at the app's first sample and each next class where the one before
ends); the session itself is the app's line protocol only. Each `pred` line is the next window
(windows start at samples 0, hop, 2 hop, ...); before `save` teach checks the app's `hops`
count against the lines it read, so a lost line fails the session instead of shifting windows.

Ctrl-C or any error: teach soft-resets the board, which reloads its newest checkpoint (the
weights of its last save), and says so. The board needs learning on ("learn" not "off") and
realtime sampling ("realtime": true): a `label` trains on the window the board holds when the
line arrives, which in realtime is the predicted one moved on by the serial line's latency,
a sample or two.
"""

import queue
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from microprop.device.config import check_config, token
from microprop.device.sensors import REPLAY_FILE, make_sensor
from microprop.firmware_tools import protocol
from microprop.firmware_tools.mpremote_run import PORT_HELP, board_errors, mpremote, resolve_port
from microprop.firmware_tools.pull import (
    apply_checkpoint,
    board_paths,
    learned_qmodel,
    parse_probe,
)
from microprop.firmware_tools.pull import probe_script as pull_probe_script
from microprop.firmware_tools.serialport import (
    LineReader,
    add_port_argument,
    open_port,
    positive_seconds,
)
from microprop.host.errors import UserError

ENTER, NOW = "enter", "now"
CHECK_SECONDS = 5.0  # the check pass per class on a live sensor
_TIMEOUT = 30.0
_BANNER_WAIT = 3.0  # s for the friendly REPL's banner after Ctrl-C, Ctrl-B
_HELP_LINE = 'Type "help()"'  # the friendly REPL's banner ends with this line
_ONLY_SAY = ("config", "sensor")  # err lines that do not stop teach: board.json, a bad read


def add_arguments(parser):
    """Options of `microprop teach`."""
    add_port_argument(parser, PORT_HELP)
    parser.add_argument(
        "--classes",
        required=True,
        metavar="NAME,...",
        help="the model's classes to teach, in this order, e.g. walking,idle",
    )
    parser.add_argument(
        "--seconds",
        type=positive_seconds,
        default=20.0,
        metavar="S",
        help="seconds of each class (the board's samples) (%(default)s)",
    )
    parser.add_argument(
        "--start",
        choices=[ENTER, NOW],
        default=ENTER,
        help="enter: wait for Enter before each class; now: no wait, each class right after "
        "the one before, the first at the app's start (scripts, replays) (enter)",
    )
    parser.add_argument(
        "--check-seconds",
        type=positive_seconds,
        metavar="S",
        help="seconds per class of the check pass after saving, in which the board predicts "
        "and learns nothing (default %g on a live sensor; on a replay only when given)"
        % CHECK_SECONDS,
    )
    parser.add_argument(
        "--find-mount",
        action="store_true",
        help="first find how the sensor is mounted: one pass over the classes (the same "
        "--seconds) in which the board scores its 24 axis-aligned orientations on each window "
        "and learns nothing, then turns every sample by the best (`mount search`, `mount pick`)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=_TIMEOUT,
        metavar="S",
        help="seconds per mpremote call and for the app's start (%(default)s)",
    )


def run(args):
    """`microprop teach`: 0, or UserError (one line); the board is reset on any error."""
    names = parse_classes(args.classes)
    with board_errors("teach"):
        teacher = Teacher(args, resolve_port(args.port), names)
        try:
            return teacher.teach()
        except BaseException as e:
            teacher.recover(e)
            raise


def parse_classes(text):
    """'walking,idle' -> ['walking', 'idle']; UserError for none or a name given twice."""
    names = [v.strip() for v in text.split(",")]
    if not text.strip() or not all(names):
        raise UserError("teach: --classes %r, expected class names separated by commas" % text)
    twice = [v for v in names if names.count(v) > 1]
    if twice:
        raise UserError("teach: --classes names %s twice" % twice[0])
    return names


@dataclass
class Window:
    """One window the board predicted during a class: its last sample (counted from the app's
    start), the class taught (index into the taught classes) and what the board said."""

    end: int
    taught: int
    said: str


class Teacher:
    """One teach session (see the module docstring)."""

    def __init__(self, args, port, names):
        self.args = args
        self.port = port
        self.names = names  # as given
        self.session = None  # the serial session with the app
        self.dirty = False  # the board may not be running its newest checkpoint's weights
        self.last_save = None  # (slot, seq, steps) of the board's newest checkpoint, if known
        self.replay_text = ""

    # -- the whole run -------------------------------------------------------------------------

    def teach(self):
        args = self.args
        self.dirty = True  # mpremote interrupts the app: from here on, recover resets it
        config, replay = self.probe()
        with tempfile.TemporaryDirectory(prefix="microprop-teach-") as tmp:
            tmp = Path(tmp)
            if replay:
                self.copy_replay(config, tmp)
                sensor = "replay sensor %s (copied for the after figures)" % self.data_path
            else:
                sensor = "sensor %s (a check pass gives the after figures)" % config["sensor"]
            print("--- board %s: %s, %s" % (self.port, self.model_path, sensor))
            self.session = Session(self.port, args.timeout)
            start = self.session.restart()
            self.dirty = False
            self.last_save = self.session.checkpoint
            self.setup(start.fields)
            print(
                "--- soft reset: the app starts with %s; learning: %s"
                % (describe_checkpoint(self.last_save), start.fields.get("trainer", "?"))
            )
            check = args.check_seconds
            if check is None and not replay:
                check = CHECK_SECONDS
            check_n = self.samples_of(check, "--check-seconds") if check else 0
            first = self.find_mount() if args.find_mount else 0
            taught = self.teach_classes(first)
            self.verify_count()
            saved = self.save(taught)
            self.dirty = False  # a picked mount is saved with the weights
            checked = self.check_pass(check, check_n) if check_n else None
            after = None
            if replay:
                self.session.close()
                self.dirty = True  # the pull stops the app
                after = self.pull_after(config, tmp, saved, taught, self.session.restarted)
                self.session = Session(self.port, args.timeout)
                start = self.session.restart()
                self.dirty = False
                print("--- soft reset: the app runs with %s" % describe_checkpoint(
                    checkpoint_of(start.fields)
                ))  # fmt: skip
            self.session.close()
        print(report(self.taught, taught, after, checked, self.replay_text))
        return 0

    def recover(self, e):
        """After Ctrl-C or an error: soft reset, so that the board reloads its newest
        checkpoint; say so (stdout, before the error's line on stderr)."""
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopped"
        sent = 0
        if self.session is not None:
            self.session.close()
            self.last_save, sent = self.session.checkpoint, self.session.unsaved
        if not self.dirty and not sent:  # it runs its newest checkpoint's weights
            print("--- %s: the board runs with %s" % (why, describe_checkpoint(self.last_save)))
            return
        if self.session is not None and not self.session.started and why == "stopped":
            return  # the app did not start after teach's own soft reset: a second is no better
        dropped = ""
        if sent:
            dropped = "; the %d labels sent since are dropped" % sent
        try:
            self.session = Session(self.port, self.args.timeout)
            start = self.session.restart()
        except (UserError, OSError) as err:
            print("--- %s: soft reset failed (%s): reset the board by hand" % (why, err))
            return
        finally:
            if self.session is not None:
                self.session.close()
        print(
            "--- %s: soft reset; the board reloaded its newest checkpoint and runs with %s%s"
            % (why, describe_checkpoint(checkpoint_of(start.fields)), dropped)
        )

    # -- before the session --------------------------------------------------------------------

    def probe(self):
        """board.json through mpremote -> (its settings, checked; is the sensor a replay)."""
        raw, _ = parse_probe(
            mpremote(
                self.port, ["exec", pull_probe_script()], "reading the board", self.args.timeout
            )
        )
        config, _ = check_config(raw)
        if config["learn"] == "off":
            raise UserError(
                'teach: the board does not learn (board.json "learn": "off"): set "learn" to '
                '"last", "bias" or "all"'
            )
        if not config["realtime"]:
            raise UserError(
                'teach: the board samples as fast as it can (board.json "realtime": false): a '
                "label would train on a window far past the one it predicted; deploy without "
                "--no-realtime"
            )
        self.model_path, self.slots, _ = board_paths(raw)
        return config, config["sensor"] == "replay"

    def copy_replay(self, config, tmp):
        """Copy the model file and the replay's log from the board into `tmp`."""
        path = config.get("file", REPLAY_FILE)
        self.data_path = path if path.startswith("/") else "/" + path
        self.local_model = tmp / "model.mpm"
        self.local_data = tmp / "data.csv"
        chain = ["fs", "cp", ":" + self.model_path, str(self.local_model)]
        chain += ["+", "fs", "cp", ":" + self.data_path, str(self.local_data)]
        mpremote(self.port, chain, "copying the model and %s" % self.data_path, self.args.timeout)

    def setup(self, fields):
        """Check the app's start line against the options; the classes, window and rate."""
        if fields.get("trainer", "none") == "none":
            raise UserError(
                "teach: the board's app has no trainer (see its `info learn=off reason=...` "
                "line, e.g. with microprop monitor)"
            )
        classes = [c for c in fields.get("classes", "").split(",") if c]
        self.classes = classes
        self.taught = []
        for name in self.names:
            k = class_index(name, classes)
            if k < 0:
                raise UserError(
                    "teach: unknown class %r, expected some of %s (the model's classes)"
                    % (name, ",".join(classes))
                )
            self.taught.append(classes[k])
        if len(set(self.taught)) != len(self.taught):
            raise UserError("teach: --classes names one of the model's classes twice")
        self.window = int(fields["window"])
        self.hop = int(fields["hop"])
        self.rate = float(fields["rate_hz"])
        self.session.hop, self.session.window = self.hop, self.window
        self.n = self.samples_of(self.args.seconds, "--seconds")
        self.smoothing = int(fields.get("smoothing", "1"))

    def samples_of(self, seconds, option):
        """Seconds -> samples at the board's rate; UserError unless a whole window fits in them
        wherever they start."""
        n = int(round(seconds * self.rate))
        need = self.window + self.hop - 1
        if n < need:
            raise UserError(
                "teach: %s %g holds no whole window: the model's windows are %g s, one every "
                "%g s; give %s %g or more"
                % (option, seconds, self.window / self.rate, self.hop / self.rate, option,
                   need / self.rate)
            )  # fmt: skip
        return n

    # -- the session ---------------------------------------------------------------------------

    def find_mount(self):
        """`mount search`, a pass over the classes whose labels only score, `mount pick` -> the
        sample where the pass ended (see the module docstring)."""
        s = self.session
        s.send(protocol.CMD_MOUNT, protocol.MOUNT_SEARCH)
        was = s.wait_info(protocol.MOUNT_SEARCH, protocol.CMD_MOUNT).fields[protocol.CMD_MOUNT]
        print(
            "--- mount search: the board scores its 24 orientations on each window and learns "
            "nothing; its mount now: %s" % was
        )
        _, first = self.label_classes(0, "mount search %d of %d: %s, for %g s", False)
        s.send(protocol.CMD_MOUNT, protocol.MOUNT_PICK)
        f = s.wait_info("restart", protocol.CMD_MOUNT).fields
        print(
            "--- mount: picked %s, sum %s of the labelled classes' scores (0..255 each) over %s "
            "windows; %s (the mount before): %s; the window restarts at sample %s"
            % (f[protocol.CMD_MOUNT], f["sum"], f["windows"], f["was"], f["was_sum"], f["restart"])
        )
        self.dirty = True  # the board runs a mount its checkpoint does not hold
        return first

    def teach_classes(self, first=0):
        """Label every window of each class from sample `first` on -> [Window], answered by
        their `train` lines."""
        taught, first = self.label_classes(first, "class %d of %d: %s, for %g s", True)
        self.after_teaching = first, len(self.session.preds)
        self.session.settle()
        return taught

    def label_classes(self, first, what, trains):
        """Label every window of each class from sample `first` on (`what`: the class's
        heading, formatted with its number, their count, its name and the seconds) ->
        ([Window], the sample after the last class), the labels answered by `train` lines
        (`trains`) or, in a mount search, `info mount_window=...` lines."""
        s = self.session
        windows = []
        show = self.show if trains else self.show_scored
        for k, name in enumerate(self.taught):
            heading = what % (k + 1, len(self.taught), name, self.args.seconds)
            first = self.start_of(heading, first)
            for e, said in self.inside(first, self.n, len(s.preds)):  # fresh: the board is at e
                w = Window(e, k, said)
                s.label(name, w, show, trains)
                windows.append(w)
            first += self.n
        if not trains:
            s.settle()
        return windows, first

    def inside(self, first, n, cursor):
        """(last sample, the board's class) of each window wholly inside samples first ..
        first + n - 1, from pred line number `cursor` on, each as its line comes; ends when
        no later window fits."""
        for e, said in self.session.windows(cursor):
            if e - self.window + 1 >= first and e < first + n:
                yield e, said
            if e + self.hop >= first + n:
                return

    def start_of(self, what, after):
        """The first sample of a class: `after` with --start now, else the board's sample when
        the user pressed Enter (no earlier than `after`)."""
        self.session.settle()  # the train lines of the class before are shown first
        if self.args.start == NOW:
            print("%s: now" % what)
            return after
        print("%s: press Enter as you start" % what, flush=True)
        self.session.wait_enter()
        return max(after, self.session.sample_now(self.rate))

    def show(self, w, train):
        """A labelled window and the `train` line that answered it."""
        print(
            "  %-*s %15s  board said %-*s step %d, running accuracy %d%%"
            % (self.width(), self.taught[w.taught], self.span(w), self.width(), w.said,
               train.step, train.acc),
            flush=True,
        )  # fmt: skip

    def show_scored(self, w, info):
        """A window of the mount search and the `info mount_window=...` line that answered it."""
        print(
            "  %-*s %15s  board said %-*s mount window %s, best so far %s"
            % (self.width(), self.taught[w.taught], self.span(w), self.width(), w.said,
               info.fields[protocol.MOUNT_WINDOW], info.fields.get("best", "?")),
            flush=True,
        )  # fmt: skip

    def span(self, w):
        return "%.2f-%.2f s" % ((w.end - self.window + 1) / self.rate, (w.end + 1) / self.rate)

    def width(self):
        return max(len(n) for n in self.classes)

    def verify_count(self):
        """The app's own count of its predictions equals the `pred` lines read."""
        s = self.session
        s.send(protocol.CMD_INFO)
        info = s.wait_info("hops", "info")
        if int(info.fields["hops"]) != s.count:
            raise UserError(
                "teach: the board predicted %s windows, %d pred lines came: lines were lost, so "
                "windows cannot be told apart (is another program reading the port?); nothing "
                "saved" % (info.fields["hops"], s.count)
            )

    def save(self, taught):
        """`save` -> (slot, seq, steps) of the checkpoint."""
        s = self.session
        s.send(protocol.CMD_SAVE)
        s.wait_info("saved", protocol.CMD_SAVE)
        saved = s.checkpoint
        print(
            "--- saved on the board: %s, %d windows labelled"
            % (describe_checkpoint(saved), len(taught))
        )
        return saved

    def check_pass(self, seconds, n):
        """The classes again, `seconds` (n samples) each; the board predicts with its new
        weights and learns nothing -> [Window]."""
        print("check: the classes again, %g s each; the board learns nothing now" % seconds)
        out = []
        first, cursor = self.after_teaching  # preds that came during `save` count too
        for k, name in enumerate(self.taught):
            what = "check %d of %d: %s, for %g s" % (k + 1, len(self.taught), name, seconds)
            first = self.start_of(what, first)
            out += [Window(e, k, said) for e, said in self.inside(first, n, cursor)]
            first += n
        return out

    # -- after, on a replay --------------------------------------------------------------------

    def pull_after(self, config, tmp, saved, taught, restarted=0):
        """The saved checkpoint pulled and run on the host over the taught windows of the
        replay, its samples turned by the checkpoint's mount and its windows cut from sample
        `restarted` on (where `mount pick` restarted the board's window) -> the class name per
        window, as the board's pred line would say."""
        import numpy as np

        from microprop.host.boardeval import predict_stream

        slot, seq, _ = saved
        k = int(slot[-1])
        local = tmp / "ckpt"
        chain = ["fs", "cp", ":" + self.slots[k], "%s.%d" % (local, k)]
        mpremote(self.port, chain, "copying the checkpoint", self.args.timeout)
        model, trainer, got, ignored = apply_checkpoint(
            self.local_model, local, config["lr_shift"], config["hidden_shift"]
        )
        if got != seq:
            why = "; ".join(r for _, r in ignored) or "not found"
            raise UserError("teach: the saved checkpoint %s seq %d: %s" % (slot, seq, why))
        q = learned_qmodel(self.local_model, model)
        replay_config = dict(config, file=str(self.local_data))
        replay_config.setdefault("channels", list(model.sensor["channels"]))  # as board.py does
        sensor = make_sensor(replay_config)
        need = max(w.end for w in taught) + 1
        counts = np.zeros((need, sensor.n), dtype=np.int64)
        frame = [0] * sensor.n
        for i in range(need):
            sensor.read(frame)
            counts[i] = frame
        sensor.close()
        classes = [token(c) for c in q.classes]
        preds = predict_stream(q, counts[restarted:], self.smoothing, trainer.mount)
        by_end = {restarted + e: classes[c] for e, c, _ in preds}
        self.replay_text = (
            "the saved weights (%s seq %d) pulled and run on the host over the same\n"
            "        windows of %s, bit-exact with the board" % (slot, seq, self.data_path)
        )
        return [by_end[w.end] for w in taught]


def class_index(name, classes):
    """A class name as given -> index into the board's class names (tokens), or -1."""
    if name in classes:
        return classes.index(name)
    if token(name) in classes:
        return classes.index(token(name))
    return -1


def checkpoint_of(fields):
    """(slot, seq, steps) from an `info` line's checkpoint, seq and steps; None for none."""
    slot = fields.get("checkpoint", "none")
    if slot == "none":
        return None
    return slot, int(fields.get("seq") or 0), int(fields.get("steps") or 0)


def describe_checkpoint(ckpt):
    if ckpt is None:
        return "no checkpoint (the exported weights)"
    return "checkpoint %s seq %d (%d steps)" % ckpt


def report(names, taught, after, checked, replay_text=""):
    """The before/after table: per class and overall, right / windows and percent."""
    rows = []
    for k, name in enumerate(names + ["overall"]):
        mine = [i for i, w in enumerate(taught) if k == len(names) or w.taught == k]
        before = sum(taught[i].said == names[taught[i].taught] for i in mine)
        cells = [fraction(before, len(mine))]
        if after is not None:
            cells.append(
                fraction(sum(after[i] == names[taught[i].taught] for i in mine), len(mine))
            )
        if checked is not None:
            seen = [w for w in checked if k == len(names) or w.taught == k]
            cells.append(fraction(sum(w.said == names[w.taught] for w in seen), len(seen)))
        rows.append((name, cells))
    heads = ["before"]
    notes = ["before: what the board predicted for each window it was then told the class of"]
    if after is not None:
        heads.append("after")
        notes.append("after:  " + replay_text)
    if checked is not None:
        heads.append("check")
        notes.append("check:  what the board predicted in the check pass, learning nothing")
    width = max(len(n) for n, _ in rows)
    lines = ["accuracy per class, right/windows:"]
    lines.append("  %-*s" % (width, "") + "".join("%14s" % h for h in heads))
    for name, cells in rows:
        lines.append("  %-*s" % (width, name) + "".join("%14s" % c for c in cells))
    return "\n".join(lines + notes)


def fraction(right, n):
    """'7/9  78%', or '-' for no windows."""
    if not n:
        return "-"
    return "%d/%d %3d%%" % (right, n, 100 * right // n)


class Session:
    """The board app over its serial line, from a soft reset on: lines in, commands out, each
    `pred` line counted as the next window (window k ends at sample window - 1 + k * hop)."""

    def __init__(self, port, timeout):
        self.timeout = timeout
        self.reader = LineReader(lambda: open_port(port, timeout=0.05))
        self.count = 0  # pred lines since the app's start
        self.restarted = 0  # the sample where the app's window restarted (`mount pick`) ...
        self.count_then = 0  # ... and the pred lines before it
        self.preds = []  # (last sample, class name) of each, in order
        self.window = self.hop = 1
        self.index_end = -1  # last sample of the newest window
        self.seen_at = time.monotonic()  # host time of the start line or newest pred
        self.pending = []  # labelled windows awaiting their train line, and their callbacks
        self.enter = None  # queue of Enter presses, once asked for
        self.started = False  # the app's start line came after a soft reset
        self.checkpoint = None  # (slot, seq, steps) the app started with or saved last
        self.unsaved = 0  # labels sent since then
        self.why = "no reason given"  # the last err line before a halted start

    def close(self):
        self.reader.close()

    def send(self, *words):
        if not self.reader.write(protocol.command(*words)):
            raise UserError("teach: the board's port went away")

    def restart(self):
        """Soft reset on this port: Ctrl-C, Ctrl-B (the friendly REPL), then Ctrl-D; -> the
        app's start line (`info state=start ...`)."""
        r = self.reader
        r.write(b"\r\x03\x02")
        deadline = time.monotonic() + _BANNER_WAIT
        while time.monotonic() < deadline:
            line = r.readline(0.1)
            if line is not None and _HELP_LINE in line:
                break
        r.write(b"\x04")
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            line = r.readline(0.1)
            rec = protocol.parse_line(line) if line is not None else None
            if isinstance(rec, protocol.Info) and rec.fields.get("state") == "start":
                self.count, self.index_end, self.preds = 0, -1, []
                self.restarted = self.count_then = 0
                self.seen_at = time.monotonic()
                self.checkpoint, self.unsaved = checkpoint_of(rec.fields), 0
                self.started = True
                return rec
            if isinstance(rec, protocol.Info) and rec.fields.get("state") == "halted":
                raise UserError("teach: the board's app halted at its start: %s" % self.why)
            if isinstance(rec, protocol.Err):
                self.why = "%s %s" % (rec.code, rec.message)
        raise UserError(
            "teach: no start line from the board's app %.0f s after a soft reset (is the "
            "microprop app deployed? microprop deploy)" % self.timeout
        )

    def next_record(self, deadline, what):
        """The next record of the app, with `pred` lines counted and `train` lines matched to
        their labels; UserError at `deadline` or on an `err` answer to a command."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserError("teach: no %s from the board in %.0f s" % (what, self.timeout))
            line = self.reader.readline(min(left, 0.1))
            rec = protocol.parse_line(line) if line is not None else None
            if rec is None:
                continue
            if isinstance(rec, protocol.Pred):
                self.count += 1
                k = self.count - self.count_then - 1  # windows since the window's start
                self.index_end = self.restarted + self.window - 1 + k * self.hop
                self.seen_at = time.monotonic()
                self.preds.append((self.index_end, rec.class_name))
            elif isinstance(rec, protocol.Train):
                self.answered(rec)
            elif isinstance(rec, protocol.Info) and protocol.MOUNT_WINDOW in rec.fields:
                self.answered(rec)  # a label's answer in a mount search
            elif isinstance(rec, protocol.Info) and "restart" in rec.fields:  # `mount pick`
                self.restarted, self.count_then = int(rec.fields["restart"]), self.count
                self.index_end, self.seen_at = self.restarted - 1, time.monotonic()
            elif isinstance(rec, protocol.Err) and rec.code in _ONLY_SAY:
                print("--- the board said: %s %s" % (rec.code, rec.message))
            elif isinstance(rec, protocol.Err):
                raise UserError("teach: the board said: %s %s" % (rec.code, rec.message))
            elif isinstance(rec, protocol.Info) and rec.fields.get("state") == "start":
                raise UserError("teach: the board's app restarted during the session")
            elif isinstance(rec, protocol.Info) and "saved" in rec.fields:  # or an autosave
                f = rec.fields
                self.checkpoint = checkpoint_of(
                    {"checkpoint": f["saved"], "seq": f.get("seq"), "steps": f.get("steps")}
                )
                self.unsaved = 0
            return rec

    def windows(self, cursor):
        """(last sample, class name) of the board's windows from number `cursor` on: those
        already read, then each new one as its `pred` line comes."""
        while True:
            while cursor < len(self.preds):
                yield self.preds[cursor]
                cursor += 1
            deadline = time.monotonic() + self.timeout
            while len(self.preds) <= cursor:
                self.next_record(deadline, "prediction")

    def label(self, name, window, on_answer, trains=True):
        """`label <name>`; on_answer(window, the `train` line, or the `info mount_window=...`
        line of a mount search: `trains` False)."""
        self.send(protocol.CMD_LABEL, name)
        self.pending.append((window, on_answer))
        self.unsaved += 1 if trains else 0

    def answered(self, rec):
        if not self.pending:
            raise UserError("teach: a line that answers no label of teach's: %s" % (rec,))
        window, on_answer = self.pending.pop(0)
        on_answer(window, rec)

    def settle(self):
        """Wait for the train lines of every label sent."""
        deadline = time.monotonic() + self.timeout
        while self.pending:
            self.next_record(deadline, "train line")

    def wait_info(self, key, what):
        """The next `info` line with `key` (the answer to a command)."""
        deadline = time.monotonic() + self.timeout
        while True:
            rec = self.next_record(deadline, "answer to `%s`" % what)
            if isinstance(rec, protocol.Info) and key in rec.fields:
                return rec

    def sample_now(self, rate):
        """The board's sample now, from the newest window and the time since it came."""
        return self.index_end + 1 + int((time.monotonic() - self.seen_at) * rate)

    def wait_enter(self):
        """Read the board's lines until Enter is pressed; UserError when stdin ends first."""
        if self.enter is None:
            self.enter = queue.Queue()

            def pump():
                for line in sys.stdin:
                    self.enter.put(line)
                self.enter.put(None)

            threading.Thread(target=pump, name="teach-stdin", daemon=True).start()
        while True:
            try:
                got = self.enter.get_nowait()
            except queue.Empty:
                self.next_record(time.monotonic() + self.timeout, "prediction")
                continue
            if got is None:
                raise UserError("teach: stdin ended while waiting for Enter (use --start now)")
            return
