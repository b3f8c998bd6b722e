"""Board training (device/train.py) equals the NumPy reference (host/trainref.py) bit for bit.

Runs on: host (pytest), plus the `micropython` binary and, when installed, the 32-bit
WebAssembly port (tests/wasm_runner.py).

One sweep: 500 training steps for each mode ("last", "bias", "all"), hidden activation
(relu, sigmoid, tanh) and mini-batch (1, 8) on quantized random MLPs with teacher labels,
250 steps each on extreme random QModels (host.reference.random_qmodel, wild scales, random
labels), and 500 steps per mode and batch on a model trained and quantized on synthetic
sensor data, plus a few cases at lr_shift 30 (update shifts past the machine word) and a few
with a nonzero hidden_shift (hidden layers at a slower rate than the last). After every
125 steps the int8 weights, biases, master weights, PRNG state and the count of correct
predictions are compared. A run is named forward/training kernel: the Unix port runs the sweep
as portable/portable, viper/viper (device/kernel_viper.py and device/kernel_train_viper.py,
the default there) on every step, and viper/portable and portable/viper to the first
checkpoint; the WebAssembly port (no viper) runs portable/portable to the first checkpoint and
CPython runs it on one model. Every step runs inside micropython.heap_lock().
"""

import binascii

import numpy as np
import pytest

from microprop.device import prng as dprng
from microprop.device import train as dtrain
from microprop.device import train_plan
from microprop.device.infer import Model
from microprop.host import modelfile, reference, trainref

from .conftest import run_micropython
from .helpers import ACTS, data_model, finish_micropython, mlp_model, start_micropython
from .wasm_runner import require_wasm, run_wasm

SEED = 20240613
MODES = dtrain.LEARN_MODES
BATCHES = (1, 8)
N_STEPS = 500
N_STEPS_EXTREME = 250
CHECK_EVERY = 125
# Per model kind and batch: update shifts from below 0 (exact left shifts) to above 16 (the
# stochastic rounding keeps the top 16 dropped bits).
LR_SHIFTS = {"mlp": {1: 6, 8: 13}, "rand": {1: 5, 8: 9}, "data": {1: 6, 8: 8}}
# (model, mode, batch) run once more at lr_shift 30: shifts of 31 and more, clamped in viper.
HUGE_SHIFT_CASES = (("mlp-tanh", "all", 1), ("rand-relu", "all", 8), ("rand-sigmoid", "bias", 1))
# (model, mode, batch, lr_shift, hidden_shift): discriminative fine-tuning, the hidden layers'
# update shifts raised by hidden_shift (past 31 in the last case: clamped in viper).
HIDDEN_SHIFT_CASES = (
    ("mlp-relu", "all", 1, 6, 2),
    ("mlp-sigmoid", "bias", 8, 13, 3),
    ("rand-tanh", "all", 8, 9, 4),
    ("data", "all", 1, 6, 1),
    ("rand-relu", "all", 1, 5, 30),
)
# Forward/training kernels run on every step of the sweep on the Unix port: each kernel's
# integer math, proven alone.
UNIX_KERNELS = ("portable/portable", "viper/viper")
# Mixed kernels, run to the first checkpoint: that a portable forward pass feeds a viper
# trainer and the other way round (the buffers they hand over), which every case shows in its
# first CHECK_EVERY steps as well as in all of them.
MIXED_KERNELS = ("viper/portable", "portable/viper")

# Runs each case in the manifest; prints one line per checkpoint. Steps run in heap_lock.
SWEEP = """
import binascii, micropython, sys
from array import array
from device.infer import Model
from device.train import Trainer

def crc(buf):
    return binascii.crc32(buf) & 0xFFFFFFFF

def locked_step(t, raw, label):
    micropython.heap_lock()
    try:
        return t.step(raw, label)[0]
    finally:
        micropython.heap_unlock()

def emit(case, kernel, t, m):
    out = ["case", case, kernel, str(t.steps), str(t.n_correct), str(t.state)]
    for k in range(len(m.layers)):
        out.append("%08x" % crc(m.layers[k]["w"]))
        out.append("%08x" % crc(m.layers[k]["b"]))
        mw = t.master_w[k]
        out.append("-" if mw is None else "%08x" % crc(mw))
    print(" ".join(out))

def run(d, kernels, manifest):
    with open(d + "/" + manifest) as f:
        lines = f.read().split("\\n")
    for line in lines:
        if not line:
            continue
        case, model, mode, batch, lr_shift, hidden_shift, seed, steps, every = line.split()
        with open("%s/%s.raw" % (d, model), "rb") as f:
            raw = array("i", f.read())
        with open("%s/%s.lab" % (d, model), "rb") as f:
            labels = bytearray(f.read())
        for kernel in kernels:
            fwd, train = kernel.split("/")
            m = Model("%s/%s.mpm" % (d, model), kernel=fwd)
            hs = int(hidden_shift)
            if train == fwd:  # the default: the training kernel follows the model's
                t = Trainer(m, mode, int(lr_shift), int(batch), int(seed), hidden_shift=hs)
            else:
                t = Trainer(m, mode, int(lr_shift), int(batch), int(seed), kernel=train,
                            hidden_shift=hs)
            if m.kernel != fwd or t.kernel != train:
                raise SystemExit("kernels %s/%s, expected %s" % (m.kernel, t.kernel, kernel))
            n_in = m.n_inputs
            x = array("i", bytes(4 * n_in))
            n_samples = len(labels)
            every = int(every)
            for s in range(int(steps)):
                n = s % n_samples
                for i in range(n_in):
                    x[i] = raw[n * n_in + i]
                locked_step(t, x, labels[n])
                if (s + 1) % every == 0:
                    emit(case, kernel, t, m)

run(sys.argv[1], sys.argv[2].split(","), sys.argv[3])
"""


# --- models ---


def extreme_model(rng, act, lr_shift):
    """A random_qmodel (wild scales and weights) whose hidden layers are all `act` and that
    passes the training bound proof in every mode at batch 8."""
    while True:
        q = reference.random_qmodel(rng, n_layers=3, max_units=12, last="softmax")
        if q.layers[-1].n_out < 2 or any(layer.act != act for layer in q.layers[:-1]):
            continue
        try:
            for mode in MODES:
                trainref.check_train_bounds(q, mode, 8, lr_shift)
        except ValueError:
            continue
        raw = reference.random_raw(rng, q, 200)
        return q, raw, rng.integers(0, q.layers[-1].n_out, size=len(raw))


def _crc(a, dtype):
    return "%08x" % (binascii.crc32(np.ascontiguousarray(a, dtype=dtype).tobytes()) & 0xFFFFFFFF)


def expected_lines(
    case, kernel, q, raw, labels, mode, batch, lr_shift, seed, steps, every, hidden_shift=0
):  # fmt: skip
    """The checkpoint lines the sweep must print, from host/trainref.TrainRef."""
    ref = trainref.TrainRef(q, mode, lr_shift, batch, seed, hidden_shift)
    lines = []
    for s in range(steps):
        n = s % len(labels)
        ref.step(raw[n], int(labels[n]))
        if (s + 1) % every == 0:
            out = ["case", case, kernel, str(ref.steps), str(ref.n_correct), str(ref.state)]
            for k, layer in enumerate(ref.qmodel.layers):
                out += [_crc(layer.w, "i1"), _crc(layer.b, "<i4")]
                mw = ref.master_w[k]
                out.append("-" if mw is None else _crc(mw, "<i2"))
            lines.append(" ".join(out))
    return lines


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Models, samples and the manifest on disk; the expected lines per case (kernel-free)."""
    d = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(SEED)
    models, cases = {}, []
    for act in ACTS:
        models["mlp-" + act] = mlp_model(rng, [8, 16, 12, 4], act)
        models["rand-" + act] = extreme_model(rng, act, 5)
    models["data"] = data_model()
    for name, (q, raw, labels) in models.items():
        modelfile.write_model(d / (name + ".mpm"), q)
        (d / (name + ".raw")).write_bytes(np.asarray(raw, dtype="<i4").tobytes())
        (d / (name + ".lab")).write_bytes(np.asarray(labels, dtype="u1").tobytes())
    seeds = iter([0, 1, 7, 0xFFFF, 12345, 0x10001] * 20)
    for name in models:
        for mode in MODES:
            for batch in BATCHES:
                kind = name.split("-")[0]
                steps = N_STEPS_EXTREME if kind == "rand" else N_STEPS
                lr_shift = LR_SHIFTS[kind][batch]
                cases.append((name, mode, batch, lr_shift, next(seeds), steps, 0))
    for name, mode, batch in HUGE_SHIFT_CASES:
        cases.append((name, mode, batch, 30, next(seeds), 2 * CHECK_EVERY, 0))
    for name, mode, batch, lr_shift, hidden_shift in HIDDEN_SHIFT_CASES:
        steps = 2 * CHECK_EVERY
        cases.append((name, mode, batch, lr_shift, next(seeds), steps, hidden_shift))
    manifest = []
    expected = {}
    for i, (name, mode, batch, lr_shift, seed, steps, hidden_shift) in enumerate(cases):
        manifest.append(
            "%d %s %s %d %d %d %d %d %d"
            % (i, name, mode, batch, lr_shift, hidden_shift, seed, steps, CHECK_EVERY)
        )
        q, raw, labels = models[name]
        args = (q, raw, labels, mode, batch, lr_shift, seed, steps, CHECK_EVERY, hidden_shift)
        expected[i] = expected_lines(str(i), "{kernel}", *args)
    (d / "manifest.txt").write_text("\n".join(manifest) + "\n")
    (d / FIRST.name).write_text(FIRST.manifest(manifest))
    return d, models, cases, expected


def _compare(out, sweep, kernels):
    _, _, cases, expected = sweep
    got = out.splitlines()
    want = []
    for kernel in kernels:
        for i in range(len(cases)):
            want += [line.replace("{kernel}", kernel) for line in expected[i]]
    assert sorted(got) == sorted(want) or _first_difference(got, want, cases)
    return len(got)


def _first_difference(got, want, cases):
    got_by_key = {tuple(line.split()[1:4]): line for line in got}
    for line in want:
        key = tuple(line.split()[1:4])
        if got_by_key.get(key) != line:
            name, mode, batch, lr_shift, seed, _, hidden_shift = cases[int(key[0])]
            pytest.fail(
                "case %s (%s, mode %s, batch %d, lr_shift %d, hidden_shift %d, seed %d, "
                "kernel %s) at step %s:\n"
                "  device:    %s\n  reference: %s\n  fields: case id kernel steps n_correct "
                "state then per layer crc(w) crc(b) crc(master_w)"
                % (key[0], name, mode, batch, lr_shift, hidden_shift, seed, key[1], key[2],
                   got_by_key.get(key), line)
            )  # fmt: skip
    pytest.fail("device printed lines the reference does not expect")


def test_sweep_covers_the_contract(sweep):
    _, models, cases, _ = sweep
    assert {(c[1], c[2]) for c in cases} == {(m, b) for m in MODES for b in BATCHES}
    shifts = set()
    for name, mode, _, lr_shift, _, _, hidden_shift in cases:
        for p in trainref.train_plan(models[name][0], mode, lr_shift, hidden_shift):
            shifts |= {p["sw"]} if p["trains_w"] else set()
            shifts |= {p["sb"]} if p["trains_b"] else set()
    # hidden_shift in the modes that train hidden layers, with each kind of kernel run.
    assert {(c[1], c[2]) for c in cases if c[6]} >= {("all", 1), ("all", 8), ("bias", 8)}
    # Exact left shifts, no shift, rounding of fewer and more than 16 bits, and shifts of 31
    # or more (the viper kernels clamp those at 31).
    assert min(shifts) < 0 and 0 in shifts and max(shifts) > 16, sorted(shifts)
    assert {s for s in shifts if 16 < s < 31} and max(shifts) >= 31, sorted(shifts)
    for act in ACTS:
        for kind in ("mlp-", "rand-"):
            q = models[kind + act][0]
            assert [layer.act for layer in q.layers[:-1]] == [act, act]
            assert q.layers[-1].act == "softmax"
    # The quantized MLPs learn their teacher: training is meaningful, not just exact.
    q, raw, labels = models["mlp-relu"]
    before = np.mean(reference.predict(q, raw)[0] == labels)
    ref = trainref.train_steps(q, raw, labels, "all", 6, 1)
    after = np.mean(reference.predict(ref.qmodel, raw)[0] == labels)
    assert after > before + 0.1, (before, after)


class FIRST:
    """The sweep's manifest cut to each case's first checkpoint (CHECK_EVERY steps)."""

    name = "manifest_first.txt"

    @staticmethod
    def manifest(lines):
        cut = []
        for line in lines:
            f = line.split()
            f[7] = str(CHECK_EVERY)  # steps: the first checkpoint only
            cut.append(" ".join(f))
        return "\n".join(cut) + "\n"

    @staticmethod
    def expected(sweep):
        d, models, cases, expected = sweep
        return d, models, cases, {i: lines[:1] for i, lines in expected.items()}


def test_training_under_micropython_equals_reference(sweep, micropython):
    """Every step with each kernel alone, and the first checkpoint with mixed kernels: two
    MicroPython processes, run side by side."""
    d = sweep[0]
    runs = {
        "whole": (UNIX_KERNELS, "manifest.txt"),
        "mixed": (MIXED_KERNELS, FIRST.name),
    }
    procs = {
        name: start_micropython(micropython, SWEEP, args=(str(d), ",".join(k), manifest))
        for name, (k, manifest) in runs.items()
    }
    out = {name: finish_micropython(proc) for name, proc in procs.items()}
    n_checks = sum(c[5] // CHECK_EVERY for c in sweep[2])
    assert _compare(out["whole"], sweep, UNIX_KERNELS) == len(UNIX_KERNELS) * n_checks
    first = FIRST.expected(sweep)
    assert _compare(out["mixed"], first, MIXED_KERNELS) == len(MIXED_KERNELS) * len(sweep[2])


def test_training_on_32bit_wasm_port_equals_reference(sweep):
    """Every case of the sweep to its first checkpoint (CHECK_EVERY steps), bit for bit.

    The Unix port runs every step of every case through the same portable kernel (and the
    viper ones), so the contract is proved there; this port adds only the 31-bit small int and
    32-bit word, which every update path, shift (lr_shift 30 and hidden_shift included), batch
    and mode already meets in its first CHECK_EVERY steps. Running the rest again here would
    cost three times the CPU for nothing the Unix run does not already check.
    """
    require_wasm()
    d, _, cases, _ = sweep
    files = {"/data/" + p.name: p.read_bytes() for p in d.iterdir()}
    out = run_wasm(
        SWEEP, files=files, args=("/data", "portable/portable", FIRST.name), timeout=1200
    )
    assert _compare(out, FIRST.expected(sweep), ("portable/portable",)) == len(cases)


def test_training_under_cpython_equals_reference(sweep):
    _, models, _, _ = sweep
    q, raw, labels = models["mlp-tanh"]
    for mode, hidden_shift in [(mode, 0) for mode in MODES] + [("all", 3), ("bias", 1)]:
        m = Model(modelfile.to_bytes(q))
        t = dtrain.Trainer(m, mode, 6, 4, 99, hidden_shift=hidden_shift)
        assert (m.kernel, t.kernel) == ("portable", "portable")
        ref = trainref.TrainRef(q, mode, 6, 4, 99, hidden_shift)
        for n in range(200):
            got = t.step([int(v) for v in raw[n]], int(labels[n]))
            assert tuple(got) == ref.step(raw[n], int(labels[n])), (mode, n)
        for k, layer in enumerate(ref.qmodel.layers):
            assert list(m.layers[k]["w"]) == layer.w.ravel().tolist(), (mode, k)
            assert list(m.layers[k]["b"]) == layer.b.tolist(), (mode, k)
        assert t.state == ref.state


def test_hidden_shift_slows_only_the_layers_below_the_last(sweep):
    q = sweep[1]["mlp-relu"][0]
    base = trainref.train_plan(q, "all", 6)
    slow = trainref.train_plan(q, "all", 6, hidden_shift=3)
    for k, (a, b) in enumerate(zip(base, slow, strict=True)):
        extra = 3 if k < len(base) - 1 else 0
        assert (b["sw"], b["sb"]) == (a["sw"] + extra, a["sb"] + extra), k
    t = dtrain.Trainer(Model(modelfile.to_bytes(q)), "all", 6, 1, hidden_shift=3)
    assert [(layer.sw, layer.sb) for layer in t.layers] == [(p["sw"], p["sb"]) for p in slow]
    # The float baseline: lr * 2**-3 below the last layer, lr on it.
    q1, raw, labels = sweep[1]["mlp-relu"]
    net0 = trainref.dequantize(q1)
    net, _ = trainref.float_finetune(q1, raw[:1], labels[:1], "all", lr=0.5, hidden_shift=3)
    dW, _ = trainref.float_gradients(net0, trainref.float_inputs(net0, raw[:1]), labels[:1])
    for k in range(3):
        lr = 0.5 * (2.0**-3 if k < 2 else 1.0)
        assert np.allclose(net["W"][k], net0["W"][k] - lr * dW[k]), k
    # A trainer in "last" mode does not depend on it.
    last = dtrain.Trainer(Model(modelfile.to_bytes(q)), "last", 6, 1, hidden_shift=5)
    assert last.layers[-1].sw == base[-1]["sw"]


def test_device_plan_is_the_host_plan(sweep):
    """device/train_plan.plan gives every layer the numbers of host/trainref.train_plan: what
    learns, the scales and shifts, the input range and the bias limit."""
    _, models, cases, _ = sweep
    for name, mode, _, lr_shift, _, _, hidden_shift in cases:
        q = models[name][0]
        host = trainref.train_plan(q, mode, lr_shift, hidden_shift)
        board = train_plan.plan(Model(modelfile.to_bytes(q)).layers, mode, lr_shift, hidden_shift)
        for k, (h, b) in enumerate(zip(host, board, strict=True)):
            keys = set(h) & set(b)
            assert keys >= {"trains_w", "trains_b", "f_delta", "sback", "sw", "sb", "bias_limit"}
            assert {key: b[key] for key in keys} == {key: h[key] for key in keys}, (name, mode, k)


# --- heap_lock, memory per mode, defaults, refusals ---

HEAP_LOCK = """
import micropython
from array import array
from device.infer import Model
from device.train import Trainer

def allocates():
    micropython.heap_lock()
    try:
        return [1, 2, 3]
    finally:
        micropython.heap_unlock()

try:
    allocates()
    print("lock-effective no")
except MemoryError:
    print("lock-effective yes")
for kernel in ("portable", "viper"):
    for mode in ("last", "bias", "all"):
        for batch in (1, 3):
            m = Model(%r, kernel=kernel)
            t = Trainer(m, mode, 6, batch, 5)
            raw_list = [1000 * (i - 3) for i in range(m.n_inputs)]
            raw_array = array("i", raw_list)
            micropython.heap_lock()
            try:
                for n in range(7):
                    r = t.step(raw_list if n %% 2 else raw_array, n %% m.n_outputs)
                c = r[0]
            finally:
                micropython.heap_unlock()
            print(kernel, t.kernel, mode, batch, t.steps, t.n_correct, t.state, c)
"""


def test_training_step_allocates_nothing_under_heap_lock(tmp_path, micropython):
    rng = np.random.default_rng(11)
    q, _, _ = mlp_model(rng, [7, 10, 6, 3], "tanh")
    path = tmp_path / "m.mpm"
    modelfile.write_model(path, q)
    lines = run_micropython(micropython, HEAP_LOCK % str(path)).splitlines()
    assert lines[0] == "lock-effective yes"
    i = 1
    for kernel in ("portable", "viper"):
        for mode in MODES:
            for batch in (1, 3):
                ref = trainref.TrainRef(q, mode, 6, batch, 5)
                raw = [1000 * (i - 3) for i in range(q.layers[0].n_in)]
                for n in range(7):
                    c, _ = ref.step(np.array(raw), n % 3)
                want = "%s %s %s %d 7 %d %d %d" % (
                    kernel, kernel, mode, batch, ref.n_correct, ref.state, c
                )  # fmt: skip
                assert lines[i] == want
                i += 1


def test_memory_only_for_what_learns():
    rng = np.random.default_rng(12)
    q, _, _ = mlp_model(rng, [5, 9, 7, 3], "relu")
    m = Model(modelfile.to_bytes(q))
    last = dtrain.Trainer(m, "last", 6, 1)
    assert [mw is None for mw in last.master_w] == [True, True, False]
    assert len(last.master_w[2]) == 3 * 7 and last.master_w[2].typecode == "h"
    (top,) = last.layers  # only the last layer learns, and gets an error signal
    assert top.master_w is last.master_w[2] and len(top.delta) == 3
    assert top.gw is None and top.gb is None  # batch 1: no gradient sums
    bias = dtrain.Trainer(Model(modelfile.to_bytes(q)), "bias", 6, 4)
    assert all(mw is None for mw in bias.master_w)
    assert all(layer.master_w is None and layer.gw is None for layer in bias.layers)
    assert [len(layer.gb) for layer in bias.layers] == [9, 7, 3]
    assert [len(layer.delta) for layer in bias.layers] == [9, 7, 3]
    full = dtrain.Trainer(Model(modelfile.to_bytes(q)), "all", 6, 4)
    assert [len(mw) for mw in full.master_w] == [45, 63, 21]
    assert [(layer.gw.typecode, len(layer.gw)) for layer in full.layers] == [
        ("i", 45),
        ("i", 63),
        ("i", 21),
    ]


def test_defaults_come_from_the_model_file():
    rng = np.random.default_rng(13)
    q, _, _ = mlp_model(rng, [5, 6, 3], "relu")
    q.training = {"learn": "bias", "lr_shift": 9, "batch": 4}
    t = dtrain.Trainer(Model(modelfile.to_bytes(q)))
    assert (t.mode, t.lr_shift, t.batch) == ("bias", 9, 4)
    q.training = {}
    t = dtrain.Trainer(Model(modelfile.to_bytes(q)))
    assert (t.mode, t.lr_shift, t.batch) == ("last", dtrain.DEFAULT_LR_SHIFT, 1)


def test_device_and_host_prove_the_same_maximum_batch():
    rng = np.random.default_rng(14)
    n_checked = n_refused = 0
    while n_checked < 60:
        q = reference.random_qmodel(rng, n_layers=int(rng.integers(1, 4)), last="softmax")
        if q.layers[-1].n_out < 2:
            continue
        for mode in MODES:
            lr_shift = int(rng.integers(0, 12))
            try:
                host = trainref.check_train_bounds(q, mode, 1, lr_shift)
            except ValueError as e:
                assert str(e).startswith("train bounds: layer ")
                with pytest.raises(ValueError, match="^train: layer "):
                    dtrain.Trainer(Model(modelfile.to_bytes(q)), mode, lr_shift, 1)
                n_refused += 1
                continue
            t = dtrain.Trainer(Model(modelfile.to_bytes(q)), mode, lr_shift, 1)
            assert t.max_batch == host["max_batch"], (mode, lr_shift)
            if host["max_batch"] < 2**20:
                with pytest.raises(ValueError, match="over the proven maximum"):
                    dtrain.Trainer(Model(modelfile.to_bytes(q)), mode, lr_shift, t.max_batch + 1)
                with pytest.raises(ValueError, match="train bounds: .* may reach"):
                    trainref.check_train_bounds(q, mode, t.max_batch + 1, lr_shift)
            n_checked += 1
    assert n_refused > 0


def test_bound_proof_names_the_stage():
    rng = np.random.default_rng(15)
    q, _, _ = mlp_model(rng, [4, 300, 40, 3], "relu")
    # 300 hidden units feed 40 more: W^T delta over 40 units of |delta| <= 2**15 fits; the
    # batch is limited by layer 1's weight gradients, |delta * (x - zp_x)| <= 2**15 * 255.
    proof = trainref.check_train_bounds(q, "all", 8, 6)
    assert proof["max_batch"] == 128 and proof["stage"] == "layer 1 weight update"
    with pytest.raises(ValueError, match=r"layer 1 weight gradient sum may reach \d+ \(all, b"):
        trainref.check_train_bounds(q, "all", 129, 6)
    wide, _, _ = mlp_model(rng, [4, 20, 300, 3], "relu")  # 300 units above a hidden layer
    assert trainref.check_train_bounds(wide, "last", 8, 6)["max_batch"] > 8
    with pytest.raises(
        ValueError, match="layer 1 backward sum may reach 1248460800"
    ):  # 127*300*2**15
        trainref.check_train_bounds(wide, "all", 1, 6)
    with pytest.raises(ValueError, match="train: layer 1 backward sum"):
        dtrain.Trainer(Model(modelfile.to_bytes(wide)), "all", 6, 1)


def test_trainer_refuses_bad_arguments():
    rng = np.random.default_rng(16)
    q, _, _ = mlp_model(rng, [4, 5, 3], "relu")
    m = Model(modelfile.to_bytes(q))
    for kwargs, msg in (
        ({"mode": "some"}, "mode 'some', expected one of last, bias, all"),
        ({"batch": 0}, "batch 0, expected an int >= 1"),
        ({"lr_shift": -1}, "lr_shift -1, expected an int in 0..30"),
        ({"hidden_shift": 31}, "hidden_shift 31, expected an int in 0..30"),
    ):
        with pytest.raises(ValueError, match="^train: " + msg):
            dtrain.Trainer(m, **kwargs)
    with pytest.raises(ValueError, match="^train: kernel 'fast', expected 'portable' or 'viper'"):
        dtrain.Trainer(m, kernel="fast")
    with pytest.raises(ValueError, match="^train: kernel 'viper' unavailable on this port"):
        dtrain.Trainer(m, kernel="viper")  # CPython: no viper
    t = dtrain.Trainer(m)
    with pytest.raises(ValueError, match="label 3, expected 0..2"):
        t.step([0] * 4, 3)
    q.layers[-1].act = "linear"
    with pytest.raises(ValueError, match="expected softmax"):
        dtrain.Trainer(Model(modelfile.to_bytes(q)))


# --- the random number generator ---

PRNG_SCRIPT = """
from device.prng import seed_state, xorshift16
for seed in (1, 0):
    x = seed_state(seed)
    out = []
    for _ in range(10):
        x = xorshift16(x)
        out.append(x)
    print(" ".join(str(v) for v in out))
x = 1
n = 0
while True:
    x = xorshift16(x)
    n += 1
    if x == 1:
        break
print(n)
"""


def _prng_expected():
    lines = []
    for seed in (1, 0):
        r, _ = trainref.draws(trainref.seed_state(seed), 10)
        lines.append(" ".join(str(v) for v in r.tolist()))
    return lines + ["65535"]


# device/prng.py's docstring: the states after seed 1 and after the default seed
PRNG_VECTORS = {
    1: [33153, 24609, 59801, 11787, 46494, 55715, 12071, 17913, 39973, 27874],
    0xACE1: [54031, 61861, 5940, 65394, 5969],
}


def test_prng_test_vectors_on_host():
    for seed, vector in PRNG_VECTORS.items():
        x = y = seed
        for want in vector:
            x, y = trainref.xorshift16(x), dprng.xorshift16(y)
            assert x == y == want
        r, state = trainref.draws(seed, len(vector))
        assert r.tolist() == vector and state == vector[-1]
    # The docstring of device/prng.py lists the same vectors.
    for vector in PRNG_VECTORS.values():
        assert ", ".join(str(v) for v in vector) in dprng.__doc__
    assert dprng.seed_state(0) == trainref.seed_state(0) == 0xACE1
    assert dprng.seed_state(0x12345) == trainref.seed_state(0x12345) == 0x2345


def test_prng_test_vectors_under_micropython(micropython):
    assert run_micropython(micropython, PRNG_SCRIPT).splitlines() == _prng_expected()


def test_prng_on_32bit_wasm_port():
    require_wasm()
    assert run_wasm(PRNG_SCRIPT).splitlines() == _prng_expected()
