"""`microprop deploy` refuses bad settings and sensor logs before it touches the board.

Runs on: host (pytest; the virtual board, Linux, for the checks that the board is untouched).

Board settings are checked by the board's own rules (device/config.py, the MPU6050's constants
from device/sensor_mpu6050.py); the replay log is read against the model and copied as it is,
converted to counts, or refused. A refusal is one line `microprop: deploy: ...`, exit status
1, and no mpremote call.
"""

import json
import sys
import time

import numpy as np
import pytest
import serial

from microprop.device import config as board_rules
from microprop.device.sensor_mpu6050 import ACCEL_FS_G, GYRO_FS_DPS
from microprop.device.sensor_replay import Replay
from microprop.firmware_tools import cli, deploy
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import modelfile, pipeline, quantize, sensorlog, synth
from microprop.host.inputstage import InputStage

from .helpers import GOLDEN
from .helpers import parse_deploy as parse

# golden.mpm reads ax, ay at 52.5 Hz, 8 g full scale
GOOD = "ax,ay,label\n1,2,a\n3,4,b\n"
DRY = ("--dry-run", "--arch", "x64", "--model", GOLDEN)


def deploy_cli(capsys, *argv):
    """`microprop deploy ARGV`: (status, stdout, stderr)."""
    capsys.readouterr()
    status = cli.main(["deploy", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def refused(capsys, *argv):
    """The one stderr line of a refused deploy (and nothing on stdout)."""
    status, out, err = deploy_cli(capsys, *argv)
    assert status == 1, (out, err)
    assert out == "" and err.count("\n") == 1 and err.startswith("microprop: deploy: "), err
    return err.strip()


@pytest.fixture
def build_dir(tmp_path):
    return tmp_path / "build"


def csv_file(tmp_path, text, name="log.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


# -- board settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--rate", "-1"], "--rate -1: expected a rate in Hz, 0 < rate <= 1000000, or null"),
        (["--rate", "nan"], "--rate nan: expected a rate in Hz"),
        (["--rate", "inf"], "--rate inf: expected a rate in Hz"),
        (["--rate", "0"], "--rate 0: expected a rate in Hz"),
        (
            ["--sensor", "mpu6050", "--addr", "999"],
            "--addr 999: expected an I2C address 0x08..0x77",
        ),
        (
            ["--sensor", "mpu6050", "--addr", "0x07"],
            "--addr 7: expected an I2C address 0x08..0x77",
        ),
        (["--sensor", "mpu6050", "--addr", "0x78"], "--addr 120: expected an I2C address"),
        (["--sensor", "mpu6050", "--accel-fs", "3"], "--accel-fs 3: expected 2, 4, 8 or 16 (g)"),
        (["--sensor", "mpu6050", "--gyro-fs", "300"], "--gyro-fs 300: expected 250, 500, 1000 or"),
        (
            ["--sensor", "mpu6050", "--i2c", "-1"],
            '--i2c -1: expected an I2C bus id >= 0 or "soft"',
        ),
        (["--sensor", "mpu6050", "--scl", "-5"], "--scl -5: expected a GPIO number >= 0"),
        (["--sensor", "adc", "--pins", "26,-1"], "--pins 26,-1: expected a list of GPIO numbers"),
        (["--smoothing", "0"], "--smoothing 0: expected 1..32"),
        (["--smoothing", "33"], "--smoothing 33: expected 1..32"),
        (["--mount", "+x+x+z"], '--mount +x+x+z: expected an orientation, "+x+y+z" (none)'),
    ],
)
def test_bad_board_settings_are_refused_naming_the_flag(
    flags, message, tmp_path, build_dir, capsys
):
    data = csv_file(tmp_path, GOOD)
    line = refused(capsys, "--dry-run", "--arch", "x64", "--data", data, *flags)
    assert line.startswith("microprop: deploy: " + message), line
    assert not build_dir.exists()


def test_the_settings_rules_are_the_boards_own():
    """What deploy says is expected comes from device/config.py, built on the driver's tuples."""
    assert board_rules.check_value("accel_fs_g", 3, "mpu6050") == "2, 4, 8 or 16 (g)"
    for fs in ACCEL_FS_G:
        assert board_rules.check_value("accel_fs_g", fs, "mpu6050") is None
    for fs in GYRO_FS_DPS:
        assert board_rules.check_value("gyro_fs_dps", fs, "mpu6050") is None
    for addr in (0x08, 0x68, 0x69, 0x77, "0x69"):
        assert board_rules.check_value("addr", addr, "mpu6050") is None
    for addr in (0x07, 0x78, -1, True, "x", 1.5):
        assert board_rules.check_value("addr", addr, "mpu6050") is not None
    # the board's check: a bad sensor key gets an err config line and the sensor's default
    clean, problems = board_rules.check_config({"sensor": "mpu6050", "addr": 999, "i2c": 1})
    assert "addr" not in clean and clean["i2c"] == 1
    assert problems == ["addr 999, expected an I2C address 0x08..0x77; using the sensor's default"]
    # keys of another sensor kind are not its business
    assert board_rules.check_config({"sensor": "replay", "addr": 999})[1] == []


def test_good_board_settings_at_their_limits_pass():
    cfg = deploy.board_config(
        parse(
            "--sensor", "mpu6050", "--addr", "0x77", "--accel-fs", "16", "--gyro-fs", "2000",
            "--rate", "1000000", "--smoothing", "32", "--i2c", "0", "--scl", "0", "--sda", "1",
        )
    )  # fmt: skip
    assert (cfg["addr"], cfg["accel_fs_g"], cfg["gyro_fs_dps"]) == (0x77, 16, 2000)
    assert cfg["rate_hz"] == 1000000 and cfg["smoothing"] == 32
    assert deploy.board_config(parse("--sensor", "mpu6050", "--addr", "0x08"))["addr"] == 8
    assert deploy.board_config(parse("--rate", "12.5"))["rate_hz"] == 12.5
    assert deploy.board_config(parse("--mount=-y+x+z"))["mount"] == "-y+x+z"
    assert "mount" not in deploy.board_config(parse())  # the board's default


def test_a_rate_other_than_the_models_is_refused(tmp_path, build_dir, capsys):
    data = csv_file(tmp_path, GOOD)
    line = refused(capsys, *DRY, "--data", data, "--rate", "50", "--build-dir", build_dir)
    assert line == (
        "microprop: deploy: --rate 50: the model was trained at 52.5 Hz; "
        "leave --rate out to use its rate"
    )
    status, out, _ = deploy_cli(capsys, *DRY, "--data", data, "--rate", "52.5")
    assert status == 0 and "dry run:" in out


# -- the replay log -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "sensor log: cannot read file"),
        (
            "ax,ay,label\n1,2,a\nnan,4,b\n",
            "row 3, column 'ax': sensor log: expected a finite number, found 'nan'",
        ),
        ("ax,ay\n1,2\n3,4\n", "row 1: sensor log: missing label column 'label'"),
        ("ax,ay,label\n1,2,a\n,4,b\n", "row 3, column 'ax': sensor log: expected a number"),
        ("ax,ay,label\n1,2\n", "row 2: sensor log: expected 3 cells, found 2"),
        ("ax,ay,label\n1,40000,a\n", "column 'ay': sensor log: expected int16 counts"),
        ("", "sensor log: empty file"),
        ("ax,ay,label\n", "sensor log: no data rows after the header"),
        ("# values=volts\nax,ay,label\n1,2,a\n", "values must be counts or physical"),
        (
            "ax,ay,label\n1,2,%s\n" % ("a" * 300),
            "the board's replay reader cannot read it even converted to counts",
        ),
        # physical values, undeclared: how to declare them, with the model's full scale
        (
            "ax,ay,label\n0.98,-0.1,a\n",
            "expected int16 counts (declare a full scale for physical values), found 0.98; "
            "physical values? make `# values=physical` its first line (converted at the "
            "model's full scale ax:8g,ay:8g)",
        ),
    ],
)
def test_bad_replay_logs_are_refused_with_the_reason(text, message, tmp_path, capsys):
    data = csv_file(tmp_path, text)
    line = refused(capsys, *DRY, "--data", data)
    assert line.startswith("microprop: deploy: --data %s" % data), line
    assert message in line, line


@pytest.mark.parametrize(
    "text, message",
    [
        ("ax,label\n1,a\n", "--data {} has no column 'ay'; the model reads ax, ay"),
        ("# rate_hz=100\n" + GOOD, "--data {}: recorded at 100 Hz, the model at 52.5 Hz"),
        (
            "# full_scale=ax:2g,ay:2g\n" + GOOD,
            "--data {}: channel ax recorded at full scale 2g, the model reads 8g",
        ),
        (
            "# full_scale=ax:8mps,ay:8mps\n" + GOOD,
            "--data {}: channel ax in mps, the model reads g",
        ),
        (
            "# values=physical full_scale=ax:8mps,ay:8mps\nax,ay,label\n0.5,1,a\n",
            "--data {}: channel ax in mps, the model reads g",
        ),
    ],
)
def test_replay_logs_of_another_sensor_setup_are_refused(text, message, tmp_path, capsys):
    data = csv_file(tmp_path, text)
    assert refused(capsys, *DRY, "--data", data) == "microprop: deploy: " + message.format(data)


def test_the_replay_sensor_needs_data(capsys):
    message = (
        "microprop: deploy: the replay sensor needs --data FILE.csv, the sensor log the board "
        "replays (or --sensor for a hardware sensor)"
    )
    assert refused(capsys, *DRY) == message
    assert refused(capsys, *DRY, "--sensor", "replay") == message
    status, out, _ = deploy_cli(capsys, *DRY, "--sensor", "rp2_temp")
    assert status == 0 and "/data.csv" not in out


def test_physical_values_are_converted_to_the_counts_the_model_reads(tmp_path, build_dir):
    """values=physical without a full scale: at the model's (8 g); columns in another order
    and extra columns are dropped; the board reads the written file."""
    data = csv_file(
        tmp_path,
        "# sensor=phone values=physical\nay,temp,ax,label\n0.5,21.5,-0.25,a\n1.0,21.5,0.1,b\n",
    )
    desc, (path, note) = deploy.checked_inputs(parse(*DRY, "--data", data), build_dir)
    assert note == "replay data, converted to counts"
    assert path.parent == build_dir / "data" and path != data
    log = sensorlog.read_sensor_log(path)
    assert log.channels == ["ax", "ay"] and log.rate_hz == 52.5
    assert log.full_scale == {"ax": (8.0, "g"), "ay": (8.0, "g")}
    assert log.counts.tolist() == [[-1024, 2048], [410, 4096]]  # g / 8 g * 32768
    assert log.meta == {"sensor": "phone"}
    replay = Replay(str(path), ["ax", "ay"])  # the board's reader
    out = [0, 0]
    replay.read(out)
    assert out == [-1024, 2048]
    replay.close()


def test_a_physical_log_declaring_its_full_scale_without_a_model(tmp_path, build_dir):
    data = csv_file(tmp_path, "# values=physical full_scale=t:100C\nt,label\n23.5,warm\n")
    _, (path, note) = deploy.checked_inputs(parse("--data", data), build_dir)
    assert note == "replay data, converted to counts"
    assert sensorlog.read_sensor_log(path).counts.tolist() == [[7700]]  # 23.5 / 100 * 32768


@pytest.mark.parametrize(
    "text, as_is",
    [
        (GOOD, True),
        ("ay,ax,extra,label\n2,1,x,a\n4,3,y,b\n", True),  # the board picks its columns by name
        ('ax,ay,label\n1,2,"a,b"\n3,4,b\n', True),  # a quoted label: the board skips it whole
        ('ax,ay,label\n"1",2,a\n3,4,b\n', False),  # a quoted number: the board cannot read it
        ("ax,ay,note,label\n1,2,%s,a\n3,4,,b\n" % ("n" * 300), False),  # too long a row
    ],
)
def test_counts_are_copied_as_they_are_when_the_board_reads_them_the_same(
    text, as_is, tmp_path, build_dir
):
    data = csv_file(tmp_path, text)
    _, (path, note) = deploy.checked_inputs(parse(*DRY, "--data", data), build_dir)
    if as_is:
        assert (path, note) == (data, "replay data")
    else:
        assert note == "replay data, rewritten" and path.parent == build_dir / "data"
        assert sensorlog.read_sensor_log(path).counts.tolist() == [[1, 2], [3, 4]]


def test_a_gzipped_log_is_unpacked_for_the_board(tmp_path, build_dir):
    import gzip

    data = tmp_path / "log.csv.gz"
    data.write_bytes(gzip.compress(GOOD.encode()))
    _, (path, note) = deploy.checked_inputs(parse(*DRY, "--data", data), build_dir)
    assert note == "replay data, rewritten" and path.suffix == ".csv"
    assert path.read_text().splitlines()[1:] == [
        "ax,ay,label,subject,recording",
        "1,2,a,0,0",
        "3,4,b,0,0",
    ]


# -- nothing reaches the board ------------------------------------------------------------


@pytest.fixture(scope="module")
def app_model(tmp_path_factory):
    """(model.mpm the app runs: ax, ay, az at 50 Hz, 8 g; a piece of the synthetic log)."""
    log = synth.generate(seed=1, subjects=2, seconds_per_activity=4)
    ds = pipeline.make_dataset(log)
    mlp, meta, _, _ = pipeline.train_model(ds, hidden=(8,), epochs=5, patience=100)
    stage = InputStage.from_dict(meta["input_stage"])
    y = pipeline.class_indices(ds.labels, meta["classes"])
    q = quantize.quantize(
        mlp, stage, stage.apply(ds.X), y, classes=meta["classes"], features=meta["features"],
        sensor=meta["sensor"], qat=False,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("model") / "model.mpm"
    modelfile.write_model(path, q)
    return path, log


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the virtual board needs /proc")
def test_a_refused_deploy_leaves_the_board_untouched(
    app_model, tmp_path, build_dir, monkeypatch, capsys
):
    """A first deploy converts a physical log (in g) and the app predicts on it; every refused
    deploy after it calls no mpremote and leaves the board's files as they were."""
    model, log = app_model
    counts = log.counts[:300]
    rows = "".join("%s,%s\n" % (",".join(repr(v / 4096) for v in c), lb) for c, lb in zip(
        counts.tolist(), log.labels[:300], strict=True
    ))  # fmt: skip
    phys = csv_file(tmp_path, "# values=physical rate_hz=50\nax,ay,az,label\n" + rows, "g.csv")
    flash = tmp_path / "flash"
    flash.mkdir()
    with VirtualBoard(flash) as board:
        argv = (board.port, "--model", model, "--data", phys, "--no-realtime")
        status, out, _ = deploy_cli(capsys, *argv, "--build-dir", build_dir)
        assert status == 0 and "replay data, converted to counts" in out, out
        assert np.array_equal(sensorlog.read_sensor_log(flash / "data.csv").counts, counts)
        assert json.loads((flash / "board.json").read_text())["file"] == "/data.csv"
        lines = read_lines(board.port, 10.0)
        assert lines and lines[-1].startswith("pred "), lines

        before = snapshot(flash)
        calls = []
        real = deploy.mpremote
        monkeypatch.setattr(deploy, "mpremote", lambda *a, **k: calls.append(a) or real(*a, **k))
        bad = {
            "nan.csv": "ax,ay,label\n1,2,a\nnan,4,b\n",
            "nolabel.csv": "ax,ay\n1,2\n",
            "binary.csv": b"\x00\xff\xfe\x80" * 64,
            "floats.csv": "ax,ay,label\n0.5,-0.25,a\n",
            "other.csv": "ax,ay,label\n1,2,a\n",
        }
        cases = [("--data", csv_file(tmp_path, text, name)) for name, text in bad.items()]
        cases += [
            ("--data", phys, "--rate", "-1"),
            ("--data", phys, "--rate", "nan"),
            ("--data", phys, "--rate", "100"),
            ("--data", phys, "--sensor", "mpu6050", "--addr", "999"),
            ("--data", phys, "--sensor", "mpu6050", "--accel-fs", "3"),
            ("--sensor", "replay"),
        ]
        for flags in cases:
            refused(capsys, board.port, "--model", model, "--build-dir", build_dir, *flags)
        assert calls == []
        assert snapshot(flash) == before


def snapshot(folder):
    return {
        p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def read_lines(port, seconds):
    """Lines the board prints within `seconds` (stops at the first `pred` line)."""
    lines = []
    with serial.Serial(port, 115200, timeout=0.05) as ser:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = ser.readline()
            if line.endswith(b"\n"):
                lines.append(line.decode("ascii", "replace").strip())
                if lines[-1].startswith("pred "):
                    break
    return lines


def test_counts_read_by_host_and_board_agree_on_the_converted_file(tmp_path, build_dir):
    """Physical cells on the edge of rounding: the host converts them, the board replays the
    counts the host computed (not its own decimal rounding)."""
    values = np.array([[0.000122, -7.9999], [8.5, -8.5], [0.0001220703125, 3.3]])
    rows = "".join("%r,%r,x\n" % (float(a), float(b)) for a, b in values)
    data = csv_file(tmp_path, "# values=physical\nax,ay,label\n" + rows)
    _, (path, _) = deploy.checked_inputs(parse(*DRY, "--data", data), build_dir)
    want = sensorlog.to_counts(values, 8.0)
    replay = Replay(str(path), ["ax", "ay"])
    got = []
    for _ in range(len(values)):
        out = [0, 0]
        replay.read(out)
        got.append(out)
    replay.close()
    assert got == want.tolist() and replay.bad_rows == 0


# -- the MPU6050 set up as the model was trained ---------------------------------------------


def imu_model(tmp_path, channels, units, full_scale):
    """golden.mpm (two channels) read from other channels, units and full scales."""
    m = modelfile.read_model(GOLDEN)
    m.features = dict(m.features, channels=list(channels))
    fs = {c: (v, u) for c, u, v in zip(channels, units, full_scale, strict=True)}
    m.sensor = dict(m.sensor, full_scale=fs)
    path = tmp_path / "imu.mpm"
    modelfile.write_model(path, m)
    return path


def test_mpu6050_takes_the_models_channels_and_full_scales(tmp_path):
    from microprop.device.sensor_mpu6050 import MPU6050
    from microprop.device.sensors import check_model

    class FakeI2C:  # an MPU6050 that answers WHO_AM_I and takes every write
        def readfrom_mem_into(self, addr, reg, buf):
            buf[0] = 0x68

        def writeto_mem(self, addr, reg, buf):
            pass

    model = imu_model(tmp_path, ["ay", "gz"], ["g", "dps"], [8, 500])
    args = parse("--dry-run", "--arch", "x64", "--model", model, "--sensor", "mpu6050")
    desc = deploy.model_sensor(args)
    cfg = deploy.board_config(args, desc)
    assert cfg["channels"] == ["ay", "gz"]
    assert (cfg["accel_fs_g"], cfg["gyro_fs_dps"]) == (8, 500)
    # the board's own sensor, made from these settings, passes the board's own check
    sensor = MPU6050(FakeI2C(), accel_fs_g=8, gyro_fs_dps=500, channels=cfg["channels"])
    check_model(sensor, desc)
    # without the model's settings it would not: the chip's defaults are 2 g and 250 dps
    with pytest.raises(ValueError, match="full scale"):
        check_model(MPU6050(FakeI2C(), channels=cfg["channels"]), desc)


@pytest.mark.parametrize(
    "channels, units, scales, flags, message",
    [
        (["ax", "x"], ["g", "g"], [8, 8], [], "--sensor mpu6050 gives channels ax,ay,az,gx,gy,gz"),
        (["ax", "ay"], ["", ""], [0, 0], ["--accel-fs", "3"], "--accel-fs 3: expected 2, 4, 8"),
        (
            ["ax", "ay"],
            ["m/s2", "m/s2"],
            [8, 8],
            [],
            "reads ax.. in g; the model reads ax in m/s2",
        ),
        (["ax", "ay"], ["g", "g"], [8, 4], [], "the model's g channels have full scales 4, 8"),
        (["ax", "ay"], ["g", "g"], [3, 3], [], "trained at 3 g full scale; the MPU6050 has 2, 4"),
        (["ax", "ay"], ["g", "g"], [8, 8], ["--accel-fs", "4"], "--accel-fs 4: the model was"),
    ],
)
def test_mpu6050_that_cannot_read_as_the_model_is_refused(
    capsys, tmp_path, build_dir, channels, units, scales, flags, message
):
    model = imu_model(tmp_path, channels, units, scales)
    err = refused(
        capsys, "--dry-run", "--arch", "x64", "--model", model, "--sensor", "mpu6050", *flags,
        "--build-dir", build_dir,
    )  # fmt: skip
    assert message in err, err
