"""`microprop record`: labelled sensor logs from the board app, read back by the trainer.

Runs on: host (pytest; the virtual board needs Linux).

The board is the virtual board running the app's stand-in `FAKE_APP` (tests/helpers.py):
100 samples/s, one sample in 50 skipped (a gap in t), one unparsable sample line in 37. One
test records from the real app instead: deployed with a trained model and a replay log, in
real time.
"""

import _thread
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import serial

from microprop.firmware_tools import record
from microprop.firmware_tools.protocol import Info, Sample, parse_line
from microprop.firmware_tools.record import Recorder
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import pipeline
from microprop.host.errors import UserError
from microprop.host.sensorlog import read_sensor_log

from .helpers import ROOT, on_linux, parse


def run_record(argv):
    return record.run(parse(record.add_arguments, argv))


def in_predict_mode(port):
    """True if the board prints predictions again (the recorder gave the mode back)."""
    with serial.Serial(port, timeout=0.1) as ser:
        data = b""
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and b"\npred t=" not in data:
            data += ser.read(ser.in_waiting or 1)
        return b"\npred t=" in data and b"sample t=" not in data.split(b"\npred t=", 1)[1]


def lost_in_gaps(t_ms, spacing=10):
    return sum(max(0, (b - a) // spacing - 1) for a, b in zip(t_ms, t_ms[1:], strict=False))


@on_linux
def test_record_writes_a_log_the_trainer_reads(fake_app_board, tmp_path, capsys):
    out = tmp_path / "walk.csv"
    argv = [fake_app_board.port, "--label", "walk", "--seconds", "1.5", "--out", str(out)]
    assert run_record(argv + ["--subject", "anna", "--recording", "anna-1"]) == 0
    log = read_sensor_log(out)
    assert log.channels == ["ax", "ay", "az"]
    assert 100 <= len(log) <= 170
    assert log.classes == ["walk"] and set(log.subjects) == {"anna"}
    assert set(log.recordings) == {"anna-1"}
    assert log.rate_hz == 100 and log.meta == {"sensor": "fake"}  # from the app's `info`
    assert (log.counts[:, 2] == 4096).all()
    t = log.t_ms.tolist()
    assert t == sorted(t) and all((b - a) in (10, 20) for a, b in zip(t, t[1:], strict=False))
    gaps = lost_in_gaps(t)
    assert gaps >= 1

    err = capsys.readouterr().err
    assert "--- recording 3 channels: ax,ay,az\n" in err
    assert "--- sent: mode predict\n" in err
    report = err.strip().splitlines()[-1]
    assert report.startswith("--- %d samples in 1.5 s (" % len(log))
    assert "100 Hz), " in report
    assert " (%d in gaps of t, " % gaps in report
    unparsable = int(report.split(" in gaps of t, ")[1].split()[0])
    assert unparsable >= 2  # `sample t=... ax=oops`, once in 37 steps
    assert report.endswith("-> %s" % out)
    assert in_predict_mode(fake_app_board.port)
    assert sorted(os.listdir(tmp_path)) == ["flash", "walk.csv"]  # no temporary file left


@on_linux
def test_record_appends_and_never_overwrites(fake_app_board, tmp_path, capsys):
    out = tmp_path / "log.csv"
    base = [fake_app_board.port, "--seconds", "0.6", "--out", str(out)]
    assert run_record(base + ["--label", "walk"]) == 0
    first = out.read_text()
    with pytest.raises(UserError, match="log.csv exists: pass --append"):
        run_record(base + ["--label", "idle"])
    assert out.read_text() == first
    assert run_record(base + ["--label", "idle", "--append", "--subject", "bo"]) == 0
    text = out.read_text()
    assert text.startswith(first) and text.count("#") == 1
    log = read_sensor_log(out)
    assert log.classes == ["idle", "walk"]
    n_walk = int((log.labels == "walk").sum())
    assert n_walk == first.count("\n") - 2 and len(log) > n_walk + 30
    recordings = list(dict.fromkeys(log.recordings.tolist()))
    assert [r.split("-")[0] for r in recordings] == ["walk", "idle"]  # a recording per run
    assert set(log.subjects[log.labels == "idle"]) == {"bo"}
    assert "warning" not in capsys.readouterr().err


@on_linux
def test_ctrl_c_keeps_nothing(fake_app_board, tmp_path, capsys):
    out = tmp_path / "log.csv"
    out.write_text("# rate_hz=100\nax,ay,az,label,t_ms\n1,2,3,walk,0\n")
    before = out.read_bytes()
    timer = threading.Timer(0.8, _thread.interrupt_main)  # Ctrl-C while recording
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            argv = [
                fake_app_board.port,
                "--label",
                "x",
                "--seconds",
                "5",
                "--out",
                str(out),
                "--append",
            ]
            run_record(argv)
    finally:
        timer.cancel()
    assert out.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["flash", "log.csv"]  # no temporary file left
    err = capsys.readouterr().err
    assert err.endswith("--- interrupted: nothing written, %s unchanged\n" % out)
    assert in_predict_mode(fake_app_board.port)


@on_linux
def test_a_board_reset_mid_recording_is_recovered(fake_app_board, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(record, "_SILENCE", 0.5)  # the app restarts in predict mode
    out = tmp_path / "log.csv"
    timer = threading.Timer(1.0, fake_app_board.kill_vm)
    timer.start()
    try:
        assert (
            run_record(
                [fake_app_board.port, "--label", "a", "--seconds", "2.5", "--out", str(out)]
            )
            == 0
        )
    finally:
        timer.cancel()
    t = read_sensor_log(out).t_ms.tolist()
    back = [i for i in range(1, len(t)) if t[i] < t[i - 1]]
    assert len(back) == 1 and back[0] > 30 and len(t) - back[0] > 30
    err = capsys.readouterr().err
    assert "--- no samples for 0.5 s, asking for them again\n" in err
    assert "--- the board restarted (t went back), recording on\n" in err
    assert ", 1 board restarts -> " in err


@pytest.fixture
def app_board(exported, tmp_path):
    """A virtual board running the real app: the end-to-end test's model and replay log,
    deployed by `microprop deploy` (a subprocess) to replay in real time at the model's rate."""
    d = exported[0]
    flash = tmp_path / "flash"
    with VirtualBoard(flash) as b:
        proc = subprocess.run(
            [sys.executable, "-m", "microprop", "deploy", b.port,
             "--model", str(d / "model.mpm"), "--data", str(d / "replay.csv"),
             "--build-dir", str(d / "build"), "--timeout", "20"],
            capture_output=True, text=True, timeout=90, cwd=ROOT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        b.folder = d
        yield b


def app_mode(port, timeout=5.0):
    """The mode the app reports in its answer to `info`."""
    with serial.Serial(port, timeout=0.1) as ser:
        ser.write(b"info\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = parse_line(ser.readline())
            if isinstance(msg, Info) and "state" in msg.fields:
                return msg.fields["mode"]
    raise AssertionError("no answer to info in %g s" % timeout)


@on_linux
def test_record_from_the_real_app_gives_the_replayed_rows(app_board, tmp_path):
    out = tmp_path / "log.csv"
    seconds, rate = 2.0, 50  # the synthetic data's rate, which the model was trained at
    proc = subprocess.run(
        [sys.executable, "-m", "microprop", "record", app_board.port, "--label",
         "walking", "--seconds", str(seconds), "--out", str(out), "--wait", "5"],
        capture_output=True, text=True, timeout=30, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    log = pipeline.load_log(str(out))  # the trainer's reader
    replay = pipeline.load_log(str(app_board.folder / "replay.csv"))
    assert log.channels == replay.channels == ["ax", "ay", "az"]
    assert log.classes == ["walking"] and log.rate_hz == rate
    assert log.meta == {"sensor": "replay"}
    n = len(log)
    assert 0.4 * rate * seconds <= n <= 1.5 * rate * seconds, n  # loose: a shared machine
    # One replay row per sample period, looping: the samples are consecutive rows of the CSV.
    rows = replay.counts
    follow = [k for k in range(len(rows)) if (rows[k] == log.counts[0]).all()]
    assert any((rows[(k + np.arange(n)) % len(rows)] == log.counts).all() for k in follow)
    t = log.t_ms.tolist()
    assert t == sorted(t)

    report = proc.stderr.strip().splitlines()[-1]
    m = re.fullmatch(
        r"--- (\d+) samples in ([\d.]+) s \(([\d.]+) samples/s, (\S+) Hz\), (\d+) dropped "
        r"\((\d+) in gaps of t, (\d+) unparsable lines\) -> (.+)",
        report,
    )
    assert m, report
    assert int(m[1]) == n and m[4] == "50" and m[8] == str(out)
    assert 0.4 * rate <= float(m[3]) <= 1.5 * rate
    assert int(m[7]) == 0 and int(m[5]) == int(m[6])  # the real app prints no broken lines
    assert app_mode(app_board.port) == "predict"  # recording over, the app predicts again


def test_no_samples_is_an_error_and_writes_nothing(tmp_path):
    # loop:// hears its own `info` and `mode record` back: an app that never sends samples
    out = tmp_path / "log.csv"
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"^no sample lines from the board in 0.3 s"):
        run_record(["loop://", "--label", "a", "--seconds", "1", "--out", str(out),
                    "--wait", "0.3"])  # fmt: skip
    assert time.monotonic() - t0 < 3
    assert not out.exists() and os.listdir(tmp_path) == []


def test_bad_arguments_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(record.add_arguments, ["--label", "a,b", "--seconds", "1", "--out", "x.csv"])
    with pytest.raises(SystemExit):
        parse(record.add_arguments, ["--label", "a", "--seconds", "0", "--out", "x.csv"])
    assert "expected a positive number of seconds" in capsys.readouterr().err
    with pytest.raises(UserError, match="no folder"):
        run_record(["loop://", "--label", "a", "--seconds", "1", "--out",
                    str(tmp_path / "missing" / "x.csv")])  # fmt: skip


def test_appending_needs_the_same_channels(tmp_path):
    out = tmp_path / "log.csv"
    out.write_text("gx,label\n1,walk\n")
    rec = _recorder_with([(0, {"ax": 1}), (10, {"ax": 2})])
    existing = record.read_existing(str(out))
    with pytest.raises(UserError, match="no column for channel ax"):
        record.append_rows(str(out), existing, rec, "a", "0", "r", 100.0)
    assert out.read_text() == "gx,label\n1,walk\n"


def _recorder_with(samples, info=None):
    rec = Recorder(lambda: serial.serial_for_url("loop://", timeout=0.01), seconds=1)
    rec.info = dict(info or {})
    for t, values in samples:
        rec.take(Sample(t, values))
    rec.close()
    return rec


def test_rate_and_gaps_come_from_t_when_the_app_does_not_say():
    t = [0, 20, 40, 60, 100, 120, 140, 200, 220]  # 50 Hz, 1 + 2 samples lost
    rec = _recorder_with([(x, {"a": 1}) for x in t])
    assert rec.rate_hz() == 50.0 and rec.gaps() == 3
    rec = _recorder_with([(x, {"a": 1}) for x in (0, 7, 14, 21, 28)])
    assert rec.rate_hz() == 142.86 and rec.gaps() == 0
    rec = _recorder_with([(x, {"a": 1}) for x in (0, 10, 40)], info={"rate_hz": "100"})
    assert rec.rate_hz() == 100.0 and rec.gaps() == 2
    rec = _recorder_with([(0, {"a": 1}), (10, {"a": 2, "b": 3}), (20, {"a": 1}), (5, {"a": 1})])
    assert len(rec.samples) == 3 and rec.unparsable == 1 and rec.restarts == 1
