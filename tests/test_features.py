"""Integer window features: hand-computed examples, the 31-bit bound, board/host parity, windows.

Runs on: host (pytest), plus the `micropython` binary for parity.
"""

import shutil
import struct
import subprocess
from array import array

import numpy as np
import pytest

from microprop.device import features as dev
from microprop.device import modelfile
from microprop.host.datasets import load_shoulder
from microprop.host.errors import UserError
from microprop.host.features import (
    FEATURES,
    MAX_WINDOW,
    feature_bounds,
    feature_names,
    features_batch,
    isqrt,
    make_windows,
    subject_split,
    window_features,
)
from microprop.host.sensorlog import SensorLog
from tests.conftest import IN_CI, ROOT, run_micropython

LIMIT = 2**30


def col(values):
    return np.array(values, dtype=np.int64)[:, None]


# ---------------------------------------------------------------------------------------------
# hand-computed examples


def test_small_window_by_hand():
    # S = 12, mean = 3; d = -2 0 -1 3, M = 3, s = 0, V = 14, var = 14 // 4 = 3, std = 1;
    # |diffs| = 2 1 4 -> mad = 7 // 3 = 2; x >= 3: F T F T -> 3 crossings;
    # A = 6, t = 0, E = 1 + 9 + 4 + 36 = 50, energy = (50 // 4) >> 14 = 0.
    assert window_features(col([1, 3, 2, 6])).tolist() == [3, 1, 1, 6, 2, 3, 0]


def test_negative_mean_floors():
    # x = -2 -4 -1: S = -7, mean = -7 // 3 = -3 (floor); d = 1 -1 2, M = 2, s = 0, V = 6,
    # var = 2, std = 1; mad = (2 + 3) // 2 = 2; x >= -3: T F T -> 2 crossings.
    assert window_features(col([-2, -4, -1])).tolist() == [-3, 1, -4, -1, 2, 2, 0]


def test_extremes_by_hand():
    # x = -32768, 32767: S = -1, mean = -1; M = 32768, s = 6; r = -32767 >> 6 = -512,
    # 32768 >> 6 = 512; V = 2 * 2**18, var = 2**18, std = 512 << 6 = 32768;
    # mad = 65535; crossings 1; A = 32768, t = 6: u = -512, 511,
    # E = 262144 + 261121 = 523265, energy = (523265 // 2) >> 2 = 65408.
    x = col([-32768, 32767])
    assert window_features(x).tolist() == [-1, 32768, -32768, 32767, 65535, 1, 65408]


def test_constant_windows_and_single_samples():
    # 1 g at 4096 counts per g: t = 3, u = 512, energy = 2**18 >> 8 = 1024.
    assert window_features(col([4096] * 50)).tolist() == [4096, 0, 4096, 4096, 0, 0, 1024]
    assert window_features(col([5])).tolist() == [5, 0, 5, 5, 0, 0, 0]
    # All -32768: t = 6, u = -512, energy = 2**18 >> 2 = 65536 (the bound, reached).
    assert window_features(col([-32768])).tolist() == [-32768, 0, -32768, -32768, 0, 0, 65536]


def test_std_keeps_small_signals_exact():
    # max |x - mean| < 1024: s = 0, var is the exact floor variance around the floor mean.
    rng = np.random.default_rng(3)
    x = rng.integers(-500, 500, size=(200, 1))
    mean = int(x.sum()) // 200
    var = int(((x - mean) ** 2).sum()) // 200
    assert window_features(x)[1] == int(np.floor(np.sqrt(var)))


def test_channel_major_order_and_names():
    x = np.stack([[1, 3, 2, 6], [10, 10, 10, 10]], axis=1)
    f = window_features(x)
    assert f[:7].tolist() == [3, 1, 1, 6, 2, 3, 0]
    assert f[7:].tolist() == [10, 0, 10, 10, 0, 0, 0]
    assert FEATURES == ("mean", "std", "min", "max", "mad", "crossings", "energy")
    names = feature_names(["ax", "ay"])
    assert names[:2] == ["ax_mean", "ax_std"] and names[7] == "ay_mean" and len(names) == 14


def test_isqrt_is_floor_sqrt():
    v = np.r_[np.arange(5000), np.arange(2**20 - 5000, 2**20 + 1)]
    r = isqrt(v)
    assert np.all(r * r <= v) and np.all((r + 1) * (r + 1) > v)
    for k in list(range(300)) + [2**20 - 1, 2**20, 2**22 - 1]:
        assert dev.isqrt(k) == int(isqrt(k))


def test_bad_windows_raise():
    with pytest.raises(ValueError, match=r"features: window length must be in \[1, 512\]"):
        window_features(np.zeros((513, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="expected int16 counts"):
        window_features(col([40000]))
    with pytest.raises(ValueError, match=r"expected a window of shape \(N, C\)"):
        window_features(np.zeros(5))


# ---------------------------------------------------------------------------------------------
# the 31-bit bound


def adversarial_windows(rng):
    """Windows (N, C) that push every intermediate: limits, alternation, spikes, N = 1, 512."""
    out = []
    for n in (1, 2, 3, 511, MAX_WINDOW):
        for v in (-32768, 32767, 0, -1, 1023, -1024, 1024):
            out.append(np.full((n, 1), v))
        alt = np.where(np.arange(n) % 2 == 0, -32768, 32767)[:, None]
        out += [alt, -1 - alt, np.clip(alt + 1, -32768, 32767)]
        for base, spike in ((-32768, 32767), (32767, -32768), (0, -32768), (0, 32767)):
            x = np.full((n, 1), base)
            x[n // 2] = spike
            out.append(x)
        half = np.where(np.arange(n) < n // 2, -32768, 32767)[:, None]
        out += [half, rng.choice([-32768, 32767], size=(n, 1))]
        out.append(rng.integers(-32768, 32768, size=(n, 1)))
    return out


class Checked(int):
    """An int whose every arithmetic result must stay inside [-2**30, 2**30)."""

    def _wrap(self, v):
        if isinstance(v, bool) or not isinstance(v, int):
            return v
        if not -LIMIT <= v < LIMIT:
            raise OverflowError("intermediate %d outside [-2**30, 2**30)" % v)
        return Checked(v)


def _checked_op(name):
    def op(self, *args):
        return self._wrap(getattr(int, name)(self, *args))

    return op


for _name in (
    "__add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ __floordiv__ __rfloordiv__ "
    "__rshift__ __rrshift__ __lshift__ __rlshift__ __neg__ __abs__"
).split():
    setattr(Checked, _name, _checked_op(_name))


def run_device_checked(x):
    """Run device/features.py on a window with every data-derived value checked."""
    n, c = x.shape
    buf = [Checked(int(v)) for v in x.reshape(-1)]
    out = [0] * (7 * c)
    dev.window_features(buf, c, n, 0, n, out)
    return out


def test_every_intermediate_stays_in_31_bits():
    rng = np.random.default_rng(0)
    lo, hi = feature_bounds(1)
    reached_lo, reached_hi = hi.copy(), lo.copy()
    for x in adversarial_windows(rng):
        out = run_device_checked(x)  # raises OverflowError past the bound
        f = features_batch(x[None])[0]  # the host checks its sums with check_small
        assert out == f.tolist()
        assert np.all((lo <= f) & (f <= hi)), (x[:4].ravel(), f)
        reached_lo, reached_hi = np.minimum(reached_lo, f), np.maximum(reached_hi, f)
    # The bounds are reached (or nearly: std tops out at 32768).
    assert reached_lo.tolist() == lo.tolist()
    assert reached_hi.tolist() == [32767, 32768, 32767, 32767, 65535, 511, 65536]


def test_checked_int_catches_overflow():
    with pytest.raises(OverflowError):
        Checked(2**15) * Checked(2**15)


def test_feature_bounds_shape():
    lo, hi = feature_bounds(6)
    assert lo.shape == hi.shape == (42,)
    assert hi[7:14].tolist() == [32767, 65536, 32767, 32767, 65535, 511, 65536]
    assert np.all(np.abs(lo) < LIMIT) and np.all(hi < LIMIT)


# ---------------------------------------------------------------------------------------------
# parity with the board's code under MicroPython

PARITY_SCRIPT = r"""
import struct, sys, micropython
from array import array
from device.FEATURES_MODULE import window_features
f = open(WINDOWS, "rb")  # set by the caller
count = struct.unpack("<I", f.read(4))[0]
for _ in range(count):
    nch, cap, start, n = struct.unpack("<HHHH", f.read(8))
    buf = array("h", bytearray(2 * cap * nch))
    f.readinto(buf)
    out = array("i", bytearray(4 * 7 * nch))
    micropython.heap_lock()
    try:
        window_features(buf, nch, cap, start, n, out)
    except MemoryError:  # a big int (past 31 bits on 32-bit ports) or an allocation
        micropython.heap_unlock()
        print("allocation in window_features: n=%d nch=%d" % (n, nch))
        raise
    micropython.heap_unlock()
    print(" ".join([str(v) for v in out]))
"""


def parity_cases(rng):
    cases = [x for x in adversarial_windows(rng)]
    for n in (1, 2, 7, 100, MAX_WINDOW):
        for c in (1, 3, 6):
            cases.append(rng.integers(-32768, 32768, size=(n, c)))
            scale = 10 ** rng.uniform(0, 4.5)
            cases.append(np.clip(rng.normal(0, scale, (n, c)), -32768, 32767).astype(np.int64))
            cases.append(rng.integers(-3, 4, size=(n, c)) + rng.integers(-32765, 32765))
    for _ in range(300):
        n = int(rng.integers(1, MAX_WINDOW + 1))
        c = int(rng.integers(1, 7))
        kind = rng.integers(4)
        if kind == 0:
            x = rng.integers(-32768, 32768, size=(n, c))
        elif kind == 1:
            x = rng.choice([-32768, -1, 0, 32767], size=(n, c))
        elif kind == 2:
            x = np.cumsum(rng.integers(-300, 301, size=(n, c)), axis=0)
        else:
            x = np.round(2000 * np.sin(np.arange(n) / rng.uniform(1, 20)))[:, None] * np.ones(c)
        cases.append(np.clip(x, -32768, 32767).astype(np.int64))
    return cases


def _device_parity(micropython, tmp_path, cases, rng, module="features"):
    """Run device/<module>.py on every window (placed in a ring at a random start, so some
    wrap around its end) in one MicroPython process, inside heap_lock; compare with the host."""
    blob = [struct.pack("<I", len(cases))]
    expected = []
    for x in cases:
        n, c = x.shape
        cap = n + int(rng.integers(0, 4))
        start = int(rng.integers(0, cap))  # windows that wrap around the ring's end
        ring = np.zeros((cap, c), dtype=np.int16)
        ring[(start + np.arange(n)) % cap] = x
        blob += [struct.pack("<HHHH", c, cap, start, n), ring.tobytes()]
        expected.append(window_features(x).tolist())
    path = tmp_path / "windows.bin"
    path.write_bytes(b"".join(blob))
    lines = run_micropython(
        micropython,
        "import sys\nWINDOWS = sys.argv[1]\n" + PARITY_SCRIPT.replace("FEATURES_MODULE", module),
        args=[str(path)],
    ).splitlines()
    assert len(lines) == len(cases)
    for i, (line, want) in enumerate(zip(lines, expected, strict=True)):
        assert [int(v) for v in line.split()] == want, "case %d: %s" % (i, cases[i][:3])


def test_device_features_equal_host_bit_for_bit(micropython, tmp_path):
    rng = np.random.default_rng(42)
    _device_parity(micropython, tmp_path, parity_cases(rng), rng)


MAX_CHANNELS = modelfile.MAX_CHANNELS  # the most channels a model file, so the app, takes


def viper_cases(rng):
    """parity_cases plus windows of 1, 3, 6 and MAX_CHANNELS channels at the int16 limits."""
    cases = parity_cases(rng)
    for c in (1, 3, 6, MAX_CHANNELS):
        for n in (1, 2, 100, MAX_WINDOW):
            cases.append(rng.integers(-32768, 32768, size=(n, c)))
            cases.append(rng.choice([-32768, -1, 0, 32767], size=(n, c)))
            cases.append(np.full((n, c), (-32768, 32767)[n % 2]))
            alt = np.where(np.arange(n) % 2 == 0, -32768, 32767)[:, None] * np.ones(c, int)
            cases.append(alt)
    return cases


def test_viper_features_equal_host_bit_for_bit(micropython, tmp_path):
    """device/features_viper.py (native code) gives host/features.py's integers for 1, 3, 6
    and the most channels, on windows that wrap around the ring, allocating nothing."""
    rng = np.random.default_rng(43)
    cases = viper_cases(rng)
    assert {x.shape[1] for x in cases} >= {1, 3, 6, MAX_CHANNELS}
    _device_parity(micropython, tmp_path, cases, rng, module="features_viper")


def test_viper_features_argument_errors(micropython):
    """The native features check their arguments as the portable ones do."""
    out = run_micropython(
        micropython,
        "from array import array\n"
        "from device.features_viper import window_features\n"
        "try:\n"
        "    window_features(array('h', bytes(24)), 2, 6, 6, 4, array('i', bytes(56)))\n"
        "except ValueError as e:\n"
        "    print(e)\n",
    )
    assert out.strip() == "features: start must be in [0, 6), found 6"


def test_device_features_equal_host_on_both_shared_datasets(micropython, tmp_path, datasets):
    """Every window of both shared datasets (converted to counts at the stated full scale),
    at the demo's window and hop, computed by the board's code equals the host's."""
    from microprop.host import pipeline

    rng = np.random.default_rng(5)
    cases = []
    for source in ("shoulder", "basic_motions"):
        log = pipeline.load_log(source)
        window, hop = pipeline.default_window(log)
        w = make_windows(log, window, hop)
        cases += [log.counts[s : s + window] for s in w.starts.tolist()]
    assert len(cases) > 4000
    _device_parity(micropython, tmp_path, cases, rng)
    _device_parity(micropython, tmp_path, cases, rng, module="features_viper")


def test_device_features_under_cpython_and_output_offset():
    x = np.array([[1, -5], [3, 7], [2, 0], [6, 1]])
    ring = array("h", [0] * 12)
    for j in range(4):  # capacity 6, window starts at frame 4 and wraps
        ring[((4 + j) % 6) * 2] = int(x[j, 0])
        ring[((4 + j) % 6) * 2 + 1] = int(x[j, 1])
    out = array("i", [99] * 16)
    dev.window_features(ring, 2, 6, 4, 4, out, 2)
    assert out[:2].tolist() == [99, 99]
    assert out[2:].tolist() == window_features(x).tolist()


@pytest.mark.parametrize(
    "args, message",
    [
        ((0, 6, 0, 4), "n_channels must be >= 1"),
        ((2, 6, 0, 0), "length must be in"),
        ((2, 6, 0, 7), "length must be in"),
        ((2, 6, 6, 4), r"start must be in \[0, 6\)"),
        ((2, 7, 0, 4), "buffer holds 12 values, expected >= 14"),
        ((3, 4, 0, 4), "out holds 16 values, expected >= 21"),
    ],
)
def test_device_argument_errors(args, message):
    n_channels, capacity, start, length = args
    with pytest.raises(ValueError, match="features: " + message):
        dev.window_features(array("h", [0] * 12), n_channels, capacity, start, length, [0] * 16)


# ---------------------------------------------------------------------------------------------
# windows cut from logs


def toy_log():
    # recording r1: 10 samples, label a a a a a a b b b b; recording r2: 4 samples of c.
    labels = ["a"] * 6 + ["b"] * 4 + ["c"] * 4
    return SensorLog(
        channels=["ax"],
        counts=np.arange(14, dtype=np.int64)[:, None],
        labels=np.array(labels),
        subjects=np.array(["s1"] * 10 + ["s2"] * 4),
        recordings=np.array(["r1"] * 10 + ["r2"] * 4),
        path="toy.csv",
    )


def test_make_windows_stays_in_recordings_and_labels():
    w = make_windows(toy_log(), 3, 2)
    # r1 starts 0 2 4 6 (4 -> samples 4..6 mixes a/b: dropped); r2 starts 10 (12 too late).
    assert w.starts.tolist() == [0, 2, 6, 10]
    assert w.y.tolist() == ["a", "a", "b", "c"]
    assert w.subjects.tolist() == ["s1", "s1", "s1", "s2"]
    assert w.recordings.tolist() == ["r1", "r1", "r1", "r2"]
    assert w.X.shape == (4, 7)
    assert w.X[0].tolist() == window_features(col([0, 1, 2])).tolist()
    assert w.names == feature_names(["ax"])


def test_make_windows_errors():
    log = toy_log()
    with pytest.raises(ValueError, match="window length must be in"):
        make_windows(log, 0, 1)
    with pytest.raises(ValueError, match="window length must be in"):
        make_windows(log, MAX_WINDOW + 1, 1)
    with pytest.raises(ValueError, match="hop must be >= 1"):
        make_windows(log, 3, 0)
    with pytest.raises(UserError, match=r"toy.csv: .*longer than every recording \(longest 10\)"):
        make_windows(log, 11, 1)


def test_subject_split():
    train, test = subject_split(np.array(["1", "2", "3", "2"]), [2])
    assert train.tolist() == [True, False, True, False]
    assert test.tolist() == [False, True, False, True]
    with pytest.raises(UserError, match="unknown test subject '9'"):
        subject_split(np.array(["1", "2"]), ["9"])
    with pytest.raises(UserError, match="leaves the train set empty"):
        subject_split(np.array(["1", "1"]), ["1"])
    with pytest.raises(UserError, match="leaves the test set empty"):
        subject_split(np.array(["1", "1"]), [])


def test_make_windows_on_shoulder_data(datasets):
    log = load_shoulder(datasets)
    w = make_windows(log, 100, 50)
    # Expected count: an independent loop over contiguous recordings.
    expected, starts = 0, []
    rec, lab = log.recordings.tolist(), log.labels.tolist()
    i = 0
    while i < len(rec):
        j = i
        while j < len(rec) and rec[j] == rec[i]:
            j += 1
        for s in range(i, j - 100 + 1, 50):
            if len(set(lab[s : s + 100])) == 1:
                starts.append(s)
        i = j
    expected = len(starts)
    assert len(w) == expected > 4000
    assert w.starts.tolist() == starts
    assert w.X.shape == (expected, 42)
    for s, y in zip(w.starts, w.y, strict=True):  # constant labels over every window
        assert set(lab[s : s + 100]) == {y}
    lo, hi = feature_bounds(6)
    assert np.all((w.X >= lo) & (w.X <= hi))
    k = len(w) // 2
    assert w.X[k].tolist() == window_features(log.counts[w.starts[k] : w.starts[k] + 100]).tolist()


# ---------------------------------------------------------------------------------------------
# the 31-bit bound on a 32-bit VM (small ints end at 2**30 - 1, like ESP32 and RP2040)

WASM_PACKAGE = (
    ROOT / "tests" / "wasm" / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"
)
WASM_RUNNER = r"""
import { loadMicroPython } from "%s";
import fs from "fs";
let out = "";
const mp = await loadMicroPython({ stdout: (line) => { out += line + "\n"; } });
mp.FS.mkdir("/device");
mp.FS.writeFile("/device/__init__.py", fs.readFileSync("%s"));
mp.FS.writeFile("/device/features.py", fs.readFileSync("%s"));
mp.FS.writeFile("/windows.bin", fs.readFileSync(process.argv[2]));
mp.runPython("import sys\nsys.path.append('/')\nWINDOWS = '/windows.bin'\n"
             + fs.readFileSync(process.argv[3], "utf8"));
process.stdout.write(out);
"""


def test_device_features_on_32_bit_vm(tmp_path):
    """Adversarial windows under heap_lock on the 32-bit WebAssembly port: a big int fails."""
    node = shutil.which("node")
    if not node or not (WASM_PACKAGE / "micropython.mjs").exists():
        if IN_CI:
            pytest.fail("node or the MicroPython WebAssembly port (tests/wasm) is missing")
        pytest.skip("node or the MicroPython WebAssembly port (tests/wasm) is missing")
    cases = adversarial_windows(np.random.default_rng(7))
    blob = [struct.pack("<I", len(cases))]
    for x in cases:
        n = len(x)
        blob += [struct.pack("<HHHH", 1, n, 0, n), x.astype(np.int16).tobytes()]
    (tmp_path / "windows.bin").write_bytes(b"".join(blob))
    (tmp_path / "parity.py").write_text(PARITY_SCRIPT.replace("FEATURES_MODULE", "features"))
    runner = tmp_path / "run.mjs"
    runner.write_text(
        WASM_RUNNER
        % (
            WASM_PACKAGE / "micropython.mjs",
            ROOT / "device" / "__init__.py",
            ROOT / "device" / "features.py",
        )
    )
    proc = subprocess.run(
        [node, str(runner), str(tmp_path / "windows.bin"), str(tmp_path / "parity.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == len(cases), proc.stdout[-3000:] + proc.stderr[-3000:]
    for line, x in zip(lines, cases, strict=True):
        assert [int(v) for v in line.split()] == window_features(x).tolist()


def test_windows_never_span_a_break():
    log = toy_log()
    assert make_windows(log, 3, 1).starts.tolist() == [0, 1, 2, 3, 6, 7, 10, 11]
    log.breaks = np.array([2, 8])  # e.g. a gap in t_ms before row 2 and left-out rows before 8
    assert make_windows(log, 3, 1).starts.tolist() == [2, 3, 10, 11]


def test_no_window_of_one_label_names_the_cause():
    log = toy_log()
    log.labels = np.array(["a", "b"] * 7)  # a label that changes every row: a wrong column
    with pytest.raises(UserError) as e:
        make_windows(log, 3, 1, "window of 3 samples (--window)")
    assert str(e.value) == (
        "toy.csv: features: no window of 3 samples (--window) has one label throughout: the "
        "longest stretch of one label in one recording is 1 sample (is it the label column?)"
    )
