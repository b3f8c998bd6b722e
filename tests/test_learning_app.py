"""Learning in the board app: `label` lines train the model bit for bit like host/trainref.py,
`save` / boot / `reset-model` keep or drop what was learned, and checkpoints survive a killed
process.

Runs on: host (pytest), plus the `micropython` binary, one process per scenario (the board
folder of tests/test_app.py's fixture, copied per test).

Commands come in on stdin as lines `<n> <command>`: the driver below hands each command to the
app's line reader once the app has read n samples, so that a `label` trains on the window of
samples n - window .. n - 1 of the replayed stream, which the host cuts too. A `dump` command
is the driver's own: it prints the model's weights and the trainer's state.
"""

import random
import signal
import subprocess
import time

import numpy as np
import pytest

from microprop.device.infer import Model
from microprop.device.train import Trainer
from microprop.firmware_tools.protocol import Err, Info, Train
from microprop.host import modelfile, trainref

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
from .helpers import (
    LEARNING_DRIVER as DRIVER,
)


def run_ref(ref, counts, schedule):
    """Step TrainRef over the windows of `schedule`; -> [(class, correct)]."""
    times = [n for n, _ in schedule]
    out = []
    for raw, (_, cmd) in zip(host_windows(counts, times), schedule, strict=True):
        label = ref.qmodel.classes.index(cmd.split(" ", 1)[1])
        out.append(ref.step(raw, label))
    return out


def assert_dump_equals(dump, ref):
    """The board's weights, biases, master weights and counters equal TrainRef's."""
    assert (dump["steps"], dump["n_correct"], dump["state"]) == (
        ref.steps,
        ref.n_correct,
        ref.state,
    )
    for k, layer in enumerate(ref.qmodel.layers):
        assert dump["w%d" % k] == np.asarray(layer.w).ravel().tolist(), k
        assert dump["b%d" % k] == np.asarray(layer.b).tolist(), k
        m = ref.master_w[k]
        assert dump["m%d" % k] == (None if m is None else np.asarray(m).ravel().tolist()), k


def exported(d):
    """The weights and biases of the model file in folder d (as a dump has them)."""
    qm = modelfile.read_model(d / "model.mpm")
    out = {}
    for k, layer in enumerate(qm.layers):
        out["w%d" % k] = np.asarray(layer.w).ravel().tolist()
        out["b%d" % k] = np.asarray(layer.b).tolist()
    return out


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "learn, batch, kernel", [("last", 1, None), ("all", 3, None), ("bias", 2, "portable")]
)
def test_train_lines_and_weights_equal_trainref(micropython, board, folder, learn, batch, kernel):
    """40 labels at arbitrary sample times: every `train` line's step, correctness and running
    accuracy, and the weights after them, are TrainRef's on the same windows."""
    _, q, counts, _ = board
    configure(folder, learn=learn, batch=batch, kernel=kernel)
    times = [WINDOW + 13 * i + (i * i) % 7 for i in range(40)]
    schedule = label_schedule(q, labels_of(board), times) + [(times[-1] + 1, "dump")]
    recs, dumps = records(run_app(micropython, folder, schedule, times[-1] + 2))
    start = recs[0]
    assert isinstance(start, Info) and start.fields["state"] == "start"
    assert start.fields["trainer"] == learn and start.fields["checkpoint"] == "none"
    assert not [r for r in recs if isinstance(r, Err)]
    ref = trainref.TrainRef(q, learn, 4, batch, 1)
    expected = run_ref(ref, counts, schedule[:-1])
    trains = [r for r in recs if isinstance(r, Train)]
    n_correct = 0
    for i, (t, (_, correct), (_, cmd)) in enumerate(zip(trains, expected, schedule, strict=False)):
        n_correct += correct
        assert t == Train(i + 1, cmd.split()[1], bool(correct), 100 * n_correct // (i + 1)), i
    assert len(trains) == len(times)
    assert_dump_equals(dumps[0], ref)
    changed = sum(
        np.count_nonzero(np.asarray(a.w) != np.asarray(b.w))
        for a, b in zip(ref.qmodel.layers, q.layers, strict=True)
    )
    assert learn == "bias" or changed > 0  # the test would see a step that does nothing


def test_label_errors_change_nothing(micropython, board, folder):
    _, q, counts, _ = board
    configure(folder)
    schedule = [
        (10, "label " + q.classes[0]),  # no full window yet
        (WINDOW, "label nope"),
        (WINDOW, "label"),
        (WINDOW, "save now"),
        (WINDOW + 1, "dump"),
    ]
    recs, dumps = records(run_app(micropython, folder, schedule, WINDOW + 2))
    errs = [r for r in recs if isinstance(r, Err)]
    assert [e.code for e in errs] == ["label", "label", "label", "save"]
    assert "no full window yet (10 of 100 samples)" in errs[0].message
    assert "unknown class 'nope', expected one of " + ",".join(q.classes) in errs[1].message
    assert not [r for r in recs if isinstance(r, Train)]
    assert dumps[0]["steps"] == 0
    assert {k: v for k, v in dumps[0].items() if k[0] in "wb"} == exported(folder)
    assert not list(folder.glob("ckpt.*"))


def test_save_boot_continue_and_reset(micropython, board, folder):
    """Save mid-batch; a fresh process loads the checkpoint (info line) with the saved weights
    and training goes on exactly as if never stopped; reset-model gives back the exported
    weights and clears the slots; the next boot finds no checkpoint."""
    _, q, counts, _ = board
    configure(folder, learn="all", batch=3)
    labels = labels_of(board)
    first = label_schedule(q, labels, [WINDOW + 20 * i for i in range(10)])  # 3 batches + 1
    n = first[-1][0]
    recs, dumps = records(run_app(micropython, folder, first + [(n, "save"), (n, "dump")], n + 1))
    saved = [r for r in recs if isinstance(r, Info) and "saved" in r.fields][0]
    assert saved.fields == {"saved": "ckpt.0", "seq": "1", "steps": "10"}
    ref = trainref.TrainRef(q, "all", 4, 3, 1)
    run_ref(ref, counts, first)
    assert_dump_equals(dumps[0], ref)

    second = label_schedule(q, labels, [WINDOW + 30 + 11 * i for i in range(8)])
    m = second[-1][0]
    schedule = [(0, "dump")] + second + [(m, "dump"), (m, "save"), (m, "info")]
    schedule += [(m, "reset-model"), (m, "dump"), (m, "info")]
    recs, dumps = records(run_app(micropython, folder, schedule, m + 1))
    assert recs[0].fields["checkpoint"] == "ckpt.0" and recs[0].fields["steps"] == "10"
    assert recs[1] == Info(
        {"checkpoint": "ckpt.0", "seq": "1", "steps": "10"}, "checkpoint=ckpt.0 seq=1 steps=10"
    )
    assert_dump_equals(dumps[0], ref)
    run_ref(ref, counts, second)
    assert_dump_equals(dumps[1], ref)
    trains = [r for r in recs if isinstance(r, Train)]
    assert [t.step for t in trains] == list(range(11, 19))
    infos = [r for r in recs if isinstance(r, Info)]
    assert infos[-4].fields == {"saved": "ckpt.1", "seq": "2", "steps": "18"}
    assert infos[-3].fields["steps"] == "18" and infos[-3].fields["seq"] == "2"
    assert infos[-3].fields["acc"] == str(100 * ref.n_correct // ref.steps)
    assert infos[-2] == Info({"reset": "ok"}, "reset=ok")
    assert infos[-1].fields["steps"] == "0" and infos[-1].fields["checkpoint"] == "none"
    assert dumps[2]["steps"] == 0 and dumps[2]["state"] == 1
    assert {k: v for k, v in dumps[2].items() if k[0] in "wb"} == exported(folder)
    assert not list(folder.glob("ckpt.*"))

    recs, dumps = records(run_app(micropython, folder, [(0, "dump")], 1))
    assert recs[0].fields["checkpoint"] == "none"
    assert [r.fields for r in recs[1:] if isinstance(r, Info)] == [
        {"rehearsal": "none", "file": "model.rh"}  # learn=all, no rehearsal file: said once
    ]
    assert dumps[0]["steps"] == 0


def test_checkpoint_of_another_model_is_ignored(micropython, board, folder):
    _, q, counts, _ = board
    configure(folder)
    other = folder / "other.mpm"
    qm = modelfile.read_model(folder / "model.mpm")
    qm.layers[-1].b[0] += 1
    modelfile.write_model(other, qm)
    t = Trainer(Model(str(other), kernel="portable"), "last", model_path=str(other))
    t.prefix = str(folder / "ckpt")
    assert t.save() == (str(folder / "ckpt.0"), 1)
    recs, dumps = records(run_app(micropython, folder, [(0, "dump")], 1))
    assert recs[0].fields["checkpoint"] == "none"
    note = recs[1]
    assert isinstance(note, Info) and note.fields["checkpoint_ignored"] == "ckpt.0"
    assert note.fields["reason"].startswith("belongs_to_another_model_(crc_0x")
    assert " " not in note.text.split("reason=")[1]
    assert {k: v for k, v in dumps[0].items() if k[0] in "wb"} == exported(folder)


KILL_SAMPLES = 100000


def test_killed_mid_save_boots_with_loadable_weights(micropython, board, folder):
    """autosave after every step, killed at a random moment (SIGKILL, several times): the next
    boot loads a checkpoint, and its weights are TrainRef's after the steps it names; with the
    newest slot cut short, the older one loads (the cut one is reported)."""
    _, q, counts, _ = board
    configure(folder, autosave=1)
    labels = labels_of(board)
    times = [WINDOW + 3 * i for i in range(2000)]
    schedule = label_schedule(q, labels, times)
    stdin = "".join("%d %s\n" % item for item in schedule).encode()
    rng = random.Random(5)
    for trial in range(3):
        proc = subprocess.Popen(
            [micropython, "-c", DRIVER, str(KILL_SAMPLES)],
            cwd=folder,
            env={"MICROPYPATH": str(folder)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        proc.stdin.write(stdin)
        proc.stdin.close()
        saves = 0
        while saves < 3 + 4 * trial:
            line = proc.stdout.readline()
            assert line, "the app ended early"
            saves += line.startswith(b"info saved=")
        time.sleep(rng.random() * 0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()

        recs, dumps = records(run_app(micropython, folder, [(0, "dump")], 1))
        loaded = recs[1]
        assert isinstance(loaded, Info) and loaded.fields["checkpoint"] in ("ckpt.0", "ckpt.1")
        steps = int(loaded.fields["steps"])
        assert steps == dumps[0]["steps"] and steps >= 3
        # Each trial boots from the checkpoint: its first steps repeat the schedule.
        if trial == 0:
            ref = trainref.TrainRef(q, "last", 4, 1, 1)
            run_ref(ref, counts, schedule[:steps])
            assert_dump_equals(dumps[0], ref)

    # Two clean autosaves: both slots valid, one step apart; then cut the newest short.
    recs, _ = records(run_app(micropython, folder, schedule[:2], schedule[1][0] + 1))
    loaded = [r for r in recs if isinstance(r, Info) and "saved" in r.fields][-1]
    loaded.fields["checkpoint"] = loaded.fields["saved"]
    steps = int(loaded.fields["steps"])
    newest = folder / loaded.fields["checkpoint"]
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    recs, dumps = records(run_app(micropython, folder, [(0, "dump")], 1))
    older = recs[1]
    assert older.fields["seq"] == str(int(loaded.fields["seq"]) - 1)
    assert int(older.fields["steps"]) == dumps[0]["steps"] == steps - 1
    cut = recs[2]
    assert cut.fields["checkpoint_ignored"] == newest.name
    assert cut.fields["reason"].startswith("truncated")


def test_a_training_step_allocates_nothing(micropython, board, folder):
    """App.learn (features of the last window, the step, the `train` line) in heap_lock."""
    lines = run_micropython(micropython, HEAP, cwd=folder, timeout=60).splitlines()
    locked = [ln for ln in lines if ln.startswith("info locked")]
    assert locked == [
        "info locked kernel=%s learn=%s steps=6" % (k, m)
        for k in ("viper", "portable")
        for m in ("last", "all")
    ]
    assert sum(ln.startswith("train step=") for ln in lines) == 4 * 6


def test_a_trainer_that_cannot_be_made_leaves_the_app_predicting(micropython, board, folder):
    _, q, _, _ = board
    configure(folder, batch=1 << 29)
    schedule = [(WINDOW, "label " + q.classes[0]), (WINDOW, "info")]
    recs, _ = records(run_app(micropython, folder, schedule, WINDOW + 1))
    assert recs[0].fields["trainer"] == "none"
    assert recs[1].fields["learn"] == "off"
    assert recs[1].fields["reason"].startswith("train:_batch_536870912_over_the_proven_maximum")
    err = [r for r in recs if isinstance(r, Err)]
    assert len(err) == 1 and err[0].code == "label" and "not available" in err[0].message
