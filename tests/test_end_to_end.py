"""The whole path against the virtual board: the real mpremote CLI and pyserial, no mocks.

Runs on: host (pytest, Linux: the virtual board needs a pty and /proc).

`microprop train` and `microprop export` (a small model on the synthetic data), `microprop
deploy` (a subprocess, which runs mpremote) with a replay of held-out wearers as fast as the
board can; the `pred` lines read with pyserial equal the host's `predict_stream` line for line;
a soft reset (`mpremote soft-reset`, then Ctrl-D at the REPL, as on a board) and a hard reset
(`mpremote reset`) are survived; a second deploy copies nothing; a board reset in the middle
of `microprop monitor --log` loses no line already received; and `microprop demo` runs.
"""

import argparse
import csv
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from microprop.firmware_tools import cli, demo, monitor
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import pipeline
from microprop.host.boardeval import predict_stream
from microprop.host.errors import UserError

from .helpers import ROOT, HostLines, check_line_for_line, read_preds

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board's Ctrl-C needs /proc"
)


@pytest.fixture(scope="module")
def host_lines(exported):
    _, qm, replay = exported
    return HostLines(qm, replay.counts)


# The tests that need no module board come first: the board's app prints as fast as it can
# from the first test that uses it to the module's end, and would spin a core through these.


def test_demo_runs_the_whole_path(tmp_path):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "microprop", "demo", "--seconds", "5", "--quiet",
         "--out", str(tmp_path / "model.npz")],
        capture_output=True, text=True, timeout=90, cwd=ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    seen = int(out.split("predictions seen: ")[1].split()[0])
    assert seen >= 2
    assert "board predictions equal the host's: %d/%d\n" % (seen, seen) in out
    if "the board app has no trainer" not in out:  # the app trains on labels
        assert "  save             -> info saved=" in out, out
        assert re.search(r"soft reset, info -> checkpoint=\S+ seq=\d+ steps=5 ", out), out
    for name in ("model.npz", "model.mpm", "replay.csv", "predictions.csv"):
        assert (tmp_path / name).exists(), name
    print("\n--- microprop demo --seconds 5: %.1f s" % took)


def test_demo_check_finds_a_different_prediction(exported):
    _, qm, replay = exported
    stream = np.tile(replay.counts, (2, 1))
    rows = []
    for e, cls, scores in predict_stream(qm, stream)[:12]:
        pairs = {c: int(s) for c, s in zip(qm.classes, scores, strict=True)}
        rows.append((e * 20 + 3, qm.classes[cls], pairs))  # real time: a few ms late
    result = demo.check_predictions(rows[2:], qm, replay.counts, replay.labels)
    assert result["equal"] == result["seen"] == 10 and result["first_difference"] is None
    t, cls, pairs = rows[6]
    pairs = dict(pairs, **{cls: pairs[cls] - 1})
    rows[6] = (t, cls, pairs)
    result = demo.check_predictions(rows[2:], qm, replay.counts, replay.labels)
    assert result["equal"] == 9
    assert result["first_difference"].startswith("board: t=%d class=%s scores " % (t, cls))
    fast = [
        (int(e * 1000 // 50), c, s) for (_, c, s), e in zip(rows, range(99, 699, 50), strict=True)
    ]
    result = demo.check_predictions(fast, qm, replay.counts, realtime=False)
    assert (result["seen"], result["equal"]) == (12, 11)


@pytest.fixture(scope="module")
def board(exported, tmp_path_factory):
    """A virtual board with the app deployed by `microprop deploy` (a subprocess)."""
    d = exported[0]
    flash = tmp_path_factory.mktemp("flash")
    with VirtualBoard(flash) as b:
        out = deploy(b.port, d)
        assert "deployed: " in out and " copied" in out and "0 copied" not in out, out
        assert "--- soft reset: the board runs main.py" in out
        b.folder = d
        yield b


def test_export_writes_rehearsal_windows_that_deploy_copies(exported, board, tmp_path, capsys):
    """model.rh beside model.mpm: 5 windows per class of the training subjects, bound to the
    model file by its CRC; deploy copies it, refuses one of another model before touching the
    board, and `export --rehearse 0` removes it."""
    from microprop.device.checkpoint import model_crc_of
    from microprop.firmware_tools import deploy as deploy_mod
    from microprop.host import rehearsal

    from .helpers import parse_deploy as parse

    d, qm, _ = exported
    data = (d / "model.rh").read_bytes()
    crc = model_crc_of(str(d / "model.mpm"))
    x, y, _ = rehearsal.from_bytes(data, crc)
    assert np.bincount(y, minlength=len(qm.classes)).tolist() == [5] * len(qm.classes)
    log = pipeline.make_dataset(pipeline.load_log("synth", seed=0))
    test = qm.training["test_subjects"].split(",")
    train_rows = {tuple(r) for r in log.X[~np.isin(log.subjects, test)]}
    assert all(tuple(r) in train_rows for r in x)
    assert (board.flash_dir / "model.rh").read_bytes() == data

    other = tmp_path / "m.mpm"
    other.write_bytes((d / "model.mpm").read_bytes())
    rehearsal.write(tmp_path / "m.rh", x, y, crc ^ 1, len(qm.classes))
    args = ["--dry-run", "--arch", "x64", "--model", other, "--data", d / "replay.csv"]
    args += ["--build-dir", d / "build"]
    with pytest.raises(UserError, match="is not its rehearsal file"):
        deploy_mod.run(parse(*args))
    (tmp_path / "m.rh").write_bytes(data)
    capsys.readouterr()
    assert deploy_mod.run(parse(*args)) == 0
    assert "/model.rh" in capsys.readouterr().out

    (tmp_path / "model.npz").write_bytes((d / "model.npz").read_bytes())
    out = tmp_path / "model.mpm"
    assert cli.main(["export", str(tmp_path / "model.npz"), "--qat", "off"]) == 0
    assert (tmp_path / "model.rh").exists()
    assert (
        cli.main(["export", str(tmp_path / "model.npz"), "--qat", "off", "--rehearse", "0"]) == 0
    )
    assert out.exists() and not (tmp_path / "model.rh").exists()


def deploy(port, folder):
    proc = subprocess.run(
        [sys.executable, "-m", "microprop", "deploy", port,
         "--model", str(folder / "model.mpm"), "--data", str(folder / "replay.csv"),
         "--no-realtime", "--build-dir", str(folder / "build")],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def mpremote(port, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "mpremote", "connect", port, *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_predictions_equal_the_hosts_line_for_line(board, host_lines):
    preds, _ = read_preds(board.port, 1.0)
    assert len(preds) > 100  # as fast as the board can: hundreds per second
    check_line_for_line(preds[1:], host_lines)


def test_soft_reset_and_reset_are_survived(board, host_lines):
    # mpremote's soft reset happens in the raw REPL: as on a board, main.py does not run then,
    # and the board waits at the REPL ...
    mpremote(board.port, "soft-reset")
    preds, _ = read_preds(board.port, 0.5)
    assert preds == []
    # ... until a soft reset at the friendly REPL (Ctrl-D, as a terminal sends it)
    preds, other = read_preds(board.port, 1.5, send=b"\r\x04")
    assert any("soft reboot" in line for line in other), other
    assert any(line.startswith("info state=start ") for line in other), other
    assert preds[0][0] == 1980  # the app started again: its first window, at t = 99 * 20 ms
    check_line_for_line(preds, host_lines)
    # a hard reset (machine.reset()): the board boots and runs main.py
    mpremote(board.port, "reset")
    preds, _ = read_preds(board.port, 1.0)
    assert len(preds) > 50 and preds[-1][0] < 60 * 60 * 1000
    check_line_for_line(preds[1:], host_lines)


def test_second_deploy_copies_nothing(board):
    out = deploy(board.port, board.folder)
    assert "deployed: 0 copied (0 bytes)" in out, out
    assert read_preds(board.port, 0.5)[0]  # and the app runs again after its soft reset


def test_board_reset_mid_stream_loses_no_logged_line(board, host_lines, capsys):
    log = board.folder / "preds.csv"
    seen = []

    def rows():
        with open(log, newline="") as f:
            return [(int(r[1]), r[2], r[5:]) for r in list(csv.reader(f))[1:]]

    def reset():
        seen.extend(rows())  # what the log holds when the board goes down
        board.kill_vm()

    timer = threading.Timer(1.0, reset)
    timer.start()
    try:
        parser = argparse.ArgumentParser()
        monitor.add_arguments(parser)
        args = parser.parse_args([board.port, "--seconds", "2.5", "--log", str(log)])
        assert monitor.run(args) == 0
    finally:
        timer.cancel()
    got = rows()
    assert len(seen) > 100
    assert got[: len(seen)] == seen  # nothing received before the reset is lost
    restarts = [i for i in range(1, len(got)) if got[i][0] < got[i - 1][0]]
    assert len(restarts) == 1 and len(got) > len(seen) + 100  # one reset, and it carried on
    with open(log, newline="") as f:
        classes = next(csv.reader(f))[5:]
    preds = [(t, c, {k: int(v) for k, v in zip(classes, s, strict=True)}) for t, c, s in got]
    check_line_for_line(preds, host_lines)
