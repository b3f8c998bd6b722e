"""`microprop demo`: the whole path, with no board attached.

Runs on: host (Linux and macOS: the virtual board needs a pseudo-terminal).

    microprop demo                    # about 15 s
    microprop demo --seconds 30 --fast

1. Train: the built-in synthetic accelerometer data (8 wearers, 4 activities), integer window
   features, a float MLP trained in NumPy on six wearers.
2. Export: int8 model file, accuracy on the two wearers it never saw.
3. A virtual board (`firmware_tools.virtualboard`, the MicroPython Unix port on a
   pseudo-terminal) with its flash in a temporary folder.
4. `microprop deploy`: the device package, the model, and a sensor log recorded from the
   held-out wearers (a few seconds of each activity in turn) that the board app replays as its
   sensor, in real time (or as fast as it can with `--fast`).
5. `microprop monitor --seconds N --log predictions.csv`: the board's predictions, live.
6. The host cuts the same windows from the same stream (`host.boardeval.predict_stream`) and
   checks every prediction the board printed, class and scores: "board predictions equal the
   host's: N/N". A difference is an error (status 1).
7. On-device training (when the board app has a trainer, `info ... trainer=on`): `label`
   lines train the board, `save` checkpoints it, a soft reset restarts the app, and `info`
   shows the training survived. Skipped with a note while the app has no trainer.

The virtual board is stopped on every exit path, Ctrl-C included; Ctrl-C during the monitor
only ends the monitoring early.
"""

import argparse
import contextlib
import csv
import io
import math
import os
import shutil
import sys
import tempfile
import time

from microprop.firmware_tools import options
from microprop.firmware_tools.protocol import (
    CMD_INFO,
    CMD_LABEL,
    CMD_SAVE,
    Err,
    Info,
    Train,
    command,
    parse_line,
)
from microprop.host.errors import UserError

CHUNK_SECONDS = 3.0  # of each activity in turn, in the replayed log
SKIP_SECONDS = 10.0  # into each held-out recording
DEFAULT_SECONDS = 10.0
TRAIN_LABELS = 5  # `label` lines sent to the board's trainer


def status(text):
    print("--- " + text, file=sys.stderr, flush=True)


# -- host side --------------------------------------------------------------------------------


def train_and_export(folder, seed=0, progress=None, out=None):
    """Synthetic data -> float MLP -> int8 model file. Returns (qmodel, meta, log, paths)."""
    from microprop.host import pipeline
    from microprop.host.modelfile import write_model

    log = pipeline.load_log("synth", seed=seed)
    ds = pipeline.make_dataset(log, source="synth")
    mlp, meta, report, history = pipeline.train_model(ds, seed=seed, progress=progress)
    if progress is not None and hasattr(progress, "done"):
        progress.done()
    meta["data"]["seed"] = seed
    npz = out or os.path.join(folder, "model.npz")
    mlp.save(npz, meta)
    test = meta["data"]["test_subjects"]
    sizes = "-".join(str(n) for n in [mlp.W[0].shape[1]] + [w.shape[0] for w in mlp.W])
    print(
        "trained a %s MLP on %d windows of %d wearers in %.1f s; saved %s"
        % (sizes, len(ds.labels), len(set(ds.subjects.tolist())), history["seconds"], npz)
    )
    qm = pipeline.quantize_model(mlp, meta, ds, qat="auto")
    mpm = os.path.splitext(npz)[0] + ".mpm"
    nbytes = write_model(mpm, qm)
    int_report = pipeline.evaluate_qmodel(qm, ds, test)
    print(
        "exported %s (%d bytes, int8); wearers it never saw (%s): float accuracy %.4f, "
        "int8 accuracy %.4f"
        % (mpm, nbytes, ",".join(test), report["accuracy"], int_report["accuracy"])
    )
    return qm, meta, log, {"npz": npz, "mpm": mpm}


def replay_log(log, subjects, classes, rate_hz):
    """A sensor log of the held-out `subjects`: CHUNK_SECONDS of each activity in turn."""
    import numpy as np

    from microprop.host.sensorlog import SensorLog

    n = int(round(CHUNK_SECONDS * rate_hz))
    skip = int(round(SKIP_SECONDS * rate_hz))
    parts = []
    for subject in subjects:
        for label in classes:
            idx = np.nonzero((log.subjects == subject) & (log.labels == label))[0]
            if len(idx) >= skip + n:
                parts.append(idx[skip : skip + n])
    if not parts:
        raise UserError("demo: no held-out recording long enough to replay")
    idx = np.concatenate(parts)
    return SensorLog(
        channels=list(log.channels),
        counts=log.counts[idx],
        labels=log.labels[idx],
        subjects=log.subjects[idx],
        recordings=log.recordings[idx],
        rate_hz=log.rate_hz,
        full_scale=log.full_scale,
        meta={"sensor": "synthetic"},
    )


def read_prediction_log(path):
    """The monitor's --log CSV -> [(t_ms, class, {class: score})], in order."""
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            return rows
        names = header[5:]
        for r in reader:
            rows.append((int(r[1]), r[2], {c: int(v) for c, v in zip(names, r[5:], strict=True)}))
    return rows


def check_predictions(rows, qmodel, counts, labels=None, realtime=True):
    """Compare the board's predictions with the host's for the same looped stream.

    rows: [(t_ms, class, {class: score})] as the board printed them. The replay loops over
    `counts`, so the stream is `counts` repeated. Without realtime a row's t gives its sample
    exactly (t = floor(i * 1000 / rate)); in real time t is the read time, so each run of rows
    (a board reset starts a new one) is aligned as a whole near the sample its first t gives.

    Returns a dict: seen, equal, first_difference (text or None), scored, correct (windows
    inside one activity of `labels`, predicted right).
    """
    import numpy as np

    from microprop.host.boardeval import predict_stream

    window, hop = int(qmodel.features["window"]), int(qmodel.features["hop"])
    rate = float(qmodel.sensor["rate_hz"])
    classes = list(qmodel.classes)
    result = {"seen": len(rows), "equal": 0, "first_difference": None, "scored": 0, "correct": 0}
    if not rows:
        return result
    period = math.lcm(len(counts), hop) // hop  # the windows of the loop repeat after this
    copies = (period * hop + window) // len(counts) + 2
    stream = np.tile(np.asarray(counts), (copies, 1))
    expected = predict_stream(qmodel, stream)[:period]
    tiled_labels = None if labels is None else np.tile(np.asarray(labels), copies)

    def matches(row, w):
        if w < 0:
            return False
        _, cls, scores = expected[w % period]
        want = {c: int(s) for c, s in zip(classes, scores, strict=True)}
        return row[1] == classes[cls] and row[2] == want

    def estimate(t):
        return int(round((t * rate / 1000 - (window - 1)) / hop))

    assigned = []  # window index per row
    for run in _runs(rows):
        if not realtime:
            assigned += [_exact_window(t, rate, window, hop) for t, _, _ in run]
            continue
        w0 = estimate(run[0][0])
        best = max(
            range(w0 - 2, w0 + 3), key=lambda s: sum(matches(r, s + i) for i, r in enumerate(run))
        )
        assigned += [best + i for i in range(len(run))]
    for row, w in zip(rows, assigned, strict=True):
        if w is not None and matches(row, w):
            result["equal"] += 1
        elif result["first_difference"] is None:
            if w is None or w < 0:
                want = "no window of the stream ends at t=%d" % row[0]
            else:
                _, cls, scores = expected[w % period]
                want = "host: class=%s scores %s" % (classes[cls], _pairs(classes, scores))
            result["first_difference"] = "board: t=%d class=%s scores %s; %s" % (
                row[0],
                row[1],
                _pairs(list(row[2]), list(row[2].values())),
                want,
            )
        if tiled_labels is not None and w is not None and w >= 0:
            start = (w % period) * hop
            span = tiled_labels[start : start + window]
            if (span == span[0]).all():
                result["scored"] += 1
                result["correct"] += int(row[1] == span[0])
    return result


def _pairs(names, values):
    return " ".join("%s:%d" % (c, int(v)) for c, v in zip(names, values, strict=True))


def _runs(rows):
    """Rows cut where t goes back (the board restarted its app)."""
    runs, start = [], 0
    for i in range(1, len(rows)):
        if rows[i][0] < rows[i - 1][0]:
            runs.append(rows[start:i])
            start = i
    runs.append(rows[start:])
    return runs


def _exact_window(t, rate, window, hop):
    """The window whose last sample i has floor(i * 1000 / rate) == t, or None."""
    i = int(t * rate / 1000)
    for e in (i - 1, i, i + 1):
        if e >= window - 1 and (e - window + 1) % hop == 0 and int(e * 1000 // rate) == t:
            return (e - window + 1) // hop
    return None


# -- the board --------------------------------------------------------------------------------


def _parsed(add_arguments, argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def deploy_app(port, model, data, fast=False):
    """`microprop deploy PORT --model M --data D`; prints deploy's summary lines only."""
    from microprop.firmware_tools import deploy

    argv = [port, "--model", model, "--data", data] + (["--no-realtime"] if fast else [])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        deploy.run(_parsed(deploy.add_arguments, argv))
    for line in out.getvalue().splitlines():
        if line.startswith(("deployed:", "--- board", "--- soft reset")):
            print(line)


def monitor(port, seconds, log):
    """`microprop monitor PORT --seconds N --log LOG` (Ctrl-C ends it early)."""
    from microprop.firmware_tools import monitor as mon

    mon.run(_parsed(mon.add_arguments, [port, "--seconds", seconds, "--log", log]))


def train_on_board(port, label, timeout=5.0):
    """The on-device training step: `label` lines -> `train` lines -> `save` -> a soft reset
    -> `info` shows the checkpoint loaded and the steps kept.

    Returns a list of (sent, answer) text pairs, or None when the app has no trainer (its
    `info` answer says trainer=none)."""
    from microprop.firmware_tools import deploy

    with _session(port, timeout) as ask:
        info, _ = ask(Info, "state", CMD_INFO)
        trainer = _info_field(info, "trainer")
        if trainer in (None, "none"):
            return None
        done = [(CMD_INFO, "trainer=%s steps=%s" % (trainer, _info_field(info, "steps")))]
        for _ in range(TRAIN_LABELS):
            _, text = ask(Train, None, CMD_LABEL, label)
            done.append(("%s %s" % (CMD_LABEL, label), text))
        saved, text = ask(Info, "saved", CMD_SAVE)
        done.append((CMD_SAVE, text))
    if not isinstance(saved, Info):
        raise UserError("demo: on-device training: %s answered %r" % (CMD_SAVE, text))
    deploy.soft_reset(port)
    with _session(port, timeout) as ask:
        after, _ = ask(Info, "state", CMD_INFO)
    keys = ("checkpoint", "seq", "steps", "acc")
    done.append(
        ("soft reset, " + CMD_INFO, " ".join("%s=%s" % (k, _info_field(after, k)) for k in keys))
    )
    steps_kept = _info_field(after, "steps") == _info_field(saved, "steps")
    if not steps_kept or _info_field(after, "checkpoint") in (None, "none"):
        raise UserError(
            "demo: on-device training did not survive the reset: saved %r, after %r"
            % (text, after.text if isinstance(after, Info) else after)
        )
    return done


def _info_field(record, key):
    """The value of `key` in an `info` answer, None if absent (or not an `info` answer)."""
    return record.fields.get(key) if isinstance(record, Info) else None


@contextlib.contextmanager
def _session(port, timeout=5.0):
    """ask(kind, key, *command): send a command line, return (record, text) of the first
    answer parsed as `kind` (an Info with `key` among its fields when `key` is given) or as an
    Err (predictions in between are skipped); (None, '') after `timeout` s."""
    from microprop.firmware_tools.serialport import LineReader, open_port

    with LineReader(lambda: open_port(port)) as reader:

        def ask(kind, key, *words):
            reader.write(command(*words))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                text = reader.readline(0.1)
                rec = parse_line(text) if text else None
                if isinstance(rec, Err) or (
                    isinstance(rec, kind) and (key is None or key in rec.fields)
                ):
                    return rec, text
            return None, ""

        yield ask


def _current_label(pred_log, replay, qmodel):
    """The activity the replay plays now, judged from the last prediction's t (a user labels
    what they are doing)."""
    rows = read_prediction_log(pred_log)
    rate = float(qmodel.sensor["rate_hz"])
    i = int(rows[-1][0] * rate / 1000) if rows else 0
    return str(replay.labels[i % len(replay.labels)])


# -- the command --------------------------------------------------------------------------------


def run(seed=0, out=None, seconds=DEFAULT_SECONDS, fast=False, heap="256k", progress=None):
    """The whole demo; returns 0, or raises UserError (one line) on a difference."""
    from microprop.firmware_tools.virtualboard import VirtualBoard
    from microprop.host.sensorlog import write_sensor_log

    t0 = time.monotonic()
    folder = (
        os.path.dirname(os.path.abspath(out))
        if out
        else tempfile.mkdtemp(prefix="microprop-demo-")
    )
    os.makedirs(folder, exist_ok=True)
    status("microprop demo: synthetic data -> MLP -> int8 -> a virtual board -> live predictions")
    status("1/4 train and export")
    qm, meta, log, paths = train_and_export(folder, seed, progress, out)
    test = meta["data"]["test_subjects"]
    activities = list(dict.fromkeys(log.labels.tolist()))  # in the order the log has them
    replay = replay_log(log, test, activities, float(qm.sensor["rate_hz"]))
    data = os.path.join(folder, "replay.csv")
    write_sensor_log(data, replay)
    print(
        "recorded %s: %.0f s of wearers %s, %.0f s of each activity in turn, replayed in a loop"
        % (data, len(replay) / replay.rate_hz, ",".join(test), CHUNK_SECONDS)
    )
    pred_log = os.path.join(folder, "predictions.csv")
    if os.path.exists(pred_log):
        os.remove(pred_log)
    flash = tempfile.mkdtemp(prefix="microprop-demo-flash-")
    trained = None
    stopped = False
    try:
        with VirtualBoard(flash, heap=heap) as board:
            status(
                "2/4 virtual board on %s (MicroPython Unix port, heap %s, flash %s)"
                % (board.port, board.heap, flash)
            )
            status(
                "3/4 microprop deploy %s --model %s --data %s%s"
                % (
                    board.port,
                    os.path.basename(paths["mpm"]),
                    os.path.basename(data),
                    " --no-realtime" if fast else "",
                )
            )
            deploy_app(board.port, paths["mpm"], data, fast)
            status(
                "4/4 microprop monitor %s --seconds %g --log %s"
                % (board.port, seconds, os.path.basename(pred_log))
            )
            started = time.monotonic()
            monitor(board.port, seconds, pred_log)
            stopped = time.monotonic() - started < seconds - 0.5  # Ctrl-C ended the monitor
            if stopped and not read_prediction_log(pred_log):
                raise KeyboardInterrupt
            if not stopped:
                trained = train_on_board(board.port, _current_label(pred_log, replay, qm))
    finally:
        shutil.rmtree(flash, ignore_errors=True)
    rows = read_prediction_log(pred_log)
    result = check_predictions(rows, qm, replay.counts, replay.labels, realtime=not fast)
    print("predictions seen: %d (logged in %s)" % (result["seen"], pred_log))
    print("board predictions equal the host's: %d/%d" % (result["equal"], result["seen"]))
    if result["scored"]:
        print(
            "windows inside one activity of wearers %s: %d/%d predicted right"
            % (",".join(test), result["correct"], result["scored"])
        )
    if stopped:
        print("on-device training: skipped (the monitor was stopped)")
    elif trained is None:
        print("on-device training: skipped (the board app has no trainer: info trainer=none)")
    else:
        print("on-device training: label -> train step -> save -> soft reset -> weights kept")
        for sent, answer in trained:
            print("  %-16s -> %s" % (sent, answer))
    if not result["seen"]:
        raise UserError("demo: no prediction arrived from the board in %g s" % seconds)
    if result["equal"] != result["seen"]:
        raise UserError(
            "demo: a board prediction differs from the host's: " + result["first_difference"]
        )
    print("demo done in %.0f s; files in %s" % (time.monotonic() - t0, folder))
    return 0


def add_arguments(parser):
    """Options of `microprop demo`."""
    parser.add_argument("--seed", type=options.seed, default=0, help="random seed (default: 0)")
    parser.add_argument("--out", help="where to keep the model (default: a temporary folder)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help="how long to watch the board's predictions (%(default)g)",
    )
    parser.add_argument(
        "--fast", action="store_true", help="replay the data as fast as the board can"
    )
    parser.add_argument("--heap", default="256k", help="the virtual board's heap (256k)")
