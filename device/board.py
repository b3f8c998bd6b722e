"""Starting the board app: board.json -> model, sensor, trainer and App, run for ever, never
dying.

Runs on: board and host (MicroPython; the Unix port in tests).

    from device.board import main
    main()                                  # what the board's main.py does

A missing or bad board.json, or a bad value in it, gets an `err config ...` line and the
defaults (keys and defaults: device/config.py). Without a usable model or sensor the board
stays halted, answering every command line with the `err model ...` / `err sensor ...` that
says why, never a traceback loop; Ctrl-C (KeyboardInterrupt) still ends it for the REPL.

Memory. While the app starts, the heap is collected every 4 kB allocated (`collect_often`):
MicroPython otherwise collects only when the heap is full, and the start's garbage would
spread what it keeps over the whole heap, in holes too small for the next 4.5 kB block. The
start imports all the code first, then makes the big buffers (model, the trainer with its
checkpoint loaded, rehearsal windows), drops what only the start needs (the model-file loader,
the checkpoint code, the trainer's plan), makes the sensor (and drops the sensor factory) and
the app (and drops board.json's rules): what comes after the first drop is small and fits the
holes, and a 2 kB block held from the start's first allocation until then (`_APP_RESERVE`)
leaves one hole in one piece for the sensor's and the app's buffers (without it, one heap of
the Cortex-M3 scan failed with 8 kB free in smaller holes), so that every heap from the
smallest that starts the app to 8 kB above it starts it
(bench/board.py, tests/test_app_heap.py; bench/README.md, "The app's heap", has the figures
and what the running app holds, kB by kB). A heap too small for a stage gives `err <stage>
...: out of memory (...)` and the halted board.

Learning (`learn` not "off"): a device.train.Trainer on the app's model, then the newest valid
checkpoint of this model is loaded. After the start line the app prints
`info checkpoint=<slot> seq=<n> steps=<n>` for a loaded one and
`info checkpoint_ignored=<slot> reason=<words_joined_by_underscores>` per slot not used (the
start line itself says `checkpoint=none` when nothing was loaded). The loaded checkpoint's
sensor mount (device/mount.py; the weights learned on samples turned so) replaces board.json's
"mount" when they differ: `info mount=<name> from=checkpoint board_json=<name>`. A trainer
that cannot be made (a model without softmax, a batch over the proven bound) gets `info
learn=off reason=...` and the app runs without one. When the hidden layers learn ("bias",
"all") the model's rehearsal windows (board.json "rehearsal", default model.rh;
device/rehearsal.py) are loaded too: `info rehearsal=<file> windows=<n>`, or `info
rehearsal=none file=<file>` when there is none, or `info rehearsal=off file=<file> reason=...`
for a bad or foreign file (the app then learns without).
"""

import sys

from . import protocol
from .commands import shorten, token

try:
    from time import sleep_ms
except ImportError:  # CPython

    def sleep_ms(ms):
        from time import sleep

        sleep(ms / 1000)


_GC_THRESHOLD = 4096  # bytes allocated between collections (collect_often)
_APP_RESERVE = 2048  # held from the start's first allocation until the sensor and app are made
# modules only the start needs, dropped once the model and trainer are made (an import
# brings one back): the model-file loader (the trainer's reset imports it again), the
# checkpoint code (its save imports it again, device/train.py) and the trainer's plan and
# bound proof (device/train_plan.py; a checkpoint's check imports it again); the sensor
# factory goes once the sensor is made, board.json's rules (config) once the app is
_START_ONLY = ("modelfile", "train_state", "checkpoint", "train_plan")


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


def read_config(path="board.json"):
    """board.json read and checked -> (config with the defaults filled in, [problems])."""
    from .config import check_config  # the start drops its module once the app is made

    raw, problems = load_config(path)
    config, more = check_config(raw)
    return config, problems + more


def build(config, out=None, inp=None):
    """Model, sensor and App from a checked config; raises RuntimeError(code, message).
    A MemoryError at any stage (a heap too small for the app) is one of these too."""
    stage = "app"
    threshold = collect_often()
    try:
        # First the code, every module the app and the start import, while the heap is in
        # one piece: the interned names' pools grow with it (one of ~4.5 kB in one piece when
        # the learning app's names pass 600), and native code comes in blocks of 2-6 kB. Then
        # the big buffers (model, trainer, rehearsal windows, sensor, app), and only then is
        # anything dropped: what is allocated after that is small, and the holes take it.
        reserve = bytearray(_APP_RESERVE)
        Model, App = import_code(config)
        free_heap()
        stage = "model"
        model = Model(config["model"], kernel=config["kernel"])
        learning = make_trainer(config, model), load_rehearsal(config, model)
        # what only the start needs goes before the sensor and the app are made: they take
        # its holes, and the start's peak stays near what the running app holds
        for name in _START_ONLY:
            unload(name)
        reserve = None  # noqa: F841 (its block is the sensor's and the app's buffers' room)
        free_heap()
        stage = "sensor"
        from .sensors import check_model, make_sensor

        if config["sensor"] == "replay" and "channels" not in config:
            config = dict(config)  # replay the columns the model was trained on
            config["channels"] = list(model.sensor["channels"])
        sensor = make_sensor(config)
        check_model(sensor, model.sensor)
        unload("sensors")
        free_heap()
        stage = "app"
        app = App(model, sensor, config, out, inp)
        start_learning(app, *learning)
        unload("config")
        free_heap()
    except Exception as e:
        where = config["model"] if stage == "model" else config["sensor"]
        what = str(e) or type(e).__name__
        if isinstance(e, MemoryError):
            what = "out of memory (%s); free heap %d bytes" % (what, free_heap())
        raise RuntimeError(stage, "%s: %s" % (where, what)) from None
    finally:
        if threshold is not None:
            collect_often(threshold)
    return app


def import_code(config):
    """Import every module the app of `config` runs and starts with -> (Model, App)."""
    from . import infer
    from .app import App
    from .sensors import import_driver

    import_driver(config["sensor"])
    if infer.kernel_viper is not None and config["kernel"] != "portable":
        from . import features_viper  # noqa: F401 (App takes it with the viper kernel)
    if config["learn"] != "off":
        from . import learner, train, train_state  # noqa: F401 (Trainer, its load)

        if config["learn"] != "last" and config["rehearsal"]:
            from . import rehearsal  # noqa: F401
    return infer.Model, App


def make_trainer(config, model):
    """-> (a device.train.Trainer as board.json says with the newest valid checkpoint of its
    model loaded, or None; (slot, seq) of that checkpoint, or None; [info notes])."""
    if config["learn"] == "off":
        return None, None, []
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
        return None, None, ["learn=off reason=%s" % token(str(e) or type(e).__name__)]
    notes = []
    loaded = None
    try:
        seq, ignored = trainer.load()
    except Exception as e:  # a slot that changed while it was read: exported weights
        seq, ignored = None, [(trainer.prefix, "unreadable: %s" % e)]
    if seq is not None:
        from .train_state import slot_of

        loaded = slot_of(trainer.prefix, seq), seq
        notes.append("checkpoint=%s seq=%d steps=%d" % (token(loaded[0]), seq, trainer.steps))
    for path, reason in ignored:
        notes.append("checkpoint_ignored=%s reason=%s" % (token(path), token(reason)))
    return trainer, loaded, notes


def start_learning(app, made, rehearsal=None):
    """Attach make_trainer's trainer to the app, with load_rehearsal's windows; the notes of
    both go to `app.notes` (info lines after the start line)."""
    trainer, loaded, notes = made
    app.notes.extend(notes)
    if trainer is None:
        return
    windows, note = rehearsal or (None, None)
    mount = trainer.mount  # the checkpoint's (0 without one)
    learner = app.attach_trainer(trainer, windows)
    if loaded is not None:
        learner.checkpoint, learner.seq = loaded
        if mount != app.mount:  # the weights learned in the checkpoint's mount
            from .mount_app import take_checkpoint_mount

            take_checkpoint_mount(app, mount)
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


def collect_often(threshold=_GC_THRESHOLD):
    """Collect after every `threshold` bytes allocated (-1: only when the heap is full, as
    MicroPython does by default) -> the setting before, or None where the port has none.

    Left to itself, MicroPython collects only when an allocation fails: the start's garbage
    (each import's file buffer and reader, the loader's temporaries) would fill the whole heap
    first, and the code and buffers kept would lie spread over all of it, in holes of a few
    hundred bytes to 3 kB, where the next 4.5 kB block does not fit. Collected every 4 kB,
    what is kept packs at the bottom of the heap and the rest stays in one piece. Only for the
    start: every Python call takes its frame from the heap and gives it back, and a threshold
    counts those bytes too (a training step took 50 % more instructions with it)."""
    try:
        import gc

        before = gc.threshold()
        gc.threshold(threshold)
        return before
    except Exception:  # CPython, or a port without gc.threshold
        return None


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
    failed = None
    try:
        config, problems = read_config(path)
        for p in problems:
            writer.err("config", p)
        app = build(config, out, inp)
    except MemoryError as e:  # board.json's rules (device/config.py) do not fit the heap
        failed = ("app", "%s: out of memory (%s); free heap %d bytes" % (path, e, free_heap()))
    except RuntimeError as e:
        failed = e.args
    if failed is not None:
        writer.err(failed[0], failed[1])
        writer.info("state=halted")
        halt(failed[0], failed[1], out, inp, max_samples)
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
