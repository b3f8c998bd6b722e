"""The host pipeline: sensor data -> integer window features -> input stage -> float MLP ->
evaluation. Shared by the `microprop` subcommands and the benchmarks.

Runs on: host.

Three sets of windows, split by subject so that no window of a person tested on was seen:
the test subjects (given, or the last ~30 % of the sorted ids; the archive's own `test` split for
basic_motions); among the others, a validation set for early stopping held out by subject
(by recording when there is one training subject), as scikit-learn's GroupShuffleSplit does;
the rest trains the network. The input stage is fitted on all training subjects' windows.
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets, features, names, sensorlog, synth
from .errors import UserError
from .inputstage import InputStage, fit_input_stage
from .metrics import classification_report
from .mlp import MLP, train
from .quantize import F_MIN, W_MAX
from .sensorlog import label_key, sort_labels

BUILTIN_SOURCES = ("synth", "shoulder", "basic_motions")
# Training defaults of the CLI and the benchmarks (chosen on the synthetic data and on
# shoulder subjects 1-7; mini-batches of 64 with Adam at 0.002 train fast and generalise well).
TRAIN_DEFAULTS = {
    "optimizer": "adam",
    "lr": 2e-3,
    "batch_size": 64,
    "epochs": 300,
    "l2": 1e-4,
    "patience": 30,
    "class_weight": None,
}
WINDOW_SECONDS = 2.0
HOP_SECONDS = 1.0
VALIDATION_FRACTION = 0.2  # of the training subjects (or recordings), at least one
ARCHIVE_TEST = "test"  # the test split's id when a data set's subjects are its own split
# The largest float weight an int8 weight can stand for: 127 at the coarsest weight scale the
# quantizer uses (2**16 per step). A weight beyond it means the training diverged.
WEIGHT_LIMIT = W_MAX * 2.0**-F_MIN


@dataclass
class Dataset:
    """Windows of one sensor log: integer features, labels, subjects and the log itself."""

    log: object
    window: int
    hop: int
    X: np.ndarray  # int64 (n_windows, n_features)
    labels: np.ndarray  # str (n_windows,)
    subjects: np.ndarray  # str (n_windows,)
    starts: np.ndarray  # int (n_windows,), first sample of each window
    source: str


def load_log(source="synth", seed=0, datasets_dir=None, **csv_options):
    """A SensorLog from a built-in source name or a CSV path.

    `synth` is the built-in generator (deterministic from `seed`); `shoulder` and
    `basic_motions` are the shared datasets (host.datasets: the folder `datasets_dir`, else
    $MICROPROP_DATASETS, else ../shared/datasets beside a source checkout); anything else is
    read as a sensor-log CSV with `csv_options` passed to `sensorlog.read_sensor_log`.
    """
    if source == "synth":
        return synth.generate(seed=seed)
    if source in ("shoulder", "basic_motions"):
        return datasets.load(source, datasets_dir)
    return sensorlog.read_sensor_log(source, **csv_options)


def require_rate(log):
    """The log's sample rate in Hz, or a UserError saying how to give it."""
    if not log.rate_hz:
        raise UserError(
            "no sample rate: the file has no `# rate_hz=...` first line; give --rate HZ "
            "(the board samples at the model's rate)",
            path=log.path,
        )
    return float(log.rate_hz)


def default_window(log, window=None, hop=None):
    """Window and hop in samples: given, or 2 s and 1 s at the log's rate (100 / 50 at 50 Hz),
    at most the board's MAX_WINDOW."""
    if window is None:
        rate = require_rate(log)
        window = max(1, min(features.MAX_WINDOW, int(round(WINDOW_SECONDS * rate))))
    if hop is None:
        hop = max(1, int(round(window * HOP_SECONDS / WINDOW_SECONDS)))
    return window, hop


def window_text(log, window, given):
    """How a window was chosen, for messages: 'window of 100 samples (2 s at 50 Hz)'."""
    text = "window of %d samples" % window
    if given:
        return text + " (--window)"
    rate = float(log.rate_hz)
    wanted = int(round(WINDOW_SECONDS * rate))
    if wanted > features.MAX_WINDOW:
        return text + " (the board's maximum; %g s at %g Hz would be %d)" % (
            WINDOW_SECONDS,
            rate,
            wanted,
        )
    return text + " (%g s at %g Hz)" % (WINDOW_SECONDS, rate)


def make_dataset(log, window=None, hop=None, source=""):
    """Cut `log` into windows and compute the integer features the board computes.

    The log needs a sample rate (the model records it; the board samples at it)."""
    require_rate(log)
    given = window is not None
    window, hop = default_window(log, window, hop)
    w = features.make_windows(log, window, hop, window_text(log, window, given))
    return Dataset(
        log, window, hop, w.X, np.asarray(w.y), np.asarray(w.subjects), w.starts, str(source)
    )


def describe_data(ds):
    """One line on what was read and cut: rows, subjects, windows, left-out rows, splits."""
    log = ds.log
    splits = getattr(log, "splits", None) or {}
    subjects = sort_labels(set(np.asarray(log.subjects).tolist()))
    parts = [
        "%d rows, %d subject%s, %d windows of %d samples (%s), hop %d"
        % (
            splits.get("rows", len(log)),
            len(subjects),
            "" if len(subjects) == 1 else "s",
            len(ds.X),
            ds.window,
            _seconds(ds.window, log.rate_hz),
            ds.hop,
        )
    ]
    ignored = splits.get("ignored") or {}
    if ignored:
        parts.append(
            "left out %d rows labelled %s (%d splits)"
            % (
                sum(ignored.values()),
                ",".join("'%s'" % v if not v else v for v in sort_labels(ignored)),
                splits.get("ignore_splits", 0),
            )
        )
    if splits.get("gap_splits"):
        parts.append(
            "%d gaps in t_ms over %g ms (1.5 sample periods) split recordings"
            % (splits["gap_splits"], splits["gap_ms"])
        )
    return "data: %s: %s" % (ds.source or log.path, "; ".join(parts))


def _seconds(samples, rate):
    return "%g s" % (samples / float(rate)) if rate else "? s"


def subjects_text(subjects):
    """'1,2,3' in label order."""
    return ",".join(sort_labels(subjects))


def pick_test_subjects(subjects, test_subjects=None, fraction=0.3, meta=None):
    """Test subjects: the given list; else the archive's `test` split when the subjects are a
    data set's own train/test split (meta['subjects'] == 'archive_split'); else the last ~30 %
    of the sorted subject ids."""
    present = sorted(set(np.asarray(subjects).tolist()), key=label_key)
    if test_subjects:
        wanted = [str(s) for s in test_subjects]
        missing = [s for s in wanted if s not in present]
        if missing:
            raise UserError(
                "test subjects %s not in the data; subjects with windows are %s"
                % (",".join(missing), ",".join(present))
            )
        return wanted
    if (meta or {}).get("subjects") == "archive_split" and ARCHIVE_TEST in present:
        return [ARCHIVE_TEST]
    if len(present) < 2:
        raise UserError(
            "need at least 2 subjects with windows for a subject-wise split, found %d (%s); "
            "record more subjects or give a subject column (--subject-col)"
            % (len(present), ",".join(present))
        )
    n_test = max(1, int(round(fraction * len(present))))
    return present[-n_test:]


def validation_split(ds, train_mask, seed=0, fraction=VALIDATION_FRACTION):
    """(fit mask, validation mask, held-out ids, their kind): validation holds whole training
    subjects (kind "subjects"), or whole recordings when there is one training subject (kind
    "recordings"), drawn at random with `seed` as scikit-learn's GroupShuffleSplit does;
    ([], "") and no validation with one group only."""
    subjects = np.asarray(ds.subjects)
    groups, kind = subjects, "subjects"
    present = sort_labels(set(subjects[train_mask].tolist()))
    if len(present) < 2:
        groups, kind = np.asarray(ds.log.recordings)[ds.starts], "recordings"
        present = sort_labels(set(groups[train_mask].tolist()))
    if len(present) < 2:
        return train_mask, np.zeros_like(train_mask), [], ""
    n_val = min(len(present) - 1, max(1, int(round(fraction * len(present)))))
    rng = np.random.default_rng(seed)
    held = sort_labels(present[i] for i in rng.permutation(len(present))[:n_val])
    val = train_mask & np.isin(groups, held)
    return train_mask & ~val, val, held, kind


def validation_summary(history):
    """One line on the validation set and what early stopping made of it."""
    text = "validation (early stopping): %s" % history["validation"]
    if not history.get("held_out", {}).get("ids"):
        return text
    best = history["best_epoch"]
    return text + "; accuracy %.3f at the last epoch; loss lowest at epoch %d" % (
        history["val_acc"][-1],
        best + 1,
    )


def validation_text(held, kind, n_windows, why=""):
    """'held-out subjects 3,5 (412 windows)', or 'none (why)' without validation."""
    if not held:
        return "none (%s)" % why
    return "held-out %s %s (%d windows)" % (kind, ",".join(held), n_windows)


def feature_names(log):
    return [c + "_" + f for c in log.channels for f in features.FEATURES]


def model_meta(ds, classes, input_stage, mlp, test_subjects, history, args=None, csv_options=None):
    """The metadata stored beside the float weights (what export and eval need)."""
    log = ds.log
    return {
        "classes": list(classes),
        "features": {
            "window": ds.window,
            "hop": ds.hop,
            "names": list(features.FEATURES),
            "channels": list(log.channels),
        },
        "sensor": {
            "rate_hz": log.rate_hz,
            "full_scale": {k: list(v) for k, v in (log.full_scale or {}).items()},
            "kind": (log.meta or {}).get("sensor", ""),
        },
        "input_stage": input_stage.to_dict(),
        "data": {
            "source": ds.source,
            "test_subjects": list(test_subjects),
            "csv_options": dict(csv_options or {}),
            "windows": dict(history.get("windows") or {}),
        },
        "training": dict(args or {}),
        "history": {
            "loss": [float(v) for v in history.get("loss", [])],
            "val_loss": [float(v) for v in history.get("val_loss", [])],
            "val_acc": [float(v) for v in history.get("val_acc", [])],
            "best_epoch": history.get("best_epoch"),
            "validation": history.get("validation", ""),
            "held_out": history.get("held_out") or {},
        },
    }


def class_indices(labels, classes, path=None):
    index = {c: i for i, c in enumerate(classes)}
    unknown = sort_labels(set(np.asarray(labels).tolist()) - set(index))
    if unknown:
        raise UserError(
            "labels %s are not classes of the model (%s)" % (",".join(unknown), ",".join(classes)),
            path=path,
        )
    return np.array([index[c] for c in np.asarray(labels).tolist()], dtype=np.int64)


class _Watch:
    """The trainer's per-epoch callback: stops on a non-finite loss or weight with one line,
    keeps a copy of the epoch's weights (`last`), then passes the epoch on to `progress`."""

    def __init__(self, mlp, lr, progress):
        self.mlp, self.lr, self.progress = mlp, lr, progress
        self.epochs = 0  # epochs done
        self.last = None

    def __call__(self, epoch, epochs, loss, *rest):
        self.check(loss)
        self.epochs = epoch + 1
        self.last = [p.copy() for p in list(self.mlp.W) + list(self.mlp.b)]
        if self.progress is not None:
            self.progress(epoch, epochs, loss, *rest)

    def check(self, loss):
        if not math.isfinite(loss):
            self.diverged("loss %s" % loss)
        if not _finite(self.mlp):
            self.diverged("non-finite weights")
        largest = max(float(np.abs(w).max()) for w in self.mlp.W)
        if largest > WEIGHT_LIMIT:
            self.diverged(
                "a weight of %.3g, beyond the %.3g an int8 weight can stand for"
                % (largest, WEIGHT_LIMIT)
            )

    def diverged(self, why):
        raise UserError(
            "train: training diverged in epoch %d (%s); try a smaller learning rate than %g "
            "(--lr)" % (self.epochs + 1, why, self.lr)
        )


def _finite(mlp):
    return all(np.isfinite(p).all() for p in list(mlp.W) + list(mlp.b))


def train_model(
    ds,
    hidden=(32, 16),
    activation="relu",
    test_subjects=None,
    seed=0,
    progress=None,
    **train_options,
):
    """Subject-wise split, input stage fitted on the training subjects' windows, float MLP
    trained on the exact integers the board will feed it, early stopping on held-out training
    subjects (`validation_split`). Returns (mlp, meta, report on the test subjects, history);
    history["windows"] counts the windows that trained, validated and tested.
    """
    meta = getattr(ds.log, "meta", None)
    test_subjects = pick_test_subjects(ds.subjects, test_subjects, meta=meta)
    test = np.isin(ds.subjects, test_subjects)
    train_mask = ~test
    if not train_mask.any() or not test.any():
        raise UserError("subject split leaves an empty training or test set")
    classes = sort_labels(set(ds.labels[train_mask].tolist()))
    names.check_names(classes, "class", path=ds.source)
    names.check_names(ds.log.channels, "channel", path=ds.source)
    if len(classes) < 2:
        raise UserError(
            "need at least 2 classes in the training data, found %d (%s)"
            % (len(classes), ",".join(classes)),
            path=ds.source,
        )
    lo, hi = features.feature_bounds(len(ds.log.channels))
    stage = fit_input_stage(ds.X[train_mask], lo, hi)
    x = stage.transform(ds.X)
    options = dict(TRAIN_DEFAULTS, **train_options)
    # The validation set is for early stopping (as scikit-learn's validation_fraction): none
    # when patience >= epochs, where it could stop nothing.
    fit, val, held, kind = train_mask, np.zeros_like(train_mask), [], ""
    why = "early stopping is off: patience >= epochs"
    if options["patience"] < options["epochs"]:
        fit, val, held, kind = validation_split(ds, train_mask, seed)
        why = "one training subject with one recording"
        if held and len(set(ds.labels[fit].tolist())) < 2:
            fit, val, held, kind = train_mask, np.zeros_like(train_mask), [], ""
            why = "holding out would leave one class to train on"
    mlp = MLP([x.shape[1], *hidden, len(classes)], hidden_activation=activation, seed=seed)
    t0 = time.perf_counter()
    if val.any():
        options.update(X_val=x[val], y_val=class_indices(ds.labels[val], classes))
    options["val_fraction"] = 0.0  # never a random split of windows (they overlap by a hop)
    watch = _Watch(mlp, options["lr"], progress)
    try:
        # A float overflow or NaN anywhere in the network is a diverged training: stop there.
        with np.errstate(over="raise", invalid="raise", divide="ignore", under="ignore"):
            history = train(
                mlp,
                x[fit],
                class_indices(ds.labels[fit], classes),
                seed=seed,
                progress=watch,
                **options,
            )
    except FloatingPointError:
        watch.diverged("an overflow in the float network")
    except UserError:
        raise
    except ValueError as e:
        if "diverged" not in str(e):  # host.mlp's own check of the loss
            raise
        watch.diverged("a non-finite loss")
    watch.check(history["loss"][-1] if history["loss"] else 0.0)
    if val.any():
        # Keep the weights training stopped at, not those of the lowest validation loss (which
        # host.mlp.train restores): on held-out subjects the loss rises with confidence long
        # before the accuracy stops rising (shoulder, subjects 8-10, seeds 0-4: test accuracy
        # 0.845 kept, 0.805 restored; the windows of the training subjects gave 0.856 with a
        # validation accuracy of 0.99).
        for p, w in zip(list(mlp.W) + list(mlp.b), watch.last, strict=True):
            p[...] = w
    history["seconds"] = time.perf_counter() - t0
    history["validation"] = validation_text(held, kind, int(val.sum()), why)
    history["held_out"] = {"kind": kind, "ids": held}
    keep = np.isin(ds.labels[test], classes)
    history["windows"] = {
        "train": int(fit.sum()),
        "validation": int(val.sum()),
        "test": int(keep.sum()),
    }
    y_test = class_indices(ds.labels[test][keep], classes)
    report = classification_report(y_test, mlp.predict(x[test][keep]), classes)
    for key in ("X_val", "y_val", "val_fraction"):
        options.pop(key, None)
    options.update(hidden=list(hidden), activation=activation, seed=seed)
    meta = model_meta(ds, classes, stage, mlp, test_subjects, history, options)
    return mlp, meta, report, history


def eval_subjects(meta, ds, subjects=None):
    """(subjects to score, how they were chosen): `subjects` if given; else the model's test
    subjects that the data holds; else every subject of the data."""
    present = set(np.asarray(ds.subjects).tolist())
    if subjects:
        subjects = [str(s) for s in subjects]
        missing = [s for s in subjects if s not in present]
        if missing:
            raise UserError(
                "subjects %s have no windows in the data; subjects are %s"
                % (",".join(missing), subjects_text(present)),
                path=ds.source,
            )
        return subjects, "subjects " + subjects_text(subjects)
    test = [str(s) for s in (meta.get("data") or {}).get("test_subjects") or []]
    held = [s for s in test if s in present]
    if held:
        return held, "the model's test subjects " + subjects_text(held)
    return sort_labels(present), "every subject (%s): none is a test subject of the model" % (
        subjects_text(present)
    )


def evaluation_windows(ds, classes, subjects=None):
    """(mask, class indices) of the windows labelled with one of `classes` (of `subjects`)."""
    mask = np.isin(ds.labels, list(classes))
    if subjects:
        mask &= np.isin(ds.subjects, [str(s) for s in subjects])
    if not mask.any():
        raise UserError("no labelled windows of the model's classes to evaluate", path=ds.source)
    return mask, class_indices(ds.labels[mask], list(classes))


def evaluate_model(mlp, meta, ds, subjects=None):
    """Float-model report on the windows of `ds` (only `subjects` if given)."""
    stage = InputStage.from_dict(meta["input_stage"])
    mask, y = evaluation_windows(ds, meta["classes"], subjects)
    pred = mlp.predict(stage.transform(ds.X[mask]))
    return classification_report(y, pred, meta["classes"])


def check_compatible(meta, ds, path):
    """The data must have the channels and the rate the model was trained on."""
    want = meta["features"]["channels"]
    if list(ds.log.channels) != list(want):
        raise UserError(
            "channels %s do not match the model's %s"
            % (",".join(ds.log.channels), ",".join(want)),
            path=path,
        )
    rate = (meta.get("sensor") or {}).get("rate_hz")
    if rate and ds.log.rate_hz and abs(float(rate) - float(ds.log.rate_hz)) > 1e-3 * float(rate):
        raise UserError(
            "data at %g Hz, the model was trained at %g Hz" % (ds.log.rate_hz, rate), path=path
        )


def save_json(path, obj):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    tmp.replace(path)


def split_masks(meta, ds):
    """(train, test) window masks from the test subjects the model was trained with."""
    test = np.isin(ds.subjects, meta["data"]["test_subjects"])
    known = np.isin(ds.labels, meta["classes"])
    return (~test) & known, test & known


def check_weights(mlp):
    """Refuse a float model with NaN or infinite weights, or weights beyond WEIGHT_LIMIT (a
    diverged training)."""
    for k, (w, b) in enumerate(zip(mlp.W, mlp.b, strict=True)):
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise UserError(
                "export: layer %d of the float model has NaN or infinite weights (training "
                "diverged); train again with a smaller --lr" % k
            )
        largest = float(np.abs(w).max())
        if largest > WEIGHT_LIMIT:
            raise UserError(
                "export: layer %d of the float model has a weight of %.3g, beyond the %.3g an "
                "int8 weight can stand for (training diverged); train again with a smaller --lr"
                % (k, largest, WEIGHT_LIMIT)
            )


def quantize_model(mlp, meta, ds, qat="auto", trainable_layers=None, info=None):
    """Float model -> QModel, calibrated on the training subjects' windows, with the
    worst-case bound proof of the whole pipeline (features, input stage, every layer; the
    trainable layers with any int8 weight). Raises ValueError naming a stage that could
    leave 31 bits, and UserError for weights no int8 scale can hold (NaN, inf, or so large
    that scaling them overflows: a diverged training).
    """
    from .bounds import check_bounds
    from .quantize import quantize

    check_weights(mlp)
    names.check_names(meta["classes"], "export: class")
    names.check_names(meta["features"]["channels"], "export: channel")
    stage = InputStage.from_dict(meta["input_stage"])
    train_mask, _ = split_masks(meta, ds)
    if not train_mask.any():
        raise UserError("no training windows to calibrate the quantizer on", path=ds.source)
    x_q = stage.apply(ds.X[train_mask])
    y = class_indices(ds.labels[train_mask], meta["classes"])
    try:
        with np.errstate(over="raise", invalid="raise"):
            qm = quantize(
                mlp,
                stage,
                x_q,
                y,
                classes=meta["classes"],
                features=meta["features"],
                sensor=meta["sensor"],
                qat=qat,
                seed=int(meta.get("training", {}).get("seed", 0)),
                info=info,
            )
    except FloatingPointError:
        largest = max(float(np.abs(p).max()) for p in list(mlp.W) + list(mlp.b))
        raise UserError(
            "export: the float model's weights (largest |w| %.3g) overflow when scaled to "
            "int8 (training diverged?); train again with a smaller --lr" % largest
        ) from None
    if trainable_layers is None:
        trainable_layers = (len(qm.layers) - 1,)
    lo, hi = features.feature_bounds(len(meta["features"]["channels"]))
    try:
        check_bounds(qm, lo, hi, trainable_layers=trainable_layers)
    except ValueError as e:  # the proof refuses this model: a property of the user's model
        raise UserError("export: %s" % e) from None
    return qm


def evaluate_qmodel(qm, ds, subjects=None):
    """Report of the board's integer pipeline (features, input stage, int8 forward) on `ds`."""
    from . import reference

    mask, y = evaluation_windows(ds, qm.classes, subjects)
    pred, _ = reference.predict(qm, ds.X[mask])
    return classification_report(y, pred, list(qm.classes))
