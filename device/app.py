"""The board app: sensor -> ring buffer -> window features -> prediction (and training on
labels), spoken on the serial line of DESIGN.md ("The board app and the serial line").

Runs on: board and host (MicroPython >= 1.22; the Unix port in tests; CPython can import it).

    app = App(model, sensor, config)       # model: infer.Model, sensor: see device/sensors.py
    app.run()                              # for ever; run(max_hops=, max_samples=) in tests
    app.handle_line("mode record")         # one command, as if it came over the serial line

The board.json keys and their checks are in device/config.py, the command handlers in
device/commands.py, the protocol's words and the writer of every line kind in
device/protocol.py. `device/board.py` reads board.json, builds the model, sensor, trainer and
app, and runs it (the board's main.py calls `board.main()`).

The loop. One sensor read per sample period into an interleaved int16 ring buffer of `window`
frames (window and hop come from the model file). Realtime deadlines advance by the period
(`ticks_add`, no drift); a read more than one period late re-anchors the deadline (counted as
an overrun). The first prediction comes once `window` samples are in, then every `hop`
samples, so windows start at samples 0, hop, 2 hop, ... of the stream (`host/boardeval.py`
cuts the same). A failed read (any exception from `sensor.read`) skips that sample, prints
`err sensor <message>` at most once per second of samples and the loop goes on.

Lines out, written by `self.writer` (a protocol.LineWriter): `pred t=<ms> class=<name>
score=<0..255> us=<int> <name>:<0..255> ...` per hop (us: features + inference), `sample
t=<ms> <channel>=<int> ...` per sample in record mode, `train step=<n> label=<name>
correct=<0/1> acc=<0..100>`, `info <key>=<value> ...`, `err <code> <message>`. `t` is
milliseconds since the app started (the read time in realtime; sample index times the nominal
period otherwise), wrapping at 2**30 like `ticks_ms`. The first line is
`info state=start ...` (App.info_text, with `checkpoint=<slot>|none`), then one line per note
from the start (`app.notes`: the checkpoint loaded or ignored), then `err config` lines.
Error codes: config, model, sensor, app, line (too long, bad bytes), command (unknown), mode,
label, save, reset-model, info, rate, internal.

Smoothing: the reported class is the most frequent class of the last N windows; a tie goes to
the tied class seen most recently. The score is that class's score in the latest window, and
the `name:score` pairs are always the latest window's.

The trainer hook: set `app.trainer` to an object like `device.train.Trainer`:
`step(raw, label)` runs one training step on the last window's raw int features (an
array('i'), recomputed from the ring) with the class index `label`, updates the app's model in
place and returns [predicted class, correct 0/1] (or just correct); optional `steps` and
`accuracy()` (else the app counts), `save()` (checkpoint now; may return (slot path, seq)) and
`reset()` (back to the exported weights); a missing method answers `err <command> not
available`. `autosave` (config) saves every N training steps. With `app.rehearsal` set (a
device.rehearsal.Rehearsal, board.py does it when the hidden layers learn), each `learn()`
takes one more step, `step(raw, label, 0)`, after its `train` line, on rehearsal window
(steps - 1) mod n, steps counting the labelled ones (so a loaded checkpoint goes on in order).

Memory: everything is allocated in __init__. `step()` (sensor read into the ring, features and
predict on a hop), `learn()` (a training step and its `train` line) and the `pred` and
`sample` lines allocate nothing; neither does `run()` between commands with the sensor not
allocating (tests run these under heap_lock). Commands, info and err lines build strings and
allocate. Counters wrap at 2**30 to stay small ints.
"""

import gc
import sys
from array import array

from . import protocol
from .commands import HANDLERS
from .config import DEFAULTS, MAX_SMOOTHING, check_config, hz, shorten, token
from .features import FEATURES, MAX_WINDOW, N_FEATURES, window_features
from .protocol import MODES

__all__ = ["App", "DEFAULTS", "MAX_SMOOTHING", "MODES", "check_config", "shorten", "sleep_us"]

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import sleep_us, ticks_add, ticks_diff, ticks_ms, ticks_us
except ImportError:  # CPython: the same wrapping clocks from time.monotonic_ns
    import time as _time

    _TICKS = 1 << 30
    _ns = getattr(_time, "monotonic_ns")  # noqa: B009 (not in MicroPython's stubs)

    def ticks_us():
        return (_ns() // 1000) % _TICKS

    def ticks_ms():
        return (_ns() // 1000000) % _TICKS

    def ticks_add(t, d):
        return (t + d) % _TICKS

    def ticks_diff(a, b):
        return (a - b + _TICKS // 2) % _TICKS - _TICKS // 2

    def sleep_us(us):
        _time.sleep(us / 1e6)


APP_VERSION = "0.1.0"
_PREDICT = const(0)
_RECORD = const(1)
_IDLE = const(2)
_WRAP = const(0x40000000)  # counters and t wrap at 2**30: small ints on every port
_JITTER_BLOCK = const(64)  # jitter stats cover the last complete block of this many samples
_LATE_CAP = const(1000000)  # lateness counted at most 1 s in the stats
_DEFAULT_MHZ = const(50000)


def _wrap_add(t, d):
    """t + d modulo 2**30 for 0 <= t < 2**30, 0 <= d < 2**30, never leaving small ints."""
    if t >= _WRAP - d:
        return t - (_WRAP - d)
    return t + d


def _free_heap():
    try:
        return gc.mem_free(), gc.mem_alloc()
    except AttributeError:  # CPython
        return -1, -1


class App:
    """The board app: `run()` samples, predicts and answers commands (see the module doc)."""

    def __init__(self, model, sensor, config=None, out=None, inp=None):
        config, problems = check_config(config or {})
        self.model = model
        self.sensor = sensor
        self.config = config
        self.trainer = None
        self.rehearsal = None  # device.rehearsal.Rehearsal: a step on one after each label
        self.notes = []  # info texts printed after the start line (board.py: checkpoints)
        self._problems = problems
        self._check_model(model)
        channels = model.sensor["channels"]
        c = len(channels)
        n = getattr(sensor, "n", None)
        if n != c:
            raise ValueError(
                "app: sensor gives %s channels, the model expects %d (%s)"
                % (n, c, ",".join(channels))
            )
        names = getattr(sensor, "channels", None) or channels
        if list(names) != list(channels):
            problems.append(
                "sensor channels %s differ from the model's %s; using them in that order"
                % (",".join(names), ",".join(channels))
            )
        self.n_channels = c
        self.window = model.features["window"]
        self.hop = model.features["hop"]
        self.set_rate(self._start_rate(config, model, problems))
        self.realtime = config["realtime"]
        self.mode = MODES.index(config["mode"])

        k = model.n_outputs
        self.ring = array("h", bytes(2 * c * self.window))
        self.raw = array("i", bytes(4 * N_FEATURES * c))
        self._frame = array("i", bytes(4 * c))
        self._n_smooth = config["smoothing"]
        self._hist = array("H", bytes(2 * self._n_smooth))  # last N classes, a ring
        self._counts = array("H", bytes(2 * k))  # per class, over the last N
        self.restart()

        classes = model.classes or [str(j) for j in range(k)]
        self.class_names = [token(name) for name in classes]
        self._class_bytes = [s.encode() for s in self.class_names]  # as the writer puts them
        self._channel_bytes = [token(s).encode() for s in names]

        self.t_ms = 0
        self.us = 0
        self.cls = 0
        self.samples = 0
        self.hops = 0
        self.overruns = 0
        self.sensor_errors = 0
        self.steps = 0  # training steps and correct predictions, when the trainer has none
        self.correct = 0
        self.autosave = config["autosave"]
        self.since_save = 0  # training steps since the last save
        self.checkpoint = "none"  # the slot last loaded or saved, and its sequence number
        self.seq = 0
        self.fault = None
        self._quiet = 0
        self._suppressed = 0
        self._jn = self._jsum = self._jmax = 0
        self.jitter_max_us = self.jitter_mean_us = 0
        self._deadline = self._last_ms = 0
        self._started = False

        longest = 0
        for s in self.class_names:
            longest = max(longest, len(s))
        size = 80 + longest + k * (longest + 6)
        sample = 32
        for name in self._channel_bytes:
            sample += len(name) + 8
        size = max(size, sample)
        self.writer = protocol.LineWriter(sys.stdout if out is None else out, size)
        if inp is None:
            inp = protocol.StdinSource()
        self.reader = protocol.LineReader(inp, max(64, longest + 8), self._on_line, self._bad)

    # -- setup ---------------------------------------------------------------------------------

    def _check_model(self, model):
        f = model.features
        if list(f["names"]) != list(FEATURES):
            raise ValueError(
                "app: model features %s, expected %s" % (",".join(f["names"]), FEATURES)
            )
        c = len(model.sensor["channels"])
        if c < 1 or model.n_inputs != N_FEATURES * c:
            raise ValueError(
                "app: model has %d inputs, expected %d features x %d channels"
                % (model.n_inputs, N_FEATURES, c)
            )
        if not 1 <= f["window"] <= MAX_WINDOW or f["hop"] < 1:
            raise ValueError(
                "app: model window %d hop %d, expected window 1..%d and hop >= 1"
                % (f["window"], f["hop"], MAX_WINDOW)
            )

    def _start_rate(self, config, model, problems):
        """The sample rate in mHz: the model's; the config's or 50 Hz if the model has none."""
        model_mhz = model.sensor["rate_mhz"]
        want = config["rate_hz"]
        want_mhz = None if want is None else int(want * 1000 + 0.5)
        if not model_mhz:
            return want_mhz or _DEFAULT_MHZ
        if want_mhz is not None and want_mhz != model_mhz:
            problems.append(
                "rate_hz %s refused: the model was trained at %s Hz; using %s Hz"
                % (want, hz(model_mhz), hz(model_mhz))
            )
        return model_mhz

    def set_rate(self, mhz):
        self.rate_mhz = mhz
        self._t_step, self._t_rem_step = divmod(1000000, mhz)  # ms per sample
        self._p_step, self._p_rem_step = divmod(1000000000, mhz)  # us per sample
        self._t_rem = self._p_rem = 0
        self._per_second = max(1, mhz // 1000)

    def restart(self):
        """Empty the ring: the next prediction comes `window` samples from now."""
        self.head = 0
        self.filled = 0
        self._until_hop = self.window
        self._hist_len = 0
        self._hist_pos = 0
        for j in range(len(self._counts)):
            self._counts[j] = 0

    # -- compute (allocates nothing) -----------------------------------------------------------

    def step(self):
        """One sample: sensor -> ring; on a hop in predict mode, features + predict.

        Returns 1 after a prediction, 0 after a plain sample, -1 when the read failed (the
        exception is in `self.fault`, nothing entered the ring).
        """
        frame = self._frame
        try:
            self.sensor.read(frame)
        except Exception as e:
            self.fault = e
            return -1
        c = self.n_channels
        ring = self.ring
        k = self.head * c
        for i in range(c):
            v = frame[i]
            if v > 32767:
                v = 32767
            elif v < -32768:
                v = -32768
            frame[i] = v
            ring[k + i] = v
        self.head += 1
        if self.head == self.window:
            self.head = 0
        if self.filled < self.window:
            self.filled += 1
        self.samples = _wrap_add(self.samples, 1)
        self._until_hop -= 1
        if self._until_hop > 0:
            return 0
        self._until_hop = self.hop
        if self.mode != _PREDICT:
            return 0
        t0 = ticks_us()
        window_features(self.ring, c, self.window, self.head, self.window, self.raw)
        cls = self.model.predict(self.raw)[0]
        self.us = ticks_diff(ticks_us(), t0)
        self.cls = self._smooth(cls) if self._n_smooth > 1 else cls
        self.hops = _wrap_add(self.hops, 1)
        return 1

    def _smooth(self, cls):
        """Majority class of the last N windows, ties to the most recently seen."""
        hist, counts, n = self._hist, self._counts, self._n_smooth
        k = self._hist_pos
        if self._hist_len == n:
            counts[hist[k]] -= 1
        else:
            self._hist_len += 1
        hist[k] = cls
        counts[cls] += 1
        self._hist_pos = k + 1 if k + 1 < n else 0
        best = cls
        top = counts[cls]
        for _ in range(self._hist_len):
            j = hist[k]
            if counts[j] > top:
                best = j
                top = counts[j]
            k = k - 1 if k > 0 else n - 1
        return best

    # -- the loop ------------------------------------------------------------------------------

    def tick(self):
        """One sample period: step() as the mode says, then its output line (none in idle)."""
        if self._quiet:
            self._quiet -= 1
        if self.mode == _IDLE:
            return 0
        r = self.step()
        if r < 0:
            self._report_fault()
        elif self.mode == _RECORD:
            self._write_sample()
        elif r > 0:
            self._write_pred()
        return r

    def run(self, max_hops=None, max_samples=None):
        """Sample, predict and answer commands for ever (or for `max_samples` sample periods /
        until `max_hops` predictions). Returns None; KeyboardInterrupt ends it."""
        if not self._started:
            self._started = True
            self._hello()
        hops = 0
        periods = 0
        gc.collect()
        self._deadline = ticks_us()
        self._last_ms = ticks_ms()
        while True:
            if max_samples is not None:
                if periods >= max_samples:
                    return
                periods += 1
            if max_hops is not None and hops >= max_hops:
                return
            self.reader.poll()
            if self.realtime:
                self._wait()
            if self.tick() > 0:
                hops += 1
            if not self.realtime:
                self._advance()

    def _advance(self):
        """Nominal time: t += 1000 / rate ms, the remainder carried (t = floor(i * period))."""
        self.t_ms = _wrap_add(self.t_ms, self._t_step)
        self._t_rem += self._t_rem_step
        if self._t_rem >= self.rate_mhz:
            self._t_rem -= self.rate_mhz
            self.t_ms = _wrap_add(self.t_ms, 1)

    def _wait(self):
        """Sleep until the deadline, note the lateness, advance the deadline by one period."""
        d = ticks_diff(self._deadline, ticks_us())
        if d > 0:
            sleep_us(d)
        now = ticks_us()
        late = ticks_diff(now, self._deadline)
        if late < 0:
            late = -late
        period = self._p_step
        if late >= period:
            self.overruns = _wrap_add(self.overruns, 1)
            self._deadline = now
        if late > _LATE_CAP:
            late = _LATE_CAP
        self._jsum += late
        if late > self._jmax:
            self._jmax = late
        self._jn += 1
        if self._jn == _JITTER_BLOCK:
            self.jitter_max_us = self._jmax
            self.jitter_mean_us = self._jsum // _JITTER_BLOCK
            self._jn = self._jsum = self._jmax = 0
        self._p_rem += self._p_rem_step
        if self._p_rem >= self.rate_mhz:
            self._p_rem -= self.rate_mhz
            period += 1
        self._deadline = ticks_add(self._deadline, period)
        now_ms = ticks_ms()
        self.t_ms = _wrap_add(self.t_ms, ticks_diff(now_ms, self._last_ms))
        self._last_ms = now_ms

    # -- output --------------------------------------------------------------------------------

    def _write_pred(self):
        self.writer.pred(self.t_ms, self._class_bytes, self.cls, self.model.scores, self.us)

    def _write_sample(self):
        self.writer.sample(self.t_ms, self._channel_bytes, self._frame)

    def _report_fault(self):
        self.sensor_errors = _wrap_add(self.sensor_errors, 1)
        if self._quiet:
            self._suppressed += 1
            return
        more = ""
        if self._suppressed:
            more = " (%d more since the last report)" % self._suppressed
        msg = str(self.fault) or type(self.fault).__name__
        self.err("sensor", "read failed: %s%s" % (msg, more))
        self._quiet = self._per_second
        self._suppressed = 0

    def err(self, code, message):
        """Print `err <code> <message>`."""
        self.writer.err(code, message)

    def info(self, text):
        """Print `info <text>` (key=value pairs)."""
        self.writer.info(text)

    def info_text(self, state="running"):
        """The key=value pairs of an `info` answer."""
        free, used = _free_heap()
        model = self.model
        sizes = [str(model.n_inputs)]
        for layer in model.layers:
            sizes.append(str(layer["n_out"]))
        v = sys.implementation.version
        steps, acc = self.train_counts()
        pairs = (
            ("state", state),
            ("mode", MODES[self.mode]),
            ("rate_hz", hz(self.rate_mhz)),
            ("realtime", 1 if self.realtime else 0),
            ("window", self.window),
            ("hop", self.hop),
            ("smoothing", self._n_smooth),
            ("samples", self.samples),
            ("hops", self.hops),
            ("overruns", self.overruns),
            ("sensor_errors", self.sensor_errors),
            ("jitter_max_us", self.jitter_max_us),
            ("jitter_mean_us", self.jitter_mean_us),
            ("heap_free", free),
            ("heap_used", used),
            ("model", token(self.config["model"])),
            ("layers", "-".join(sizes)),
            ("kernel", getattr(model, "kernel", "?")),
            ("classes", ",".join(self.class_names)),
            ("sensor", token(self.config["sensor"])),
            ("channels", ",".join([token(s) for s in model.sensor["channels"]])),
            ("trainer", self._trainer_name()),
            ("steps", steps),
            ("acc", acc),
            ("checkpoint", token(self.checkpoint)),
            ("seq", self.seq),
            ("app", APP_VERSION),
            (sys.implementation.name, "%d.%d.%d" % (v[0], v[1], v[2])),
        )
        return " ".join(["%s=%s" % kv for kv in pairs])

    def _trainer_name(self):
        if self.trainer is None:
            return "none"
        return getattr(self.trainer, "mode", "on")

    def _hello(self):
        self.info(self.info_text("start"))
        for text in self.notes:
            self.info(text)
        self.notes = []
        for p in self._problems:
            self.err("config", p)
        self._problems = []

    # -- commands ------------------------------------------------------------------------------

    def _on_line(self, buf, n):
        try:
            line = bytes(buf[:n]).decode()
        except Exception:
            self.err("line", "undecodable bytes: dropped")
            return
        self.handle_line(line)

    def _bad(self, text):
        self.err("line", text[len("line ") :] if text.startswith("line ") else text)

    def handle_line(self, line):
        """Run one command line (str or bytes, newline optional); answer with one line."""
        try:
            if not isinstance(line, str):
                line = bytes(line).decode()
            words = line.split()
            if not words:
                return
            handler = HANDLERS.get(words[0])
            if handler is None:
                self.err(
                    "command",
                    "unknown %r, expected one of %s"
                    % (shorten(words[0]), ", ".join(protocol.COMMANDS)),
                )
                return
            handler(self, words, line)
        except Exception as e:  # never die on a command
            self.err("internal", "%s: %s" % (type(e).__name__, shorten(str(e))))

    def set_mode(self, new):
        """Switch to mode index `new` (MODES); entering or leaving idle restarts the window."""
        if new != self.mode and (new == _IDLE or self.mode == _IDLE):
            self.restart()
        self.mode = new

    # -- training (allocates nothing) -----------------------------------------------------------

    def learn(self, k):
        """One training step on the last window with class index k, and its `train` line.

        The caller checks k and that the ring holds a full window (commands.do_label)."""
        window_features(self.ring, self.n_channels, self.window, self.head, self.window, self.raw)
        r = self.trainer.step(self.raw, k)
        if isinstance(r, list):
            correct = r[1]
        else:
            correct = 1 if r else 0
        self.steps = _wrap_add(self.steps, 1)
        self.correct = _wrap_add(self.correct, correct)
        self.since_save = _wrap_add(self.since_save, 1)
        t = self.trainer
        if hasattr(t, "steps") and hasattr(t, "accuracy"):
            step = t.steps
            acc = t.accuracy()
        else:
            step = self.steps
            acc = self.correct * 100 // self.steps
        self.writer.train(step, self._class_bytes[k], correct, acc)
        rh = self.rehearsal
        if rh is not None:  # the window's features are used: self.raw takes a rehearsal window
            n = t.steps if hasattr(t, "steps") else self.steps  # the checkpoint keeps t.steps
            t.step(self.raw, rh.window_into(n - 1, self.raw), 0)

    def train_counts(self):
        """(steps, accuracy %): the trainer's own when it keeps them, else the app's."""
        t = self.trainer
        if t is not None and hasattr(t, "steps") and hasattr(t, "accuracy"):
            return t.steps, t.accuracy()
        return self.steps, self.correct * 100 // self.steps if self.steps else 0
