"""Stand-ins for the board app's tests: a model, a sensor, a trainer and typed input with the
interfaces the app uses, and `fake_app()` putting them together.

Runs on: host (CPython) and the `micropython` binary (tests/test_app.py runs this file's source
ahead of its scripts).

FakeTrainer has device.train.Trainer's interface (device/learner.py says which): it predicts
class `guess` for every window and keeps a Trainer's counters; `save()` names the slots as a
Trainer with prefix "ckpt" does (ckpt.0 first, then in turn), `load()` finds none and `reset()`
forgets them.
"""

import io


class FakeModel:
    """Just enough of device.infer.Model for the app: 2 channels, 3 classes, class 1 wins."""

    classes = ["idle", "walk", "run"]
    n_outputs = 3
    layers = [{"n_out": 3}]
    kernel = "fake"

    def __init__(self):
        from microprop.device.features import FEATURES, N_FEATURES

        self.features = {"names": list(FEATURES), "window": 4, "hop": 2}
        self.sensor = {"channels": ["ax", "ay"], "rate_mhz": 50000}
        self.n_inputs = 2 * N_FEATURES
        self.scores = [30, 200, 25]

    def predict(self, raw):
        return [1]


class FakeSensor:
    """Channels ax and ay reading i and -i at the i-th read."""

    n = 2
    channels = ["ax", "ay"]

    def __init__(self):
        self.i = 0

    def read(self, frame):
        self.i += 1
        frame[0], frame[1] = self.i, -self.i


class FakeTrainer:
    mode = "last"
    prefix = "ckpt"

    def __init__(self, guess=1, steps=0):
        self.result = [guess, 0]
        self.reset()
        self.steps = steps

    def step(self, raw, label, count=1):
        correct = 1 if label == self.result[0] else 0
        self.result[1] = correct
        if count:
            self.steps += 1
            self.n_correct += correct
        return self.result

    def accuracy(self):
        return 100 * self.n_correct // self.steps if self.steps else 0

    def save(self):
        self.seq += 1
        return "%s.%d" % (self.prefix, (self.seq - 1) % 2), self.seq

    def load(self):
        return None, []

    def reset(self):
        self.steps = 0
        self.n_correct = 0
        self.seq = 0


class Typed:
    """Bytes typed by the test, read as a board's stdin: `readinto` gives what is there."""

    def __init__(self):
        self.data = b""

    def readinto(self, buf):
        n = min(len(buf), len(self.data))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def fake_app(config=None, trainer=None):
    """-> (App of the fakes with `trainer` attached, its output BytesIO, its Typed input)."""
    from microprop.device.app import App

    out = io.BytesIO()
    typed = Typed()
    cfg = {"realtime": False}
    cfg.update(config or {})
    app = App(FakeModel(), FakeSensor(), cfg, out=out, inp=typed)
    app.attach_trainer(trainer or FakeTrainer(guess=1))
    return app, out, typed
