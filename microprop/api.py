"""microprop from Python: what the `microprop` command does, as functions for scripts and
notebooks.

Runs on: host (CPython >= 3.10, NumPy; a virtual board needs Linux or macOS).

    from microprop import api

    data = api.load_data("synth")                    # windows of the board's integer features
    model = api.train(data, hidden=[32, 16])         # float MLP, split by subject
    print(api.evaluate(model, data)["accuracy"])     # on the model's test subjects
    exported = api.export(model, data, "model.mpm")  # int8 model file (+ model.rh)
    print(api.evaluate(exported.qmodel, data)["accuracy"])   # the board's integers
    with api.open_board() as board:                  # virtual; or open_board("/dev/ttyACM0")
        test = model.meta["data"]["test_subjects"]   # wearers the model never saw
        board.deploy("model.mpm", replay=api.replay_of(data.log, test))
        for pred in board.predictions(seconds=5):    # firmware_tools.protocol.Pred records
            print(pred.t_ms, pred.class_name, pred.scores)

Errors are the command's: what the user can fix raises microprop.host.errors.UserError (the
command prints it as `microprop: message`), with `.hint` saying what to do where there is one.
Results are plain objects: NumPy arrays, dicts (reports: "accuracy", "per_class",
"confusion", "n"), host.qmodel.QModel, firmware_tools.protocol records.
"""

import contextlib
import io
import os
import shutil
import tempfile
from dataclasses import dataclass, field

from microprop.host import pipeline
from microprop.host.errors import UserError
from microprop.host.mlp import MLP


@dataclass
class Model:
    """A trained float model: the MLP, its meta (classes, features, input stage, data, test
    subjects), the test report of training and its history (None for a loaded model)."""

    mlp: MLP
    meta: dict
    report: dict = None
    history: dict = None

    @property
    def classes(self):
        return list(self.meta["classes"])

    def save(self, path):
        """Write the float model as .npz (no pickle), as `microprop train --out` does."""
        self.mlp.save(path, self.meta)
        return path


@dataclass
class Exported:
    """What export wrote: the int8 model, its file and size, the float and int8 reports on the
    test subjects (`which` says which), the quantization choice, the rehearsal file (None, and
    why in `note`, when there is none)."""

    qmodel: object
    path: str
    nbytes: int
    float_report: dict
    int_report: dict
    which: str
    quantization: dict = field(default_factory=dict)
    rehearsal: str = None
    tflite: str = None
    note: str = None
    removed: str = None  # the rehearsal file of the model file written before, removed


# The data options as the command takes them (text, e.g. channels "ax,ay,az", full_scale
# "ax:8g", ignore_labels "-1"): saved with a model, so that eval, export and adapt read its data
# the same way (model_data). COLUMN_DEFAULTS: the CSV columns when not given.
DATA_OPTIONS = (
    "channels",
    "label_col",
    "subject_col",
    "recording_col",
    "time_col",
    "full_scale",
    "rate",
    "ignore_labels",
)
COLUMN_DEFAULTS = {
    "label_col": "label",
    "subject_col": "subject",
    "recording_col": "recording",
    "time_col": "t_ms",
}


def read_options(**data_options):
    """The data options as text (DATA_OPTIONS, None where not given) -> the keyword arguments
    of host.sensorlog.read_sensor_log; a UserError for a bad channels, full_scale or
    ignore_labels (named as the command's option)."""
    from microprop.host.sensorlog import parse_full_scale

    unknown = sorted(set(data_options) - set(DATA_OPTIONS))
    if unknown:
        raise UserError("unknown data option %r; expected one of %s" % (unknown[0], DATA_OPTIONS))
    given = data_options.get("channels")
    channels = given
    if channels is not None:
        channels = [c.strip() for c in channels.split(",")]
        if not all(channels):
            raise UserError(
                "--channels: expected column names separated by commas, found %r" % given
            )
        twice = [c for c in channels if channels.count(c) > 1]
        if twice:
            raise UserError("--channels: %r is given twice" % twice[0])
    full_scale = data_options.get("full_scale")
    if full_scale is not None:
        full_scale = parse_full_scale(full_scale, what="--full-scale")
    ignore = data_options.get("ignore_labels") or ""
    options = {key: data_options.get(key) or value for key, value in COLUMN_DEFAULTS.items()}
    options.update(
        channels=channels,
        full_scale=full_scale,
        rate_hz=data_options.get("rate"),
        ignore_labels=[v.strip() for v in ignore.split(",") if v.strip()],
    )
    return options


def saved_data_options(meta):
    """The data options (DATA_OPTIONS, text) saved with a model by train; older models saved
    read_sensor_log's arguments, which come back as text too."""
    from microprop.host.sensorlog import format_full_scale

    saved = dict((meta.get("data") or {}).get("csv_options") or {})
    if "rate_hz" in saved:
        saved.setdefault("rate", saved.pop("rate_hz"))
    if isinstance(saved.get("channels"), list):
        saved["channels"] = ",".join(saved["channels"])
    if isinstance(saved.get("full_scale"), dict):
        fs = {
            ch: v if isinstance(v, (list, tuple)) else (v, "")
            for ch, v in saved["full_scale"].items()
        }
        saved["full_scale"] = format_full_scale(fs)
    return {key: saved.get(key) for key in DATA_OPTIONS}


def load_log(source="synth", seed=0, datasets=None, progress=None, **csv_options):
    """A sensor log (host.sensorlog.SensorLog: int16 counts, labels, subjects, rate).

    source: 'synth' (built-in, deterministic from `seed`), 'shoulder' or 'basic_motions' (the
    shared datasets, in the folder `datasets`, else $MICROPROP_DATASETS), or a CSV path read
    with `csv_options` (host.sensorlog.read_sensor_log: channels, full_scale, rate_hz,
    default_rate_hz, label_col, subject_col, recording_col, time_col, ignore_labels).
    progress (CSV only): a function of the CSV path, called just before reading it, that
    returns a callable(lines read, total lines); if that has a `done` method, done(rows) is
    called once the log is read (the command's ReadProgress).
    """
    if source in pipeline.BUILTIN_SOURCES or progress is None:
        return pipeline.load_log(source, seed=seed, datasets_dir=datasets, **csv_options)
    reading = progress(source)
    log = pipeline.load_log(
        source, seed=seed, datasets_dir=datasets, progress=reading, **csv_options
    )
    if hasattr(reading, "done"):
        reading.done(len(log))
    return log


def load_data(
    source="synth", seed=0, window=None, hop=None, datasets=None, progress=None, **csv_options
):
    """Windows of a sensor log with the board's integer features (host.pipeline.Dataset: X,
    labels, subjects, log). `source` is load_log's (with its progress and csv_options), or a
    SensorLog; window and hop in samples (default 2 s and 1 s at the log's rate)."""
    if isinstance(source, str):
        log = load_log(source, seed, datasets, progress, **csv_options)
        name = source
    else:
        log, name = source, getattr(source, "path", None) or "log"
    return pipeline.make_dataset(log, window, hop, source=name)


def model_data(
    model,
    source=None,
    seed=None,
    window=None,
    hop=None,
    datasets=None,
    progress=None,
    **data_options,
):
    """The data a trained model reads -> (Dataset, seed, the model's test subjects when the
    data is its own, else None).

    model: a Model, a QModel, a model file path or a model's meta (model_meta). source: load_log's;
    default the data the model was trained on, read with its saved data options (text,
    DATA_OPTIONS) where these are not given; a CSV of other data is read with the model's
    channels unless given. window must be the model's (default); hop defaults to the model's.
    The data must have the model's channels and rate.
    """
    meta = model if isinstance(model, dict) else model_meta(model)
    data = meta.get("data") or {}
    options = {key: data_options.get(key) for key in DATA_OPTIONS}
    subjects = None
    if source is None:
        if not data.get("source"):
            raise UserError(
                "%s does not say which data it was trained on (no float model beside it); "
                "give --data" % (model if isinstance(model, (str, os.PathLike)) else "the model")
            )
        source = data["source"]
        if seed is None:
            seed = data.get("seed", 0)
        for key, value in saved_data_options(meta).items():
            if options[key] is None:
                options[key] = value
        subjects = data.get("test_subjects")
    elif options["channels"] is None:
        options["channels"] = ",".join(meta["features"]["channels"])
    if seed is None:
        seed = 0
    features = meta["features"]
    if window is not None and window != features["window"]:
        raise UserError(
            "--window %d: the model's features are of windows of %d samples; leave --window "
            "out" % (window, features["window"])
        )
    csv_options = read_options(**options)
    csv_options["default_rate_hz"] = (meta.get("sensor") or {}).get("rate_hz")
    ds = load_data(
        source,
        seed,
        features["window"],
        features["hop"] if hop is None else hop,
        datasets,
        progress,
        **csv_options,
    )
    pipeline.check_compatible(meta, ds, source)
    return ds, seed, subjects


def train(
    data,
    hidden=(32, 16),
    activation="relu",
    test_subjects=None,
    seed=0,
    data_options=None,
    **options,
):
    """Train a float MLP on `data` (load_data's) -> Model.

    data_options: the data options as text (DATA_OPTIONS) it was read with, saved with the
    model so that model_data reads its data the same way.
    The test subjects (given, else the last ~30 % of the ids) are never trained on; early
    stopping holds out training subjects whole. options: optimizer ('adam', 'sgd'), lr,
    batch_size, epochs, l2, patience, class_weight ('balanced'), progress (a callable
    (epoch, epochs, loss, val_loss, val_acc, seconds_left)).
    """
    mlp, meta, report, history = pipeline.train_model(
        data,
        hidden=list(hidden),
        activation=activation,
        test_subjects=test_subjects,
        seed=seed,
        **options,
    )
    if data_options is not None:
        meta["data"]["csv_options"] = {key: data_options.get(key) for key in DATA_OPTIONS}
    meta["data"]["seed"] = seed
    return Model(mlp, meta, report, history)


def load_model(path):
    """A float model file (.npz, from train) -> Model; a board model file (.mpm) -> QModel."""
    from microprop.device.modelfile import MAGIC
    from microprop.host.modelfile import read_model

    with open(path, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            return read_model(path)
    mlp, meta = MLP.load(path)
    return Model(mlp, meta)


def _as_model(model):
    return load_model(model) if isinstance(model, (str, os.PathLike)) else model


def model_meta(model):
    """A model's meta (classes, features, sensor, data: source and test subjects): a Model's
    own; a QModel's from its file. model: either, or a model file path.

    A board model file's data source and test subjects are those of its float model (the .npz
    of the same name beside it, when it is the model it was exported from), else the ones
    export writes into it for the built-in data sets."""
    loaded = _as_model(model)
    if isinstance(loaded, Model):
        return loaded.meta
    qm = loaded
    meta = {
        "classes": list(qm.classes),
        "features": dict(qm.features),
        "sensor": dict(qm.sensor),
        "data": {
            "source": qm.training.get("data_source"),
            "test_subjects": [
                v for v in str(qm.training.get("test_subjects", "")).split(",") if v
            ],
        },
    }
    meta["features"].setdefault("channels", list(qm.sensor.get("channels", [])))
    if isinstance(model, (str, os.PathLike)):
        beside = _float_model_beside(str(model), qm)
        if beside is not None:
            meta["data"] = beside["data"]
    return meta


def _names(text):
    return [v for v in str(text).split(",") if v]


def _float_model_beside(path, qm):
    """The meta of the float model `path` was exported from: the .npz of the same name, if it
    has the same classes, channels, window and input stage; else None."""
    npz = os.path.splitext(path)[0] + ".npz"
    if npz == path or not os.path.exists(npz):
        return None
    try:
        _, meta = MLP.load(npz)
    except (UserError, OSError):
        return None
    f = meta.get("features") or {}
    same = (
        list(meta.get("classes") or []) == list(qm.classes)
        and list(f.get("channels") or []) == list(qm.features.get("channels") or [])
        and (f.get("window"), f.get("hop")) == (qm.features.get("window"), qm.features.get("hop"))
        and meta.get("input_stage") == qm.input_stage.to_dict()
    )
    return meta if same and (meta.get("data") or {}).get("source") else None


def evaluate(model, data, subjects=None):
    """Classification report of a Model (float) or a QModel (int8: the board's integers), or
    of a model file, on `data`: the given subjects, else the model's test subjects (model_meta)
    the data holds, else all.

    Returns host.metrics.classification_report's dict plus "subjects", "which" (how they were
    chosen) and "kind" ('float' or 'int8')."""
    meta = model_meta(model)
    model = _as_model(model)
    if isinstance(model, Model):
        pipeline.check_compatible(meta, data, data.source)
    chosen, which = pipeline.eval_subjects(meta, data, subjects)
    if isinstance(model, Model):
        report = pipeline.evaluate_model(model.mlp, model.meta, data, chosen)
        kind = "float"
    else:
        report = pipeline.evaluate_qmodel(model, data, chosen)
        kind = "int8"
    return dict(report, subjects=chosen, which=which, kind=kind)


def export(model, data, path=None, qat="auto", rehearse=5, tflite=None):
    """Quantize a float Model to int8 and write the board's model file `path` -> Exported.

    model: a Model or a float model file; path: default that file's path with .mpm.
    data: the data it was trained on (calibration on its training subjects, the test report on
    its test subjects). qat: 'auto' (quantization-aware fine-tuning when post-training accuracy
    drops by more than a point), True or False. rehearse: rehearsal windows per class written
    beside the model (path with .rh; 0: none, and an old one is removed). tflite: also write the
    int8 network as a .tflite file there.
    """
    from microprop.device.checkpoint import model_crc_of
    from microprop.host import rehearsal
    from microprop.host.modelfile import write_model

    if path is None:
        if not isinstance(model, (str, os.PathLike)):
            raise UserError("export: give the path of the model file to write")
        path = os.path.splitext(str(model))[0] + ".mpm"
    model = _as_model(model)
    if qat not in ("auto", True, False):
        raise UserError("export: qat %r, expected 'auto', True or False" % (qat,))
    pipeline.check_weights(model.mlp)
    pipeline.check_compatible(model.meta, data, data.source)
    subjects, which = pipeline.eval_subjects(model.meta, data)
    info = {}
    qm = pipeline.quantize_model(model.mlp, model.meta, data, qat=qat, info=info)
    source = model.meta["data"]["source"]
    if source in pipeline.BUILTIN_SOURCES:
        qm.training.update(
            data_source=str(source), test_subjects=",".join(model.meta["data"]["test_subjects"])
        )
    result = Exported(
        qmodel=qm,
        path=str(path),
        nbytes=write_model(path, qm),
        float_report=pipeline.evaluate_model(model.mlp, model.meta, data, subjects),
        int_report=pipeline.evaluate_qmodel(qm, data, subjects),
        which=which,
        quantization=info,
    )
    rh = rehearsal.path_for(str(path))
    if rehearse:
        test = set(map(str, model.meta["data"].get("test_subjects") or []))
        train = sorted(set(data.subjects.tolist()) - test)
        seed = int((model.meta.get("training") or {}).get("seed", 0))
        try:
            x, y = rehearsal.pick(data, train, list(qm.classes), rehearse, seed)
        except UserError as e:  # too few windows of a class: the model works without
            result.note = "no rehearsal file: %s" % e
        else:
            rehearsal.write(rh, x, y, model_crc_of(str(path)), len(qm.classes))
            result.rehearsal = rh
    elif os.path.exists(rh):
        os.unlink(rh)  # it belonged to the model file written before
        result.removed = rh
    if tflite:
        from microprop.host import outputs
        from microprop.host.tflite_export import to_tflite

        outputs.write_bytes(tflite, to_tflite(qm))
        result.tflite = str(tflite)
    return result


def replay_of(log, subjects, seconds=None):
    """The rows of `subjects` (the first `seconds` of each, when given) as one sensor log for a
    board to replay (Board.deploy), e.g. the test subjects a model never saw."""
    import dataclasses

    import numpy as np

    keep = np.zeros(len(log), dtype=bool)
    for subject in subjects:
        rows = np.flatnonzero(log.subjects == str(subject))
        if len(rows) == 0:
            raise UserError("replay: no rows of subject %r in the log" % (subject,))
        if seconds is not None:
            rows = rows[: int(round(seconds * float(log.rate_hz)))]
        keep[rows] = True
    return dataclasses.replace(
        log,
        counts=log.counts[keep],
        labels=log.labels[keep],
        subjects=log.subjects[keep],
        recordings=log.recordings[keep],
        t_ms=None,
        breaks=None,
        splits={},
        path=None,
    )


def predict(qmodel, counts):
    """The board's predictions over a stream of int16 counts (n, channels), computed on the
    host bit for bit -> [(last sample index, class index, scores 0..255)], one per hop."""
    from microprop.host.boardeval import predict_stream

    return predict_stream(_as_model(qmodel), counts)


def adapt(model, data, test_subjects=None, **options):
    """What on-board learning buys on new subjects, int8 (the board's step) against float ->
    host.adapt.run_adaptation's result (host.adapt.format_adaptation prints it).

    model: a Model or a float model file. test_subjects: default the model's. options: modes,
    epochs, per_class, lr_shift, lr, hidden_shift, float_hidden_shift, rehearse, seed,
    remount_sensor, remount_seed, learn_mount, progress (a callable(text))."""
    from microprop.host import adapt as adaptation

    model = _as_model(model)
    test = test_subjects or model.meta["data"].get("test_subjects")
    if not test:
        raise UserError("no test subjects: give --test-subjects (the model has none)")
    test = [str(s) for s in test]
    train = sorted(set(data.subjects.tolist()) - set(test), key=adaptation.natural_key)
    return adaptation.run_adaptation(data, train, test, model=(model.mlp, model.meta), **options)


class Board:
    """A board on a serial port (open_board): deploy to it, send it lines, read its
    predictions. A virtual board started by open_board stops with close()."""

    def __init__(self, port, virtual=None, folder=None):
        self.port = port
        self.virtual = virtual  # the VirtualBoard open_board started, or None
        self.folder = folder  # its flash and the files deploy writes, removed on close

    def deploy(self, model, replay=None, realtime=True, **settings):
        """`microprop deploy`: the device package, the model (a .mpm path or a QModel) and
        board.json, then a soft reset that starts the app -> deploy's report lines.

        replay: a sensor log (path or SensorLog) the board replays as its sensor. realtime:
        False replays as fast as the board can. settings: deploy's options by name (sensor,
        smoothing, rate, pins, i2c, scl, sda, ...)."""
        from microprop.firmware_tools import deploy as deployer
        from microprop.host.modelfile import write_model
        from microprop.host.sensorlog import write_sensor_log

        files = self._files()
        if not isinstance(model, (str, os.PathLike)):
            write_model(os.path.join(files, "model.mpm"), model)
            model = os.path.join(files, "model.mpm")
        argv = [self.port, "--model", str(model)]
        if replay is not None:
            if not isinstance(replay, (str, os.PathLike)):
                write_sensor_log(os.path.join(files, "replay.csv"), replay)
                replay = os.path.join(files, "replay.csv")
            argv += ["--data", str(replay)]
        if not realtime:
            argv.append("--no-realtime")
        for key, value in settings.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value not in (None, False):
                argv += [
                    flag,
                    ",".join(map(str, value)) if isinstance(value, list) else str(value),
                ]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = deployer.run(_parsed(deployer.add_arguments, argv))
        if code:
            raise UserError("deploy: stopped with status %d: %s" % (code, out.getvalue()[-300:]))
        return out.getvalue().splitlines()

    def send(self, line):
        """Send one command line to the board app ('info', 'label walking', 'save', ...)."""
        from microprop.firmware_tools.protocol import command
        from microprop.firmware_tools.serialport import LineReader, open_port

        with LineReader(lambda: open_port(self.port)) as reader:
            reader.write(command(*line.split()))

    def lines(self, seconds=5.0):
        """The board's lines for `seconds`, parsed (firmware_tools.protocol records)."""
        import time

        from microprop.firmware_tools.protocol import parse_line
        from microprop.firmware_tools.serialport import LineReader, open_port

        records = []
        deadline = time.monotonic() + seconds
        with LineReader(lambda: open_port(self.port)) as reader:
            while time.monotonic() < deadline:
                text = reader.readline(0.1)
                record = parse_line(text) if text else None
                if record is not None:
                    records.append(record)
        return records

    def predictions(self, seconds=5.0):
        """The app's predictions for `seconds` -> [Pred] (t_ms, class_name, score, us, scores)."""
        from microprop.firmware_tools.protocol import Pred

        return [r for r in self.lines(seconds) if isinstance(r, Pred)]

    def _files(self):
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="microprop-api-")
        files = os.path.join(self.folder, "files")
        os.makedirs(files, exist_ok=True)
        return files

    def close(self):
        """Stop the virtual board open_board started and remove its folder."""
        if self.virtual is not None:
            self.virtual.__exit__(None, None, None)
            self.virtual = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_board(port=None, heap="256k"):
    """A board to deploy to -> Board (a context manager). port: a serial port as the command
    takes it ('auto', '/dev/ttyACM0', 'a0', ...); None starts a virtual board (MicroPython's
    Unix port on a pseudo-terminal, `heap` bytes of heap) with its flash in a temporary folder.
    """
    if port is not None:
        from microprop.firmware_tools.serialport import resolve_port

        return Board(resolve_port(port))
    from microprop.firmware_tools.virtualboard import VirtualBoard

    folder = tempfile.mkdtemp(prefix="microprop-api-")
    flash = os.path.join(folder, "flash")
    os.makedirs(flash)
    try:
        virtual = VirtualBoard(flash, heap=heap).__enter__()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return Board(virtual.port, virtual, folder)


def _parsed(add_arguments, argv):
    import argparse

    parser = argparse.ArgumentParser(prog="microprop")
    add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])
