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

import json
import random
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from device.infer import Model
from device.train import Trainer
from firmware_tools.protocol import Err, Info, Train, parse_line
from host import features, modelfile, trainref

from .conftest import run_micropython
from .test_app import N_SAMPLES, START, stream
from .test_app import board as board  # noqa: F401  (the fixture: a trained model, a replay)

DRIVER = """
import sys
from device import app as appmod
from device import board

def dump(a):
    t = a.trainer
    print("dump steps=%d n_correct=%d state=%d" % (t.steps, t.n_correct, t.state))
    for k in range(len(a.model.layers)):
        layer = a.model.layers[k]
        m = t.master_w[k]
        print("dump w%d %s" % (k, ",".join([str(v) for v in layer["w"]])))
        print("dump b%d %s" % (k, ",".join([str(v) for v in layer["b"]])))
        print("dump m%d %s" % (k, "-" if m is None else ",".join([str(v) for v in m])))

class Scheduled:
    '''stdin lines "<n> <command>": each given to the app once it has read n samples.'''
    def __init__(self, text):
        self.items = []
        for line in text.split("\\n"):
            if line.strip():
                n, cmd = line.split(" ", 1)
                self.items.append((int(n), cmd))
        self.pending = b""
        self.app = None
    def readinto(self, buf):
        while not self.pending:
            if not self.items or self.app.samples < self.items[0][0]:
                return 0
            cmd = self.items.pop(0)[1]
            if cmd == "dump":
                dump(self.app)
            else:
                self.pending = (cmd + "\\n").encode()
        n = min(len(buf), len(self.pending))
        for i in range(n):
            buf[i] = self.pending[i]
        self.pending = self.pending[n:]
        return n

inp = Scheduled(sys.stdin.read())
raw, problems = board.load_config("board.json")
cfg, more = appmod.check_config(raw)
a = board.build(cfg, inp=inp)
inp.app = a
a.run(max_samples=int(sys.argv[1]))
"""

WINDOW = 100


@pytest.fixture
def folder(board, tmp_path):  # noqa: F811
    """A fresh copy of the board folder; `configure(**keys)` writes its board.json."""
    d = tmp_path / "b"
    shutil.copytree(board[0], d)
    return d


def configure(d, **keys):
    cfg = {"sensor": "replay", "realtime": False, "lr_shift": 4}
    cfg.update(keys)
    (d / "board.json").write_text(json.dumps(cfg))


def run_app(micropython, d, schedule, samples):
    """Run the driver for `samples` sample periods with `schedule` [(n, command)] on stdin."""
    stdin = "".join("%d %s\n" % item for item in schedule)
    out = run_micropython(micropython, DRIVER, [str(samples)], cwd=d, stdin=stdin, timeout=60)
    return out.splitlines()


def records(lines):
    """(protocol records, dumps: [{key: ints}] one per `dump`)."""
    recs, dumps = [], []
    for line in lines:
        if line.startswith("dump steps="):
            dumps.append({k: int(v) for k, v in (p.split("=") for p in line.split()[1:])})
        elif line.startswith("dump "):
            _, key, values = line.split(" ")
            dumps[-1][key] = None if values == "-" else [int(v) for v in values.split(",")]
        else:
            rec = parse_line(line)
            assert rec is not None, "not a protocol line: %r" % line
            recs.append(rec)
    return recs, dumps


def label_schedule(q, log_labels, times):
    """[(n, "label <class>")]: the class of the last sample of each window (the true one)."""
    return [(n, "label " + str(log_labels[(n - 1) % len(log_labels)])) for n in times]


def host_windows(counts, times):
    s = stream(counts, max(times))
    return [features.window_features(s[n - WINDOW : n]) for n in times]


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


def labels_of(board_fixture):
    log = board_fixture[3]
    return [str(v) for v in log.labels[START : START + N_SAMPLES]]


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "learn, batch, kernel", [("last", 1, None), ("all", 3, None), ("bias", 2, "portable")]
)
def test_train_lines_and_weights_equal_trainref(micropython, board, folder, learn, batch, kernel):  # noqa: F811
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


def test_label_errors_change_nothing(micropython, board, folder):  # noqa: F811
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


def test_save_boot_continue_and_reset(micropython, board, folder):  # noqa: F811
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


def test_checkpoint_of_another_model_is_ignored(micropython, board, folder):  # noqa: F811
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


def test_killed_mid_save_boots_with_loadable_weights(micropython, board, folder):  # noqa: F811
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


HEAP = """
import micropython
from device import app as appmod
from device import board

class Empty:
    def readinto(self, buf):
        return 0

for kernel in ("viper", "portable"):
    for learn, batch in (("last", 1), ("all", 2)):
        cfg, _ = appmod.check_config(
            {"sensor": "replay", "realtime": False, "kernel": kernel, "learn": learn,
             "batch": batch}
        )
        a = board.build(cfg, inp=Empty())
        a.run(max_samples=120)
        for i in range(6):
            micropython.heap_lock()
            try:
                a.learn(i % a.model.n_outputs)
            finally:
                micropython.heap_unlock()
        t = a.trainer
        print("info locked kernel=%s learn=%s steps=%d" % (t.kernel, learn, t.steps))
"""


def test_a_training_step_allocates_nothing(micropython, board, folder):  # noqa: F811
    """App.learn (features of the last window, the step, the `train` line) in heap_lock."""
    lines = run_micropython(micropython, HEAP, cwd=folder, timeout=60).splitlines()
    locked = [ln for ln in lines if ln.startswith("info locked")]
    assert locked == [
        "info locked kernel=%s learn=%s steps=6" % (k, m)
        for k in ("viper", "portable")
        for m in ("last", "all")
    ]
    assert sum(ln.startswith("train step=") for ln in lines) == 4 * 6


def test_a_trainer_that_cannot_be_made_leaves_the_app_predicting(micropython, board, folder):  # noqa: F811
    _, q, _, _ = board
    configure(folder, batch=1 << 29)
    schedule = [(WINDOW, "label " + q.classes[0]), (WINDOW, "info")]
    recs, _ = records(run_app(micropython, folder, schedule, WINDOW + 1))
    assert recs[0].fields["trainer"] == "none"
    assert recs[1].fields["learn"] == "off"
    assert recs[1].fields["reason"].startswith("train:_batch_536870912_over_the_proven_maximum")
    err = [r for r in recs if isinstance(r, Err)]
    assert len(err) == 1 and err[0].code == "label" and "not available" in err[0].message
