"""The `microprop` command: training end to end, and one-line errors for bad input.

Runs on: host (pytest).
"""

import io
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from microprop.firmware_tools.cli import ReadProgress, main
from microprop.host.mlp import MLP

from .helpers import FAST, assert_one_line_error, write_log


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_eval_on_csv(tmp_path, capsys):
    log = write_log(tmp_path / "log.csv")
    out = tmp_path / "m.npz"
    code, text, err = run(
        ["train", "--data", str(log), "--window", "20", "--hop", "10", "--out", str(out)]
        + FAST
        + ["--epochs", "60"],  # one training subject of 58 windows: 60 steps
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
    argv = ["train", "--out", str(out), "--epochs", "3", "--patience", "2", "--hidden", "8"]
    code, text, err = run(argv, capsys)
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
        [sys.executable, "-m", "microprop", *args, "--data", str(p)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1  # the uncaught exception's status, as without --traceback
    assert proc.stderr.startswith("Traceback"), proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "microprop.host.errors.UserError: %s: sensor log: empty file" % p
    assert "microprop: " not in proc.stderr


def test_help_shows_examples():
    for cmd in ("train", "eval"):
        proc = subprocess.run(
            [sys.executable, "-m", "microprop", cmd, "--help"],
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


# --- issue 17: bad inputs, each one line and nothing written ------------------------------------


def _log(tmp_path, name="log.csv", **kw):
    return str(write_log(tmp_path / name, **kw))


def _text(tmp_path, name, text):
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def _steps_back(tmp_path):
    lines = open(_log(tmp_path)).read().splitlines()
    lines[1] += ",t_ms"
    lines[2:] = ["%s,%d" % (line, 20 * (k % 300)) for k, line in enumerate(lines[2:])]
    lines[7] = lines[7].rsplit(",", 1)[0] + ",40"  # after 80: a step back in one recording
    return _text(tmp_path, "back.csv", "\n".join(lines) + "\n")


def _physical(tmp_path, first_line):
    text = (
        first_line
        + "\nax,ay,label,subject\n"
        + "".join(
            "%.3f,%.3f,%s,%d\n" % (0.01 * (k % 7), -0.5, "ab"[k // 150 % 2], k // 300)
            for k in range(900)
        )
    )
    return _text(tmp_path, "physical.csv", text)


def _diverged_model(tmp_path, float_model):
    from microprop.host.mlp import MLP

    mlp, meta = MLP.load(float_model)
    mlp.W[0] = mlp.W[0] * 1e30
    mlp.save(tmp_path / "diverged.npz", meta)
    return str(tmp_path / "diverged.npz")


BAD_INPUTS = [
    # (case, argv from tmp_path (and the float model), what the one line must say)
    ("empty channels", lambda d, m: ["--data", _log(d), "--channels", ""], ["--channels", "''"]),
    ("comma channels", lambda d, m: ["--data", _log(d), "--channels", ","], ["found ','"]),
    (
        "channel twice",
        lambda d, m: ["--data", _log(d), "--channels", "ax,ax"],
        ["'ax' is given twice"],
    ),
    (
        "no rate",
        lambda d, m: ["--data", _log(d, rate_hz=None)],
        ["log.csv: no sample rate", "give --rate HZ"],
    ),
    (
        "full scale with =",
        lambda d, m: ["--data", _log(d), "--full-scale", "ax=8,ay=8"],
        ["--full-scale: bad item 'ax=8', expected channel:<number><unit>", "(write ax:8)"],
    ),
    (
        "file full scale with =",
        lambda d, m: ["--data", _physical(d, "# rate_hz=50 values=physical full_scale=ax=8g")],
        ["physical.csv, row 1: sensor log: full_scale: bad item 'ax=8g'", "(write ax:8g)"],
    ),
    (
        "t_ms steps back",
        lambda d, m: ["--data", _steps_back(d)],
        ["back.csv, row 8, column 't_ms'", "goes back from 80 to 40 inside one recording"],
    ),
    (
        "data too short",
        lambda d, m: ["--data", _log(d, rows_per_class=30)],
        ["window of 100 samples (2 s at 50 Hz) is longer than every recording (longest 30)"],
    ),
    (
        "huge rate",
        lambda d, m: ["--data", _log(d), "--rate", "1e6"],
        ["window of 512 samples (the board's maximum; 2 s at 1e+06 Hz would be 2000000)"],
    ),
    (
        "label column of numbers",
        lambda d, m: ["--data", _log(d), "--label-col", "ax"],
        ["column 'ax' holds more than 1000 distinct labels; is it the label column?"],
    ),
    (
        "label column of numbers, small",
        lambda d, m: ["--data", _log(d, rows_per_class=20), "--label-col", "ax", "--window", "5"],
        ["no window of 5 samples (--window) has one label", "is it the label column?"],
    ),
    ("lr 1e30", lambda d, m: ["--data", _log(d), "--lr", "1e30"], ["training diverged", "--lr"]),
    (
        "export diverged model",
        lambda d, m: ["export", _diverged_model(d, m)],
        ["export: layer 0 of the float model has a weight of", "smaller --lr"],
    ),
    (
        "eval another window",
        lambda d, m: ["eval", str(m), "--window", "30"],
        ["--window 30: the model's features are of windows of 20 samples"],
    ),
]


@pytest.mark.parametrize("case, argv, needles", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_are_one_line_and_write_nothing(
    tmp_path, capsys, float_model, case, argv, needles
):
    argv = argv(tmp_path, float_model)
    if argv[0] not in ("export", "eval"):
        argv = ["train", *argv, "--out", str(tmp_path / "m.npz"), *FAST]
    capsys.readouterr()
    before = set(tmp_path.iterdir()) | set(float_model.parent.iterdir())
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, *needles)
    assert set(tmp_path.iterdir()) | set(float_model.parent.iterdir()) == before


# --- issue 17: reading, splitting and scoring -------------------------------------------------


def test_ignored_labels_and_gaps_are_left_out_and_reported(tmp_path, capsys):
    lines = open(_log(tmp_path)).read().splitlines()
    lines[1] += ",t_ms"
    lines[2:] = ["%s,%d" % (line, 20 * (k % 300)) for k, line in enumerate(lines[2:])]
    for k in range(102, 132):  # 30 unlabelled rows inside subject 1's first recording
        lines[k] = lines[k].replace(",still,", ",-1,")
    del lines[400:410]  # 10 rows deleted: a 220 ms step in t_ms
    path = _text(tmp_path, "gaps.csv", "\n".join(lines) + "\n")
    argv = [
        "train",
        "--data",
        path,
        "--window",
        "20",
        "--hop",
        "10",
        "--out",
        str(tmp_path / "m.npz"),
    ]
    code, out, err = run(argv + FAST + ["--ignore-labels", "-1"], capsys)
    assert code == 0, err
    data = out.splitlines()[0]
    assert data.startswith("data: %s: 1790 rows, 3 subjects," % path)
    assert "left out 30 rows labelled -1 (1 splits)" in data
    assert "1 gaps in t_ms over 30 ms (1.5 sample periods) split recordings" in data
    assert "\n-1 " not in out  # not a class
    # without --ignore-labels, -1 is a class of its own
    code, out, err = run(argv[:-1] + [str(tmp_path / "m2.npz")] + FAST, capsys)
    assert code == 0, err
    assert "\n-1 " in out


def test_full_scale_is_written_as_in_the_file(tmp_path, capsys):
    declared = _physical(tmp_path, "# rate_hz=50 values=physical full_scale=ax:2g,ay:2g")
    given = _text(tmp_path, "given.csv", open(declared).read().split("\n", 1)[1])
    models = []
    for path, extra in ((declared, []), (given, ["--full-scale", "ax:2g,ay:2g", "--rate", "50"])):
        out = str(tmp_path / ("%d.npz" % len(models)))
        code, _, err = run(
            ["train", "--data", path, "--out", out, "--epochs", "2", *extra], capsys
        )
        assert code == 0, err
        models.append(np.load(out))
    assert models[0]["W0"].tobytes() == models[1]["W0"].tobytes()  # same counts, same model


def test_train_counts_the_windows_it_trained_on(float_model, capsys):
    code, out, err = run(["eval", str(float_model), "--subjects", "1,2,3"], capsys)
    assert code == 0, err
    assert "3 subjects, 174 windows of 20 samples (0.4 s), hop 10" in out.splitlines()[0]
    w = MLP.load(float_model)[1]["data"]["windows"]
    assert w == {"train": 58, "validation": 58, "test": 58}  # one subject each, 174 in all
    train = float_model.parent / "train.txt"
    assert "trained 21-8-2 MLP on 58 windows of subjects 2 in" in train.read_text()


def test_eval_of_an_mpm_finds_its_data_and_scores_the_test_subjects(float_model, tmp_path, capsys):
    mpm = tmp_path / "m.mpm"
    code, out, err = run(["export", str(float_model), "--out", str(mpm), "--qat", "off"], capsys)
    assert code == 0, err
    assert "the model's test subjects 3, 58 windows: float accuracy" in out
    shutil.copy(float_model, tmp_path / "m.npz")  # the float model beside it says the data
    code, out, err = run(["eval", str(mpm)], capsys)
    assert code == 0, err
    assert (
        "m.mpm on %s, the model's test subjects 3: 58 windows (int8 model"
        % (float_model.parent / "log.csv")
        in out
    )
    data = str(float_model.parent / "log.csv")
    code, out, err = run(["eval", str(mpm), "--data", data], capsys)
    assert code == 0, err
    assert "the model's test subjects 3: 58 windows" in out  # not all 174
    code, out, err = run(["eval", str(mpm), "--data", data, "--subjects", "1,2,3"], capsys)
    assert code == 0 and "subjects 1,2,3: 174 windows" in out
    (tmp_path / "m.npz").unlink()
    code, _, err = run(["eval", str(mpm)], capsys)
    assert_one_line_error(code, err, "m.mpm does not say which data it was trained on", "--data")


def test_eval_plot_is_the_confusion_matrix(float_model, tmp_path, capsys):
    png = tmp_path / "confusion.png"
    code, out, err = run(["eval", str(float_model), "--plot", str(png)], capsys)
    assert code == 0, err
    assert "confusion matrix written to %s" % png in out
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (500, 450)  # not the 1100-wide training plot
    proc = subprocess.run(
        [sys.executable, "-m", "microprop", "eval", "--help"],
        capture_output=True,
        text=True,
    )
    assert ".mpm" in proc.stdout.split("positional arguments:")[1].split("options:")[0]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_long_read_shows_one_progress_line():
    now = [0.0]
    tty = _Tty()
    p = ReadProgress("big.csv", stream=tty, after=1.0, clock=lambda: now[0])
    p(1000, 750000)  # under a second: nothing
    now[0] = 1.5
    p(300000, 750000)
    now[0] = 3.0
    p(750000, 750000)
    p.done(749998)
    assert tty.getvalue().split("\r")[1:] == [
        "--- reading big.csv: 40% of 750000 lines",
        "--- reading big.csv: 100% of 750000 lines",
        "--- read big.csv: 749998 rows in 3.0 s".ljust(60) + "\n",
    ]
    pipe = io.StringIO()  # not a terminal: the last line only
    now[0] = 0.0
    p = ReadProgress("big.csv", stream=pipe, after=1.0, clock=lambda: now[0])
    p(300000, 750000)
    now[0] = 2.0
    p(750000, 750000)
    p.done(749998)
    assert pipe.getvalue() == "--- read big.csv: 749998 rows in 2.0 s\n"
    quick = io.StringIO()
    now[0] = 0.0
    p = ReadProgress("small.csv", stream=quick, after=1.0, clock=lambda: now[0])
    p(10, 10)
    p.done(9)
    assert quick.getvalue() == ""
