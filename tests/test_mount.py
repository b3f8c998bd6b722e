"""The sensor's mount (device/mount.py) and its NumPy reference (host/mount.py).

Runs on: host (pytest), plus the `micropython` binary: the board's search scores every
orientation as the host does, bit for bit and allocation-free.
"""

import struct

import numpy as np
import pytest

from microprop.device import mount as dm
from microprop.host import adapt, modelfile, mount, pipeline, synth
from tests.conftest import run_micropython
from tests.helpers import inverse


def matrix(k):
    """Orientation k as the 3x3 matrix taking a sensor vector to the turned one."""
    m = np.zeros((3, 3), dtype=np.int64)
    for i, a in enumerate(dm.ORIENTATIONS[k]):
        m[i, abs(a) - 1] = 1 if a > 0 else -1
    return m


def test_the_24_orientations_are_the_rotations_that_take_axes_to_axes():
    mats = [matrix(k) for k in range(dm.N_ORIENTATIONS)]
    assert dm.N_ORIENTATIONS == 24
    assert len({m.tobytes() for m in mats}) == 24
    for m in mats:
        assert round(np.linalg.det(m)) == 1
        assert (m @ m.T == np.eye(3)).all()
    assert (mats[dm.IDENTITY] == np.eye(3)).all()
    for k in range(24):
        assert dm.index(dm.name(k)) == k
        assert dm.compose(inverse(k), k) == dm.IDENTITY
        for j in range(24):
            assert (matrix(dm.compose(k, j)) == mats[k] @ mats[j]).all()
    assert dm.name(1) == "-y+x+z" and dm.index("+x+y") == -1


def test_turning_counts_is_the_matrix_and_saturates_only_a_negated_minus_32768():
    rng = np.random.default_rng(0)
    channels = ["t", "gx", "gy", "gz", "ax", "ay", "az"]
    counts = rng.integers(-32768, 32768, size=(200, 7))
    counts[:5] = -32768
    for k in range(24):
        got = mount.turn_counts(counts, channels, k)
        want = counts.copy()
        for cols in ([1, 2, 3], [4, 5, 6]):
            want[:, cols] = counts[:, cols] @ matrix(k).T
        assert (got == np.minimum(want, 32767)).all()
        assert (got[:, 0] == counts[:, 0]).all()


def test_a_partial_triple_or_none_is_refused():
    with pytest.raises(ValueError, match="not all of ax,ay,az"):
        dm.triples(["ax", "ay", "t"])
    with pytest.raises(ValueError, match="no axis triple"):
        dm.channel_map(["t", "h"], 1)
    assert list(dm.channel_map(["t", "h"], dm.IDENTITY)) == [1, 2]


@pytest.fixture(scope="module")
def synth_model(tmp_path_factory):
    """A small model trained on synthetic accelerometer data, its file, and one test subject's
    windows turned by a quarter turn about z, with their labels."""
    log = synth.generate(seed=2, subjects=4, seconds_per_activity=20)
    ds = pipeline.make_dataset(log, source="synth")
    mlp, meta, _, _ = pipeline.train_model(ds, hidden=(12,), epochs=40, seed=0)
    qm = pipeline.quantize_model(mlp, meta, ds)
    d = tmp_path_factory.mktemp("mount")
    modelfile.write_model(d / "model.mpm", qm)
    subject = meta["data"]["test_subjects"][0]
    turned = pipeline.make_dataset(mount.turn_log(log, {subject: 1}), source="synth")
    idx, _ = adapt.adaptation_split(turned, subject, list(qm.classes), per_class=4)
    y = pipeline.class_indices(turned.labels[idx], list(qm.classes))
    return qm, d, mount.windows(turned, idx), y, log.channels


def test_the_search_finds_the_turn_back_of_a_quarter_turn(synth_model):
    qm, _, wins, y, channels = synth_model
    scores = mount.search(qm, wins, y, channels)
    assert mount.best(scores) == inverse(1)
    assert scores[inverse(1)] > scores[dm.IDENTITY]


SEARCH_SCRIPT = r"""
import struct, sys, micropython
from array import array
from device.infer import Model
from device.mount import MountSearch
f = open(sys.argv[1], "rb")
n, window, c = struct.unpack("<HHH", f.read(6))
names = f.read(c * 3).decode()
channels = [names[3 * i:3 * i + 3].strip() for i in range(c)]
for kernel in ("portable", "viper"):
    f.seek(6 + 3 * c)
    model = Model(sys.argv[2], kernel=kernel)
    if kernel == "viper":
        from device.features_viper import window_features
    else:
        from device.features import window_features
    search = MountSearch(model, window_features, channels, window)
    ring = array("h", bytes(2 * c * window))
    for _ in range(n):
        head, label = struct.unpack("<HH", f.read(4))
        f.readinto(ring)
        micropython.heap_lock()
        search.add(ring, head, label)
        micropython.heap_unlock()
    print(kernel, search.windows, search.best(), " ".join([str(v) for v in search.scores]))
"""


def test_the_board_scores_every_orientation_as_the_host(micropython, synth_model, tmp_path):
    qm, d, wins, y, channels = synth_model
    rng = np.random.default_rng(1)
    edges = rng.integers(-32768, 32768, size=(2,) + wins.shape[1:])
    edges[:, ::3] = -32768  # negated, it saturates to 32767: the native copy's special case
    edges[1, 1::3] = 32767
    wins = np.concatenate([wins, edges])
    y = np.concatenate([y, [0, len(qm.classes) - 1]])
    n, window, c = wins.shape
    blob = [struct.pack("<HHH", n, window, c), "".join("%-3s" % ch for ch in channels).encode()]
    for x, label in zip(wins, y, strict=True):
        head = int(rng.integers(0, window))  # the oldest frame anywhere in the ring
        ring = np.zeros_like(x)
        ring[(head + np.arange(window)) % window] = x
        blob += [struct.pack("<HH", head, int(label)), ring.astype("<i2").tobytes()]
    (tmp_path / "windows.bin").write_bytes(b"".join(blob))
    out = run_micropython(
        micropython, SEARCH_SCRIPT, args=[str(tmp_path / "windows.bin"), str(d / "model.mpm")]
    ).splitlines()
    want = mount.search(qm, wins, y, channels)
    assert len(out) == 2
    for line in out:
        kernel, count, best, *scores = line.split()
        assert int(count) == n, kernel
        assert [int(v) for v in scores] == want.tolist(), kernel
        assert int(best) == mount.best(want), kernel


TURN_SCRIPT = r"""
import sys
from array import array
from device import mount, mount_viper
f = open(sys.argv[1], "rb")
n, c = [int(v) for v in f.readline().split()]
channels = f.readline().decode().split()
src = array("h", bytes(2 * n * c))
f.readinto(src)
for name, turn_window in (("portable", mount.turn_window), ("viper", mount_viper.turn_window)):
    for k in range(mount.N_ORIENTATIONS):
        dst = array("h", bytes(2 * n * c))
        turn_window(src, dst, mount.channel_map(channels, k), c, n * c)
        print(name, k, " ".join([str(v) for v in dst]))
"""


def test_the_boards_window_copies_turn_as_the_host(micropython, tmp_path):
    """device/mount.py's and device/mount_viper.py's turned copies of a window, every
    orientation, with -32768 and 32767 in every channel, equal host/mount.py's turn_counts."""
    rng = np.random.default_rng(2)
    channels = ["gx", "ax", "t", "gy", "ay", "az", "gz"]
    x = rng.integers(-32768, 32768, size=(40, len(channels)))
    x[::4] = -32768
    x[1::4] = 32767
    head = ("%d %d\n%s\n" % (x.shape + (" ".join(channels),))).encode()
    (tmp_path / "x.bin").write_bytes(head + x.astype("<i2").tobytes())
    out = run_micropython(micropython, TURN_SCRIPT, args=[str(tmp_path / "x.bin")]).splitlines()
    assert len(out) == 2 * dm.N_ORIENTATIONS
    for line in out:
        name, k, *values = line.split()
        want = mount.turn_counts(x, channels, int(k)).ravel().tolist()
        assert [int(v) for v in values] == want, (name, k)


SATURATE_SCRIPT = r"""
import sys
from array import array
from device.infer import Model
from device.features import window_features
from device.mount import MountSearch, SCORE_LIMIT, N_ORIENTATIONS
f = open(sys.argv[1], "rb")
window, c, label = [int(v) for v in f.readline().split()]
channels = f.readline().decode().split()
ring = array("h", bytes(2 * c * window))
f.readinto(ring)
search = MountSearch(Model(sys.argv[2], kernel="portable"), window_features, channels, window)
for k in range(N_ORIENTATIONS):
    search.scores[k] = SCORE_LIMIT - 1
search.add(ring, 0, label)
print(" ".join([str(v) for v in search.scores]))
"""


def test_a_score_saturates_within_the_small_ints_of_32_bit_ports(
    micropython, synth_model, tmp_path
):
    """A sum one below SCORE_LIMIT plus a window's score (at most 255) stays below 2**30
    before it is clamped, and the board clamps it to SCORE_LIMIT as the host does."""
    assert dm.SCORE_LIMIT + 255 < 2**30
    qm, d, wins, y, channels = synth_model
    window, c = wins.shape[1:]
    head = ("%d %d %d\n%s\n" % (window, c, int(y[0]), " ".join(channels))).encode()
    (tmp_path / "w.bin").write_bytes(head + wins[0].astype("<i2").tobytes())
    out = run_micropython(
        micropython, SATURATE_SCRIPT, args=[str(tmp_path / "w.bin"), str(d / "model.mpm")]
    )
    one = mount.search(qm, wins[:1], y[:1], channels)
    want = np.minimum(dm.SCORE_LIMIT - 1 + one, dm.SCORE_LIMIT)
    assert [int(v) for v in out.split()] == want.tolist()
    assert (one > 1).sum() > 0  # some orientation saturates


def test_adaptation_with_the_mount_learnt_recovers_a_turned_wearer():
    log = synth.generate(seed=3, subjects=5, seconds_per_activity=20)
    ds = pipeline.make_dataset(log, source="synth")
    subjects = sorted(set(ds.subjects.tolist()), key=adapt.natural_key)
    train, test = subjects[:3], subjects[3:]
    kw = dict(
        modes=("last",), lr_shift=6, lr=0.02, seed=0, per_class=4, remount_sensor=True,
        train_options={"hidden": (12,), "epochs": 40},
    )  # fmt: skip
    plain = adapt.run_adaptation(ds, train, test, **kw)
    learnt = adapt.run_adaptation(ds, train, test, learn_mount=True, **kw)
    assert plain["mounts"] is None
    # --remount's quarter turn about z reads (y, -x, z): "+y-x+z"; the board finds its inverse
    undo = dm.name(inverse(dm.index("+y-x+z")))
    assert all(t.startswith(undo + " ") for t in learnt["mounts"].values())
    before = learnt["mean"]["last"]["int_before"]
    assert before == plain["mean"]["last"]["int_before"]  # before: without the mount
    assert learnt["mean"]["last"]["int_mounted"] > before + 0.05
    assert learnt["mean"]["last"]["int_after"] >= plain["mean"]["last"]["int_after"]
    assert "mount learnt first" in adapt.format_adaptation(learnt)
