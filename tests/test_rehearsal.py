"""Rehearsal windows: the file host/rehearsal.py writes and device/rehearsal.py reads, and the
board app's rehearsal step after each `label` (bit for bit TrainRef on the interleaved
sequence), started from board.json, allocation-free.

Runs on: host (pytest), plus the `micropython` binary, one process per scenario.
"""

import numpy as np
import pytest

from microprop.device.checkpoint import model_crc_of
from microprop.firmware_tools.protocol import Err, Info, Train
from microprop.host import features, pipeline, rehearsal, trainref

from .helpers import (
    HEAP,
    WINDOW,
    configure,
    host_windows,
    label_schedule,
    labels_of,
    records,
    run_app,
    run_micropython,
)

N_F = 14  # two channels


def small_set(seed=0, n=6, n_classes=3):
    """n windows of in-range features (the extremes included) and labels."""
    rng = np.random.default_rng(seed)
    lo, hi = features.feature_bounds(N_F // features.N_FEATURES)
    x = rng.integers(lo, np.asarray(hi) + 1, size=(n, N_F))
    x[0], x[1] = lo, hi
    return x, rng.integers(0, n_classes, n)


def model_crc(folder):
    return model_crc_of(str(folder / "model.mpm"))


def test_host_round_trip_and_refusals():
    x, y = small_set()
    data = rehearsal.to_bytes(x, y, 0x12345678, 3)
    x2, y2, crc = rehearsal.from_bytes(data, 0x12345678)
    assert crc == 0x12345678 and (x2 == x).all() and (y2 == y).all()
    for n in range(len(data)):
        with pytest.raises(ValueError, match="^rehearsal: "):
            rehearsal.from_bytes(data[:n])
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x10
        with pytest.raises(ValueError, match="^rehearsal: "):
            rehearsal.from_bytes(bytes(bad))
    with pytest.raises(ValueError, match="another model"):
        rehearsal.from_bytes(data, 0x12345679)
    out = x.copy()
    out[2, 5] = features.MAX_WINDOW  # crossings of a channel: at most MAX_WINDOW - 1
    with pytest.raises(ValueError, match="ranges"):
        rehearsal.to_bytes(out, y, 1, 3)
    with pytest.raises(ValueError, match="label"):
        rehearsal.to_bytes(x, np.full(len(y), 3), 1, 3)
    assert rehearsal.path_for("dir/m.mpm") == "dir/m.rh"


def test_pick_is_class_balanced_from_the_given_subjects_and_seeded():
    from microprop.host import synth

    ds = pipeline.make_dataset(synth.generate(seed=2, subjects=3, seconds_per_activity=6))
    classes = sorted(set(ds.labels.tolist()))
    x, y = rehearsal.pick(ds, ["s1", "s2"], classes, 3, seed=4)
    assert np.bincount(y, minlength=len(classes)).tolist() == [3] * len(classes)
    rows = {tuple(r) for r in ds.X[np.isin(ds.subjects, ["s1", "s2"])]}
    assert all(tuple(r) in rows for r in x)
    x2, y2 = rehearsal.pick(ds, ["s1", "s2"], classes, 3, seed=4)
    assert (x2 == x).all() and (y2 == y).all()
    assert rehearsal.interleave(x[:2], y[:2], x[2:3], y[2:3])[1].tolist() == [
        y[0],
        y[2],
        y[1],
        y[2],
    ]


READER = """
import os
from device.rehearsal import Rehearsal
from array import array
import micropython

def attempt(path, crc):
    try:
        Rehearsal(path, crc, %(nf)d, 3)
        return "loaded"
    except ValueError as e:
        return "refused " + str(e)

r = Rehearsal("good.rh", %(crc)d, %(nf)d, 3)
raw = array("i", bytes(4 * %(nf)d))
k = 0  # a new global inside heap_lock would grow the module's dict
for i in range(2 * r.n_windows):
    micropython.heap_lock()
    try:
        k = r.window_into(i, raw)
    finally:
        micropython.heap_unlock()
    print("window %%d %%s" %% (k, ",".join([str(v) for v in raw])))
print("foreign", attempt("good.rh", %(crc)d + 1))
print("shape", attempt("good.rh", %(crc)d).split(" ")[0])
data = open("good.rh", "rb").read()
results = {}
for n in range(len(data)):
    with open("bad.rh", "wb") as f:
        f.write(data[:n])
    results[attempt("bad.rh", %(crc)d).split(" ")[0]] = 1
for i in range(len(data)):
    b = bytearray(data)
    b[i] ^= 0x10
    with open("bad.rh", "wb") as f:
        f.write(b)
    results[attempt("bad.rh", %(crc)d).split(" ")[0]] = 1
print("damaged", ",".join(sorted(results)))
"""


def test_device_reader_equals_the_host_and_refuses_every_damaged_byte(micropython, tmp_path):
    """The board reads what the host wrote, cycles it without allocating, and refuses a file
    truncated or corrupted at any byte (and one of another model) with a ValueError."""
    import shutil

    from .helpers import ROOT

    x, y = small_set(seed=3)
    rehearsal.write(tmp_path / "good.rh", x, y, 777, 3)
    shutil.copytree(ROOT / "device", tmp_path / "device")
    out = run_micropython(micropython, READER % {"nf": N_F, "crc": 777}, cwd=tmp_path)
    lines = out.splitlines()
    windows = [ln.split(" ", 2) for ln in lines if ln.startswith("window ")]
    assert len(windows) == 2 * len(x)
    for i, (_, k, values) in enumerate(windows):
        assert int(k) == y[i % len(x)]
        assert [int(v) for v in values.split(",")] == x[i % len(x)].tolist()
    assert "foreign refused rehearsal: belongs to another model" in lines
    assert "shape loaded" in lines
    assert "damaged refused" in lines  # every truncation and every flipped byte refused


def write_rehearsal_for(folder, q, counts, per_class=2, seed=5):
    """A rehearsal file of the fixture's model from windows of its own replay stream."""
    times = [WINDOW + 37 * i for i in range(30)]
    x = np.array(host_windows(counts, times))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(q.classes), len(x))[: per_class * len(q.classes)]
    x = x[: len(y)]
    rehearsal.write(folder / "model.rh", x, y, model_crc(folder), len(q.classes))
    return x, y


def test_the_app_rehearses_after_each_label_bit_for_bit(micropython, board, folder):
    """learn=all with model.rh: each `label` trains on its window, then on the next rehearsal
    window; the weights are TrainRef's on that interleaved sequence, and `train` lines count
    only the labelled windows."""
    _, q, counts, _ = board
    rx, ry = write_rehearsal_for(folder, q, counts)
    configure(folder, learn="all", batch=1)
    times = [WINDOW + 11 * i + (i * i) % 5 for i in range(25)]
    schedule = label_schedule(q, labels_of(board), times) + [(times[-1] + 1, "dump")]
    recs, dumps = records(run_app(micropython, folder, schedule, times[-1] + 2))
    assert not [r for r in recs if isinstance(r, Err)]
    notes = [r for r in recs if isinstance(r, Info) and "rehearsal" in r.fields]
    assert notes[0].fields["rehearsal"] == "model.rh"
    assert notes[0].fields["windows"] == str(len(rx))
    ref = trainref.TrainRef(q, "all", 4, 1, 1)
    n_correct = 0
    trains = [r for r in recs if isinstance(r, Train)]
    for i, (raw, (_, cmd)) in enumerate(zip(host_windows(counts, times), schedule, strict=False)):
        _, correct = ref.step(raw, q.classes.index(cmd.split(" ", 1)[1]))
        n_correct += correct
        assert trains[i] == Train(i + 1, cmd.split()[1], bool(correct), 100 * n_correct // (i + 1))
        ref.step(rx[i % len(rx)], int(ry[i % len(rx)]))
    d = dumps[0]
    assert (d["steps"], d["n_correct"], d["state"]) == (len(times), n_correct, ref.state)
    for k, layer in enumerate(ref.qmodel.layers):
        assert d["w%d" % k] == np.asarray(layer.w).ravel().tolist(), k
        assert d["b%d" % k] == np.asarray(layer.b).tolist(), k
        assert d["m%d" % k] == np.asarray(ref.master_w[k]).ravel().tolist(), k


def test_rehearsal_goes_on_in_order_after_a_checkpoint(micropython, board, folder):
    """Save, a fresh process loads the checkpoint and goes on with the rehearsal window after
    the last one used: the weights are those of one process that never stopped; reset-model
    starts the rehearsal cycle again."""
    _, q, counts, _ = board
    rx, ry = write_rehearsal_for(folder, q, counts)
    configure(folder, learn="all", batch=1)
    labels = labels_of(board)
    first = label_schedule(q, labels, [WINDOW + 19 * i for i in range(7)])
    second = label_schedule(q, labels, [WINDOW + 5 + 23 * i for i in range(6)])
    n, m = first[-1][0], second[-1][0]
    run_app(micropython, folder, first + [(n, "save")], n + 1)
    third = label_schedule(q, labels, [m + 7 * i for i in range(1, 4)])
    e = third[-1][0]
    schedule = second + [(m, "dump"), (m, "reset-model")] + third + [(e, "dump")]
    recs, dumps = records(run_app(micropython, folder, schedule, e + 1))
    assert recs[0].fields["checkpoint"] == "ckpt.0"
    ref = trainref.TrainRef(q, "all", 4, 1, 1)
    for i, (raw, (_, cmd)) in enumerate(
        zip(host_windows(counts, [t for t, _ in first + second]), first + second, strict=True)
    ):
        ref.step(raw, q.classes.index(cmd.split(" ", 1)[1]))
        ref.step(rx[i % len(rx)], int(ry[i % len(rx)]))
    assert dumps[0]["w0"] == np.asarray(ref.qmodel.layers[0].w).ravel().tolist()
    assert dumps[0]["state"] == ref.state
    again = trainref.TrainRef(q, "all", 4, 1, 1)
    for i, (raw, (_, cmd)) in enumerate(
        zip(host_windows(counts, [t for t, _ in third]), third, strict=True)
    ):
        again.step(raw, q.classes.index(cmd.split(" ", 1)[1]))
        again.step(rx[i % len(rx)], int(ry[i % len(rx)]))
    assert dumps[1]["w0"] == np.asarray(again.qmodel.layers[0].w).ravel().tolist()
    assert dumps[1]["state"] == again.state


@pytest.mark.parametrize(
    "learn, damage, note",
    [
        ("all", "none", {"rehearsal": "none", "file": "model.rh"}),
        ("bias", "foreign", {"rehearsal": "off", "reason": "rehearsal:_belongs_to_another_model"}),
        ("all", "crc", {"rehearsal": "off", "reason": "rehearsal:_CRC_mismatch"}),
        ("last", "good", None),
    ],
)
def test_the_app_without_a_usable_rehearsal_file_learns_without(
    micropython,
    board,
    folder,
    learn,
    damage,
    note,
):
    """No file, a file of another model, a corrupted file: one info line, and `label` trains
    the labelled window only (TrainRef without rehearsal). In "last" the file is not used."""
    _, q, counts, _ = board
    if damage != "none":
        write_rehearsal_for(folder, q, counts)
    if damage == "foreign":
        data = bytearray((folder / "model.rh").read_bytes())
        x, y, _ = rehearsal.from_bytes(bytes(data))
        rehearsal.write(folder / "model.rh", x, y, model_crc(folder) ^ 1, len(q.classes))
    elif damage == "crc":
        data = bytearray((folder / "model.rh").read_bytes())
        data[40] ^= 1
        (folder / "model.rh").write_bytes(bytes(data))
    configure(folder, learn=learn, batch=1)
    times = [WINDOW + 17 * i for i in range(8)]
    schedule = label_schedule(q, labels_of(board), times) + [(times[-1] + 1, "dump")]
    recs, dumps = records(run_app(micropython, folder, schedule, times[-1] + 2))
    notes = [r.fields for r in recs if isinstance(r, Info) and "rehearsal" in r.fields]
    if note is None:
        assert notes == []
    else:
        assert len(notes) == 1 and all(notes[0][k] == v for k, v in note.items()), notes
    ref = trainref.TrainRef(q, learn, 4, 1, 1)
    for raw, (_, cmd) in zip(host_windows(counts, times), schedule, strict=False):
        ref.step(raw, q.classes.index(cmd.split(" ", 1)[1]))
    assert dumps[0]["state"] == ref.state
    assert dumps[0]["w0"] == np.asarray(ref.qmodel.layers[0].w).ravel().tolist()


def test_a_label_with_rehearsal_allocates_nothing(micropython, board, folder):
    """test_learning_app's heap_lock run (App.learn, both kernels) with model.rh present: in
    "all" each label takes its rehearsal step too, still inside heap_lock."""
    _, q, counts, _ = board
    write_rehearsal_for(folder, q, counts)
    script = HEAP + 'print("info rehearsal=%s" % (a.learner.rehearsal is not None))\n'
    lines = run_micropython(micropython, script, cwd=folder, timeout=60).splitlines()
    locked = [ln for ln in lines if ln.startswith("info locked")]
    assert locked == [
        "info locked kernel=%s learn=%s steps=6" % (k, m)
        for k in ("viper", "portable")
        for m in ("last", "all")
    ]
    assert lines[-1] == "info rehearsal=True"  # the last app built learns "all"
