"""Commands of the board app: a host's line -> its handler -> one answer line.

Runs on: board and host (MicroPython >= 1.22; CPython).

`handle_line(app, line)` splits a line and calls the handler named by its first word
(HANDLERS, keyed by device/protocol.py's command words), `do_<name>(app, words, line)`; each
answers with one line, and anything refused gets `err <command> ...` and changes nothing:

    mode predict|record|idle   -> info mode=...   (leaving or entering idle restarts the window)
    label <class name>         -> train step=<n> label=<name> correct=<0/1> acc=<0..100>
    save                       -> info saved=<slot> seq=<n> steps=<n>
    reset-model                -> info reset=ok   (exported weights, checkpoints cleared)
    info                       -> info state=running ... (App.status)
    rate <hz>                  -> info rate_hz=...  (only the model's own rate)
    mount                      -> info mount=<orientation>
    mount <orientation>        -> info mount=<orientation>   (e.g. -y+x+z; the window restarts)
    mount search               -> info mount=<orientation> search=started
    label <class name>         -> info mount_window=<n> best=<orientation>
                                  (while searching: the window scores the orientations and
                                  trains nothing; no trainer needed)
    mount pick                 -> info mount=<new> windows=<n> sum=<n> was=<old> was_sum=<n>
                                  restart=<sample>
    mount cancel               -> info mount=<orientation> search=cancelled

The `mount` commands but the bare query, and a label's scoring while searching, live in
device/mount_app.py (its docstring says what they do), imported when first used: an app that
never turns keeps none of that code.

An unknown command gets `err command ...`; an exception in a handler `err internal ...` (the
app never dies on a command). `label`, `save` and `reset-model` need a trainer (`app.learner`,
device/learner.py) and answer `err <command> not available ...` without one. Handlers allocate
(they split and format strings); the training step itself (`App.learn`) and a search's
scoring of a window (`MountSearch.add`) do not. A label while searching takes 24 feature
sets and predictions: a realtime app overruns by that much once.

The text helpers of the answer lines live here too (`hz`, `token`, `shorten`; device/config.py
passes them on to the host's tools): the running app keeps this module, not config's rules.
"""

from .protocol import (
    CMD_INFO,
    CMD_LABEL,
    CMD_MODE,
    CMD_MOUNT,
    CMD_RATE,
    CMD_RESET_MODEL,
    CMD_SAVE,
    COMMANDS,
    MODES,
)

_ECHO = 24  # longest piece of a refused line echoed in its err line


def handle_line(app, line):
    """Run one command line (str or bytes, newline optional); answer with one line."""
    try:
        if not isinstance(line, str):
            line = bytes(line).decode()
        words = line.split()
        if not words:
            return
        handler = HANDLERS.get(words[0])
        if handler is None:
            app.writer.err(
                "command",
                "unknown %r, expected one of %s" % (shorten(words[0]), ", ".join(COMMANDS)),
            )
            return
        handler(app, words, line)
    except Exception as e:  # never die on a command
        app.writer.err("internal", "%s: %s" % (type(e).__name__, shorten(str(e))))


def do_mode(app, words, line):
    if len(words) != 2 or words[1] not in MODES:
        app.writer.err(
            CMD_MODE,
            "%r refused, expected %s %s" % (shorten(line.strip()), CMD_MODE, "|".join(MODES)),
        )
        return
    app.set_mode(words[1])
    app.writer.info("mode=" + app.mode)


def class_index(app, name):
    """A class name as the app prints it or as the model file spells it -> index, or -1."""
    if name in app.class_names:
        return app.class_names.index(name)
    if name in app.model.classes:
        return app.model.classes.index(name)
    return -1


def _learner(app, words, check_args=True):
    """The app's learner, or None after the err line that says why."""
    if check_args and len(words) != 1:
        app.writer.err(words[0], "takes no arguments, expected %s" % words[0])
        return None
    if app.learner is None:
        app.writer.err(words[0], "not available: no on-device training on this board")
    return app.learner


def do_label(app, words, line):
    learner = None
    if app.search is None:
        learner = _learner(app, words, False)
        if learner is None:
            return
    name = line.strip()[len(CMD_LABEL) :].strip()
    if not name:
        app.writer.err(CMD_LABEL, "expected %s <class name>" % CMD_LABEL)
        return
    k = class_index(app, name)
    if k < 0:
        app.writer.err(
            CMD_LABEL,
            "unknown class %r, expected one of %s" % (shorten(name), ",".join(app.class_names)),
        )
        return
    if app.filled < app.window:
        app.writer.err(
            CMD_LABEL, "no full window yet (%d of %d samples)" % (app.filled, app.window)
        )
        return
    if learner is None:
        from .mount_app import score

        score(app, k)
        return
    try:
        app.learn(k)
    except Exception as e:
        app.writer.err(CMD_LABEL, "training step failed: %s" % shorten(str(e)))
        return
    if learner.save_due():
        _save(app, learner)


def _save(app, learner):
    """A checkpoint and its `info saved=...` line; `err save failed: ...` on an error."""
    try:
        slot, seq = learner.save()
    except Exception as e:
        app.writer.err(CMD_SAVE, "failed: %s" % shorten(str(e) or type(e).__name__))
        return
    app.writer.info("saved=%s seq=%d steps=%d" % (token(slot), seq, learner.trainer.steps))


def do_save(app, words, line):
    learner = _learner(app, words)
    if learner is not None:
        _save(app, learner)


def do_reset_model(app, words, line):
    learner = _learner(app, words)
    if learner is None:
        return
    try:
        learner.reset()
    except Exception as e:
        app.writer.err(CMD_RESET_MODEL, "failed: %s" % shorten(str(e) or type(e).__name__))
        return
    app.writer.info("reset=ok")


def do_info(app, words, line):
    if len(words) != 1:
        app.writer.err(CMD_INFO, "takes no arguments, expected %s" % CMD_INFO)
        return
    app.writer.info_pairs(app.status())


def do_rate(app, words, line):
    model_mhz = app.model.sensor["rate_mhz"]
    try:
        if len(words) != 2:
            raise ValueError
        rate = float(words[1])
        if not 0 < rate <= 1000000:
            raise ValueError
    except ValueError:
        app.writer.err(
            CMD_RATE,
            "%r refused, expected %s <hz>, 0 < hz <= 1e6" % (shorten(line.strip()), CMD_RATE),
        )
        return
    mhz = int(rate * 1000 + 0.5)
    if model_mhz and mhz != model_mhz:
        app.writer.err(
            CMD_RATE,
            "%s Hz refused: the model was trained at %s Hz" % (shorten(words[1]), hz(model_mhz)),
        )
        return
    if mhz != app.rate_mhz:
        app.set_rate(mhz)
        app.restart()
    app.writer.info("rate_hz=" + hz(app.rate_mhz))


def do_mount(app, words, line):
    if len(words) == 1:
        app.writer.info("%s=%s" % (CMD_MOUNT, app.config["mount"]))
        return
    from .mount_app import do_mount as mount_command  # the identity's app never loads it

    mount_command(app, words, line)


HANDLERS = {
    CMD_MODE: do_mode,
    CMD_LABEL: do_label,
    CMD_SAVE: do_save,
    CMD_RESET_MODEL: do_reset_model,
    CMD_INFO: do_info,
    CMD_RATE: do_rate,
    CMD_MOUNT: do_mount,
}


def hz(mhz):
    """Millihertz -> '50' or '12.5' (no float formatting)."""
    if mhz % 1000 == 0:
        return str(mhz // 1000)
    return ("%d.%03d" % (mhz // 1000, mhz % 1000)).rstrip("0")


def token(name):
    """A name as one protocol token: spaces and non-printable characters become '_'."""
    return "".join(ch if "!" <= ch <= "~" else "_" for ch in name) or "_"


def shorten(text):
    """`text` cut to a length fit to echo in an err line."""
    return text if len(text) <= _ECHO else text[:_ECHO] + "..."
