"""The sensor's mount in the board app (device/app.py, device/commands.py, device/mount.py):
a mount turns every sample exactly as host/boardeval.py turns a log, `mount search` and `mount
pick` find the orientation a replay was turned by, a mount allocates nothing per sample nor per
scored window, the commands refuse what they cannot do, and a checkpoint keeps the mount.

Runs on: host (pytest), plus the `micropython` binary, one process per scenario; the command
errors of a model without an axis triple run under CPython with tests/fakes.py's stand-ins.

The board folder is tests/helpers.make_trained_board's: a small model trained on synthetic
accelerometer data (channels ax, ay, az) and a replay of 1500 rows of that data; the search
test's (`upright`) has one synthetic wearer, whose sensor sits one way, so that the model knows
the sensor's axes (microprop.host.synth turns each wearer's by up to 40 degrees, and a model
trained on three scores a quarter turn about z above the identity on the replay).
"""

import binascii
import dataclasses
import shutil
import struct

import numpy as np
import pytest

from microprop.device import checkpoint, mount
from microprop.firmware_tools.protocol import Err, Info, Pred, Sample, parse_line
from microprop.host import boardeval, features, reference, synth

from .fakes import fake_app
from .helpers import (
    FAKE_SENSOR,
    configure,
    inverse,
    labels_of,
    make_trained_board,
    records,
    run_app,
    run_board,
    stream,
)

QUARTER = mount.index("-y+x+z")  # a quarter turn about z
WINDOW, HOP = 100, 50


def turned(counts, k):
    """counts (n, 3) of ax, ay, az turned by orientation k, written out from ORIENTATIONS."""
    out = np.empty_like(counts)
    for i, a in enumerate(mount.ORIENTATIONS[k]):
        col = counts[:, abs(a) - 1]
        out[:, i] = col if a > 0 else np.minimum(-col, 32767)
    return out


@pytest.fixture(scope="module")
def upright(tmp_path_factory):
    """make_trained_board's folder, model, counts and log, of one synthetic wearer (the
    halves of each recording as two subjects, for the trainer's subject-wise split)."""
    log = synth.generate(seed=1, subjects=1, seconds_per_activity=16)
    half = np.arange(len(log.labels)) % 800 < 400  # recordings of 800 samples
    subjects = np.where(half, "a", "b")
    recordings = np.char.add(np.char.add(subjects, "-"), log.labels.astype(str))
    log = dataclasses.replace(log, subjects=subjects, recordings=recordings)
    return make_trained_board(tmp_path_factory.mktemp("upright"), log)


def test_turn_counts_is_the_orientation_written_out():
    rng = np.random.default_rng(3)
    counts = rng.integers(-32768, 32768, size=(200, 3))
    counts[:4] = [[-32768, 32767, 0], [0, -32768, -1], [1, -1, -32768], [-32768] * 3]
    for k in range(mount.N_ORIENTATIONS):
        got = boardeval.turn_counts(counts, ["ax", "ay", "az"], k)
        assert np.array_equal(got, turned(counts, k)), k
        assert got.min() >= -32768 and got.max() <= 32767
    # a gyroscope triple turns with the accelerometer's; other channels stay
    both = rng.integers(-500, 500, size=(10, 7))
    names = ["ax", "ay", "az", "gx", "gy", "gz", "t"]
    got = boardeval.turn_counts(both, names, QUARTER)
    assert np.array_equal(got[:, :3], turned(both[:, :3], QUARTER))
    assert np.array_equal(got[:, 3:6], turned(both[:, 3:6], QUARTER))
    assert np.array_equal(got[:, 6], both[:, 6])


TURNING = """
from device import app
from device.infer import Model
from device.sensor_replay import Replay

a = app.App(Model("model.mpm"), Replay("data.csv", ["ax", "ay", "az"]),
            {"realtime": False, "mode": "record", "mount": "%s"}, inp=None)
a.run(max_samples=7)
a.handle_line("mode predict")
a.run(max_hops=%d)
a.handle_line("info")
"""


@pytest.mark.parametrize("name", ["-y+x+z", "+x-y-z", "-z-y-x"])
def test_a_mount_turns_every_sample_exactly(micropython, board, name):
    """Record mode prints the turned frame (what the model sees); the pred lines equal
    boardeval.predict_stream with the mount, line for line."""
    d, q, counts, _ = board
    k = mount.index(name)
    n_hops = 6
    recs = [parse_line(x) for x in run_board(micropython, d, TURNING % (name, n_hops))]
    assert recs[0].fields["state"] == "start" and recs[0].fields["mount"] == name
    samples = [r for r in recs if isinstance(r, Sample)]
    assert [list(s.values.values()) for s in samples] == turned(counts[:7], k).tolist()
    preds = [r for r in recs if isinstance(r, Pred)]
    # record mode sampled 7 rows; `mode predict` keeps the ring (7 of the 100 samples in)
    want = boardeval.predict_stream(q, stream(counts, 7 + WINDOW + HOP * n_hops), 1, k)
    assert len(preds) == n_hops
    for p, (_, cls, scores) in zip(preds, want[:n_hops], strict=True):
        assert p.class_name == q.classes[cls]
        assert [p.scores[c] for c in q.classes] == scores.tolist()
    assert recs[-1].fields["mount"] == name and not [r for r in recs if isinstance(r, Err)]


def write_turned_replay(d, counts, k):
    """data.csv of folder `d` with its ax, ay, az columns turned by orientation k."""
    lines = (d / "data.csv").read_text().splitlines(keepends=True)
    rows = turned(counts, k)
    body = [",".join(map(str, rows[i])) + "," + line.split(",", 3)[3] for i, line in
            enumerate(lines[2:])]  # fmt: skip
    (d / "data.csv").write_text("".join(lines[:2] + body))


def one_label_ends(labels, n, first, last):
    """Sample counts n in first..last, every `n` apart, whose window holds one label."""
    out = []
    for end in range(first, last, n):
        window = [labels[i % len(labels)] for i in range(end - WINDOW, end)]
        if len(set(window)) == 1:
            out.append(end)
    return out


def search_sums(q, data, ends, labels):
    """The 24 orientations' sums of the labelled class's score over the windows ending at
    `ends` (exclusive) of the stream `data`: MountSearch's on the host."""
    sums = np.zeros(mount.N_ORIENTATIONS, dtype=np.int64)
    for end in ends:
        window = data[end - WINDOW : end]
        X = np.array([features.window_features(turned(window, k)) for k in
                      range(mount.N_ORIENTATIONS)])  # fmt: skip
        _, scores = reference.predict(q, X)
        sums += scores[:, q.classes.index(labels[(end - 1) % len(labels)])]
    return sums


def test_search_and_pick_find_the_turn_of_the_replay(micropython, upright, tmp_path):
    """The replay's sensor turned a quarter about z: `mount search`, labels on windows of one
    class, `mount pick` picks the inverse turn, with the sums MountSearch must give (the host
    reference), the window restarts and the preds are the unturned data's. The refusals on the
    way change nothing; learning is off (labels only score)."""
    _, q, counts, _ = upright
    labels = labels_of(upright)
    folder = tmp_path / "b"
    shutil.copytree(upright[0], folder)
    write_turned_replay(folder, counts, QUARTER)
    configure(folder, learn="off")
    ends = one_label_ends(labels, 130, 200, 1400)
    pick_at = ends[-1] + 7
    schedule = [(50, "mount search"), (60, "label walking"), (60, "mount -y+x+z")]
    schedule += [(60, "mount search"), (60, "mount pick"), (61, "mount")]
    schedule += [(n, "label " + labels[n - 1]) for n in ends]
    schedule += [(pick_at, "mount pick"), (pick_at, "mount pick"), (pick_at, "info")]
    schedule += [(pick_at + 10, "mount search"), (pick_at + 10, "mount cancel")]
    n_after = 5
    samples = pick_at + WINDOW + HOP * (n_after - 1)
    recs, _ = records(run_app(micropython, folder, schedule, samples))
    assert recs[0].fields["mount"] == "+x+y+z" and recs[0].fields["trainer"] == "none"
    answers = [r for r in recs if not isinstance(r, Pred)][1:]
    assert answers[0].text == "mount=+x+y+z search=started"
    errs = answers[1:5]
    assert [e.code for e in errs] == ["label", "mount", "mount", "mount"], errs
    assert errs[0].message == "no full window yet (60 of 100 samples)"
    assert errs[1].message.startswith("-y+x+z refused: a search is running")
    assert errs[2].message.startswith("search refused: a search is running")
    assert errs[3].message.startswith("pick: no window scored yet")
    assert answers[5].text == "mount=+x+y+z"
    data = mount_stream = turned(stream(counts, samples), QUARTER)
    sums = search_sums(q, mount_stream, ends, labels)
    for i, rec in enumerate(answers[6 : 6 + len(ends)]):
        part = search_sums(q, data, ends[: i + 1], labels)
        assert rec.fields == {"mount_window": str(i + 1), "best": mount.name(int(np.argmax(part)))}
    undo = inverse(QUARTER)
    assert int(np.argmax(sums)) == undo
    picked = answers[6 + len(ends)]
    assert picked.fields == {
        "mount": mount.name(undo),
        "windows": str(len(ends)),
        "sum": str(sums[undo]),
        "was": "+x+y+z",
        "was_sum": str(sums[0]),
        "restart": str(pick_at),
    }
    again, info, search, cancel = answers[7 + len(ends) :]
    assert again.code == "mount" and again.message.startswith("pick: no search running")
    assert info.fields["mount"] == mount.name(undo)
    assert search.text == "mount=%s search=started" % mount.name(undo)
    assert cancel.text == "mount=%s search=cancelled" % mount.name(undo)
    preds = [r for r in recs if isinstance(r, Pred)]
    after = preds[-n_after:]
    unturned = stream(counts, samples)[pick_at:]
    want = boardeval.predict_stream(q, unturned)
    assert [p.t_ms // 20 for p in after] == [pick_at + e for e, _, _ in want[:n_after]]
    for p, (_, cls, scores) in zip(after, want, strict=False):
        assert p.class_name == q.classes[cls]
        assert [p.scores[c] for c in q.classes] == scores.tolist()


HEAP = (
    """
import micropython
from array import array
from device import app
from device.infer import Model

"""
    + FAKE_SENSOR
    + """

def locked(a, what):
    micropython.heap_lock()
    try:
        if what == "step":
            return a.step()
        if what == "add":
            return a.search.add(a.ring, a.head, 1)
        return a.run(None, 20)
    finally:
        micropython.heap_unlock()

for kernel in ("viper", "portable"):
    a = app.App(Model("model.mpm", kernel=kernel), Fake(), {"realtime": False, "mount": "-y+x+z"},
                inp=Empty())
    a.run(max_hops=1)
    hops = 0
    for _ in range(1000):
        if locked(a, "step") > 0:
            hops += 1
    a.handle_line("mode record")
    locked(a, "run")
    a.handle_line("mode predict")
    a.handle_line("mount search")
    for _ in range(3):
        locked(a, "add")
    print("info kernel=%s locked_hops=%d windows=%d" % (kernel, hops, a.search.windows))
"""
)


def test_a_mount_and_a_search_allocate_nothing(micropython, board):
    """heap_lock around step() with a turning mount (1000 samples, both kernels), the loop in
    record mode printing turned samples, and a search scoring a window (24 orientations)."""
    d, _, counts, _ = board
    recs = [parse_line(x) for x in run_board(micropython, d, HEAP)]
    for kernel in ("viper", "portable"):
        mark = {"kernel": kernel, "locked_hops": "20", "windows": "3"}
        assert [r for r in recs if isinstance(r, Info) and r.fields == mark], kernel
    samples = [r for r in recs if isinstance(r, Sample)]
    assert len(samples) == 2 * 20
    first = 100 + 1000  # the samples read before record mode
    want = turned(stream(counts, first + 20)[first:], QUARTER).tolist()
    assert [list(s.values.values()) for s in samples[:20]] == want
    assert not [r for r in recs if isinstance(r, Err)]


NO_TRIPLE = "mount: the channels have ax,ay but not all of ax,ay,az: a turn needs the three axes"


def messages(out, seen=0):
    """The app's output lines from `seen` on, as protocol records."""
    lines = out.getvalue().decode().splitlines()
    return [parse_line(line) for line in lines[seen:]], len(lines)


def test_commands_refuse_what_they_cannot_do():
    """The fakes' model has channels ax, ay: no whole axis triple, so only the identity; every
    refusal is one `err mount ...` line and changes nothing."""
    app, out, _ = fake_app({"mount": "+y-x+z"})
    assert app.problems == ["mount +y-x+z refused: %s; using +x+y+z" % NO_TRIPLE]
    app.run(max_samples=4)
    _, seen = messages(out)
    for line in (
        "mount",
        "mount -y+x+z",
        "mount sideways",
        "mount search",
        "mount pick",
        "mount cancel",
        "mount search now",
        "mount +x+y+z",
    ):
        app.handle_line(line)
    recs, _ = messages(out, seen)
    assert recs[0] == Info({"mount": "+x+y+z"}, "mount=+x+y+z")
    assert [(r.code, r.message) for r in recs[1:7]] == [
        ("mount", "-y+x+z refused: " + NO_TRIPLE),
        ("mount", "sideways refused: unknown orientation 'sideways', expected e.g. -y+x+z"),
        ("mount", "search refused: " + NO_TRIPLE),
        ("mount", "pick: no search running (mount search first)"),
        ("mount", "cancel: no search running (mount search first)"),
        ("mount", "'mount search now' refused, expected mount [search|pick|cancel|<orientation>]"),
    ]
    assert recs[7] == Info({"mount": "+x+y+z"}, "mount=+x+y+z")
    assert app.mount == 0 and app.frame is app.read_frame and app.search is None


@pytest.mark.parametrize("value", ["-y+x", 3, "+x+x+z", None])
def test_a_bad_mount_in_board_json_is_refused(value):
    from microprop.device.config import check_config

    clean, problems = check_config({"mount": value})
    assert clean["mount"] == "+x+y+z"
    assert problems == [
        'mount %r, expected an orientation, "+x+y+z" (none) or e.g. "-y+x+z"; using '
        "'+x+y+z'" % (value,)
    ]


def test_the_identity_default_is_device_mount_s():
    from microprop.device.config import DEFAULTS

    assert DEFAULTS["mount"] == mount.name(mount.IDENTITY)


def test_a_checkpoint_keeps_the_mount_its_weights_learned_in(micropython, folder):
    """`mount -y+x+z`, labels, `save`; at the next start the checkpoint's mount replaces
    board.json's, with an info line. A checkpoint of version 2 (no mount) loads as the
    identity, over board.json's mount too; one with a mount out of range is refused."""
    from .test_checkpoint import as_version_2

    configure(folder, learn="last")
    schedule = [(100, "mount -y+x+z"), (250, "label walking"), (300, "label idle")]
    schedule += [(300, "save"), (301, "info")]
    recs, _ = records(run_app(micropython, folder, schedule, 310))
    answers = [r for r in recs if not isinstance(r, Pred)]
    assert answers[1] == Info({"mount": "-y+x+z"}, "mount=-y+x+z")
    assert answers[4].fields == {"saved": "ckpt.0", "seq": "1", "steps": "2"}
    assert answers[5].fields["mount"] == "-y+x+z"

    recs, _ = records(run_app(micropython, folder, [], 1))
    assert recs[0].fields["mount"] == "-y+x+z" and recs[0].fields["steps"] == "2"
    assert recs[1].fields == {"checkpoint": "ckpt.0", "seq": "1", "steps": "2"}
    assert recs[2].text == "mount=-y+x+z from=checkpoint board_json=+x+y+z"

    (folder / "ckpt.0").write_bytes(as_version_2((folder / "ckpt.0").read_bytes()))
    configure(folder, learn="last", mount="-y+x+z")
    recs, _ = records(run_app(micropython, folder, [], 1))
    assert recs[0].fields["mount"] == "+x+y+z" and recs[0].fields["steps"] == "2"
    assert recs[2].text == "mount=+x+y+z from=checkpoint board_json=-y+x+z"

    (folder / "ckpt.0").unlink()
    run_app(micropython, folder, [(1, "save")], 2)  # version 3, board.json's mount
    data = bytearray((folder / "ckpt.0").read_bytes())
    assert data[checkpoint.HEAD_SIZE - 1] == QUARTER
    data[checkpoint.HEAD_SIZE - 1] = mount.N_ORIENTATIONS
    body = bytes(data[:-4])
    (folder / "ckpt.0").write_bytes(body + struct.pack("<I", binascii.crc32(body)))
    recs, _ = records(run_app(micropython, folder, [], 1))
    assert recs[0].fields["checkpoint"] == "none" and recs[0].fields["mount"] == "-y+x+z"
    assert recs[1].fields == {"checkpoint_ignored": "ckpt.0", "reason": "mount_24,_expected_0..23"}


IDENTITY_APP = """
import sys
from device import board
board.main("board.json", max_hops=2)
print("info loaded=" + ",".join(sorted(k for k in sys.modules if "mount" in k)) + ",")
"""


def test_the_identity_loads_no_mount_code(micropython, board):
    """The default mount: the pred lines are those without a mount (test_app.py), the start
    line says +x+y+z, and neither device/mount.py nor mount_app.py is imported."""
    d, q, counts, _ = board
    recs = [parse_line(x) for x in run_board(micropython, d, IDENTITY_APP)]
    assert recs[0].fields["mount"] == "+x+y+z"
    preds = [r for r in recs if isinstance(r, Pred)]
    want = boardeval.predict_stream(q, stream(counts, WINDOW + HOP))
    assert [[p.scores[c] for c in q.classes] for p in preds] == [s.tolist() for _, _, s in want]
    assert recs[-1].fields == {"loaded": ","}
