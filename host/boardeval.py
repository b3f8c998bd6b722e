"""Evaluation through the board's exact integer pipeline: what the board app prints for a stream.

Runs on: host.

The board app (`device/app.py`) reads one continuous stream of int16 samples: its first window
is samples 0 .. window-1, then one window every `hop` samples (starts 0, hop, 2 hop, ...), with
no regard for where recordings or labels change. `predict_stream` cuts the same windows,
computes the same integer features (`host/features.py`, bit-identical to the board's), runs the
input stage and the NumPy integer reference (`host/reference.py`, bit-identical to
`device/infer.py`), and applies the app's smoothing rule, so its classes and scores are those
of the `pred` lines, line for line.

`evaluate` replays a whole sensor log as the board does and scores each window whose samples
all carry one label (and one recording); windows across a label or recording change are
predicted (they feed the smoothing) but not scored, nor are windows across the log's breaks
(gaps in t_ms, left-out rows: the board would see samples the log does not hold). The accuracy
a user reads here is the accuracy the board has on that replay.

Both take the sensor's mount (`mount`, device/mount.py's orientation index, e.g. the one a
checkpoint pulled from the board holds): the board turns every sample by it before the ring,
and `turn_counts` turns the log's counts the same way, with the board's own channel map.
"""

import numpy as np

from microprop.device.mount import IDENTITY

from . import mount as mount_ref
from .errors import UserError
from .features import MAX_WINDOW, features_batch, label_runs
from .metrics import classification_report
from .reference import predict

_CHUNK = 1 << 22  # int64 values per feature block


def turn_counts(counts, channels, mount):
    """int counts (n, C) of the channels named `channels` -> int64 counts as the board app
    turns each sample by orientation `mount` (device/mount.py): clipped to int16, then turned
    (host/mount.turn_counts). The identity returns the counts unchanged."""
    counts = np.asarray(counts, dtype=np.int64)
    if mount == IDENTITY:
        return counts
    return mount_ref.turn_counts(np.clip(counts, -32768, 32767), channels, mount)


def board_starts(n_samples, window, hop):
    """First sample of each window the board predicts on, for a stream of n_samples."""
    if not 1 <= window <= MAX_WINDOW or hop < 1:
        raise ValueError(
            "boardeval: window %d hop %d, expected window 1..%d and hop >= 1"
            % (window, hop, MAX_WINDOW)
        )
    if n_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, n_samples - window + 1, hop, dtype=np.int64)


def stream_features(counts, window, hop):
    """int16 counts (n, C) -> (starts (W,), raw int features (W, 7 C)) as the board cuts them."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 2:
        raise ValueError("boardeval: expected counts of shape (n, C), found %s" % (counts.shape,))
    starts = board_starts(len(counts), window, hop)
    c = counts.shape[1]
    X = np.empty((len(starts), 7 * c), dtype=np.int64)
    step = max(1, _CHUNK // (window * c))
    offsets = np.arange(window)
    for i in range(0, len(starts), step):
        X[i : i + step] = features_batch(counts[starts[i : i + step, None] + offsets])
    return starts, X


def smooth(classes, n):
    """The app's smoothing: majority class of the last n windows, ties to the most recent."""
    out = np.asarray(classes, dtype=np.int64).copy()
    if n <= 1:
        return out
    for i in range(len(out)):
        last = classes[max(0, i - n + 1) : i + 1]
        counts = {}
        for c in last:
            counts[int(c)] = counts.get(int(c), 0) + 1
        top = max(counts.values())
        for c in reversed(last):  # newest first: ties go to the class seen most recently
            if counts[int(c)] == top:
                out[i] = c
                break
    return out


def _model_window(qmodel):
    f = qmodel.features or {}
    window, hop = int(f.get("window") or 0), int(f.get("hop") or 0)
    if window < 1 or hop < 1:
        raise ValueError("boardeval: the model has no window / hop (%r, %r)" % (window, hop))
    return window, hop


def predict_stream(qmodel, counts, smoothing=1, mount=0):
    """int16 counts (n, C) -> [(sample_index, class, scores), ...]: one per `pred` line of a
    board whose sensor mount is `mount` (device/mount.py; the counts are the sensor's, before
    the turn).

    sample_index is the window's last sample (the one read just before the line is printed;
    the board prints t = floor(sample_index * 1000 / rate_hz) with "realtime": false); class
    is the reported class index (after smoothing), scores the int array (k,) in 0..255.
    """
    window, hop = _model_window(qmodel)
    counts = np.asarray(counts, dtype=np.int64)
    n_ch = len((qmodel.features or {}).get("channels") or [])
    if counts.ndim != 2 or (n_ch and counts.shape[1] != n_ch):
        raise ValueError(
            "boardeval: counts of shape %s, expected (n, %d)" % (counts.shape, n_ch or -1)
        )
    if mount:
        counts = turn_counts(counts, (qmodel.features or {}).get("channels") or [], mount)
    starts, X = stream_features(counts, window, hop)
    if len(starts) == 0:
        return []
    cls, scores = predict(qmodel, X)
    cls = smooth(cls, smoothing)
    ends = starts + window - 1
    return [(int(ends[i]), int(cls[i]), scores[i].astype(np.int64)) for i in range(len(starts))]


def evaluate(qmodel, dataset, smoothing=1, mount=0):
    """Classification report of the board replaying `dataset` (a pipeline.Dataset or a
    SensorLog) as one continuous stream, its sensor mount `mount`; see the module docstring
    for which windows count.

    The report (host.metrics.classification_report) has three more keys: "windows" (all
    predictions), "scored" and "skipped" (windows across a label / recording change, or
    labelled with a class the model does not know).
    """
    log = getattr(dataset, "log", dataset)
    channels = list((qmodel.features or {}).get("channels") or [])
    if channels and list(log.channels) != channels:
        raise UserError(
            "boardeval: channels %s do not match the model's %s"
            % (",".join(log.channels), ",".join(channels)),
            path=getattr(log, "path", None),
        )
    rate = (qmodel.sensor or {}).get("rate_hz")
    if rate and log.rate_hz and abs(float(rate) - float(log.rate_hz)) > 1e-3:
        raise UserError(
            "boardeval: data at %g Hz, the model was trained at %g Hz (the board refuses "
            "another rate)" % (log.rate_hz, rate),
            path=getattr(log, "path", None),
        )
    window, _ = _model_window(qmodel)
    preds = predict_stream(qmodel, log.counts, smoothing, mount)
    if not preds:
        raise UserError(
            "boardeval: %d samples, fewer than one window of %d" % (len(log.counts), window),
            path=getattr(log, "path", None),
        )
    ends = np.array([p[0] for p in preds], dtype=np.int64)
    pred = np.array([p[1] for p in preds], dtype=np.int64)
    starts = ends - window + 1
    labels = np.asarray(log.labels)
    runs = label_runs(log)  # windows across a label, recording or break are not scored
    one_run = runs[starts] == runs[ends]
    index = {c: i for i, c in enumerate(qmodel.classes)}
    known = np.array([lab in index for lab in labels[starts]], dtype=bool)
    keep = one_run & known
    y = np.array([index[lab] for lab in labels[starts][keep]], dtype=np.int64)
    report = classification_report(y, pred[keep], list(qmodel.classes))
    report.update(windows=len(preds), scored=int(keep.sum()), skipped=int((~keep).sum()))
    return report
