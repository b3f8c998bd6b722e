"""Board inference (device/infer.py) equals the NumPy reference (host/reference.py) bit for bit.

Runs on: host (pytest), plus the `micropython` binary.

One sweep: 200 random models within the numeric contract, each with 50 random raw feature
vectors plus raw edges (all -32768, all 32767, all at the offsets) and int8 layer-0 edges (all
-128, all 127, all 0). Every layer's output, the class and the scores are compared, for the
viper kernel on all of them and, on the edges and the first 4 random inputs of every model
(helpers.sweep_again), for the portable kernel and for the .mpy build of both (one MicroPython
process each, run side by side); every predict runs inside heap_lock. The portable kernel is
also run under CPython on all inputs of 40 models, and on the 32-bit WebAssembly port.
"""

import os
import subprocess

import numpy as np
import pytest

from microprop.device import fixedpoint as dfp
from microprop.device import infer
from microprop.host import fixedpoint as hfp
from microprop.host import modelfile, reference

from .helpers import INFER_SWEEP as SWEEP
from .helpers import (
    N_MODELS,
    N_RAW,
    N_RAW_AGAIN,
    ROOT,
    compile_device,
    run_micropython,
    sweep_again,
    write_sweep,
)
from .helpers import compare_infer as _compare


@pytest.fixture(scope="module")
def device_runs(infer_sweep, micropython, tmp_path_factory):
    """Three MicroPython processes, run side by side: the viper kernel from .py on the whole
    sweep; the portable kernel from .py, and both kernels from .mpy, on its edges and first
    N_RAW_AGAIN random inputs (helpers.sweep_again) -> {name: stdout}."""
    d, cases = infer_sweep
    mpy_root = tmp_path_factory.mktemp("mpy")
    compile_device(mpy_root)
    again = write_sweep(tmp_path_factory.mktemp("again"), sweep_again(cases))
    runs = (
        ("viper", ROOT, d, "viper"),
        ("portable", ROOT, again, "portable"),
        ("mpy", mpy_root, again, "portable,viper"),
    )
    procs = {}
    for name, root, folder, kernels in runs:
        env = dict(os.environ, MICROPYPATH=str(root))
        procs[name] = subprocess.Popen(
            [micropython, "-c", SWEEP, str(folder), str(N_MODELS), kernels],
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


def test_sweep_covers_the_contract(infer_sweep):
    _, cases = infer_sweep
    lasts = {q.layers[-1].act for q, _, _ in cases}
    hidden = {layer.act for q, _, _ in cases for layer in q.layers[:-1]}
    assert lasts == {"linear", "relu", "sigmoid", "tanh", "softmax"}
    assert hidden == {"linear", "relu", "sigmoid", "tanh"}
    shifts = {layer.shift for q, _, _ in cases for layer in q.layers}
    assert 0 in shifts and 24 in shifts
    assert {len(q.layers) for q, _, _ in cases} == {1, 2, 3, 4}


def test_device_py_equals_reference(infer_sweep, device_runs):
    _, cases = infer_sweep
    n = _compare(device_runs["viper"], cases, ("viper",), ".py")
    assert n == N_MODELS * (N_RAW + 6)
    n = _compare(device_runs["portable"], sweep_again(cases), ("portable",), ".py")
    assert n == N_MODELS * (N_RAW_AGAIN + 6)


def test_device_mpy_equals_reference(infer_sweep, device_runs):
    _, cases = infer_sweep
    n = _compare(device_runs["mpy"], sweep_again(cases), ("portable", "viper"), ".mpy")
    assert n == 2 * N_MODELS * (N_RAW_AGAIN + 6)


def test_portable_kernel_under_cpython_equals_reference(infer_sweep):
    _, cases = infer_sweep
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
