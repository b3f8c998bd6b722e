"""The `microprop` command: training end to end, and one-line errors for bad input.

Runs on: host (pytest).
"""

import subprocess
import sys

import pytest

from firmware_tools.cli import main

from .helpers import FAST, assert_one_line_error, write_log


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_eval_on_csv(tmp_path, capsys):
    log = write_log(tmp_path / "log.csv")
    out = tmp_path / "m.npz"
    code, text, err = run(
        ["train", "--data", str(log), "--window", "20", "--hop", "10", "--out", str(out)] + FAST,
        capsys,
    )
    assert code == 0, err
    assert "accuracy" in text and "confusion matrix" in text
    code, text, err = run(["eval", str(out)], capsys)
    assert code == 0, err
    acc = float(text.split("accuracy ")[1].split()[0])
    assert acc > 0.9


def test_train_synth_shows_progress(tmp_path, capsys):
    out = tmp_path / "m.npz"
    code, text, err = run(["train", "--out", str(out), "--epochs", "3", "--hidden", "8"], capsys)
    assert code == 0
    assert "epoch 3/3" in err and "val_acc" in err
    assert "precision" in text


def test_missing_label_column(tmp_path, capsys):
    p = tmp_path / "nolabel.csv"
    p.write_text("subject,ax,ay\n1,2,3\n")
    code, _, err = run(["train", "--data", str(p)] + FAST, capsys)
    assert_one_line_error(code, err, str(p), "label")


def test_non_numeric_cell(tmp_path, capsys):
    p = write_log(tmp_path / "bad.csv")
    lines = p.read_text().splitlines(True)
    lines[7] = lines[7].replace(lines[7].split(",")[4], "abc")
    p.write_text("".join(lines))
    code, _, err = run(["train", "--data", str(p)] + FAST, capsys)
    assert_one_line_error(code, err, str(p), "row 8", "ay")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_or_inf(tmp_path, capsys, value):
    p = write_log(tmp_path / "nan.csv")
    lines = p.read_text().splitlines(True)
    parts = lines[11].rstrip("\n").split(",")
    parts[5] = value
    lines[11] = ",".join(parts) + "\n"
    p.write_text("".join(lines))
    code, _, err = run(["train", "--data", str(p)] + FAST, capsys)
    assert_one_line_error(code, err, str(p), "row 12", "az")


def test_empty_file(tmp_path, capsys):
    p = tmp_path / "empty.csv"
    p.write_text("")
    code, _, err = run(["train", "--data", str(p)] + FAST, capsys)
    assert_one_line_error(code, err, str(p), "empty")


def test_single_class(tmp_path, capsys):
    p = write_log(tmp_path / "one.csv", classes=("still",))
    code, _, err = run(["train", "--data", str(p), "--window", "20"] + FAST, capsys)
    assert_one_line_error(code, err, str(p), "2 classes", "found 1 (still)")


def test_window_longer_than_every_recording(tmp_path, capsys):
    p = write_log(tmp_path / "short.csv", rows_per_class=30)
    code, _, err = run(["train", "--data", str(p), "--window", "100"] + FAST, capsys)
    assert_one_line_error(code, err, str(p), "100", "30")


def test_unknown_activation(tmp_path, capsys):
    code, _, err = run(
        ["train", "--activation", "swish", "--out", str(tmp_path / "m.npz")]
        + ["--epochs", "1", "--quiet"],
        capsys,
    )
    assert_one_line_error(code, err, "swish", "relu")
    assert not (tmp_path / "m.npz").exists()


def test_missing_file(tmp_path, capsys):
    code, _, err = run(["train", "--data", str(tmp_path / "nope.csv")] + FAST, capsys)
    assert_one_line_error(code, err, "nope.csv")
    code, _, err = run(["eval", str(tmp_path / "nope.npz")], capsys)
    assert_one_line_error(code, err, "nope.npz")


@pytest.mark.parametrize("where", ["after", "before"])
def test_traceback_flag_shows_the_stack(tmp_path, where):
    # `microprop train --traceback` and `microprop --traceback train` both show the stack.
    p = tmp_path / "empty.csv"
    p.write_text("")
    args = ["train", "--traceback"] if where == "after" else ["--traceback", "train"]
    proc = subprocess.run(
        [sys.executable, "-m", "firmware_tools.cli", *args, "--data", str(p)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1  # the uncaught exception's status, as without --traceback
    assert proc.stderr.startswith("Traceback"), proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "host.errors.DataError: %s: sensor log: empty file" % p
    assert "microprop: " not in proc.stderr


def test_help_shows_examples():
    for cmd in ("train", "eval"):
        proc = subprocess.run(
            [sys.executable, "-m", "firmware_tools.cli", cmd, "--help"],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0
        assert "example:" in proc.stdout and "microprop %s" % cmd in proc.stdout


def test_plot_writes_a_png(tmp_path, capsys):
    out, png = tmp_path / "m.npz", tmp_path / "curves.png"
    code, text, err = run(
        [
            "train",
            "--out",
            str(out),
            "--epochs",
            "5",
            "--hidden",
            "8",
            "--quiet",
            "--plot",
            str(png),
        ],
        capsys,
    )
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    png2 = tmp_path / "eval.png"
    assert main(["eval", str(out), "--plot", str(png2)]) == 0
    assert png2.read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code, _, err = run(
        [
            "train",
            "--out",
            str(tmp_path / "m.npz"),
            "--epochs",
            "2",
            "--hidden",
            "4",
            "--quiet",
            "--plot",
            str(tmp_path / "p.png"),
        ],
        capsys,
    )
    assert_one_line_error(code, err, "matplotlib", "microprop[plot]")
    assert not (tmp_path / "m.npz").exists()  # refused before training: nothing written
