"""Sensor logs: the CSV format, conversion to counts, errors that name file, row and column.

Runs on: host (pytest).
"""

import gzip
import os

import numpy as np
import pytest

from microprop.host import sensorlog
from microprop.host.datasets import load_basic_motions, load_shoulder
from microprop.host.errors import UserError
from microprop.host.features import make_windows
from microprop.host.sensorlog import (
    SensorLog,
    check_classes,
    format_full_scale,
    parse_full_scale,
    read_sensor_log,
    sort_labels,
    to_counts,
    write_sensor_log,
)


def write(tmp_path, text, name="log.csv"):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def small_log():
    return SensorLog(
        channels=["ax", "gx"],
        counts=np.array([[4096, -5], [-32768, 32767], [0, 1], [7, -7]], dtype=np.int64),
        labels=np.array(["idle", "idle", "walk", "walk"]),
        subjects=np.array(["anna", "anna", "ben", "ben"]),
        recordings=np.array(["r1", "r1", "r2", "r2"]),
        rate_hz=50.0,
        full_scale={"ax": (8.0, "g"), "gx": (2000.0, "dps")},
        meta={"sensor": "mpu6050"},
        t_ms=np.array([0, 20, 0, 20]),
    )


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz"])
def test_write_then_read_round_trips(tmp_path, name):
    log = small_log()
    path = tmp_path / name
    write_sensor_log(path, log)
    back = read_sensor_log(path)
    assert back.channels == ["ax", "gx"]
    np.testing.assert_array_equal(back.counts, log.counts)
    np.testing.assert_array_equal(back.labels, log.labels)
    np.testing.assert_array_equal(back.subjects, log.subjects)
    np.testing.assert_array_equal(back.recordings, log.recordings)
    np.testing.assert_array_equal(back.t_ms, log.t_ms)
    assert back.rate_hz == 50.0
    assert back.full_scale == log.full_scale
    assert back.meta == {"sensor": "mpu6050"}
    assert back.path == str(path)
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_written_format_is_the_documented_one(tmp_path):
    path = tmp_path / "log.csv"
    write_sensor_log(path, small_log())
    lines = path.read_text().splitlines()
    assert lines[0] == ("# sensor=mpu6050 rate_hz=50 values=counts full_scale=ax:8g,gx:2000dps")
    assert lines[1] == "ax,gx,label,subject,recording,t_ms"
    assert lines[3] == "-32768,32767,idle,anna,r1,20"


def test_write_replaces_atomically_and_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "log.csv"
    write_sensor_log(path, small_log())
    before = path.read_text()
    bad = small_log()
    bad.meta = {"sensor": "has space"}
    with pytest.raises(UserError, match="without spaces"):
        write_sensor_log(path, bad)
    assert path.read_text() == before
    bad = small_log()
    bad.counts = bad.counts.copy()
    bad.counts[0, 0] = 40000
    with pytest.raises(UserError, match="int16"):
        write_sensor_log(path, bad)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["log.csv"]


def test_full_scale_syntax():
    fs = parse_full_scale("ax:8g,gx:2000dps,t:1.5,m:4.9e2uT")
    assert fs == {"ax": (8.0, "g"), "gx": (2000.0, "dps"), "t": (1.5, ""), "m": (490.0, "uT")}
    assert parse_full_scale(format_full_scale(fs)) == fs
    with pytest.raises(UserError, match=r"bad item 'ax=8g', expected channel:.* \(write ax:8g\)"):
        parse_full_scale("ax=8g")
    with pytest.raises(UserError, match="positive"):
        parse_full_scale("ax:0g")


def test_to_counts_rounds_half_away_and_clips():
    # 8 g full scale: 4096 counts per g; 1/8192 g is half a count.
    v = np.array([1.0, -1.0, 0.5 / 4096, -0.5 / 4096, 1.5 / 4096, 8.0, -8.0, 100.0, 0.0])
    assert to_counts(v, 8.0).tolist() == [4096, -4096, 1, -1, 2, 32767, -32768, 32767, 0]


def test_physical_values_declared_in_file(tmp_path):
    path = write(
        tmp_path,
        "# rate_hz=10 values=physical full_scale=ax:8g,gx:2000dps\n"
        "ax,gx,label\n1.0,100,a\n-0.25,-2000,b\n",
    )
    log = read_sensor_log(path)
    assert log.counts.tolist() == [[4096, 1638], [-1024, -32768]]
    assert log.full_scale == {"ax": (8.0, "g"), "gx": (2000.0, "dps")}
    assert log.rate_hz == 10.0


def test_physical_values_given_by_caller(tmp_path):
    path = write(tmp_path, "ax,ay,label\n0.5,12,a\n-0.5,-3,b\n")
    log = read_sensor_log(path, full_scale={"ax": "2g"}, rate_hz=25)
    assert log.counts.tolist() == [[8192, 12], [-8192, -3]]  # ay stays in counts
    assert log.full_scale == {"ax": (2.0, "g")}
    assert log.rate_hz == 25.0


def test_default_columns_and_recordings(tmp_path):
    path = write(
        tmp_path,
        "note,ax,label,subject,ay,t_ms\nx,1,a,s1,2,0\ny,3,a,s1,4,20\nz,5,b,s2,6,40\n",
    )
    log = read_sensor_log(path)
    assert log.channels == ["ax", "ay"]  # numeric, not label/subject/time; 'note' is text
    assert log.counts.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert log.recordings.tolist() == ["s1", "s1", "s2"]  # one recording per subject
    assert log.t_ms.tolist() == [0, 20, 40]
    path = write(tmp_path, "ax,label\n1,a\n\n2,b\n", "blank.csv")
    log = read_sensor_log(path)
    assert log.subjects.tolist() == ["0", "0"]
    assert log.recordings.tolist() == ["0", "0"]
    assert log.full_scale is None and log.rate_hz is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "sensor log: empty file"),
        ("# rate_hz=50\n", "no header row"),
        ("ax,label\n", "no data rows"),
        ("ax,ay\n1,2\n", "missing label column 'label'"),
        ("ax,label\n1,a\n2,b,3\n", "row 3: sensor log: expected 2 cells, found 3"),
        ("# x=1\nax,label\n1,a\n\n2\n", "row 5: sensor log: expected 2 cells, found 1"),
        (
            "ax,label\n1,a\nabc,b\n",
            "row 3, column 'ax': sensor log: expected a number, found 'abc'",
        ),
        ("ax,label\n1,a\nnan,b\n", "row 3, column 'ax': sensor log: expected a finite number"),
        ("ax,label\n1,a\n-inf,b\n", "row 3, column 'ax': sensor log: expected a finite number"),
        ("ax,label\n1.5,a\n", "row 2, column 'ax': sensor log: expected int16 counts"),
        ("ax,label\n40000,a\n", "row 2, column 'ax': sensor log: expected int16 counts"),
        ("ax,label\n1,\n", "sensor log: every row has an ignored or empty label ('')"),
        ("ax,ax,label\n1,2,a\n", "row 1: sensor log: duplicate column 'ax'"),
        ("# values=physical full_scale=ax:8g\nax,ay,label\n1,2,a\n", "no full scale for"),
        ("# values=volts\nax,label\n1,a\n", "values must be counts or physical"),
        ("# rate_hz=fast\nax,label\n1,a\n", "rate_hz must be a number, found 'fast'"),
        ("# oops\nax,label\n1,a\n", "row 1: sensor log: bad comment item 'oops'"),
    ],
)
def test_bad_files_raise_data_errors_naming_the_place(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as e:
        read_sensor_log(path)
    assert str(e.value).startswith(str(path))
    assert message in str(e.value)


def test_bad_gz_file_names_the_row(tmp_path):
    path = write(tmp_path, "ax,label\n1,a\n2,b\n3,c\n4,d\nx,e\n", "log.csv.gz")
    with pytest.raises(UserError, match=r"log.csv.gz, row 6, column 'ax'"):
        read_sensor_log(path)


def test_missing_file_and_unknown_channel(tmp_path):
    with pytest.raises(UserError, match="nothere.csv: sensor log: file not found"):
        read_sensor_log(tmp_path / "nothere.csv")
    path = write(tmp_path, "ax,ay,label\n1,2,a\n")
    with pytest.raises(UserError, match="column 'gz': sensor log: unknown channel 'gz'"):
        read_sensor_log(path, channels=["ax", "gz"])
    with pytest.raises(UserError, match="full scale given for unknown channel 'gz'"):
        read_sensor_log(path, full_scale={"gz": 2000})


def test_check_classes(tmp_path):
    assert check_classes(np.array(["b", "a", "b"])) == ["a", "b"]
    with pytest.raises(UserError, match="log.csv: sensor log: expected at least 2 classes"):
        check_classes(np.array(["a", "a"]), tmp_path / "log.csv")


def test_load_shoulder(datasets):
    log = load_shoulder(datasets)
    assert log.counts.shape == (244102, 6)
    assert log.channels == ["ax", "ay", "az", "gx", "gy", "gz"]
    assert log.rate_hz == 50.0
    assert log.full_scale["ax"] == (8.0, "g") and log.full_scale["gz"] == (2000.0, "dps")
    assert len(set(log.recordings.tolist())) == 140
    assert len(set(log.subjects.tolist())) == 10
    assert log.classes == sorted(["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"])
    # README: median |a| = 1.07 g, i.e. about 4380 counts at 4096 counts per g.
    a = np.sqrt((log.counts[:, :3].astype(float) ** 2).sum(axis=1))
    assert 4200 < np.median(a) < 4600
    # First row: ax = -1.0836 g, gx = 0.41141 rad/s = 23.57 deg/s -> 386.6 counts.
    assert log.counts[0, 0] == -4438
    assert log.counts[0, 3] == round(0.41141 * 180 / np.pi * 32768 / 2000)


def test_load_basic_motions(datasets):
    log = load_basic_motions(datasets)
    assert log.counts.shape == (8000, 6)
    assert log.rate_hz == 10.0
    assert set(log.subjects.tolist()) == {"train", "test"}
    assert len(set(log.recordings.tolist())) == 80
    assert log.classes == ["Badminton", "Running", "Standing", "Walking"]
    # Scaled by the data's own largest |value| per sensor group.
    assert np.abs(log.counts[:, :3]).max() >= 32767
    assert np.abs(log.counts[:, 3:]).max() >= 32767
    assert log.full_scale["ax"] == log.full_scale["az"]
    assert "scaling" in log.meta


def test_basic_motions_writes_as_a_sensor_log(datasets, tmp_path):
    log = load_basic_motions(datasets)
    write_sensor_log(tmp_path / "bm.csv", log)
    back = read_sensor_log(tmp_path / "bm.csv")
    np.testing.assert_array_equal(back.counts, log.counts)
    assert back.meta["scaling"] == "max_abs_per_sensor_group"


# --- reading right: byte-order mark, label order, left-out rows, gaps and steps back in t_ms ---


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz"])
def test_a_utf8_byte_order_mark_is_dropped(tmp_path, name):
    path = write(tmp_path, "\ufeffax,label\n1,a\n", name)
    assert read_sensor_log(path).channels == ["ax"]  # not '\ufeffax'
    path = write(tmp_path, "\ufeff# rate_hz=50\nax,label\n1,a\n", name)
    log = read_sensor_log(path)
    assert log.rate_hz == 50.0 and log.channels == ["ax"]


def test_numeric_labels_sort_as_numbers(tmp_path):
    rows = "".join("%d,%s\n" % (i, v) for i, v in enumerate(["10", "2", "-1", "11", "1", "2"]))
    log = read_sensor_log(write(tmp_path, "ax,label\n" + rows))
    assert log.classes == ["-1", "1", "2", "10", "11"]
    assert check_classes(log.labels) == ["-1", "1", "2", "10", "11"]
    assert sort_labels(["walk", "10", "2.5", "Run", "-3"]) == ["-3", "2.5", "10", "Run", "walk"]


def test_ignored_and_empty_labels_are_left_out_and_split_the_recording(tmp_path):
    text = "ax,label,t_ms\n" + "".join(
        "%d,%s,%d\n" % (i, v, 20 * i) for i, v in enumerate("a a - - a a b  b".split(" "))
    )
    text = text.replace(",-,", ",-1,")
    log = read_sensor_log(write(tmp_path, "# rate_hz=50\n" + text), ignore_labels=["-1"])
    assert log.counts[:, 0].tolist() == [0, 1, 4, 5, 6, 8]  # rows 2, 3 ('-1') and 7 ('') out
    assert log.labels.tolist() == ["a", "a", "a", "a", "b", "b"]
    assert log.breaks.tolist() == [2, 5]  # where rows were left out, inside the recording
    assert log.splits["ignored"] == {"-1": 2, "": 1}
    assert log.splits["ignore_splits"] == 2 and log.splits["gap_splits"] == 0
    # no window spans a cut: counts 1,4 and 6,8 are no window (4,5 and 5,6 change label)
    assert make_windows(log, 2, 1).starts.tolist() == [0, 2]
    # without ignoring, '-1' is a class, and only the empty label is left out
    assert read_sensor_log(write(tmp_path, "# rate_hz=50\n" + text)).classes == ["-1", "a", "b"]


def test_gaps_in_t_ms_split_recordings_and_are_counted(tmp_path):
    t = [0, 20, 40, 100, 120, 140, 0, 20, 500]  # a 60 ms step, a new recording, a 480 ms step
    rec = ["r1"] * 6 + ["r2"] * 3
    text = "ax,label,recording,t_ms\n" + "".join(
        "%d,a,%s,%d\n" % (i, r, v) for i, (r, v) in enumerate(zip(rec, t, strict=True))
    )
    log = read_sensor_log(write(tmp_path, "# rate_hz=50\n" + text))
    assert log.breaks.tolist() == [3, 8] and log.splits["gap_splits"] == 2
    assert log.splits["gap_ms"] == 30.0  # 1.5 sample periods at 50 Hz
    assert make_windows(log, 3, 1).starts.tolist() == [0, 3]  # none across 40 -> 100
    # at 10 Hz (100 ms a sample) only the 480 ms step is a gap
    log = read_sensor_log(write(tmp_path, text, "norate.csv"), rate_hz=10)
    assert log.breaks.tolist() == [8]
    # without a rate there is no sample period to compare with
    assert read_sensor_log(write(tmp_path, text, "norate.csv")).breaks is None


def test_t_ms_going_back_inside_a_recording_is_refused_with_its_row(tmp_path):
    text = "ax,label,recording,t_ms\n1,a,r1,0\n2,a,r1,20\n3,a,r2,0\n4,a,r2,20\n5,a,r2,10\n"
    with pytest.raises(UserError) as e:
        read_sensor_log(write(tmp_path, text))
    assert str(e.value).endswith(
        "row 6, column 't_ms': sensor log: t_ms goes back from 20 to 10 inside one recording"
    )


@pytest.mark.parametrize("channels, message", [([], "no channel columns"), (["ax", "ax"], "'ax'")])
def test_channels_must_be_named_once(tmp_path, channels, message):
    with pytest.raises(UserError, match=message):
        read_sensor_log(write(tmp_path, "ax,ay,label\n1,2,a\n"), channels=channels)


def test_blocks_read_as_the_csv_module_reads_cell_by_cell(tmp_path, monkeypatch):
    """Many small blocks: NumPy's fast parse, blocks with quotes or blank lines that go cell by
    cell, and rows across blocks give what a plain csv reading gives; errors name the row."""
    monkeypatch.setattr(sensorlog, "_BLOCK", 2000)
    rng = np.random.default_rng(3)
    n = 3000
    counts = rng.integers(-32768, 32768, size=(n, 2))
    lines = ["# rate_hz=100", "ax,note,ay,label,subject,t_ms"]
    for i in range(n):
        label = ["walk", '"run, fast"', " sit "][i // 500 % 3]
        lines.append("%d,x,%d,%s,s%d,%d" % (counts[i, 0], counts[i, 1], label, i // 1000, 10 * i))
        if i % 777 == 5:
            lines.append("")
    path = write(tmp_path, "\n".join(lines) + "\n")
    log = read_sensor_log(path)
    assert log.channels == ["ax", "ay"]  # 'note' is text
    np.testing.assert_array_equal(log.counts, counts)
    want = [["walk", "run, fast", "sit"][i // 500 % 3] for i in range(n)]
    assert log.labels.tolist() == want
    assert log.subjects.tolist() == ["s%d" % (i // 1000) for i in range(n)]
    assert log.t_ms.tolist() == list(range(0, 10 * n, 10))
    assert log.breaks is None  # a new subject is no break
    bad = lines[2900].split(",")
    bad[2] = "1.5e"
    lines[2900] = ",".join(bad)
    path = write(tmp_path, "\n".join(lines) + "\n", "bad.csv")
    with pytest.raises(UserError, match=r"bad.csv, row 2901, column 'ay': .* found '1.5e'"):
        read_sensor_log(path)
