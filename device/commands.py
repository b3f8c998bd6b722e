"""Commands of the board app: one `do_<name>(app, words, line)` handler per command line.

Runs on: board and host (MicroPython >= 1.22; CPython).

`App.handle_line` splits a line and calls the handler named by its first word (HANDLERS, keyed
by device/protocol.py's command words); each answers with one line, and anything refused gets
`err <command> ...` and changes nothing:

    mode predict|record|idle   -> info mode=...   (leaving or entering idle restarts the window)
    label <class name>         -> train step=<n> label=<name> correct=<0/1> acc=<0..100>
    save                       -> info saved=<slot> seq=<n> steps=<n>
    reset-model                -> info reset=ok   (exported weights, checkpoints cleared)
    info                       -> info state=running ... (App.info_text)
    rate <hz>                  -> info rate_hz=...  (only the model's own rate)

`label`, `save` and `reset-model` need `app.trainer` (see device/app.py) and answer `err
<command> not available ...` without one. Handlers allocate (they split and format strings);
the training step itself (`App.learn`) does not.
"""

from .config import hz, shorten
from .protocol import (
    CMD_INFO,
    CMD_LABEL,
    CMD_MODE,
    CMD_RATE,
    CMD_RESET_MODEL,
    CMD_SAVE,
    MODES,
)


def do_mode(app, words, line):
    if len(words) != 2 or words[1] not in MODES:
        app.err(
            CMD_MODE,
            "%r refused, expected %s %s" % (shorten(line.strip()), CMD_MODE, "|".join(MODES)),
        )
        return
    app.set_mode(MODES.index(words[1]))
    app.info("mode=" + words[1])


def class_index(app, name):
    """A class name as the app prints it or as the model file spells it -> index, or -1."""
    if name in app.class_names:
        return app.class_names.index(name)
    if name in app.model.classes:
        return app.model.classes.index(name)
    return -1


def do_label(app, words, line):
    if app.trainer is None:
        app.err(CMD_LABEL, "not available: no on-device training on this board")
        return
    name = line.strip()[len(CMD_LABEL) :].strip()
    if not name:
        app.err(CMD_LABEL, "expected %s <class name>" % CMD_LABEL)
        return
    k = class_index(app, name)
    if k < 0:
        app.err(
            CMD_LABEL,
            "unknown class %r, expected one of %s" % (shorten(name), ",".join(app.class_names)),
        )
        return
    if app.filled < app.window:
        app.err(CMD_LABEL, "no full window yet (%d of %d samples)" % (app.filled, app.window))
        return
    try:
        app.learn(k)
    except Exception as e:
        app.err(CMD_LABEL, "training step failed: %s" % shorten(str(e)))
        return
    if app.autosave and app.since_save >= app.autosave:
        _save(app)


def _trainer_method(app, words, what):
    """The trainer's method `what`, or None after the err line that says why."""
    if len(words) != 1:
        app.err(words[0], "takes no arguments, expected %s" % words[0])
        return None
    if app.trainer is None:
        app.err(words[0], "not available: no on-device training on this board")
        return None
    method = getattr(app.trainer, what, None)
    if method is None:
        app.err(words[0], "not available: the trainer has no %s()" % what)
    return method


def _save(app):
    """trainer.save() and its `info saved=...` line; `err save failed: ...` on an error.
    A save() that returns (slot path, seq), as device.train.Trainer's does, names them."""
    try:
        got = app.trainer.save()
    except Exception as e:
        app.err(CMD_SAVE, "failed: %s" % shorten(str(e) or type(e).__name__))
        return
    app.since_save = 0
    steps = app.train_counts()[0]
    if isinstance(got, tuple) and len(got) == 2:
        app.checkpoint, app.seq = got
        app.info("saved=%s seq=%d steps=%d" % (app.checkpoint, app.seq, steps))
    else:
        app.info("saved=1 steps=%d" % steps)


def do_save(app, words, line):
    if _trainer_method(app, words, "save") is not None:
        _save(app)


def do_reset_model(app, words, line):
    method = _trainer_method(app, words, "reset")
    if method is None:
        return
    try:
        method()
    except Exception as e:
        app.err(CMD_RESET_MODEL, "failed: %s" % shorten(str(e) or type(e).__name__))
        return
    app.steps = app.correct = app.since_save = 0
    app.checkpoint, app.seq = "none", 0
    app.info("reset=ok")


def do_info(app, words, line):
    if len(words) != 1:
        app.err(CMD_INFO, "takes no arguments, expected %s" % CMD_INFO)
        return
    app.info(app.info_text())


def do_rate(app, words, line):
    model_mhz = app.model.sensor["rate_mhz"]
    try:
        if len(words) != 2:
            raise ValueError
        rate = float(words[1])
        if not 0 < rate <= 1000000:
            raise ValueError
    except ValueError:
        app.err(
            CMD_RATE,
            "%r refused, expected %s <hz>, 0 < hz <= 1e6" % (shorten(line.strip()), CMD_RATE),
        )
        return
    mhz = int(rate * 1000 + 0.5)
    if model_mhz and mhz != model_mhz:
        app.err(
            CMD_RATE,
            "%s Hz refused: the model was trained at %s Hz" % (shorten(words[1]), hz(model_mhz)),
        )
        return
    if mhz != app.rate_mhz:
        app.set_rate(mhz)
        app.restart()
    app.info("rate_hz=" + hz(app.rate_mhz))


HANDLERS = {
    CMD_MODE: do_mode,
    CMD_LABEL: do_label,
    CMD_SAVE: do_save,
    CMD_RESET_MODEL: do_reset_model,
    CMD_INFO: do_info,
    CMD_RATE: do_rate,
}
