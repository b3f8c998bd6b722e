"""The board app: sensor -> ring buffer -> window features -> prediction, and training on
labels, spoken on the serial line of DESIGN.md ("The board app and the serial line").

Runs on: board and host (MicroPython >= 1.22; the Unix port in tests; CPython can import it).

    app = App(model, sensor, config)       # model: infer.Model, sensor: see device/sensors.py
    app.attach_trainer(trainer)            # optional: `label` trains (device/learner.py)
    app.run()                              # for ever; run(max_hops=, max_samples=) in tests
    app.handle_line("mode record")         # one command, as if it came over the serial line

This module is the sampling loop and its deadlines; each other job has its module: jitter
statistics (device/jitter.py), smoothing (device/smoothing.py), the commands
(device/commands.py), training with rehearsal (device/learner.py), the protocol's words and
the writer and reader of its lines (device/protocol.py), the board.json keys
(device/config.py). `device/board.py` reads board.json, builds the model, sensor, trainer and
app, and runs it (the board's main.py calls `board.main()`).

The loop. One sensor read per sample period into an interleaved int16 ring buffer of `window`
frames (window and hop come from the model file). Realtime deadlines advance by the period
(`ticks_add`, no drift); a read more than one period late re-anchors the deadline (counted as
an overrun), and each read's lateness goes to the jitter statistics. The first prediction comes
once `window` samples are in, then every `hop` samples, so windows start at samples 0, hop,
2 hop, ... of the stream (`host/boardeval.py` cuts the same). A failed read (any exception from
`sensor.read`) skips that sample, prints `err sensor <message>` at most once per second of
samples and the loop goes on. `mode` is one of protocol.MODES: "predict" (a `pred` line per
hop), "record" (a `sample` line per sample), "idle" (no sampling).

Lines out, written by `self.writer` (a protocol.LineWriter): `pred t=<ms> class=<name>
score=<0..255> us=<int> <name>:<0..255> ...` per hop (us: features + inference, 0 when the
clock stepped back: the qemu microbit port's `ticks_us` does by about 1 ms now and then), `sample
t=<ms> <channel>=<int> ...` per sample in record mode, `train ...` per label, `info <key>=<value>
...`, `err <code> <message>`. `t` is milliseconds since the app started (the read time in
realtime; sample index times the nominal period otherwise), wrapping at 2**30 like `ticks_ms`.
The first line is `info state=start ...` (App.status, with `checkpoint=<slot>|none`), then one
line per note from the start (`app.notes`: the checkpoint loaded or ignored, its mount), then
`err config` lines (`app.problems`). Error codes: config, model, sensor, app, line (too long, bad
bytes), command (unknown), mode, label, save, reset-model, info, rate, mount, internal.

The sensor's mount (board.json "mount", a checkpoint's, or the `mount` commands). Each sample,
clipped to int16, is turned by the app's orientation (device/mount.py: a signed permutation of
each whole axis triple, a negated -32768 saturating to 32767) before it enters the ring, so the
model sees the sensor as it was mounted for the training data; record mode's `sample` lines
print the turned frame too, what the model sees (`self.frame`). device/mount_app.py's
`set_mount` changes it and restarts the window. The identity, the default, costs one test per
sample: no map, no turned copy, and device/mount.py and mount_app.py are never imported.
`mount search` (device/mount_app.py) scores the 24 orientations on labelled windows instead of
training (`self.search`, a MountSearch).

Memory: everything is allocated in __init__. `step()` (sensor read into the ring, features and
predict on a hop), `learn()` (a training step and its `train` line) and the `pred` and
`sample` lines allocate nothing; neither does `run()` between commands with the sensor not
allocating (tests run these under heap_lock). Commands, info and err lines build strings and
allocate. Counters wrap at 2**30 to stay small ints. The smoothing, training and mount modules
are imported only when the app smooths, trains or turns.
"""

import gc
import sys
from array import array

from . import commands, protocol
from .commands import hz, token
from .features import FEATURES, MAX_WINDOW, N_FEATURES, window_features
from .jitter import Jitter
from .protocol import IDLE, MODES, PREDICT, RECORD

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
_WRAP = const(0x40000000)  # counters and t wrap at 2**30: small ints on every port
_DEFAULT_MHZ = const(50000)  # the sample rate of a model file that states none


def _wrap_add(t, d):
    """t + d modulo 2**30 for 0 <= t < 2**30, 0 <= d < 2**30, never leaving small ints."""
    if t >= _WRAP - d:
        return t - (_WRAP - d)
    return t + d


class App:
    """The board app: `run()` samples, predicts and answers commands (see the module doc)."""

    def __init__(self, model, sensor, config=None, out=None, inp=None):
        config, problems = check_config(config or {})
        self.model = model
        self.sensor = sensor
        self.config = config
        self.learner = None  # device.learner.Learner once a trainer is attached
        self.notes = []  # info texts printed after the start line (board.py: checkpoints)
        self.problems = problems  # err config texts printed after the notes
        _check_model(model)
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
        self.window_features = window_features  # portable; native code with the viper kernel
        if model.kernel == "viper":
            from . import features_viper

            self.window_features = features_viper.window_features
        self.set_rate(_start_rate(config, model, problems))
        self.realtime = config["realtime"]
        self.mode = MODES[MODES.index(config["mode"])]  # MODES' own object: `is` compares

        k = model.n_outputs
        self.ring = array("h", bytes(2 * c * self.window))
        self.raw = array("i", bytes(4 * N_FEATURES * c))
        self.read_frame = array("i", bytes(4 * c))  # the sample as read, clipped to int16
        self.frame = self.read_frame  # the sample as the model sees it: turned, with a mount
        self.mount = 0  # device/mount.py's orientation index: IDENTITY, no turn; its name is
        # config["mount"] (board.json's at the start; mount_app.set_mount changes both)
        self.search = None  # a device.mount.MountSearch during `mount search`
        self.turn_map = None  # the mount's channel map (device/mount.py), None: the identity
        self.turn = None  # device.mount.turn, once a mount turns
        self.smoother = None
        if config["smoothing"] > 1:
            from .smoothing import Smoother

            self.smoother = Smoother(config["smoothing"], k)
        self.restart()
        _board_mount(self, config["mount"], problems)

        classes = model.classes or [str(j) for j in range(k)]
        self.class_names = [token(name) for name in classes]
        self.class_bytes = [s.encode() for s in self.class_names]  # as the writer puts them
        self._channel_bytes = [token(s).encode() for s in names]

        self.t_ms = 0
        self.us = 0
        self.cls = 0
        self.samples = 0
        self.hops = 0
        self.overruns = 0
        self.sensor_errors = 0
        self.jitter = Jitter()
        self._deadline = self._last_ms = 0
        self.fault = None
        self._quiet = 0
        self._suppressed = 0
        self._started = False

        size, command_size = protocol.line_sizes(self.class_bytes, self._channel_bytes)
        self.writer = protocol.LineWriter(sys.stdout if out is None else out, size)
        if inp is None:
            inp = protocol.StdinSource()
        self.reader = protocol.LineReader(inp, command_size, self._on_line, self._on_bad)

    # -- setup ---------------------------------------------------------------------------------

    def set_rate(self, mhz):
        """Sample at `mhz` millihertz."""
        self.rate_mhz = mhz
        self._t_step, self._t_rem_step = divmod(1000000, mhz)  # ms per sample
        self._p_step, self._p_rem_step = divmod(1000000000, mhz)  # us per sample
        self._t_rem = self._p_rem = 0
        self._per_second = max(1, mhz // 1000)  # samples per second, for the err rate limit

    def restart(self):
        """Empty the ring: the next prediction comes `window` samples from now."""
        self.head = 0
        self.filled = 0
        self._until_hop = self.window
        if self.smoother is not None:
            self.smoother.clear()

    def attach_trainer(self, trainer, rehearsal=None):
        """Train on `label` lines from now on: -> the device.learner.Learner made for
        `trainer` (a device.train.Trainer) and `rehearsal` (a device.rehearsal.Rehearsal).
        The trainer's checkpoints keep the app's mount (its `mount`) from now on."""
        from .learner import Learner

        self.learner = Learner(
            trainer, rehearsal, self.writer, self.class_bytes, self.config["autosave"]
        )
        trainer.mount = self.mount
        return self.learner

    # -- compute (allocates nothing) -----------------------------------------------------------

    def step(self):
        """One sample: sensor -> ring; on a hop in predict mode, features + predict.

        Returns 1 after a prediction, 0 after a plain sample, -1 when the read failed (the
        exception is in `self.fault`, nothing entered the ring).
        """
        frame = self.read_frame
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
        m = self.turn_map
        if m is not None:  # a mount: the ring holds the frame turned
            turned = self.frame
            self.turn(frame, m, turned, 0)
            for i in range(c):
                ring[k + i] = turned[i]
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
        if self.mode is not PREDICT:
            return 0
        t0 = ticks_us()
        self.window_features(self.ring, c, self.window, self.head, self.window, self.raw)
        cls = self.model.predict(self.raw)[0]
        us = ticks_diff(ticks_us(), t0)
        self.us = us if us > 0 else 0  # a clock that steps back reads 0, never negative
        self.cls = cls if self.smoother is None else self.smoother.add(cls)
        self.hops = _wrap_add(self.hops, 1)
        return 1

    def learn(self, k):
        """One training step on the last window with class index k, and its `train` line.

        The caller checks k and that the ring holds a full window (commands.do_label)."""
        self.window_features(
            self.ring, self.n_channels, self.window, self.head, self.window, self.raw
        )
        self.learner.learn(self.raw, k)

    # -- the loop ------------------------------------------------------------------------------

    def tick(self):
        """One sample period: step() as the mode says, then its output line (none in idle)."""
        if self._quiet:
            self._quiet -= 1
        if self.mode is IDLE:
            return 0
        r = self.step()
        if r < 0:
            self._report_fault()
        elif self.mode is RECORD:
            self.writer.sample(self.t_ms, self._channel_bytes, self.frame)
        elif r > 0:
            self.writer.pred(self.t_ms, self.class_bytes, self.cls, self.model.scores, self.us)
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
        self.jitter.note(late)
        self._p_rem += self._p_rem_step
        if self._p_rem >= self.rate_mhz:
            self._p_rem -= self.rate_mhz
            period += 1
        self._deadline = ticks_add(self._deadline, period)
        now_ms = ticks_ms()
        self.t_ms = _wrap_add(self.t_ms, ticks_diff(now_ms, self._last_ms))
        self._last_ms = now_ms

    def set_mode(self, mode):
        """Switch to `mode` (one of MODES); entering or leaving idle restarts the window."""
        if mode != self.mode and (mode == IDLE or self.mode == IDLE):
            self.restart()
        self.mode = MODES[MODES.index(mode)]

    # -- lines ---------------------------------------------------------------------------------

    def handle_line(self, line):
        """Run one command line (str or bytes, newline optional); answer with one line."""
        commands.handle_line(self, line)

    def _on_line(self, buf, n):
        self.handle_line(buf[:n])  # the reader passes printable ASCII only

    def _on_bad(self, text):
        self.writer.err("line", text)

    def _report_fault(self):
        self.sensor_errors = _wrap_add(self.sensor_errors, 1)
        if self._quiet:
            self._suppressed += 1
            return
        more = ""
        if self._suppressed:
            more = " (%d more since the last report)" % self._suppressed
        msg = str(self.fault) or type(self.fault).__name__
        self.writer.err("sensor", "read failed: %s%s" % (msg, more))
        self._quiet = self._per_second
        self._suppressed = 0

    def status(self, state="running"):
        """The (key, value) pairs of an `info` answer (and of the start line, state "start")."""
        try:
            free, used = gc.mem_free(), gc.mem_alloc()
        except AttributeError:  # CPython
            free, used = -1, -1
        model = self.model
        sizes = [str(model.n_inputs)]
        for layer in model.layers:
            sizes.append(str(layer["n_out"]))
        v = sys.implementation.version
        learner = self.learner
        t = None if learner is None else learner.trainer
        config = self.config
        return (
            ("state", state),
            ("mode", self.mode),
            ("rate_hz", hz(self.rate_mhz)),
            ("realtime", 1 if self.realtime else 0),
            ("window", self.window),
            ("hop", self.hop),
            ("smoothing", config["smoothing"]),
            ("samples", self.samples),
            ("hops", self.hops),
            ("overruns", self.overruns),
            ("sensor_errors", self.sensor_errors),
            ("jitter_max_us", self.jitter.max_us),
            ("jitter_mean_us", self.jitter.mean_us),
            ("heap_free", free),
            ("heap_used", used),
            ("model", token(config["model"])),
            ("layers", "-".join(sizes)),
            ("kernel", model.kernel),
            ("classes", ",".join(self.class_names)),
            ("sensor", token(config["sensor"])),
            ("channels", ",".join([token(s) for s in model.sensor["channels"]])),
            ("mount", config["mount"]),
            ("trainer", "none" if t is None else t.mode),
            ("steps", 0 if t is None else t.steps),
            ("acc", 0 if t is None else t.accuracy()),
            ("checkpoint", "none" if t is None else token(learner.checkpoint)),
            ("seq", 0 if t is None else learner.seq),
            ("app", APP_VERSION),
            (sys.implementation.name, "%d.%d.%d" % (v[0], v[1], v[2])),
        )

    def _hello(self):
        self.writer.info_pairs(self.status("start"))
        for text in self.notes:
            self.writer.info(text)
        self.notes = []
        for p in self.problems:
            self.writer.err("config", p)
        self.problems = []


def check_config(config):
    """board.json dict -> (a copy with defaults filled in, problems): device/config.py's
    check, imported for it only (the board's start drops that module once the app is made)."""
    from .config import check_config as check

    return check(config)


def _board_mount(app, name, problems):
    """board.json's mount: a turn imports device/mount_app.py (and mount.py); one the model
    cannot take is a problem, and the app keeps the default, no turn."""
    from .config import DEFAULTS  # loaded while the app is made (check_config)

    if name != DEFAULTS["mount"]:
        from .mount_app import set_mount

        app.config["mount"] = DEFAULTS["mount"]
        try:
            set_mount(app, name)
        except ValueError as e:
            problems.append("mount %s refused: %s; using %s" % (name, e, app.config["mount"]))


def _check_model(model):
    """Raise ValueError unless the model takes this app's features (names, sizes, window)."""
    f = model.features
    if list(f["names"]) != list(FEATURES):
        raise ValueError("app: model features %s, expected %s" % (",".join(f["names"]), FEATURES))
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


def _start_rate(config, model, problems):
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
