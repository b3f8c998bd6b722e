"""`microprop monitor` and `ports`, and the serial layer under them, with no hardware.

Runs on: host (pytest; the virtual board needs Linux).

Port names, errors and the line reader run against pyserial's `loop://`, a bare pty and fakes;
the monitor runs end to end against the virtual board, whose main.py is tests/helpers.py's
`FAKE_APP` (a stand-in for the board app that mixes garbage bytes, split writes and cut lines
into the protocol), through a board reset and through an unplug and replug.
"""

import csv
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import serial
from serial.tools.list_ports_common import ListPortInfo

from microprop.firmware_tools import cli, monitor, ports, serialport
from microprop.firmware_tools.serialport import LineReader, open_port, resolve_port
from microprop.host.errors import UserError

from .helpers import app_board, on_linux, parse

ROOT = Path(__file__).resolve().parent.parent


def run_monitor(argv):
    return monitor.run(parse(monitor.add_arguments, argv))


def read_log(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def steps(rows):
    """t_ms of log rows -> list of (previous, next) pairs that are not a step of 10."""
    t = [int(r[1]) for r in rows]
    return [(a, b) for a, b in zip(t, t[1:], strict=False) if b - a != 10]


# -- port names and errors -------------------------------------------------------------------


def fake_port(device, vid=None, pid=None, serial_number=None, description="n/a"):
    info = ListPortInfo(device, skip_link_detection=True)
    info.vid, info.pid, info.serial_number, info.description = vid, pid, serial_number, description
    return info


@pytest.fixture
def some_ports(monkeypatch):
    found = [
        fake_port("/dev/ttyS0"),
        fake_port("/dev/ttyUSB10", 0x0403, 0x6001, "FT1", "FT232R USB UART"),
        fake_port("/dev/ttyUSB2", 0x1234, 0x5678, "X", "some gadget"),
        fake_port("/dev/ttyACM0", 0x2E8A, 0x0005, "E66", "Board in FS mode"),
        fake_port("/dev/ttyUSB9", 0x303A, 0x1001, "ESP", "USB JTAG/serial debug unit"),
    ]
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: found)
    return found


def test_list_ports_recognises_boards_first(some_ports):
    listed = serialport.list_ports()
    assert [p.device for p in listed] == [
        "/dev/ttyACM0",
        "/dev/ttyUSB9",
        "/dev/ttyUSB10",
        "/dev/ttyUSB2",
        "/dev/ttyS0",
    ]
    assert listed[0].board == "RP2 (MicroPython)" and listed[0].usb_id == "2E8A:0005"
    assert "Espressif" in listed[1].board and "FTDI" in listed[2].board
    assert listed[3].board is None and listed[4].usb_id == "" and listed[4].description == ""


@pytest.mark.parametrize(
    "vid_pid",
    [(0x10C4, 0xEA60), (0x1A86, 0x7523), (0x1A86, 0x55D4), (0x0403, 0x6010), (0x0403, 0x6014),
     (0x0403, 0x6015), (0x303A, 0x4001)],
)  # fmt: skip
def test_every_listed_usb_id_is_recognised(monkeypatch, vid_pid):
    monkeypatch.setattr(
        serial.tools.list_ports, "comports", lambda: [fake_port("/dev/ttyUSB0", *vid_pid)]
    )
    assert serialport.list_ports()[0].board
    assert resolve_port("auto") == "/dev/ttyUSB0"


def test_port_names_follow_mpremote(some_ports):
    assert resolve_port("auto") == "/dev/ttyACM0"
    assert resolve_port("a0") == "/dev/ttyACM0"
    assert resolve_port("u1") == "/dev/ttyUSB1"
    assert resolve_port("c3") == "COM3"
    assert resolve_port("id:FT1") == "/dev/ttyUSB10"
    assert resolve_port("port:/dev/custom") == "/dev/custom"
    assert resolve_port("/dev/pts/7") == "/dev/pts/7"
    assert resolve_port("loop://") == "loop://"
    with pytest.raises(UserError, match="no port with serial number NOPE"):
        resolve_port("id:NOPE")


def test_auto_takes_a_usb_port_when_no_board_is_known(monkeypatch):
    monkeypatch.setattr(
        serial.tools.list_ports,
        "comports",
        lambda: [fake_port("/dev/ttyS0"), fake_port("/dev/ttyUSB3", 0x1234, 0x1)],
    )
    assert resolve_port("auto") == "/dev/ttyUSB3"
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [fake_port("/dev/ttyS0")])
    with pytest.raises(UserError, match=r"^no board found: .*microprop ports"):
        resolve_port("auto")


def test_ports_command(some_ports, capsys):
    assert ports.run(parse(ports.add_arguments, [])) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["/dev/ttyACM0", "2E8A:0005", "RP2"]
    assert "(Board in FS mode)" in out[0]
    assert out[-1].split() == ["/dev/ttyS0", "-", "serial", "port"]
    assert len(out) == 5


def test_ports_command_with_no_ports(monkeypatch, capsys):
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: [])
    assert ports.run(parse(ports.add_arguments, [])) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "--- no serial ports found\n"


def test_missing_port_is_one_line_with_a_hint(capsys):
    with pytest.raises(UserError, match=r"^no port /dev/ttyACM99: is the board plugged in\?"):
        open_port("a99")
    assert cli.main(["monitor", "/dev/nonexistent-port", "--seconds", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("microprop: no port /dev/nonexistent-port: is the board plugged in?")


def test_busy_port_is_one_line_with_a_hint():
    master, slave = pty.openpty()
    try:
        name = os.ttyname(slave)
        with open_port(name):
            with pytest.raises(UserError) as e:
                open_port(name)
        assert str(e.value) == "port %s is busy: is another program holding the port?" % name
        with open_port(name):  # free again
            pass
    finally:
        os.close(master)
        os.close(slave)


# -- the line reader -------------------------------------------------------------------------


def loop_opener(opened):
    def opener():
        port = serial.serial_for_url("loop://", timeout=0.01)
        opened.append(port)
        return port

    return opener


def test_reader_joins_pieces_and_splits_lines():
    with LineReader(loop_opener([])) as r:
        r.write(b"pred t=1 cl")
        assert r.readline(0.05) is None  # a partial line waits for its end
        r.write(b"ass=a score=1 us=2 a:1\r\ninfo x=1\ninfo y=2\r")
        assert r.readline(0.5) == "pred t=1 class=a score=1 us=2 a:1"
        assert r.readline(0.5) == "info x=1"
        r.write(b"\n\xff\xfe\x00ok\n")
        assert r.readline(0.5) == "info y=2"
        assert r.readline(0.5) == "\ufffd\ufffd\x00ok"


def test_reader_drops_overlong_lines():
    with LineReader(loop_opener([]), max_line=100) as r:
        r.write(b"x" * 70)
        r.write(b"x" * 70)  # over the cap with no end in sight: dropped to its end
        r.write(b"y" * 500 + b"\nafter\n" + b"z" * 150 + b"\nlast\n")
        assert r.readline(0.5) == "after"
        assert r.readline(0.5) == "last"
        assert r.overlong == 2


def test_reader_reopens_a_lost_port(monkeypatch):
    monkeypatch.setattr(serialport, "_BACKOFF", (0.01, 0.02))
    opened, heard, failures = [], [], [2]
    opener = loop_opener(opened)

    def flaky_opener():
        if opened and failures[0]:  # the port is gone for the first two tries
            failures[0] -= 1
            raise UserError("no port")
        return opener()

    reconnected = []
    r = LineReader(flaky_opener, status=heard.append, on_reconnect=reconnected.append)
    r.write(b"info before\ninfo cut sh")
    assert r.readline(0.5) == "info before"
    assert r.readline(0.05) is None
    opened[0].close()  # unplugged under the reader
    assert r.readline(0.05) is None
    assert not r.connected and not r.write(b"lost\n")
    deadline = time.monotonic() + 2
    while not r.connected and time.monotonic() < deadline:
        r.readline(0.05)
    assert len(opened) == 2 and reconnected == [r] and r.reconnects == 1
    assert heard[0].startswith("port lost, reconnecting") and heard[-1] == "reconnected"
    assert r.cut == 1  # "info cut sh" went with the port
    r.write(b"info after\n")
    assert r.readline(0.5) == "info after"
    r.close()


def test_reader_gives_the_first_open_failure_to_the_caller():
    with pytest.raises(UserError, match="no port"):
        LineReader(lambda: open_port("/dev/nonexistent-port"))


# -- the monitor over loop:// (what is sent comes back) --------------------------------------


def test_monitor_formats_predictions_and_logs_them_once_per_line(tmp_path, capsys):
    log = tmp_path / "preds.csv"
    lines = [
        "pred t=100 class=walk score=200 us=812 idle:55 walk:200",
        "info mode=predict",
        "pred t=150 class=idle score=255 us=790 idle:255 walk:0",
        "err 2 no model",
    ]
    argv = ["loop://", "--seconds", "0.5", "--log", str(log)]
    for line in lines:
        argv += ["--send", line]
    assert run_monitor(argv) == 0
    out, err = capsys.readouterr()
    shown = out.splitlines()
    assert len(shown) == 4
    assert shown[0].split() == ["t=100", "walk", "[################....]", "200", "812", "us",
                                "0.0/s"]  # fmt: skip
    assert shown[1] == "info mode=predict" and shown[3] == "err 2 no model"
    assert "[####################] 255" in shown[2]
    assert err.startswith("--- monitor on loop://, logging to %s" % log)
    assert "--- sent: err 2 no model\n" in err
    assert err.endswith("--- 4 lines, 2 predictions\n")

    # a second run appends: the header stays the only one
    assert run_monitor(argv + ["--raw"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == lines  # --raw: every line as it came
    rows = read_log(log)
    assert rows[0] == ["host_time", "t_ms", "class", "score", "us", "idle", "walk"]
    assert [r[1:] for r in rows[1:3]] == [
        ["100", "walk", "200", "812", "55", "200"],
        ["150", "idle", "255", "790", "255", "0"],
    ]
    assert len(rows) == 5 and rows[3:] == [rows[3], rows[4]]
    assert abs(float(rows[1][0]) - time.time()) < 60


def test_monitor_refuses_a_log_that_is_not_its_own(tmp_path):
    log = tmp_path / "other.csv"
    log.write_text("ax,ay,label\n1,2,walk\n")
    with pytest.raises(UserError, match="is not a prediction log"):
        run_monitor(["loop://", "--seconds", "0.1", "--log", str(log)])


def test_monitor_shows_control_characters_escaped(capsys):
    assert run_monitor(["loop://", "--seconds", "0.3", "--send", "info a\tb"]) == 0
    assert capsys.readouterr().out == "info a\tb\n"
    assert monitor.visible("\x1b[2Jx\x7f") == "\\x1b[2Jx\\x7f"


# -- the monitor against the virtual board ---------------------------------------------------


@on_linux
def test_monitor_logs_every_prediction_through_garbage(fake_app_board, tmp_path, capsys):
    log = tmp_path / "preds.csv"
    assert run_monitor([fake_app_board.port, "--seconds", "2", "--log", str(log)]) == 0
    out, err = capsys.readouterr()
    rows = read_log(log)[1:]
    shown = [line for line in out.splitlines() if line.startswith("t=")]
    assert len(rows) == len(shown) > 80
    assert steps(rows) == []  # every t from first to last: no prediction lost
    assert [r[1] for r in rows] == [line.split()[0][2:] for line in shown]
    assert {r[2] for r in rows} <= {"idle", "walk"}
    assert all(int(r[3]) == max(int(r[5]), int(r[6])) for r in rows)
    # garbage and cut lines pass through, escaped, and go nowhere near the log
    assert "\ufffd\ufffd\\x01\\x1b[2Jjunk" in out
    assert any(
        line.startswith("pred t=") and line.endswith("class=wa") for line in out.split("\n")
    )
    assert err.endswith("--- %d lines, %d predictions\n" % (len(out.splitlines()), len(rows)))


@on_linux
def test_monitor_keeps_logging_through_a_board_reset(fake_app_board, tmp_path, capsys):
    log = tmp_path / "preds.csv"
    seen = []

    def reset():
        seen.extend(read_log(log)[1:])  # what the log holds when the board goes down
        fake_app_board.kill_vm()

    timer = threading.Timer(1.2, reset)
    timer.start()
    try:
        assert run_monitor([fake_app_board.port, "--seconds", "2.5", "--log", str(log)]) == 0
    finally:
        timer.cancel()
    rows = read_log(log)[1:]
    assert len(seen) > 40
    assert rows[: len(seen)] == seen  # nothing received before the reset is lost
    gaps = steps(rows)
    assert len(gaps) == 1 and gaps[0][1] < gaps[0][0]  # t starts again after the reset ...
    assert len(rows) > len(seen) + 20  # ... and the monitor carried on
    assert capsys.readouterr().out.count("info app=fake boot=1") >= 1


@on_linux
def test_monitor_reconnects_after_unplug_and_replug(tmp_path, capsys):
    """The port goes away (its path with it) and comes back: reopen, carry on logging."""
    link = tmp_path / "ttyBOARD"
    log = tmp_path / "preds.csv"
    with app_board(tmp_path / "a") as first, app_board(tmp_path / "b") as second:
        link.symlink_to(first.port)
        seen = []

        def unplug_and_replug():
            seen.extend(read_log(log)[1:])
            tmp = tmp_path / "gone"
            tmp.symlink_to(tmp_path / "nowhere")
            os.replace(tmp, link)  # the path disappears with the board
            first.stop()
            time.sleep(0.4)
            tmp.symlink_to(second.port)
            os.replace(tmp, link)  # plugged in again

        timer = threading.Timer(1.0, unplug_and_replug)
        timer.start()
        try:
            argv = [str(link), "--seconds", "3", "--log", str(log), "--send", "info"]
            assert run_monitor(argv) == 0
        finally:
            timer.cancel()
    out, err = capsys.readouterr()
    assert "--- port lost, reconnecting" in err
    assert "--- reconnected\n" in err
    assert err.count("--- sent: info\n") == 2  # --send again after the reconnect
    assert out.count("info mode=predict sensor=fake rate_hz=100") == 2
    rows = read_log(log)[1:]
    assert len(seen) > 30 and rows[: len(seen)] == seen
    assert len(rows) > len(seen) + 30
    assert len(steps(rows)) == 1  # one jump: from the first board's t to the second's
    assert "1 reconnects" in err


@on_linux
def test_a_second_monitor_gets_a_clear_error(fake_app_board, capsys):
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microprop",
            "monitor",
            fake_app_board.port,
            "--seconds",
            "8",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert first.stderr.readline().startswith("--- monitor on %s" % fake_app_board.port)
        assert cli.main(["monitor", fake_app_board.port, "--seconds", "1"]) == 1
        err = capsys.readouterr().err
        assert err == "microprop: port %s is busy: is another program holding the port?\n" % (
            fake_app_board.port
        )
    finally:
        first.kill()
        first.wait()


@on_linux
def test_typed_lines_go_to_the_board(fake_app_board):
    proc = subprocess.Popen(
        [sys.executable, "-m", "microprop", "monitor", fake_app_board.port, "--seconds", "2.5",
         "--send", "mode idle"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        head = [proc.stderr.readline()]  # the monitor is on the port once it has sent --send
        while head[-1] and not head[-1].startswith("--- sent: mode idle"):
            head.append(proc.stderr.readline())
        proc.stdin.write("info\n\nlabel caf\u00e9\nbogus\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=10)
        err = "".join(head) + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "info mode=idle\n" in out
    assert "info mode=idle sensor=fake rate_hz=100\n" in out
    assert "err 1 unknown command: bogus\n" in out
    assert "--- not sent (one line of ASCII only): 'label caf\u00e9'\n" in err
    assert "--- sent: info\n--- not sent" in err  # the empty line is not sent
    assert "--- sent: bogus\n" in err
    tail = out[out.index("info mode=idle sensor=fake") :]
    assert "t=" not in tail  # idle: no predictions any more
