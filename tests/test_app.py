"""The board app (device/app.py) under the MicroPython Unix port: its `pred` lines equal
host/boardeval.predict_stream line for line, it survives garbage input and sensor faults,
switches modes, autosaves, and a hop allocates nothing.

Runs on: host (pytest), plus the `micropython` binary, one process per scenario; the
autosave test runs the app under CPython with the stand-ins of tests/fakes.py.

The fixture trains a small model on synthetic data, quantizes it and writes a "board" folder
as deploy would: model.mpm, data.csv (a slice of the synthetic log), board.json and device/.
"""

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from microprop.firmware_tools.protocol import Err, Info, Pred, Sample, Train, parse_line
from microprop.host import boardeval, metrics, pipeline, reference

from .fakes import FakeTrainer, fake_app
from .helpers import FAKE_SENSOR, run_board, stream

FAKES = (Path(__file__).parent / "fakes.py").read_text()  # run ahead of the scripts


def parsed(lines, kind=None):
    """Every line must parse as a protocol line; those of `kind` (a class) if given."""
    out = []
    for line in lines:
        rec = parse_line(line)
        assert rec is not None, "not a protocol line: %r" % line
        if kind is None or isinstance(rec, kind):
            out.append(rec)
    return out


def expected_preds(q, counts, n_hops, smoothing=1):
    window, hop = q.features["window"], q.features["hop"]
    preds = boardeval.predict_stream(q, stream(counts, window + hop * n_hops), smoothing)
    return preds[:n_hops]


def assert_preds_equal(preds, expected, q, check_t=True):
    assert len(preds) == len(expected)
    for k, (p, (end, cls, scores)) in enumerate(zip(preds, expected, strict=True)):
        names = q.classes
        assert p.class_name == names[cls], k
        assert list(p.scores) == names, k
        assert [p.scores[c] for c in names] == [int(s) for s in scores], k
        assert p.score == int(scores[cls]), k
        if check_t:
            assert p.t_ms == end * 1000 // 50, k


# ----------------------------------------------------------------------------------------------


PARITY = """
from device import board, config
board.main("board.json", max_hops=%d)
print("info part=2")
cfg, _ = config.check_config({"sensor": "replay", "realtime": False, "smoothing": 3})
board.build(cfg).run(max_hops=%d)
"""


def test_pred_lines_equal_boardeval(micropython, board):
    """main() with board.json, the replay sensor looping past the file's end, smoothing 1
    and 3: class and every score of every pred line equal predict_stream's."""
    d, q, counts, _ = board
    n_hops = 36  # past the 1500 rows of data.csv: the replay loops, so does stream()
    lines = run_board(micropython, d, PARITY % (n_hops, n_hops))
    split = lines.index("info part=2")
    first, second = parsed(lines[:split]), parsed(lines[split + 1 :])
    assert isinstance(first[0], Info) and first[0].fields["state"] == "start"
    assert first[0].fields["classes"] == ",".join(q.classes)
    assert not [r for r in first + second if isinstance(r, Err)]
    for recs, smoothing in ((first, 1), (second, 3)):
        preds = [r for r in recs if isinstance(r, Pred)]
        assert_preds_equal(preds, expected_preds(q, counts, n_hops, smoothing), q)
        assert all(p.us > 0 for p in preds)
    smoothed = [p.class_name for p in second if isinstance(p, Pred)]
    assert smoothed != [p.class_name for p in first if isinstance(p, Pred)]


STEPPING_CLOCK = """
from device import app, board
now = [1 << 20]
def ticks_us():  # a clock that steps back by 1 ms on every read
    now[0] -= 1000
    return now[0]
app.ticks_us = ticks_us
board.main("board.json", max_hops=3)
"""


def test_a_clock_that_steps_back_gives_us_0_not_a_lost_line(micropython, board):
    """A negative duration would make the pred line unreadable (us is never negative), and the
    monitor would lose that prediction; qemu's microbit port steps its ticks_us back now and
    then. The board prints us=0 instead."""
    d, q, counts, _ = board
    preds = parsed(run_board(micropython, d, STEPPING_CLOCK), Pred)
    assert_preds_equal(preds, expected_preds(q, counts, 3), q)
    assert [p.us for p in preds] == [0, 0, 0]


def test_boardeval_evaluate_counts_single_label_windows(board):
    _, q, _, log = board
    report = boardeval.evaluate(q, log)
    assert report["windows"] == (len(log.counts) - 100) // 50 + 1
    assert report["scored"] + report["skipped"] == report["windows"]
    # 8 s recordings of 400 samples: of the windows at 0, 50, ..., the one at 350 + 400 k
    # crosses a boundary; the others are exactly the training pipeline's windows.
    assert report["skipped"] == len(log.counts) // 400 - 1
    ds = pipeline.make_dataset(log)
    assert report["scored"] == len(ds.X)
    cls, _ = reference.predict(q, ds.X)
    y = pipeline.class_indices(ds.labels, q.classes)
    assert report["accuracy"] == pytest.approx(float(np.mean(cls == y)))
    assert report["confusion"] == metrics.confusion_matrix(y, cls, len(q.classes)).tolist()


GARBAGE_SCRIPT = """
from device import board
board.main("board.json", max_hops=%d)
"""


def test_garbage_input_changes_nothing(micropython, board):
    """Random bytes, overlong lines, unknown and malformed commands through the real stdin
    (select.poll): err lines, and the predictions are those of a quiet run."""
    d, q, counts, _ = board
    rng = np.random.default_rng(7)
    junk = bytes(rng.integers(0, 256, size=400, dtype=np.uint8))
    stdin = b"".join(
        [
            junk,
            b"\n" + b"x" * 300 + b"\n",
            b"frobnicate now\n",
            b"rate 7\n",
            b"rate\n",
            b"rate fast\n",
            b"label\n",
            b"mode bogus\n",
            b"mode\n",
            b"save now\n",
            b"\n\n\r\n",
            b"info\r\n",
            b"rate 50\r\n",
            b"mode predict\n",
            b"\x00\x01\x7f\n",
        ]
    )
    n_hops = 12
    lines = run_board(micropython, d, GARBAGE_SCRIPT % n_hops, stdin=stdin)
    recs = parsed(lines)
    errs = [r for r in recs if isinstance(r, Err)]
    codes = [e.code for e in errs]
    for code in ("line", "command", "rate", "label", "mode", "save"):
        assert code in codes, code
    assert "too long" in " ".join(e.message for e in errs)
    assert "trained at 50 Hz" in " ".join(e.message for e in errs if e.code == "rate")
    assert codes.count("rate") == 3 and codes.count("mode") == 2
    infos = [r for r in recs if isinstance(r, Info)]
    assert [i.fields.get("state") for i in infos].count("running") == 1  # the CRLF info
    assert any(i.text == "rate_hz=50" for i in infos)
    assert any(i.text == "mode=predict" for i in infos)
    preds = [r for r in recs if isinstance(r, Pred)]
    assert_preds_equal(preds, expected_preds(q, counts, n_hops), q)


FLAKY = """
from device import app
from device.infer import Model
from device.sensor_replay import Replay

class Flaky:
    '''The replay, failing every 10th read without consuming a row.'''
    def __init__(self):
        self.r = Replay("data.csv", ["ax", "ay", "az"])
        self.channels = self.r.channels
        self.n = self.r.n
        self.calls = 0
    def read(self, out):
        self.calls += 1
        if self.calls %% 10 == 0:
            raise OSError("i2c timeout")
        self.r.read(out)

a = app.App(Model("model.mpm"), Flaky(), {"realtime": False}, inp=None)
a.run(max_hops=%d)
a.handle_line("info")
"""


def test_sensor_faults_are_reported_and_survived(micropython, board):
    d, q, counts, _ = board
    n_hops = 10
    lines = run_board(micropython, d, FLAKY % n_hops)
    recs = parsed(lines)
    errs = [r for r in recs if isinstance(r, Err)]
    assert errs and all(e.code == "sensor" for e in errs)
    assert all(e.message.startswith("read failed: i2c timeout") for e in errs)
    periods = 100 + 50 * (n_hops - 1)  # good reads
    calls = 0
    while calls - calls // 10 < periods:
        calls += 1
    n_faults = calls // 10
    assert len(errs) < n_faults / 3  # rate-limited: at most one line per second of samples
    assert "more since the last report" in errs[1].message
    info = [r for r in recs if isinstance(r, Info)][-1]
    assert int(info.fields["sensor_errors"]) == n_faults
    # Failed reads skip a sample: the windows are the stream's, only later in time.
    preds = [r for r in recs if isinstance(r, Pred)]
    assert_preds_equal(preds, expected_preds(q, counts, n_hops), q, check_t=False)
    assert preds[-1].t_ms == (periods + n_faults - 1) * 20


MODES = (
    FAKES
    + """
from device import app
from device.infer import Model
from device.sensor_replay import Replay
from device.smoothing import Smoother

class Scheduled:
    '''Input that releases each command once the app's clock reaches its time (ms).'''
    def __init__(self, items):
        self.items = items
        self.app = None
    def readinto(self, buf):
        if not self.items or self.app.t_ms < self.items[0][0]:
            return 0
        data = self.items.pop(0)[1]
        for i in range(len(data)):
            buf[i] = data[i]
        return len(data)

inp = Scheduled([
    (2500, b"mode record\\n"),
    (2600, b"mode idle\\n"),
    (3000, b"info\\n"),
    (3100, b"label walking\\n"),
    (3120, b"save\\n"),
    (3140, b"reset-model\\n"),
    (3200, b"mode predict\\n"),
])
a = app.App(Model("model.mpm"), Replay("data.csv", ["ax", "ay", "az"]), {"realtime": False},
            inp=inp)
inp.app = a
a.run(max_samples=400)
a.attach_trainer(FakeTrainer(guess=1))
for line in ("label walking", "label running", "label", "label nope", "save", "reset-model"):
    a.handle_line(line)
a.handle_line("info")
s = Smoother(3, 4)
print("info smoothed=" + ",".join([str(s.add(c)) for c in (0, 1, 1, 0, 2, 0, 3, 3)]))
"""
)


# Majority of the last 3, ties to the most recently seen class.
SMOOTH_IN = [0, 1, 1, 0, 2, 0, 3, 3]
SMOOTHED = [0, 1, 1, 1, 2, 0, 3, 3]


def test_modes_info_and_the_trainer_hook(micropython, board):
    d, q, counts, _ = board
    lines = run_board(micropython, d, MODES)
    recs = parsed(lines)[1:]  # after the start info
    i = recs.index(Info({"mode": "record"}, "mode=record"))
    j = recs.index(Info({"mode": "idle"}, "mode=idle"))
    samples = recs[i + 1 : j]
    assert len(samples) == 5 and all(isinstance(s, Sample) for s in samples)
    for s in samples:
        assert list(s.values) == ["ax", "ay", "az"]
        assert list(s.values.values()) == counts[s.t_ms // 20].tolist()
    assert samples[0].t_ms == 2500
    # Idle: no output but the answers to commands.
    info, label, save, reset, back = recs[j + 1 : j + 6]
    assert int(info.fields["heap_free"]) > 0 and int(info.fields["heap_used"]) > 0
    for key in ("jitter_max_us", "jitter_mean_us", "overruns", "sensor_errors"):
        assert info.fields[key] == "0", key
    assert info.fields["mode"] == "idle" and info.fields["trainer"] == "none"
    assert (label.code, save.code, reset.code) == ("label", "save", "reset-model")
    assert "not available" in label.message and "not available" in reset.message
    assert back == Info({"mode": "predict"}, "mode=predict")
    # Back to predict: a fresh window; the replay paused while idle (30 periods).
    preds = [r for r in recs[j + 6 :] if isinstance(r, Pred)]
    assert preds[0].t_ms == 3200 + 99 * 20
    resume = 3200 // 20 - (3200 - 2600) // 20
    assert_preds_equal(preds, expected_preds(q, counts[resume:], len(preds)), q, check_t=False)
    assert len(preds) == 3
    smoothed = recs[-1].fields["smoothed"].split(",")
    assert [int(c) for c in smoothed] == SMOOTHED
    assert boardeval.smooth(SMOOTH_IN, 3).tolist() == SMOOTHED
    tail = recs[-8:-1]
    assert tail[0] == Train(1, "walking", False, 0)
    assert tail[1] == Train(2, "running", True, 50)
    assert isinstance(tail[2], Err) and tail[2].code == "label" and "expected" in tail[2].message
    assert isinstance(tail[3], Err) and "unknown class 'nope'" in tail[3].message
    saved = "saved=ckpt.0 seq=1 steps=2"
    assert tail[4] == Info({"saved": "ckpt.0", "seq": "1", "steps": "2"}, saved)
    assert tail[5] == Info({"reset": "ok"}, "reset=ok")
    after = tail[6].fields  # the trainer's own counters and name, reset
    assert (after["trainer"], after["steps"], after["acc"], after["checkpoint"]) == (
        "last",
        "0",
        "0",
        "none",
    )


def test_autosave_counts_labels_from_the_last_save_or_load():
    """autosave 3: a checkpoint after every third label, counted from the checkpoint the
    trainer loaded at the start (its steps) and from each `save`."""
    app, out, _ = fake_app({"autosave": 3}, FakeTrainer(steps=10))
    app.run(max_samples=4)  # a full window
    for cmd in ["label walk"] * 4 + ["save"] + ["label run"] * 3:
        app.handle_line(cmd)
    recs = [parse_line(line) for line in out.getvalue().decode().splitlines()]
    infos = [r.fields for r in recs if isinstance(r, Info)]
    saved = [(f["saved"], f["steps"]) for f in infos if "saved" in f]
    assert saved == [("ckpt.0", "13"), ("ckpt.1", "14"), ("ckpt.0", "17")]
    assert [r.step for r in recs if isinstance(r, Train)] == [11, 12, 13, 14, 15, 16, 17]


HEAP = (
    """
import micropython, sys
from array import array
from device import app
from device.infer import Model

"""
    + FAKE_SENSOR
    + """

def locked(f, hops=None, samples=None):
    # (a call with *args allocates its argument array: spelled out instead)
    micropython.heap_lock()
    try:
        if f == "step":
            return a.step()
        return a.run(hops, samples)
    finally:
        micropython.heap_unlock()

for kernel in ("viper", "portable"):
    a = app.App(Model("model.mpm", kernel=kernel), Fake(), {"realtime": False}, inp=Empty())
    a.run(max_hops=1)
    hops = 0
    for _ in range(2000):
        if locked("step") > 0:
            hops += 1
    print("info kernel=%s locked_step_hops=%d" % (kernel, hops))
    locked("run", 20)
    a.handle_line("mode record")
    locked("run", None, 5)
    a.handle_line("mode predict")
    a.realtime = True
    locked("run", None, 60)
    a.handle_line("info")
"""
)


def test_hops_allocate_nothing(micropython, board):
    """heap_lock around whole hops: sampling + features + predict (2000 samples), then the
    whole loop with printing, in record mode, and in realtime (sleeping to deadlines)."""
    d, q, counts, _ = board
    t0 = time.perf_counter()
    lines = run_board(micropython, d, HEAP)
    assert time.perf_counter() - t0 < 20
    recs = parsed(lines)
    for kernel in ("viper", "portable"):
        mark = Info({"kernel": kernel, "locked_step_hops": "40"}, "")
        assert [r for r in recs if isinstance(r, Info) and r.fields == mark.fields]
    preds = [r for r in recs if isinstance(r, Pred)]
    assert len(preds) == 2 * (1 + 20 + 1)  # the 40 hops of bare step() print nothing
    assert sum(isinstance(r, Sample) for r in recs) == 2 * 5
    infos = [r for r in recs if isinstance(r, Info) and r.fields.get("state") == "running"]
    for info in infos:
        assert info.fields["realtime"] == "1" and int(info.fields["jitter_max_us"]) >= 0
        assert int(info.fields["samples"]) == 100 + 2000 + 20 * 50 + 5 + 60
    # The fake sensor replays counts.bin: the printed hops are the host's hops 1, 42..62.
    exp = expected_preds(q, counts, 62)
    exp = [exp[0]] + exp[41:]
    assert_preds_equal(preds[:22], exp, q, check_t=False)
    assert_preds_equal(preds[22:], exp, q, check_t=False)


def test_bad_config_falls_back_and_missing_model_halts(micropython, board, tmp_path):
    """main.py itself: bad JSON -> err config + defaults; no model -> err model, halted,
    answering commands with that err, never a traceback."""
    d, _, _, _ = board
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    (bad / "board.json").write_text("{not json")
    lines = run_board(micropython, bad, "from device import board\nboard.main(max_hops=1)\n")
    assert lines[0].startswith("err config board.json is not valid JSON")
    assert lines[1].startswith("info state=start") and lines[2].startswith("pred ")

    (bad / "board.json").write_text(json.dumps({"rate_hz": 100, "mode": "record"}))
    script = "from device import board, config\nconfig.DEFAULTS['realtime'] = False\nboard.main("
    lines = run_board(micropython, bad, script + "max_samples=2)\n")
    assert lines[0].startswith("info state=start mode=record rate_hz=50 realtime=0 ")
    assert (
        lines[1] == "err config rate_hz 100 refused: the model was trained at 50 Hz; using 50 Hz"
    )
    assert [parse_line(x).t_ms for x in lines[2:]] == [0, 20]

    (bad / "board.json").write_text(json.dumps({"model": "gone.mpm", "smoothing": 0}))
    proc = subprocess.Popen(
        [micropython, "main.py"],
        cwd=bad,
        env={"MICROPYPATH": str(bad)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        proc.stdin.write(b"info\n")
        proc.stdin.flush()
        got = [proc.stdout.readline().decode() for _ in range(4)]
    finally:
        proc.kill()
        proc.wait()
    assert got[0].startswith("err config smoothing 0, expected 1..32; using 1")
    assert got[1].startswith("err model gone.mpm: ")
    assert got[2] == "info state=halted\n"
    assert got[3] == got[1]
    assert b"Traceback" not in proc.stderr.read()


def _first_lines(micropython, folder, heapsize, want=3, timeout=20):
    """Start main.py with `heapsize`; -> (stdout lines until it states its fate, stderr)."""
    proc = subprocess.Popen(
        [micropython, "-X", "heapsize=%s" % heapsize, "main.py"],
        cwd=folder,
        env={"MICROPYPATH": str(folder)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    lines = []
    try:
        proc.stdin.write(b"info\n")
        proc.stdin.flush()
        while len(lines) < want:
            line = proc.stdout.readline().decode()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith(("info state=", "err app cannot import")):
                break
    finally:
        proc.kill()
        timer.cancel()
        err = proc.stderr.read().decode()
        proc.wait()
    return lines, err


def test_a_heap_too_small_gets_one_err_line_never_a_traceback(micropython, board, tmp_path):
    """From a heap too small to import the app, through one too small for the model, the
    sensor or the app's buffers, to one that runs: main.py says which in one `err` line and
    never prints a traceback."""
    d, _, _, _ = board
    folder = tmp_path / "small"
    shutil.copytree(d, folder)
    (folder / "board.json").write_text(json.dumps({"sensor": "replay", "learn": "off"}))
    seen = set()
    for kb in range(16, 161, 8):
        lines, err = _first_lines(micropython, folder, "%dk" % kb)
        assert "Traceback" not in err, (kb, err[-2000:])
        assert lines, (kb, err[-2000:])
        if lines[0].startswith("err app cannot import device.board: MemoryError"):
            seen.add("import")
        elif lines[-1] == "info state=halted":
            assert len(lines) == 2 and "out of memory" in lines[0], (kb, lines)
            assert lines[0].startswith(("err model ", "err sensor ", "err app ")), (kb, lines)
            seen.add("halted")
        else:
            assert lines[0].startswith("info state=start"), (kb, lines)
            seen.add("start")
            break
    assert seen == {"import", "halted", "start"}, seen
