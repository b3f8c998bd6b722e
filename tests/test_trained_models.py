"""Models trained on the shared datasets: the int8 model keeps the float model's accuracy,
and the board code (portable and viper kernels, from .py and .mpy) equals the NumPy reference
on them bit for bit, on real feature windows and on edge inputs.

Runs on: host (pytest), plus the `micropython` binary.
"""

import os
import subprocess

import pytest

from microprop.firmware_tools.cli import main

from .helpers import INFER_SWEEP as SWEEP
from .helpers import ROOT, SOURCES, compile_device
from .helpers import compare_infer as _compare


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
    assert len(err) == 1 and err[0].startswith("microprop: %s: model file: bad magic" % bad)
