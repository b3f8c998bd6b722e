"""Sensors: MPU6050 over a fake I2C bus, ADC sensors over fake ADCs, replay of CSV logs.

Runs on: host (pytest). One script runs the whole sweep under the `micropython` binary (one
process, with `micropython.heap_lock()` around the sample loops) and again under CPython; it
prints `key value` lines (Python literals) that the tests below check. Simple cases also run
in-process under CPython.
"""

import ast
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from microprop.device import sensor_adc, sensor_mpu6050, sensor_replay, sensors
from microprop.host import sensorlog

from .conftest import ROOT, run_micropython
from .wasm_runner import require_wasm, run_wasm

# ---------------------------------------------------------------------------------------------
# CSV fixtures

COUNTS_CSV = (
    "# sensor=mpu6050 rate_hz=50 values=counts full_scale=ax:8g,ay:8g,gz:2000dps\n"
    "ax,ay,gz,label,subject,recording,t_ms\n"
    "1,2,3,walk,anna,r1,0\n"
    "-4,5,-6,walk,anna,r1,20\n"
    "32767,-32768,0,run,anna,r1,40\n"
    "12.0,1.2e1,-0,run,anna,r1,60\n"
    "7,8,9,sit,bob,r2,80\n"
)
# Each bad row: a word, too few cells, too many, out of range, a fraction, empty, nan.
BAD_ROWS = (
    "x,2,3,walk,anna,r1,0\n"
    "1,2,3,walk\n"
    "1,2,3,walk,anna,r1,0,9\n"
    "32768,0,0,walk,anna,r1,0\n"
    "1.5,0,0,walk,anna,r1,0\n"
    ",0,0,walk,anna,r1,0\n"
    "nan,0,0,walk,anna,r1,0\n"
)
MIXED_CSV = (
    "ax,ay,gz,label,subject,recording,t_ms\n"
    "1,2,3,walk,anna,r1,0\n" + BAD_ROWS + "\n  \n" + '4,5,6,"a, quoted",anna,r1,20\n'
)
CRLF_CSV = "ax,ay,label\r\n10,-20,up\r\n\r\n30,-40,down\r\n50,-60,up"  # no final newline
ALL_BAD_CSV = "ax,label\nx,walk\n1,2,3\n"
PHYSICAL_VALUES = [
    "0",
    "9.81",
    "-9.81",
    "8",
    "-8",
    "8.5",
    "-100",
    "0.0001220703125",  # exactly half a count at 8 g: rounds away from zero
    "-0.0001220703125",
    "0.000183105468750",  # 0.75 counts
    "1e-3",
    "-2.5E0",
    "1.23456789012",
    "3.99987792968750",  # 16382.5 counts
]


RAWS = [0, 1, 15, 16, 3007, 3008, 14020, 14021, 14022, 20000, 32768, 65520, 65535]  # rp2_temp


def physical_csv():
    rows = ["# values=physical full_scale=ax:8g,gx:2000dps", "ax,gx,label"]
    for k, v in enumerate(PHYSICAL_VALUES):
        gx = PHYSICAL_VALUES[-1 - k]
        rows.append("%s,%s,l%d" % (v, "%g" % (float(gx) * 250), k))
    return "\n".join(rows) + "\n"


def csv_files():
    """File name -> bytes of the replay fixtures."""
    return {
        "counts.csv": COUNTS_CSV.encode(),
        "mixed.csv": MIXED_CSV.encode(),
        "crlf.csv": CRLF_CSV.encode(),
        "allbad.csv": ALL_BAD_CSV.encode(),
        "physical.csv": physical_csv().encode(),
    }


def write_files(folder):
    for name, data in csv_files().items():
        (folder / name).write_bytes(data)
    return folder


# ---------------------------------------------------------------------------------------------
# the sweep, for MicroPython and CPython

SWEEP = r"""
import sys
from array import array
try:
    import micropython
    heap_lock = micropython.heap_lock
    heap_unlock = micropython.heap_unlock
except (ImportError, AttributeError):
    heap_lock = heap_unlock = None

from device import sensors, sensor_adc, sensor_mpu6050, sensor_replay

DIR = @DIR@


def emit(key, value):
    print(key, repr(value))


def locked(fn):
    # fn() with the heap locked: 'ok', or 'alloc' if it allocated; 'unlocked' on CPython.
    # (No *args here: a star call allocates its argument tuple.)
    if heap_lock is None:
        fn()
        return "unlocked"
    heap_lock()
    try:
        fn()
        result = "ok"
    except MemoryError:
        result = "alloc"
    heap_unlock()
    return result


class FakeI2C:
    # Registers of one chip at addr; the 14-byte burst at 0x3B; writes are recorded.
    def __init__(self, who=0x68, addr=0x68, burst=None):
        self.addr = addr
        self.regs = {0x75: who}
        self.burst = bytearray(burst or bytes(14))
        self.writes = []
        self.fail = False

    def readfrom_mem_into(self, addr, reg, buf):
        if self.fail or addr != self.addr:
            raise OSError(19)
        if reg == 0x3B:
            for i in range(len(buf)):
                buf[i] = self.burst[i]
        else:
            buf[0] = self.regs.get(reg, 0)

    def writeto_mem(self, addr, reg, buf):
        if addr != self.addr:
            raise OSError(19)
        self.writes.append((reg, buf[0]))
        self.regs[reg] = buf[0]


class FakeADC:
    ATTN_0DB = 10
    ATTN_2_5DB = 11
    ATTN_6DB = 12
    ATTN_11DB = 13

    def __init__(self, pin=None, raw=0):
        self.pin = pin
        self.raw = raw
        self.attens = []

    def read_u16(self):
        return self.raw

    def atten(self, a):
        self.attens.append(a)


class FakePin:
    def __init__(self, id):
        self.id = id


class FakeMachine:
    made = []
    Pin = FakePin

    class ADC(FakeADC):
        def __init__(self, pin):
            FakeADC.__init__(self, pin, 40000)
            FakeMachine.made.append(("ADC", pin if isinstance(pin, int) else pin.id))

    class I2C(FakeI2C):
        def __init__(self, bus, scl=None, sda=None, freq=None):
            FakeI2C.__init__(self)
            FakeMachine.made.append(
                ("I2C", bus, scl and scl.id, sda and sda.id, freq)
            )

    class SoftI2C(FakeI2C):
        def __init__(self, scl, sda, freq=None):
            FakeI2C.__init__(self)
            FakeMachine.made.append(("SoftI2C", scl.id, sda.id, freq))


def be16(values):
    b = bytearray()
    for v in values:
        v &= 0xFFFF
        b.append(v >> 8)
        b.append(v & 0xFF)
    return b


def error(fn, *args):
    try:
        fn(*args)
    except (ValueError, OSError) as e:
        return "%s: %s" % (type(e).__name__, e.args[0])
    return None


# --- mpu6050
for who in (0x68, 0x19, 0x70, 0x71, 0x73):
    emit("mpu_who_%02x" % who, sensor_mpu6050.MPU6050(FakeI2C(who)).chip_id)
emit("mpu_bad_who", error(sensor_mpu6050.MPU6050, FakeI2C(0x12)))
emit("mpu_absent", error(sensor_mpu6050.MPU6050, FakeI2C(0x68, addr=0x69)))
for g in (2, 4, 8, 16):
    for dps in (250, 500, 1000, 2000):
        bus = FakeI2C()
        s = sensor_mpu6050.MPU6050(bus, accel_fs_g=g, gyro_fs_dps=dps)
        emit("mpu_writes_%d_%d" % (g, dps), bus.writes)
        emit("mpu_fs_%d_%d" % (g, dps), [list(s.full_scale), list(s.units)])
bus = FakeI2C(addr=0x69)
sensor_mpu6050.MPU6050(bus, addr=0x69, dlpf=3, rate_div=19)
emit("mpu_writes_dlpf", bus.writes)
emit("mpu_bad_fs", error(sensor_mpu6050.MPU6050, FakeI2C(), 0x68, 3))
emit("mpu_bad_gyro", error(sensor_mpu6050.MPU6050, FakeI2C(), 0x68, 2, 300))
emit("mpu_bad_dlpf", error(sensor_mpu6050.MPU6050, FakeI2C(), 0x68, 2, 250, 7))
emit("mpu_bad_channel", error(sensor_mpu6050.MPU6050, FakeI2C(), 0x68, 2, 250, None, None, ["t"]))

BURST = [-32768, 32767, -1, 1234, 0, 1, -2]  # ax ay az temp gx gy gz
bus = FakeI2C(burst=be16(BURST))
imu = sensor_mpu6050.MPU6050(bus, accel_fs_g=8, gyro_fs_dps=2000)
out = array("h", bytes(12))
imu.read(out)
emit("mpu_read", list(out))
emit("mpu_channels", [list(imu.channels), imu.n])
sub = sensor_mpu6050.MPU6050(bus, channels=["gz", "ax"])
out2 = [0, 0]
sub.read(out2)
emit("mpu_read_subset", [list(sub.channels), out2])
bus.burst = be16([0x1234, -0x1234, 0x7F00, 0, 0x00FF, -0x0100, 0x8000 - 0x10000])
imu.read(out)
emit("mpu_read2", list(out))
bus.fail = True
emit("mpu_read_fault", error(imu.read, out))
bus.fail = False


def spin_mpu(s, out, k):
    for _ in range(k):
        s.read(out)


imu.read(out)
emit("mpu_heap", locked(lambda: spin_mpu(imu, out, 1000)))
emit("mpu_heap_list", locked(lambda: spin_mpu(sub, out2, 1000)))

# --- ADC sensors
RAWS = @RAWS@
adc = FakeADC()
temp = sensor_adc.RP2Temp(adc)
res = []
for raw in RAWS:
    adc.raw = raw
    temp.read(out)
    res.append(out[0])
emit("rp2_temp", res)
emit("rp2_temp_desc", [list(temp.channels), temp.n, list(temp.units), list(temp.full_scale)])
h = 0
for raw in range(65536):
    h = (h * 31 + sensor_adc.rp2_temp_centi(raw) + 32768) & 0xFFFFFF
emit("rp2_temp_hash", h)

adcs = [FakeADC(raw=0), FakeADC(raw=65535), FakeADC(raw=32768), FakeADC(raw=1)]
pins = sensor_adc.ADCPins(adcs)
pins.read(out)
emit("adc_read", [list(pins.channels), list(out[:4])])


def spin_adc(s, out, k):
    for _ in range(k):
        s.read(out)


emit("rp2_temp_heap", locked(lambda: spin_adc(temp, out, 1000)))


def all_temps():
    for raw in range(65536):
        sensor_adc.rp2_temp_centi(raw)


emit("rp2_temp_all_heap", locked(all_temps))  # on a 32-bit VM: no value leaves 31 bits
emit("adc_heap", locked(lambda: spin_adc(pins, out, 1000)))

# --- the factory, with a fake machine module
sensors.machine = FakeMachine
s = sensors.make_sensor({"sensor": "rp2_temp"})
s.read(out)
emit("make_rp2_temp", [FakeMachine.made, out[0], sensor_adc.rp2_temp_centi(40000)])
FakeMachine.made = []
s = sensors.make_sensor({"sensor": "adc", "pins": [26, 27], "channels": ["x", "y"]})
s.read(out)
emit("make_adc", [FakeMachine.made, list(s.channels), out[0], s.adcs[0].attens])
FakeMachine.made = []
s = sensors.make_sensor({"sensor": "esp32_adc", "pins": [34]})
emit("make_esp32_adc", [FakeMachine.made, s.adcs[0].attens, s.atten, list(s.channels)])
s = sensors.make_sensor({"sensor": "esp32_adc", "pins": [34, 35], "atten": 2.5})
emit("make_esp32_adc_25", [s.adcs[0].attens, s.adcs[1].attens, s.atten])
bad = {"sensor": "esp32_adc", "pins": [3], "atten": 5}
emit("make_esp32_bad_atten", error(sensors.make_sensor, bad))
emit("make_adc_no_pins", error(sensors.make_sensor, {"sensor": "adc"}))
FakeMachine.made = []
s = sensors.make_sensor(
    {"sensor": "mpu6050", "i2c": 1, "scl": 22, "sda": 21, "addr": "0x68", "accel_fs_g": 4}
)
emit("make_mpu", [FakeMachine.made, s.i2c.writes, list(s.full_scale)])
FakeMachine.made = []
s = sensors.make_sensor({"sensor": "mpu6050", "i2c": "soft", "scl": 5, "sda": 4, "freq": 100000})
emit("make_mpu_soft", FakeMachine.made)
FakeMachine.made = []
s = sensors.make_sensor({"sensor": "mpu6050"})
emit("make_mpu_default", FakeMachine.made)
emit("make_mpu_one_pin", error(sensors.make_sensor, {"sensor": "mpu6050", "scl": 5}))
emit("make_bad_kind", error(sensors.make_sensor, {"sensor": "lidar"}))
sensors.machine = None
emit("make_no_machine", error(sensors.make_sensor, {"sensor": "adc", "pins": [26]}))

# --- replay
def take(s, k):
    rows = []
    labels = []
    o = [0] * s.n
    for _ in range(k):
        s.read(o)
        rows.append(list(o))
        labels.append(s.last_label)
    return rows, labels


s = sensors.make_sensor({"sensor": "replay", "file": DIR + "/counts.csv"})
rows, labels = take(s, 12)
emit("replay_counts", [list(s.channels), s.n, list(s.units), list(s.full_scale), rows, labels])
emit("replay_counts_stats", [s.rows, s.loops, s.bad_rows])
s = sensor_replay.Replay(DIR + "/counts.csv", ["gz", "ax"])
emit("replay_select", take(s, 6)[0])
emit("replay_unknown", error(sensor_replay.Replay, DIR + "/counts.csv", ["t_ms"]))
emit("replay_missing", error(sensor_replay.Replay, DIR + "/nothere.csv"))
s = sensor_replay.Replay(DIR + "/mixed.csv")
rows, labels = take(s, 4)
emit("replay_mixed", [rows, labels, s.bad_rows, s.loops])
s = sensor_replay.Replay(DIR + "/crlf.csv")
rows, labels = take(s, 7)
emit("replay_crlf", [list(s.channels), rows, labels, s.bad_rows, s.loops])
s = sensor_replay.Replay(DIR + "/allbad.csv")
emit("replay_allbad", [error(s.read, [0]), s.bad_rows])
s = sensor_replay.Replay(DIR + "/physical.csv")
rows, labels = take(s, @NPHYS@)
emit("replay_physical", [list(s.units), list(s.full_scale), rows])


def spin_replay(s, out, k):
    for _ in range(k):
        s.read(out)


s = sensor_replay.Replay(DIR + "/counts.csv")
out = array("h", bytes(2 * s.n))
s.read(out)
emit("replay_heap", locked(lambda: spin_replay(s, out, 2000)))
s = sensor_replay.Replay(DIR + "/mixed.csv")
s.read(out)
emit("replay_heap_bad_rows", locked(lambda: spin_replay(s, out, 2000)))
s = sensor_replay.Replay(DIR + "/physical.csv")
res = []
for _ in range(@NPHYS@):
    res.append(locked(lambda: s.read(out)))
emit("replay_heap_physical", res)
print("done")
"""


def sweep_script(folder):
    script = SWEEP.replace("@DIR@", repr(str(folder)))
    script = script.replace("@RAWS@", repr(RAWS))
    return script.replace("@NPHYS@", str(len(PHYSICAL_VALUES)))


def parse(stdout):
    assert stdout.rstrip().endswith("done"), stdout[-2000:]
    out = {}
    for line in stdout.splitlines()[:-1]:
        key, _, value = line.partition(" ")
        out[key] = ast.literal_eval(value.replace("array('h', ", "(").replace("])", "]"))
    return out


@pytest.fixture(scope="module")
def mp_results(micropython, tmp_path_factory):
    folder = write_files(tmp_path_factory.mktemp("replay_mp"))
    return parse(run_micropython(micropython, sweep_script(folder)))


@pytest.fixture(scope="module")
def cpy_results(tmp_path_factory):
    folder = write_files(tmp_path_factory.mktemp("replay_cpy"))
    proc = subprocess.run(
        [sys.executable, "-c", sweep_script(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return parse(proc.stdout)


@pytest.fixture(scope="module")
def wasm_results():
    """The sweep on the 32-bit WebAssembly port: small ints end at 2**30 - 1, as on boards."""
    require_wasm()
    return parse(run_wasm(sweep_script("/run"), files=csv_files()))


@pytest.fixture(params=["micropython", "cpython", "wasm32"])
def r(request):
    name = {"micropython": "mp_results", "cpython": "cpy_results", "wasm32": "wasm_results"}
    return request.getfixturevalue(name[request.param])


# ---------------------------------------------------------------------------------------------
# expectations


def exact_temp(raw):
    """The RP2040 datasheet formula in exact rationals, centi-degrees, rounded to nearest."""
    v = Fraction(raw) * Fraction(33, 10) / 65535
    t = (27 - (v - Fraction(706, 1000)) / Fraction(1721, 1000000)) * 100
    return max(-32768, min(32767, math.floor(t + Fraction(1, 2))))


def test_mpu6050_accepts_the_family(r):
    for who in (0x68, 0x19, 0x70, 0x71, 0x73):
        assert r["mpu_who_%02x" % who] == who


def test_mpu6050_wrong_chip_and_absent_chip(r):
    assert r["mpu_bad_who"] == (
        "ValueError: mpu6050: WHO_AM_I 0x12 at 0x68, expected one of 0x68, 0x19, 0x70, 0x71, 0x73"
    )
    assert r["mpu_absent"].startswith("OSError: mpu6050: no answer at 0x68 (")


def test_mpu6050_full_scale_bits(r):
    for a, g in enumerate((2, 4, 8, 16)):
        for b, dps in enumerate((250, 500, 1000, 2000)):
            # wake (PWR_MGMT_1 = PLL clock), GYRO_CONFIG FS_SEL << 3, ACCEL_CONFIG AFS_SEL << 3
            assert r["mpu_writes_%d_%d" % (g, dps)] == [
                (0x6B, 0x01),
                (0x1B, b << 3),
                (0x1C, a << 3),
            ]
            assert r["mpu_fs_%d_%d" % (g, dps)] == [
                [g, g, g, dps, dps, dps],
                ["g"] * 3 + ["dps"] * 3,
            ]
    assert r["mpu_writes_dlpf"] == [(0x6B, 1), (0x19, 19), (0x1A, 3), (0x1B, 0), (0x1C, 0)]


def test_mpu6050_bad_options(r):
    assert (
        r["mpu_bad_fs"] == "ValueError: mpu6050: accel_fs_g must be one of (2, 4, 8, 16), found 3"
    )
    assert "gyro_fs_dps must be one of (250, 500, 1000, 2000), found 300" in r["mpu_bad_gyro"]
    assert "dlpf must be one of" in r["mpu_bad_dlpf"]
    assert "channel must be one of" in r["mpu_bad_channel"]


def test_mpu6050_burst_decoding(r):
    assert r["mpu_channels"] == [["ax", "ay", "az", "gx", "gy", "gz"], 6]
    assert r["mpu_read"] == [-32768, 32767, -1, 0, 1, -2]  # temp (1234) skipped
    assert r["mpu_read_subset"] == [["gz", "ax"], [-2, -32768]]
    assert r["mpu_read2"] == [0x1234, -0x1234, 0x7F00, 0x00FF, -0x0100, -32768]
    assert r["mpu_read_fault"].startswith("OSError")


def test_adc_sensors(r):
    assert r["rp2_temp"] == [exact_temp(raw) for raw in RAWS]
    # 0.706 V (27 C) lies between raw 14020 (27.0152 C) and 14021 (26.9859 C)
    assert r["rp2_temp"][6:8] == [2702, 2699]
    assert r["rp2_temp_desc"] == [["temp"], 1, ["C"], [327.68]]
    assert r["adc_read"] == [["a0", "a1", "a2", "a3"], [0, 32767, 16384, 0]]


def test_rp2_temp_exact_for_every_raw_value(r):
    h = 0
    for raw in range(65536):
        h = (h * 31 + exact_temp(raw) + 32768) & 0xFFFFFF
    assert r["rp2_temp_hash"] == h


def test_factory_builds_hardware_sensors(r):
    made, value, expected = r["make_rp2_temp"]
    assert made == [("ADC", 4)] and value == expected
    assert r["make_adc"] == [[("ADC", 26), ("ADC", 27)], ["x", "y"], 20000, []]
    assert r["make_esp32_adc"] == [[("ADC", 34)], [13], 11, ["a0"]]
    assert r["make_esp32_adc_25"] == [[11], [11], 2.5]
    assert "atten must be one of 0, 2.5, 6, 11 (dB), found 5" in r["make_esp32_bad_atten"]
    assert 'adc needs "pins"' in r["make_adc_no_pins"]
    made, writes, fs = r["make_mpu"]
    assert made == [("I2C", 1, 22, 21, 400000)]
    assert writes == [(0x6B, 1), (0x1B, 0), (0x1C, 1 << 3)]
    assert fs == [4, 4, 4, 250, 250, 250]
    assert r["make_mpu_soft"] == [("SoftI2C", 5, 4, 100000)]
    assert r["make_mpu_default"] == [("I2C", 0, None, None, 400000)]
    assert "both" in r["make_mpu_one_pin"]
    assert r["make_bad_kind"] == (
        "ValueError: sensors: sensor must be one of replay, rp2_temp, adc, esp32_adc, mpu6050, "
        "found 'lidar'"
    )
    assert "needs machine.ADC" in r["make_no_machine"]


def test_replay_counts_loop_and_match_the_host_reader(r, tmp_path):
    channels, n, units, fs, rows, labels = r["replay_counts"]
    assert (channels, n, units, fs) == (["ax", "ay", "gz"], 3, ["g", "g", "dps"], [8, 8, 2000])
    log = sensorlog.read_sensor_log(write_files(tmp_path) / "counts.csv")
    assert rows[:5] == log.counts.tolist()
    assert rows[5:10] == rows[:5] and rows[10:] == rows[:2]  # loops at the end
    assert labels[:5] == log.labels.tolist() and labels[10] == "walk"
    assert r["replay_counts_stats"] == [12, 2, 0]
    assert r["replay_select"] == [[3, 1], [-6, -4], [0, 32767], [0, 12], [9, 7], [3, 1]]
    assert "unknown channel 't_ms'" in r["replay_unknown"]
    assert r["replay_missing"].startswith("OSError: replay: cannot open")


def test_replay_skips_and_counts_bad_rows(r):
    rows, labels, bad, loops = r["replay_mixed"]
    n_bad = BAD_ROWS.count("\n")
    assert rows == [[1, 2, 3], [4, 5, 6], [1, 2, 3], [4, 5, 6]]
    assert labels == ["walk", "a, quoted", "walk", "a, quoted"]
    assert (bad, loops) == (2 * n_bad, 1)
    err, bad = r["replay_allbad"]
    assert err.startswith("OSError: replay: no valid rows") and bad == 2


def test_replay_crlf(r):
    channels, rows, labels, bad, loops = r["replay_crlf"]
    assert channels == ["ax", "ay"]
    assert rows == [[10, -20], [30, -40], [50, -60]] * 2 + [[10, -20]]
    assert labels[:3] == ["up", "down", "up"]
    assert (bad, loops) == (0, 2)


def test_replay_physical_values_as_the_host(r, tmp_path):
    units, fs, rows = r["replay_physical"]
    assert units == ["g", "dps"] and fs == [8, 2000]
    assert rows == [
        [exact_counts(v, "8")[0], exact_counts("%g" % (float(w) * 250), "2000")[0]]
        for v, w in zip(PHYSICAL_VALUES, PHYSICAL_VALUES[::-1], strict=True)
    ]
    assert rows[7][0] == 1 and rows[8][0] == -1  # ties away from zero
    log = sensorlog.read_sensor_log(write_files(tmp_path) / "physical.csv")
    assert rows == log.counts.tolist()  # no tie here that float64 misses


def significant_digits(text):
    digits = text.lower().split("e")[0].replace("-", "").replace(".", "").lstrip("0")
    return len(digits.rstrip("0")) if "." in text else len(digits)


@pytest.mark.parametrize("port", ["micropython", "wasm32"])
def test_read_allocates_nothing(port, request):
    r = request.getfixturevalue("mp_results" if port == "micropython" else "wasm_results")
    for key in ("mpu_heap", "mpu_heap_list", "rp2_temp_heap", "rp2_temp_all_heap", "adc_heap"):
        assert r[key] == "ok", key
    assert r["replay_heap"] == "ok"
    assert r["replay_heap_bad_rows"] == "ok"
    # Physical values are converted exactly; a cell with many significant digits needs long
    # ints: on the 64-bit Unix port from about 15 digits ("3.99987792968750"), on a 32-bit
    # VM (and board) from about 5 (the mantissa times 65536 passes 2**30).
    heap = r["replay_heap_physical"]
    if port == "micropython":
        assert PHYSICAL_VALUES[-1] == "3.99987792968750"
        assert heap == ["ok"] * (len(PHYSICAL_VALUES) - 1) + ["alloc"]
    else:
        for k, v in enumerate(PHYSICAL_VALUES):
            gx = "%g" % (float(PHYSICAL_VALUES[-1 - k]) * 250)
            if max(significant_digits(v), significant_digits(gx)) <= 4:
                assert heap[k] == "ok", (v, gx)
        assert "alloc" in heap


# ---------------------------------------------------------------------------------------------
# CPython in-process


def exact_counts(text, fs_text):
    """A physical cell -> counts by the host's rule in exact rationals, and whether a tie."""
    x = Fraction(text.strip()) / Fraction(fs_text) * 32768
    q = math.floor(abs(x) + Fraction(1, 2))
    q = max(-32768, min(32767, q if x >= 0 else -q))
    return q, (abs(x) - Fraction(1, 2)).denominator == 1 and abs(x) < 32768


def test_to_counts_is_exact_and_matches_the_host_but_on_ties():
    rng = np.random.default_rng(1)
    for fs_text in ("8", "2000", "0.5", "327.68", "3.3", "16"):
        fs = float(fs_text)
        values = np.concatenate(
            [
                rng.normal(0, fs, 3000),
                (np.arange(-300, 300) + 0.5) * fs / 32768,  # ties
                [2 * fs, -2 * fs, 1e300, -1e-300, 1e-20, fs * (1 - 1e-12)],
            ]
        )
        texts = ["%.6g" % v for v in values] + ["%.17g" % v for v in values] + ["-0", "+.5"]
        fm, fe = sensor_replay.parse_decimal(fs_text)
        host = sensorlog.to_counts([float(t) for t in texts], fs).tolist()
        n_ties = 0
        for text, h in zip(texts, host, strict=True):
            m, e = sensor_replay.parse_decimal(text, 40)
            got = sensor_replay.to_counts(m, e, fm, fe)
            want, tie = exact_counts(text, fs_text)
            assert got == want, (text, fs_text)
            x = Fraction(text) / Fraction(fs_text) * 32768
            if abs(abs(x) - math.floor(abs(x)) - Fraction(1, 2)) < Fraction(1, 10**9):
                n_ties += tie  # an exact tie, or too close to one for float64
                assert abs(h - got) <= 1, (text, fs_text)
            else:
                assert h == got, (text, fs_text)
        assert n_ties >= 100


def test_rp2_temp_within_31_bits():
    worst = 0
    for raw in (0, 0xFFFF, 0xEEEE, 0x7FFF):
        q = sum(((raw >> (4 * k)) & 15) * sensor_adc.TEMP_QR[k][0] for k in range(4))
        rr = sum(((raw >> (4 * k)) & 15) * sensor_adc.TEMP_QR[k][1] for k in range(4))
        worst = max(worst, q, rr, abs(2 * (4971922 - rr)) + sensor_adc.TEMP_D)
    assert worst < 2**30
    for raw in range(0, 65536, 7):
        assert sensor_adc.rp2_temp_centi(raw) == exact_temp(raw)


def test_check_model():
    imu = sensor_mpu6050.MPU6050(_Bus(), accel_fs_g=8, gyro_fs_dps=2000)
    desc = {
        "channels": ["ax", "ay", "az", "gx", "gy", "gz"],
        "units": ["g"] * 3 + ["dps"] * 3,
        "full_scale": [8.0] * 3 + [2000.0] * 3,
    }
    sensors.check_model(imu, desc)
    with pytest.raises(ValueError, match="sensor: ax full scale 8g, the model expects 4g"):
        sensors.check_model(imu, dict(desc, full_scale=[4.0] * 3 + [2000.0] * 3))
    with pytest.raises(ValueError, match="the model expects"):
        sensors.check_model(imu, dict(desc, channels=["ax", "ay", "az"]))
    temp = sensor_adc.RP2Temp(None)
    sensors.check_model(temp, {"channels": ["temp"], "units": ["C"], "full_scale": [327.679993]})


class _Bus:
    def readfrom_mem_into(self, addr, reg, buf):
        buf[0] = 0x68

    def writeto_mem(self, addr, reg, buf):
        pass
