"""The app's side of the sensor's mount: setting it, and the `mount` commands that search it.

Runs on: board and host (MicroPython >= 1.22; CPython).

Imported only when the app turns (board.json "mount" other than "+x+y+z", a checkpoint's
through `take_checkpoint_mount` at the start, a `mount <orientation>`) or searches: the
identity's app, the default, keeps none of this code nor device/mount.py's (device/commands.py
answers the bare `mount` itself). The commands:

    mount <orientation>   the app turns every sample so from now on (e.g. -y+x+z: a quarter
                          turn about z); the window restarts, its frames were turned the old way
    mount search          a MountSearch (device/mount.py); from now on each `label` scores the
                          24 orientations on the window, relative to the mount now, and trains
                          nothing (no trainer needed; a full window as for training), answered
                          `info mount_window=<n> best=<what pick would apply now>`
    mount pick            the best orientation composed with the mount now is the new mount; the
                          search ends: `info mount=<new> windows=<n> sum=<n> was=<old>
                          was_sum=<n> restart=<sample>`, `sum` the best one's sum of the
                          labelled classes' scores (0..255 each), `was_sum` the old mount's,
                          `restart` the app's sample count where the window restarts (the next
                          `pred` ends `window` samples later)
    mount cancel          the search ends, the mount unchanged

While searching, `mount <orientation>` and a second `mount search` are refused, and so is
`mount pick` before a scored window; every refusal is one `err mount ...` line that changes
nothing. A label while searching costs 24 turned windows, feature sets and predictions
(`MountSearch.add`, allocation-free): 2.8M instructions on the emulated Cortex-M0 with the
viper kernel (the demo model, 3 channels x 100 samples: 29 hops' worth; `python bench/board.py
--quick`), about 22 ms at 125 MHz, by which a realtime app is one sample late. The search's
buffers, made by `mount search` and dropped at its end, take 1.9 kB there
(a copy of the window, one map per orientation); this module and device/mount.py, 8 kB more.

A trainer's checkpoint keeps the mount from its next `save` on (device/train_state.py), and
`reset-model` leaves it as it is; without a trainer ("learn": "off") board.json's "mount" is
what a reset comes back to.
"""

from array import array

from . import mount
from .commands import shorten
from .protocol import (
    CMD_LABEL,
    CMD_MOUNT,
    MOUNT_CANCEL,
    MOUNT_PICK,
    MOUNT_SEARCH,
    MOUNT_WINDOW,
    MOUNT_WORDS,
)


def set_mount(app, name):
    """Turn every sample of `app` by the orientation `name` (mount.name's) from now on, and
    restart the window. Raises ValueError for an unknown name, or a turn when the channels hold
    no whole axis triple; the app is then unchanged. The identity drops the map and the turned
    frame's use (the step then copies the clipped frame, as without a mount)."""
    k = mount.index(name)
    if k < 0:
        raise ValueError("unknown orientation %r, expected e.g. -y+x+z" % name)
    m = None
    if k != mount.IDENTITY:
        m = mount.channel_map(app.model.sensor["channels"], k, app.turn_map)
        if app.frame is app.read_frame:
            app.frame = array("h", bytes(2 * app.n_channels))
        app.turn = mount.turn
    else:
        app.frame = app.read_frame
        app.turn = None
    app.turn_map = m
    app.mount = k
    app.config["mount"] = name
    if app.learner is not None:
        app.learner.trainer.mount = k
    app.restart()


def take_checkpoint_mount(app, k):
    """The loaded checkpoint's mount k replaces board.json's (device/board.py's start): an
    info note says so, or an err line why not (the app then keeps board.json's)."""
    was = app.config["mount"]
    try:
        set_mount(app, mount.name(k))
    except ValueError as e:  # a model without the axes to turn: its checkpoint cannot have one
        app.problems.append("mount %s of the checkpoint refused: %s" % (mount.name(k), e))
        return
    app.notes.append("mount=%s from=checkpoint board_json=%s" % (app.config["mount"], was))


def do_mount(app, words, line):
    """`mount <word>` (device/commands.py answers the bare `mount`)."""
    what = words[1]
    if len(words) > 2:
        app.writer.err(CMD_MOUNT, "%r refused, expected %s [%s|<orientation>]" % (
            shorten(line.strip()), CMD_MOUNT, "|".join(MOUNT_WORDS)))  # fmt: skip
    elif what == MOUNT_SEARCH:
        _start_search(app)
    elif what == MOUNT_PICK:
        _pick(app)
    elif what == MOUNT_CANCEL:
        if _search(app, MOUNT_CANCEL) is not None:
            app.search = None
            app.writer.info("%s=%s %s=cancelled" % (CMD_MOUNT, app.config["mount"], MOUNT_SEARCH))
    elif app.search is not None:
        _searching(app, what)
    else:
        try:
            set_mount(app, what)
        except ValueError as e:
            app.writer.err(CMD_MOUNT, "%s refused: %s" % (shorten(what), e))
            return
        app.writer.info("%s=%s" % (CMD_MOUNT, app.config["mount"]))


def score(app, k):
    """A label with class index k while searching: the window scores every orientation; its
    info line. The caller checks k and that the ring holds a full window."""
    search = app.search
    search.add(app.ring, app.head, k)
    app.writer.info("%s=%d best=%s" % (MOUNT_WINDOW, search.windows, mount.name(_picked(app))))


def _picked(app):
    """The mount a `mount pick` would apply now: the best orientation composed with the app's."""
    return mount.compose(app.search.best(), app.mount)


def _search(app, what):
    """The app's running search, or None after the err line that says there is none."""
    if app.search is None:
        app.writer.err(CMD_MOUNT, "%s: no search running (%s %s first)" % (
            what, CMD_MOUNT, MOUNT_SEARCH))  # fmt: skip
    return app.search


def _searching(app, what):
    app.writer.err(CMD_MOUNT, "%s refused: a search is running (%s %s or %s first)" % (
        shorten(what), CMD_MOUNT, MOUNT_PICK, MOUNT_CANCEL))  # fmt: skip


def _start_search(app):
    if app.search is not None:
        _searching(app, MOUNT_SEARCH)
        return
    model = app.model
    try:
        app.search = mount.MountSearch(
            model, app.window_features, model.sensor["channels"], app.window
        )
    except ValueError as e:
        app.writer.err(CMD_MOUNT, "%s refused: %s" % (MOUNT_SEARCH, e))
        return
    app.writer.info("%s=%s %s=started" % (CMD_MOUNT, app.config["mount"], MOUNT_SEARCH))


def _pick(app):
    """`mount pick`: the best orientation, composed with the mount, is the new mount."""
    search = _search(app, MOUNT_PICK)
    if search is None:
        return
    if not search.windows:
        app.writer.err(CMD_MOUNT, "%s: no window scored yet (send %s <class> first)" % (
            MOUNT_PICK, CMD_LABEL))  # fmt: skip
        return
    was = app.config["mount"]
    set_mount(app, mount.name(_picked(app)))
    app.search = None
    app.writer.info(
        "%s=%s windows=%d sum=%d was=%s was_sum=%d restart=%d"
        % (CMD_MOUNT, app.config["mount"], search.windows, search.scores[search.best()], was,
           search.scores[mount.IDENTITY], app.samples)
    )  # fmt: skip
