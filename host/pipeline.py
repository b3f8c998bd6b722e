"""The host pipeline: sensor data -> integer window features -> input stage -> float MLP ->
evaluation. Shared by the `microprop` subcommands and the benchmarks.

Runs on: host.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import datasets, features, sensorlog, synth
from .errors import DataError
from .inputstage import InputStage, fit_input_stage
from .metrics import classification_report
from .mlp import MLP, train

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


def load_log(source="synth", seed=0, **csv_options):
    """A SensorLog from a built-in source name or a CSV path.

    `synth` is the built-in generator (deterministic from `seed`); `shoulder` and
    `basic_motions` are the shared datasets (`../shared/datasets`); anything else is read as a
    sensor-log CSV with `csv_options` passed to `sensorlog.read_sensor_log`.
    """
    if source == "synth":
        return synth.generate(seed=seed)
    if source in ("shoulder", "basic_motions"):
        root = datasets.find_datasets()
        if root is None:
            raise DataError(
                "the shared datasets are not found (expected ../shared/datasets beside the "
                "project); use --data synth or a CSV file",
                path=source,
            )
        if source == "shoulder":
            return datasets.load_shoulder(root)
        return datasets.load_basic_motions(root)
    return sensorlog.read_sensor_log(source, **csv_options)


def default_window(log, window=None, hop=None):
    """Window and hop in samples: given, or 2 s and 1 s at the log's rate (100 / 50)."""
    rate = log.rate_hz or 50.0
    if window is None:
        window = max(1, min(features.MAX_WINDOW, int(round(WINDOW_SECONDS * rate))))
    if hop is None:
        hop = max(1, int(round(window * HOP_SECONDS / WINDOW_SECONDS)))
    return window, hop


def make_dataset(log, window=None, hop=None, source=""):
    """Cut `log` into windows and compute the integer features the board computes."""
    window, hop = default_window(log, window, hop)
    w = features.make_windows(log, window, hop)
    return Dataset(
        log, window, hop, w.X, np.asarray(w.y), np.asarray(w.subjects), w.starts, str(source)
    )


def pick_test_subjects(subjects, test_subjects=None, fraction=0.3):
    """Test subjects: the given list, else the last ~30 % of the sorted subject ids."""
    present = sorted(set(subjects.tolist()), key=_natural_key)
    if test_subjects:
        wanted = [str(s) for s in test_subjects]
        missing = [s for s in wanted if s not in present]
        if missing:
            raise DataError(
                "test subjects %s not in the data; subjects are %s"
                % (",".join(missing), ",".join(present))
            )
        return wanted
    if len(present) < 2:
        raise DataError(
            "need at least 2 subjects for a subject-wise split, found %d" % len(present)
        )
    n_test = max(1, int(round(fraction * len(present))))
    return present[-n_test:]


def _natural_key(s):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


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
        },
        "training": dict(args or {}),
        "history": {
            "loss": [float(v) for v in history.get("loss", [])],
            "val_loss": [float(v) for v in history.get("val_loss", [])],
            "val_acc": [float(v) for v in history.get("val_acc", [])],
            "best_epoch": history.get("best_epoch"),
        },
    }


def class_indices(labels, classes, path=None):
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels.tolist()) - set(index))
    if unknown:
        raise DataError(
            "labels %s are not classes of the model (%s)" % (",".join(unknown), ",".join(classes)),
            path=path,
        )
    return np.array([index[c] for c in labels.tolist()], dtype=np.int64)


def train_model(
    ds,
    hidden=(32, 16),
    activation="relu",
    test_subjects=None,
    seed=0,
    progress=None,
    **train_options,
):
    """Subject-wise split, input stage fitted on training windows, float MLP trained on the
    exact integers the board will feed it. Returns (mlp, meta, report on the test subjects).
    """
    test_subjects = pick_test_subjects(ds.subjects, test_subjects)
    test = np.isin(ds.subjects, test_subjects)
    train_mask = ~test
    if not train_mask.any() or not test.any():
        raise DataError("subject split leaves an empty training or test set")
    classes = sorted(set(ds.labels[train_mask].tolist()))
    if len(classes) < 2:
        raise DataError(
            "need at least 2 classes in the training data, found %d (%s)"
            % (len(classes), ",".join(classes)),
            path=ds.source,
        )
    lo, hi = features.feature_bounds(len(ds.log.channels))
    stage = fit_input_stage(ds.X[train_mask], lo, hi)
    x = stage.transform(ds.X)
    y_train = class_indices(ds.labels[train_mask], classes)
    mlp = MLP([x.shape[1], *hidden, len(classes)], hidden_activation=activation, seed=seed)
    t0 = time.perf_counter()
    options = dict(TRAIN_DEFAULTS, **train_options)
    history = train(mlp, x[train_mask], y_train, seed=seed, progress=progress, **options)
    history["seconds"] = time.perf_counter() - t0
    keep = np.isin(ds.labels[test], classes)
    y_test = class_indices(ds.labels[test][keep], classes)
    report = classification_report(y_test, mlp.predict(x[test][keep]), classes)
    options.update(hidden=list(hidden), activation=activation, seed=seed)
    meta = model_meta(ds, classes, stage, mlp, test_subjects, history, options)
    return mlp, meta, report, history


def evaluation_windows(ds, classes, subjects=None):
    """(mask, class indices) of the windows labelled with one of `classes` (of `subjects`)."""
    mask = np.isin(ds.labels, list(classes))
    if subjects:
        mask &= np.isin(ds.subjects, [str(s) for s in subjects])
    if not mask.any():
        raise DataError("no labelled windows of the model's classes to evaluate", path=ds.source)
    return mask, class_indices(ds.labels[mask], list(classes))


def evaluate_model(mlp, meta, ds, subjects=None):
    """Float-model report on the windows of `ds` (only `subjects` if given)."""
    stage = InputStage.from_dict(meta["input_stage"])
    mask, y = evaluation_windows(ds, meta["classes"], subjects)
    pred = mlp.predict(stage.transform(ds.X[mask]))
    return classification_report(y, pred, meta["classes"])


def check_compatible(meta, ds, path):
    """The data must have the channels and window the model was trained on."""
    want = meta["features"]["channels"]
    if list(ds.log.channels) != list(want):
        raise DataError(
            "channels %s do not match the model's %s"
            % (",".join(ds.log.channels), ",".join(want)),
            path=path,
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


def quantize_model(mlp, meta, ds, qat="auto", trainable_layers=None, info=None):
    """Float model -> QModel, calibrated on the training subjects' windows, with the
    worst-case bound proof of the whole pipeline (features, input stage, every layer; the
    trainable layers with any int8 weight). Raises ValueError naming a stage that could
    leave 31 bits.
    """
    from .bounds import check_bounds
    from .quantize import quantize

    stage = InputStage.from_dict(meta["input_stage"])
    train_mask, _ = split_masks(meta, ds)
    if not train_mask.any():
        raise DataError("no training windows to calibrate the quantizer on", path=ds.source)
    x_q = stage.apply(ds.X[train_mask])
    y = class_indices(ds.labels[train_mask], meta["classes"])
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
    if trainable_layers is None:
        trainable_layers = (len(qm.layers) - 1,)
    lo, hi = features.feature_bounds(len(meta["features"]["channels"]))
    check_bounds(qm, lo, hi, trainable_layers=trainable_layers)
    return qm


def evaluate_qmodel(qm, ds, subjects=None):
    """Report of the board's integer pipeline (features, input stage, int8 forward) on `ds`."""
    from . import reference

    mask, y = evaluation_windows(ds, qm.classes, subjects)
    pred, _ = reference.predict(qm, ds.X[mask])
    return classification_report(y, pred, list(qm.classes))
