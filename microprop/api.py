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


def load_log(source="synth", seed=0, datasets=None, **csv_options):
    """A sensor log (host.sensorlog.SensorLog: int16 counts, labels, subjects, rate).

    source: 'synth' (built-in, deterministic from `seed`), 'shoulder' or 'basic_motions' (the
    shared datasets, in the folder `datasets`, else $MICROPROP_DATASETS), or a CSV path read
    with `csv_options` (host.sensorlog.read_sensor_log: channels, full_scale, rate_hz,
    label_col, subject_col, recording_col, time_col, ignore_labels).
    """
    return pipeline.load_log(source, seed=seed, datasets_dir=datasets, **csv_options)


def load_data(source="synth", seed=0, window=None, hop=None, datasets=None, **csv_options):
    """Windows of a sensor log with the board's integer features (host.pipeline.Dataset: X,
    labels, subjects, log). `source` is load_log's, or a SensorLog; window and hop in samples
    (default 2 s and 1 s at the log's rate)."""
    if isinstance(source, str):
        log = load_log(source, seed, datasets, **csv_options)
        name = source
    else:
        log, name = source, getattr(source, "path", None) or "log"
    return pipeline.make_dataset(log, window, hop, source=name)


def train(data, hidden=(32, 16), activation="relu", test_subjects=None, seed=0, **options):
    """Train a float MLP on `data` (load_data's) -> Model.

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


def evaluate(model, data, subjects=None):
    """Classification report of a Model (float) or a QModel (int8: the board's integers) on
    `data`: the given subjects, else the model's test subjects the data holds, else all.

    Returns host.metrics.classification_report's dict plus "subjects" and "which"."""
    model = _as_model(model)
    if isinstance(model, Model):
        meta = model.meta
        pipeline.check_compatible(meta, data, data.source)
    else:
        test = str(model.training.get("test_subjects", ""))
        meta = {"data": {"test_subjects": [s for s in test.split(",") if s]}}
    chosen, which = pipeline.eval_subjects(meta, data, subjects)
    if isinstance(model, Model):
        report = pipeline.evaluate_model(model.mlp, model.meta, data, chosen)
    else:
        report = pipeline.evaluate_qmodel(model, data, chosen)
    return dict(report, subjects=chosen, which=which)


def export(model, data, path, qat="auto", rehearse=5, tflite=None):
    """Quantize a float Model to int8 and write the board's model file `path` -> Exported.

    data: the data it was trained on (calibration on its training subjects, the test report on
    its test subjects). qat: 'auto' (quantization-aware fine-tuning when post-training accuracy
    drops by more than a point), True or False. rehearse: rehearsal windows per class written
    beside the model (path with .rh; 0: none, and an old one is removed). tflite: also write the
    int8 network as a .tflite file there.
    """
    from microprop.device.checkpoint import model_crc_of
    from microprop.host import rehearsal
    from microprop.host.modelfile import write_model

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

    test_subjects: default the model's. options: modes, epochs, per_class, lr_shift, lr,
    hidden_shift, float_hidden_shift, rehearse, seed, progress (a callable(text))."""
    from microprop.host import adapt as adaptation

    model = _as_model(model)
    test = test_subjects or model.meta["data"].get("test_subjects")
    if not test:
        raise UserError("adapt: no test subjects: give test_subjects (the model has none)")
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
