"""Starting the board app: board.json -> model, sensor, trainer and App, run for ever, never
dying.

Runs on: board and host (MicroPython; the Unix port in tests).

    from device.board import main
    main()                                  # what the board's main.py does

A missing or bad board.json, or a bad value in it, gets an `err config ...` line and the
defaults (keys and defaults: device/config.py). Without a usable model or sensor the board
stays halted, answering every command line with the `err model ...` / `err sensor ...` that
says why, never a traceback loop; Ctrl-C (KeyboardInterrupt) still ends it for the REPL.

Memory. The start goes in stages, model, sensor, app, each importing its modules when the one
before is done, and drops what only the start needs (the sensor factory; the model-file loader
when nothing learns): the peak heap stays near what the running app holds. A heap too small
for a stage gives `err <stage> ...: out of memory (...)` and the halted board
(bench/app_heap.py has the figures).

Learning (`learn` not "off"): a device.train.Trainer on the app's model, then the newest valid
checkpoint of this model is loaded. After the start line the app prints
`info checkpoint=<slot> seq=<n> steps=<n>` for a loaded one and
`info checkpoint_ignored=<slot> reason=<words_joined_by_underscores>` per slot not used (the
start line itself says `checkpoint=none` when nothing was loaded). A trainer that cannot be
made (a model without softmax, a batch over the proven bound) gets `info learn=off
reason=...` and the app runs without one. When the hidden layers learn ("bias", "all") the
model's rehearsal windows (board.json "rehearsal", default model.rh; device/rehearsal.py) are
loaded too: `info rehearsal=<file> windows=<n>`, or `info rehearsal=none file=<file>` when
there is none, or `info rehearsal=off file=<file> reason=...` for a bad or foreign file (the app
then learns without).
"""

import sys

from . import protocol
from .config import check_config, shorten, token

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


try:
    from time import sleep_ms
except ImportError:  # CPython

    def sleep_ms(ms):
        from time import sleep

        sleep(ms / 1000)


_APP_RESERVE = const(6144)  # bytes kept in one piece for the app stage (see build)
# 10 kB more when the app learns: its ~700 names outgrow MicroPython's qstr pool (620 entries)
# during the app stage, after some of the app's ~10 kB of code went in, and the next pool
# takes ~4.5 kB in one piece ("allocating 640" in an err line is that pool's entry count)
_LEARN_RESERVE = const(10240)


def load_config(path="board.json"):
    """Read board.json -> (config dict, problems): a missing or bad file gives the defaults."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return {}, ["%s missing; using defaults" % path]
    try:
        import json

        return json.loads(text), []
    except Exception as e:
        return {}, ["%s is not valid JSON (%s); using defaults" % (path, shorten(str(e)))]


def build(config, out=None, inp=None):
    """Model, sensor and App from a checked config; raises RuntimeError(code, message).
    A MemoryError at any stage (a heap too small for the app) is one of these too."""
    stage = "model"
    try:
        # A block kept free for the app stage: the stages before it leave the heap in holes
        # (the loader's and the sensor factory's code and buffers, freed), and the app's code
        # and buffers need some of it in one piece. Taken while the heap is whole.
        reserve = bytearray(_APP_RESERVE + (0 if config["learn"] == "off" else _LEARN_RESERVE))
        from .infer import Model

        # stage by stage, each stage's modules loaded when the one before is done, with what
        # only the start needs dropped after it: the smallest heap the app can start in
        free_heap()
        model = Model(config["model"], kernel=config["kernel"])
        if config["learn"] == "off":
            unload("modelfile")  # the trainer's checkpoints need it, nothing else does
        # the trainer's buffers and the rehearsal windows' block while the heap is in one
        # piece: allocated last, they could fail in a heap with room left but in small holes
        learning = make_trainer(config, model), load_rehearsal(config, model)
        free_heap()
        stage = "sensor"
        from .sensors import check_model, make_sensor

        if config["sensor"] == "replay" and "channels" not in config:
            config = dict(config)  # replay the columns the model was trained on
            config["channels"] = list(model.sensor["channels"])
        sensor = make_sensor(config)
        check_model(sensor, model.sensor)
        unload("sensors")  # only the start needs these; the app's modules come next
        free_heap()
        stage = "app"
        del reserve
        free_heap()
        from .app import App  # last: its modules come after the model's and sensor's start

        app = App(model, sensor, config, out, inp)
        start_learning(app, *learning)
    except Exception as e:
        where = config["model"] if stage == "model" else config["sensor"]
        what = str(e) or type(e).__name__
        if isinstance(e, MemoryError):
            what = "out of memory (%s); free heap %d bytes" % (what, free_heap())
        raise RuntimeError(stage, "%s: %s" % (where, what)) from None
    return app


def make_trainer(config, model):
    """-> (a device.train.Trainer as board.json says, or None, [info notes])."""
    if config["learn"] == "off":
        return None, []
    try:
        from .train import Trainer

        trainer = Trainer(
            model,
            config["learn"],
            config["lr_shift"],
            config["batch"],
            config["seed"],
            model_path=config["model"],
            prefix=config["checkpoint"],
            hidden_shift=config["hidden_shift"],
        )
    except Exception as e:  # e.g. no softmax output layer: the app predicts, never learns
        return None, ["learn=off reason=%s" % token(str(e) or type(e).__name__)]
    return trainer, []


def start_learning(app, made, rehearsal=None):
    """Load the newest checkpoint of make_trainer's trainer and attach it to the app, with
    load_rehearsal's windows; the outcome goes to `app.notes` (info lines after the start
    line)."""
    trainer, notes = made
    app.notes.extend(notes)
    if trainer is None:
        return
    try:
        seq, ignored = trainer.load()
    except Exception as e:  # a slot that changed while it was read: exported weights
        seq, ignored = None, [(trainer.prefix, "unreadable: %s" % e)]
    windows, note = rehearsal or (None, None)
    learner = app.attach_trainer(trainer, windows)
    if seq is not None:
        from .train import slot_of

        learner.checkpoint, learner.seq = slot_of(trainer.prefix, seq), seq
        app.notes.append(
            "checkpoint=%s seq=%d steps=%d" % (token(learner.checkpoint), seq, trainer.steps)
        )

    for path, reason in ignored:
        app.notes.append("checkpoint_ignored=%s reason=%s" % (token(path), token(reason)))
    if note is not None:
        app.notes.append(note)


def load_rehearsal(config, model):
    """-> (Rehearsal or None, its info note), or None when nothing rehearses: the model's
    rehearsal windows (device/rehearsal.py) when the hidden layers learn and the file is
    there and belongs to this model."""
    path = config["rehearsal"]
    if not path or config["learn"] not in ("bias", "all"):
        return None
    try:
        from .checkpoint import model_crc_of
        from .rehearsal import Rehearsal

        r = Rehearsal(path, model_crc_of(config["model"]), model.n_inputs, model.n_outputs)
    except OSError:  # no file to open (or none readable) at `path`
        return None, "rehearsal=none file=%s" % token(path)
    except Exception as e:  # a bad or foreign file (ValueError), or no memory for it
        return None, "rehearsal=off file=%s reason=%s" % (token(path), token(str(e)))
    return r, "rehearsal=%s windows=%d" % (token(path), r.n_windows)


def unload(name):
    """Forget the module device.<name>: its code is freed at the next collection, and an
    import later loads it again."""
    sys.modules.pop("device." + name, None)
    package = sys.modules.get("device")
    if package is not None and name in package.__dict__:
        delattr(package, name)


def free_heap():
    """Free heap in bytes after a collection (0 where the port cannot say)."""
    try:
        import gc

        gc.collect()
        return gc.mem_free()
    except Exception:
        return 0


def halt(code, message, out=None, inp=None, max_samples=None):
    """No app to run: answer every command line with `err <code> <message>`, for ever."""
    writer = protocol.LineWriter(sys.stdout if out is None else out, 80)

    def answer(*_):
        writer.err(code, message)

    reader = protocol.LineReader(
        protocol.StdinSource() if inp is None else inp, 64, answer, answer
    )
    n = 0
    while max_samples is None or n < max_samples:
        n += 1
        reader.poll()
        sleep_ms(50)


def main(path="board.json", out=None, inp=None, max_hops=None, max_samples=None):
    """Read board.json, build the app and run it; report instead of raising (main.py)."""
    writer = protocol.LineWriter(sys.stdout if out is None else out, 80)
    raw, problems = load_config(path)
    config, more = check_config(raw)
    for p in problems + more:
        writer.err("config", p)
    try:
        app = build(config, out, inp)
    except RuntimeError as e:
        writer.err(e.args[0], e.args[1])
        writer.info("state=halted")
        halt(e.args[0], e.args[1], out, inp, max_samples)
        return
    while True:
        try:
            app.run(max_hops, max_samples)
            return
        except Exception as e:  # a bug: say so, carry on after a pause
            app.writer.err("internal", "%s: %s" % (type(e).__name__, shorten(str(e))))
            if max_hops is not None or max_samples is not None:
                return
            sleep_ms(1000)
