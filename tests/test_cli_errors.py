"""The `microprop` command's errors: what the user can fix is one line `microprop: ...` with exit
status 1 (bad options included), a bug shows its traceback, and every output file is written
with one mode.

Runs on: host (pytest).
"""

import os
import stat
import subprocess
import sys

import pytest

from microprop.firmware_tools import cli
from microprop.host import pipeline
from microprop.host.mlp import MLP

from .conftest import ROOT
from .helpers import FAST, assert_one_line_error, write_log

ESC = "\x1b[31m"  # an ANSI escape: red text


def _log(d, classes=("still", "move")):
    return str(write_log(d / "log.csv", classes=classes))


def _model_with_classes(d, float_model, classes):
    """The float model with other class names (as a model file made elsewhere may have)."""
    mlp, meta = MLP.load(float_model)
    meta["classes"] = list(classes)
    mlp.save(d / "odd.npz", meta)
    return str(d / "odd.npz")


# (case, argv from (tmp_path, float model), what the one line must say)
OPTION_ERRORS = [
    (
        "hidden abc",
        lambda d, m: ["train", "--hidden", "abc"],
        ["train: argument --hidden", "'abc'"],
    ),
    ("hidden 0", lambda d, m: ["train", "--hidden", "8,0"], ["argument --hidden", "positive"]),
    (
        "rehearse -1",
        lambda d, m: ["export", str(m), "--rehearse", "-1"],
        ["export: argument --rehearse: expected an int 0..100, found '-1'"],
    ),
    (
        "rehearse 100000",
        lambda d, m: ["export", str(m), "--rehearse", "100000"],
        ["argument --rehearse: expected an int 0..100, found '100000'"],
    ),
    (
        "adapt rehearse -1",
        lambda d, m: ["adapt", str(m), "--rehearse", "-1"],
        ["adapt: argument --rehearse"],
    ),
    (
        "pins x,;",
        lambda d, m: ["deploy", "auto", "--model", "m.mpm", "--pins", "x,;"],
        ["deploy: argument --pins: expected integers separated by commas like 26,27, found 'x,;'"],
    ),
    ("seed -1", lambda d, m: ["train", "--seed", "-1"], ["argument --seed", "found '-1'"]),
    ("seed 2**32", lambda d, m: ["train", "--seed", str(2**32)], ["argument --seed"]),
    ("demo seed -1", lambda d, m: ["demo", "--seed", "-1"], ["demo: argument --seed"]),
    ("epochs 0", lambda d, m: ["train", "--epochs", "0"], ["argument --epochs", "found '0'"]),
    ("activation", lambda d, m: ["train", "--activation", "swish"], ["--activation", "swish"]),
    ("optimizer", lambda d, m: ["train", "--optimizer", "rmsprop"], ["--optimizer", "rmsprop"]),
    ("adapt modes", lambda d, m: ["adapt", str(m), "--modes", "last,most"], ["'most'"]),
    ("unknown option", lambda d, m: ["train", "--hiden", "8"], ["unrecognized arguments"]),
    ("unknown command", lambda d, m: ["trian"], ["invalid choice: 'trian'"]),
    (
        "unwritable --out",
        lambda d, m: ["train", "--out", str(d / "no" / "m.npz")],
        ["cannot write ", "/no/m.npz: No such file or directory"],
    ),
    (
        "unwritable export --out",
        lambda d, m: ["export", str(m), "--qat", "off", "--out", str(d / "no" / "m.mpm")],
        ["cannot write ", "/no/m.mpm: "],
    ),
    (
        "class name with an escape",
        lambda d, m: ["train", "--data", _log(d, ("still", ESC + "move"))],
        ["log.csv: class name '\\x1b[31mmove': expected printable text"],
    ),
    (
        "class name with a tab",
        lambda d, m: ["train", "--data", _log(d, ("still", "mo\tve"))],
        ["class name 'mo\\tve'"],
    ),
    (
        "export of a class name with an escape",
        lambda d, m: ["export", _model_with_classes(d, m, ("still", ESC + "move"))],
        ["export: class name '\\x1b[31mmove': expected printable text"],
    ),
]


def _files(*folders):
    return {p for d in folders for p in d.rglob("*")}


@pytest.mark.parametrize("case, argv, needles", OPTION_ERRORS, ids=[c[0] for c in OPTION_ERRORS])
def test_option_errors_are_one_line_exit_1_and_write_nothing(
    tmp_path, capsys, float_model, monkeypatch, case, argv, needles
):
    monkeypatch.chdir(tmp_path)
    argv = argv(tmp_path, float_model)
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "m.npz")]
    if argv[0] == "train":
        argv += ["--quiet"]
    before = _files(tmp_path, float_model.parent)
    capsys.readouterr()
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert_one_line_error(code, err, *needles)
    assert "\x1b" not in err and "usage:" not in err + out and ".tmp" not in err
    assert _files(tmp_path, float_model.parent) == before


def test_the_option_errors_also_exit_1_from_the_installed_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "microprop", "train", "--hidden", "abc"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        "microprop: train: argument --hidden: expected positive integers separated by commas "
        "like 32,16, found 'abc'\n"
    )


@pytest.mark.parametrize("bug", [RecursionError, NotImplementedError, ValueError, KeyError])
def test_an_internal_bug_shows_its_traceback(tmp_path, monkeypatch, bug):
    def broken(*args, **kwargs):
        raise bug("a bug, not the user's input")

    monkeypatch.setattr(pipeline, "train_model", broken)
    with pytest.raises(bug, match="a bug, not the user's input"):
        cli.main(["train", "--out", str(tmp_path / "m.npz"), "--quiet"])
    assert not (tmp_path / "m.npz").exists()


def test_an_internal_bug_is_a_traceback_from_the_command_too(tmp_path):
    script = (
        "import sys\n"
        "from microprop.firmware_tools import cli\n"
        "from microprop.host import pipeline\n"
        "def broken(*a, **k):\n"
        "    raise NotImplementedError('not written yet')\n"
        "pipeline.train_model = broken\n"
        "sys.exit(cli.main(['train', '--quiet', '--out', 'm.npz']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 1  # Python's status for an uncaught exception
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().endswith("NotImplementedError: not written yet")
    assert "microprop: " not in proc.stderr


def test_ctrl_c_is_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "train_model", interrupted)
    assert cli.main(["train", "--out", str(tmp_path / "m.npz"), "--quiet"]) == 130
    assert capsys.readouterr().err == "microprop: interrupted\n"


def test_a_hint_is_a_second_line(tmp_path, monkeypatch, capsys):
    from microprop.host.errors import UserError

    def refused(*args, **kwargs):
        raise UserError("train: the board is\nbusy", hint="is another program holding it?")

    monkeypatch.setattr(pipeline, "train_model", refused)
    assert cli.main(["train", "--out", str(tmp_path / "m.npz"), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        "microprop: train: the board is busy\nmicroprop: hint: is another program holding it?\n"
    )


def test_every_output_file_has_the_mode_of_a_plain_new_file(tmp_path, float_model, capsys):
    old = os.umask(0o027)
    try:
        npz, mpm, tfl = tmp_path / "m.npz", tmp_path / "m.mpm", tmp_path / "m.tflite"
        argv = ["train", "--data", str(write_log(tmp_path / "log.csv")), "--out", str(npz)]
        assert cli.main(argv + ["--window", "20", "--hop", "10", *FAST]) == 0
        assert cli.main(["export", str(npz), "--qat", "off", "--tflite", str(tfl)]) == 0
        written = [npz, mpm, tmp_path / "m.rh", tfl]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
        assert modes == {p.name: 0o640 for p in written}
        # Replacing a file keeps its mode, as open(path, "w") would.
        mpm.chmod(0o600)
        assert cli.main(["export", str(npz), "--qat", "off"]) == 0
        assert stat.S_IMODE(mpm.stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["log.csv", "m.npz", "m.mpm", "m.rh", "m.tflite"]
    )


def test_info_and_eval_escape_names_a_file_brings(tmp_path, float_model, capsys):
    """A model file made elsewhere may hold names export refuses: shown escaped, never raw."""
    from microprop.host.modelfile import read_model, write_model

    assert (
        cli.main(["export", str(float_model), "--qat", "off", "--out", str(tmp_path / "a.mpm")])
        == 0
    )
    qm = read_model(tmp_path / "a.mpm")
    qm.classes = ["still", ESC + "mo\nve"]
    write_model(tmp_path / "odd.mpm", qm)
    capsys.readouterr()
    assert cli.main(["info", str(tmp_path / "odd.mpm")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mmo\\nve" in out
    log = str(float_model.parent / "log.csv")
    assert cli.main(["eval", str(tmp_path / "odd.mpm"), "--data", log]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b[31mmo\\nve" in out


def test_the_cli_has_one_command_table_and_no_second_exit_path():
    from microprop.firmware_tools import (
        board_command,
        monitor,
        ports,
        record,
        selftest,
        serialport,
    )

    for name, command in cli.COMMANDS.items():
        assert command.handler.__name__ == "do_" + name.replace("-", "_")
        assert command.help and command.epilog.startswith("example:")
    for module in (board_command, monitor, ports, record, selftest):
        assert not hasattr(module, "main"), module.__name__
    assert not hasattr(serialport, "command_main")
    text = (ROOT / "firmware_tools" / "cli.py").read_text()
    assert "class " + "CommandError" not in text and "_tool(" not in text
