"""Models trained on the shared datasets: the int8 model keeps the float model's accuracy,
and the board code (portable and viper kernels, from .py and .mpy) equals the NumPy reference
on them bit for bit, on real feature windows and on edge inputs.

Runs on: host (pytest), plus the `micropython` binary.
"""

import os
import subprocess

import numpy as np
import pytest

from firmware_tools.cli import main
from host import modelfile, pipeline

from .conftest import ROOT
from .test_infer_parity import SWEEP, _compare, compile_device

N_WINDOWS = 150
SOURCES = (("shoulder", ["8", "9", "10"]), ("basic_motions", ["test"]))


@pytest.fixture(scope="module")
def trained(datasets, tmp_path_factory):
    """(qmodel, raw features, int8 edges, float report, int8 report) per shared dataset."""
    return make_trained(tmp_path_factory.mktemp("trained"))


def make_trained(d):
    """Train, quantize and write one model per shared dataset into folder `d`, with real
    windows and edge inputs -> (d, [(qmodel, raw, xq, float report, int8 report)])."""
    cases = []
    for i, (source, test_subjects) in enumerate(SOURCES):
        ds = pipeline.make_dataset(pipeline.load_log(source), source=source)
        mlp, meta, float_report, _ = pipeline.train_model(
            ds, hidden=(32, 16), test_subjects=test_subjects, seed=0
        )
        qm = pipeline.quantize_model(mlp, meta, ds)
        int_report = pipeline.evaluate_qmodel(qm, ds, test_subjects)
        rng = np.random.default_rng(i)
        pick = rng.choice(len(ds.X), size=min(N_WINDOWS, len(ds.X)), replace=False)
        f = ds.X.shape[1]
        raw = np.concatenate([ds.X[pick], np.full((1, f), -32768), np.full((1, f), 32767)]).astype(
            np.int64
        )
        xq = np.array([[-128] * f, [127] * f, [0] * f], dtype=np.int64)
        modelfile.write_model(d / ("m%d.mpm" % i), qm)
        (d / ("m%d.raw" % i)).write_bytes(raw.astype("<i4").tobytes())
        (d / ("m%d.q" % i)).write_bytes(xq.astype("i1").tobytes())
        cases.append((qm, raw, xq, float_report, int_report))
    return d, cases


def test_int8_within_one_point_of_float(trained):
    _, cases = trained
    for (source, _), (_qm, _, _, float_report, int_report) in zip(SOURCES, cases, strict=True):
        drop = float_report["accuracy"] - int_report["accuracy"]
        print(
            "%s: float %.4f int8 %.4f" % (source, float_report["accuracy"], int_report["accuracy"])
        )
        assert drop <= 0.01, (source, float_report["accuracy"], int_report["accuracy"])
    assert cases[0][3]["accuracy"] > 0.78  # shoulder, subjects 8-10: a real model


@pytest.mark.parametrize("loader", ["py", "mpy"])
def test_board_equals_reference_on_trained_models(trained, micropython, tmp_path, loader):
    d, cases = trained
    root = ROOT
    if loader == "mpy":
        root = tmp_path
        compile_device(root)
    proc = subprocess.run(
        [micropython, "-c", SWEEP, str(d), str(len(cases)), "portable,viper"],
        cwd=root,
        env=dict(os.environ, MICROPYPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    n = _compare(proc.stdout, [c[:3] for c in cases], ("portable", "viper"), "." + loader)
    assert n == 2 * sum(len(c[1]) + len(c[2]) for c in cases)


def test_cli_train_export_info_eval(tmp_path, capsys):
    npz, mpm, tfl = tmp_path / "m.npz", tmp_path / "m.mpm", tmp_path / "m.tflite"
    assert main(["train", "--quiet", "--epochs", "40", "--out", str(npz)]) == 0
    assert main(["export", str(npz), "--tflite", str(tfl)]) == 0
    out = capsys.readouterr().out
    assert "int8 accuracy" in out and mpm.exists() and tfl.read_bytes()[4:8] == b"TFL3"
    assert main(["info", str(mpm)]) == 0
    out = capsys.readouterr().out
    assert "network  21-32-16-4" in out and "board RAM" in out and "max |acc|" in out
    assert main(["eval", str(mpm)]) == 0
    out = capsys.readouterr().out
    assert "int8 model, the board's integer pipeline" in out and "accuracy" in out


def test_export_refuses_bad_model_file(tmp_path, capsys):
    bad = tmp_path / "bad.mpm"
    bad.write_bytes(b"XYZ0" + bytes(40))
    assert main(["info", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("microprop: model file:")
