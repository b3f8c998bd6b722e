"""Checkpoints (device/checkpoint.py): two slots, the newest valid one of this model loads, and a
write cut at any byte (or a killed process) leaves the previous weights.

Runs on: host (pytest). Each sweep is one script run by one `micropython` process and, the same
text, by CPython; the kill test kills real `micropython` processes; a quick check runs on the
32-bit WebAssembly port.
"""

import binascii
import os
import random
import struct
import subprocess
import sys
import time
from array import array

import pytest

from microprop.device import checkpoint

from .conftest import ROOT, run_micropython
from .wasm_runner import require_wasm, run_wasm

# Shared by every sweep script: a state of every typecode with the extremes of each, and
# helpers. Plain MicroPython, so that CPython runs the very same text.
LIB = """
import os
import struct
from array import array
from device import checkpoint as c

P = DIR + "/ckpt"
CRC = 0x9E3779B9
SHAPE = (("b", 5), ("B", 3), ("h", 4), ("H", 2), ("i", 3), ("I", 2), ("h", 0))


def state(k):
    # the state number k in every array and int, with each typecode's extremes
    lo = {"b": -128, "B": 0, "h": -32768, "H": 0, "i": -(2**31), "I": 0}
    hi = {"b": 127, "B": 255, "h": 32767, "H": 65535, "i": 2**31 - 1, "I": 2**32 - 1}
    arrays = []
    for tc, n in SHAPE:
        a = array(tc, [0] * n)
        for i in range(n):
            a[i] = (lo[tc], hi[tc], k, k + i)[i % 4]
        arrays.append(a)
    return arrays, [k, -k, 2**31 - 1, -(2**31)]


def blank(fill=7):
    arrays = []
    for tc, n in SHAPE:
        arrays.append(array(tc, [fill] * n))
    return arrays, [fill] * 4


def same(x, y):
    if len(x) != len(y):
        return False
    for i in range(len(x)):
        if list(x[i]) != list(y[i]):
            return False
    return True


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def seq_of(path):
    return struct.unpack_from("<I", read(path), 12)[0]


def load(model=CRC):
    arrays, ints = blank()
    seq, ignored = c.load(P, model, arrays, ints)
    return seq, ignored, arrays, ints


c.clear(P)
"""

ROUNDTRIP = """
for k in range(1, 7):
    arrays, ints = state(k)
    assert c.save(P, CRC, arrays, ints) == k
    # slots alternate: save k lands in slot (k - 1) % 2, the other slot keeps k - 1
    assert seq_of(P + "." + str((k - 1) % 2)) == k
    if k > 1:
        assert seq_of(P + "." + str(k % 2)) == k - 1
    seq, ignored, got, got_ints = load()
    assert seq == k and ignored == [], (seq, ignored)
    assert same(got, arrays) and got_ints == ints, (got, got_ints)
print("ok roundtrip")

# the newest slot wins whichever file holds it
write(P + ".0", read(P + ".1"))  # slot 0 <- seq 6; slot 1 gets seq 7 next
seq, ignored, got, _ = load()
assert seq == 6 and ignored == []
arrays, ints = state(7)
assert c.save(P, CRC, arrays, ints) == 7 and seq_of(P + ".1") == 7
seq, ignored, got, got_ints = load()
assert seq == 7 and same(got, arrays) and got_ints == ints
print("ok newest")

# clear removes both slots; nothing loads; the next save starts again at 1 in slot 0
c.clear(P)
assert sorted(os.listdir(DIR)) == []
seq, ignored, got, got_ints = load()
assert seq is None and ignored == [] and same(got, blank()[0]) and got_ints == blank()[1]
assert c.save(P, CRC, *state(1)) == 1 and os.listdir(DIR) == ["ckpt.0"]
print("ok clear")

# input errors raise, naming what was expected
for args in (
    (CRC, [array("f", [1.0])], []),
    (CRC, state(1)[0], [2**31]),
    (CRC, state(1)[0], [-(2**31) - 1]),
    (2**32, state(1)[0], []),
    (-1, state(1)[0], []),
):
    try:
        c.save(P, *args)
        raise RuntimeError("no error for %r" % (args,))
    except ValueError as e:
        assert str(e).startswith("checkpoint: "), e
print("ok errors")
"""

CUTS = """
A, A_INTS = state(1)
B, B_INTS = state(2)
assert c.save(P, CRC, A, A_INTS) == 1 and c.save(P, CRC, B, B_INTS) == 2
whole = read(P + ".1")
older = read(P + ".0")
n = len(whole)


def variants():
    # the newer slot cut at every byte, then with one byte flipped (all bits, one bit)
    for cut in range(n):
        yield "cut", cut, whole[:cut]
    for i in range(n):
        for mask in (0xFF, 1 << (i % 8)):
            data = bytearray(whole)
            data[i] ^= mask
            yield "flip", i, bytes(data)


count = 0
for kind, at, data in variants():
    write(P + ".1", data)
    seq, ignored, got, got_ints = load()
    assert seq == 1, (kind, at, seq, ignored)
    assert same(got, A) and got_ints == A_INTS, (kind, at)
    assert len(ignored) == 1 and ignored[0][0] == P + ".1", (kind, at, ignored)
    count += 1
print("ok older loads", count, n)

# a save after a cut write rewrites the cut slot and keeps the good one
write(P + ".1", whole[: n // 2])
assert c.save(P, CRC, B, B_INTS) == 2 and read(P + ".0") == older and read(P + ".1") == whole

# the older slot damaged, the newer intact: the newer loads
write(P + ".0", older[:-1])
seq, ignored, got, got_ints = load()
assert seq == 2 and same(got, B) and ignored[0][0] == P + ".0" and "truncated" in ignored[0][1]

# no valid slot at all: nothing loads and the caller's state is untouched
os.remove(P + ".0")
for kind, at, data in variants():
    write(P + ".1", data)
    seq, ignored, got, got_ints = load()
    assert seq is None and len(ignored) == 1, (kind, at, seq, ignored)
    assert same(got, blank()[0]) and got_ints == blank()[1], (kind, at)
print("ok untouched", count)
"""

OTHERS = """
X, Y = 0x11111111, 0xFFFFFFFF
assert c.save(P, X, *state(1)) == 1  # slot 0
assert c.save(P, Y, *state(2)) == 2  # slot 1: slot 0 is the newest of model X... of any
seq, ignored, got, _ = load(X)
assert seq == 1 and same(got, state(1)[0])
assert ignored == [(P + ".1", "belongs to another model (crc 0xffffffff, expected 0x11111111)")]
seq, ignored, got, _ = load(Y)
assert seq == 2 and same(got, state(2)[0]) and ignored[0][0] == P + ".0"
seq, ignored, got, _ = load(0x22222222)
assert seq is None and len(ignored) == 2 and same(got, blank()[0])
assert "another model" in ignored[0][1] and "another model" in ignored[1][1]

# model X saves again: it keeps its own newest (slot 0) and overwrites model Y's slot
assert c.save(P, X, *state(3)) == 3 and seq_of(P + ".0") == 1 and seq_of(P + ".1") == 3
print("ok other model")


def try_shape(arrays, ints):
    seq, ignored = c.load(P, X, arrays, ints)
    assert seq is None and len(ignored) == 2, (seq, ignored)
    for path, reason in ignored:
        assert reason.startswith("different shape"), reason
    return ignored[0][1]


arrays, ints = blank()
arrays[2] = array("h", [7] * 5)  # one item more
print(try_shape(arrays, ints))
assert list(arrays[2]) == [7] * 5 and same(arrays[:2], blank()[0][:2])
arrays, ints = blank()
arrays[3] = array("h", [7] * 2)  # 'h' for 'H'
print(try_shape(arrays, ints))
arrays, ints = blank()
print(try_shape(arrays[:-1], ints))  # one array fewer
print(try_shape(arrays, ints[:3]))  # one int fewer
assert same(arrays, blank()[0]) and ints == blank()[1]

# a new shape (another training mode) saves beside the newest checkpoint of the old one
arrays, ints = blank(5)
arrays = arrays[:3]
assert c.save(P, X, arrays, ints) == 4 and seq_of(P + ".1") == 3  # slot 0, over seq 1
seq, ignored = c.load(P, X, arrays, ints)
assert seq == 4 and len(ignored) == 1 and ignored[0][0] == P + ".1"
seq, ignored, got, _ = load(X)
assert seq == 3 and same(got, state(3)[0])
print("ok shape")

# an intact file of another format version or magic (CRC fixed up) is named as such
import binascii


def refit(data):
    body = data[:-4]
    return body + struct.pack("<I", binascii.crc32(body) & 0xFFFFFFFF)


c.clear(P)
assert c.save(P, X, *state(1)) == 1
data = read(P + ".0")
write(P + ".1", refit(data[:4] + struct.pack("<H", 4) + data[6:]))
seq, ignored, _, _ = load(X)
assert seq == 1 and ignored == [(P + ".1", "version 4, expected 2 or 3")], ignored
write(P + ".1", refit(data[:4] + struct.pack("<H", 1) + data[6:]))
seq, ignored, _, _ = load(X)
assert seq == 1 and ignored == [(P + ".1", "version 1, expected 2 or 3")], ignored
write(P + ".1", refit(b"MPRP" + data[4:]))
seq, ignored, _, _ = load(X)
assert seq == 1 and ignored[0][1].startswith("bad magic"), ignored
write(P + ".1", data + b"\\0")
seq, ignored, _, _ = load(X)
assert seq == 1 and ignored[0][1].startswith("size "), ignored
print("ok reasons")
"""

# Memory: a 100 KB state; save and load allocate a small constant amount, not the state's size.
MEMORY = """
import sys

big = [array("h", bytes(60000)), array("b", bytes(20000)), array("i", bytes(20000))]
ints = [1, 2, 3]
if sys.implementation.name == "micropython":
    import gc

    LIMIT = 8192

    def allocated(f):
        gc.collect()
        gc.disable()
        before = gc.mem_alloc()
        f()
        used = gc.mem_alloc() - before
        gc.enable()
        return used
else:
    import tracemalloc

    LIMIT = 32768  # CPython's file objects hold an 8 KB buffer

    def allocated(f):
        tracemalloc.start()
        f()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

for i in range(3):
    used = allocated(lambda: c.save(P, CRC, big, ints))
    assert used < LIMIT, ("save", used)
big[0][0] = 5
used = allocated(lambda: c.load(P, CRC, big, ints))
assert used < LIMIT, ("load", used)
assert big[0][0] == 0 and c.load(P, CRC, big, ints)[0] == 3
print("ok memory", used)
"""

SWEEPS = {"roundtrip": ROUNDTRIP, "cuts": CUTS, "others": OTHERS, "memory": MEMORY}


def script(body, folder):
    return "DIR = %r\n" % str(folder) + LIB + body


def run_cpython(text):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", text], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(params=["micropython", "cpython"])
def run(request):
    if request.param == "cpython":
        return run_cpython
    binary = request.getfixturevalue("micropython")
    return lambda text: run_micropython(binary, text)


@pytest.mark.parametrize("sweep", sorted(SWEEPS))
def test_sweep(sweep, run, tmp_path):
    out = run(script(SWEEPS[sweep], tmp_path))
    assert "ok " in out


def test_cuts_cover_every_byte(micropython, tmp_path):
    out = run_micropython(micropython, script(CUTS, tmp_path)).split()
    i = out.index("older")
    count, n = int(out[i + 2]), int(out[i + 3])
    assert n == 26 + 5 * 7 + 4 * 4 + 5 + 3 + 8 + 4 + 12 + 8 + 4  # the slot's every byte
    assert count == 3 * n


def test_reasons_are_printable(micropython, tmp_path):
    out = run_micropython(micropython, script(OTHERS, tmp_path)).splitlines()
    assert "different shape: array 2 is h x 4, expected h x 5" in out
    assert "different shape: array 3 is H x 2, expected h x 2" in out
    assert "different shape: 7 arrays and 4 ints, expected 6 and 4" in out
    assert "different shape: 7 arrays and 4 ints, expected 7 and 3" in out


def test_file_layout(tmp_path):
    prefix = str(tmp_path / "ck")
    w = array("h", [1, -2])
    assert checkpoint.save(prefix, 0xCAFEF00D, [w, array("B", [9])], [-3], 2, 70000) == 1
    data = (tmp_path / "ck.0").read_bytes()
    body = b"MPCK" + struct.pack("<HBBIIIBIB", 3, 2, 1, len(data), 1, 0xCAFEF00D, 2, 70000, 0)
    body += b"h" + struct.pack("<I", 2) + b"B" + struct.pack("<I", 1) + struct.pack("<i", -3)
    body += struct.pack("<hhB", 1, -2, 9)
    assert data == body + struct.pack("<I", binascii.crc32(body))
    assert not (tmp_path / "ck.1").exists()
    head, reason = checkpoint.inspect(prefix + ".0")
    assert reason is None and head == {
        "version": 3,
        "n_arrays": 2,
        "n_ints": 1,
        "length": len(data),
        "seq": 1,
        "model_crc": 0xCAFEF00D,
        "mode": 2,
        "batch": 70000,
        "mount": 0,
    }
    assert checkpoint.inspect(prefix + ".1") == (None, None)
    (tmp_path / "ck.1").write_bytes(data[:-1])
    assert checkpoint.inspect(prefix + ".1") == (None, "truncated, 48 of 49 bytes")
    for mode, batch, mount in ((256, 1, 0), (-1, 1, 0), (0, 0, 0), (0, 2**32, 0), (0, 1, 256)):
        with pytest.raises(ValueError, match="^checkpoint: "):
            checkpoint.save(prefix, 1, [w], [], mode, batch, mount)


def test_model_crc_of_reads_the_model_files_crc(tmp_path):
    golden = (ROOT / "tests" / "data" / "golden.mpm").read_bytes()
    crc = checkpoint.model_crc_of(str(ROOT / "tests" / "data" / "golden.mpm"))
    assert crc == binascii.crc32(golden[:-4]) == struct.unpack("<I", golden[-4:])[0]
    (tmp_path / "short").write_bytes(b"abc")
    with pytest.raises(ValueError, match="expected >= 4"):
        checkpoint.model_crc_of(str(tmp_path / "short"))


# The kill test: a `micropython` process saves a 200 KB state again and again, resuming from
# what it loads, and is killed with SIGKILL after a random delay; every time, what loads is a
# whole saved state (each array and int carries its save number k), at least the last one the
# process reported saved.
KILL_SIZES = (("h", 40000), ("b", 30000), ("i", 8000), ("B", 999), ("H", 1001))
KILL_CRC = 0x0BADC0DE
KILL_SCRIPT = """
import sys
from array import array
from device import checkpoint as c

P = sys.argv[1]
SIZES = %r
arrays = [array(tc, bytes(n * c.ITEMSIZE[tc])) for tc, n in SIZES]
ints = [0, 0]
seq, ignored = c.load(P, %d, arrays, ints)
k = ints[0] if seq else 0
print("start", k)
while True:
    k += 1
    for j in range(len(SIZES)):
        tc, n = SIZES[j]
        arrays[j] = array(tc, bytes([(k * 31 + j * 7) & 255]) * (n * c.ITEMSIZE[tc]))
    assert c.save(P, %d, arrays, [k, -k]) == k
    print("saved", k)
""" % (KILL_SIZES, KILL_CRC, KILL_CRC)


def _killed_run(binary, prefix, delay):
    """Run the saver for `delay` seconds, SIGKILL it; -> the last k it reported saved."""
    env = dict(os.environ, MICROPYPATH=str(ROOT))
    proc = subprocess.Popen(
        [binary, "-c", KILL_SCRIPT, prefix],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    # The delay counts from the saver's first line, so that a slow start on a loaded machine
    # cannot turn a run into a kill before the first load.
    first = proc.stdout.readline()
    time.sleep(delay)
    proc.kill()  # SIGKILL: no cleanup, no flush
    out, err = proc.communicate(timeout=30)
    lines = (first + out).decode().split()
    assert proc.returncode == -9, (proc.returncode, err.decode()[-2000:])
    assert lines and lines[0] == "start", err.decode()[-2000:]
    last = int(lines[1])
    for i in range(2, len(lines) - 1, 2):
        if lines[i] == "saved":
            last = int(lines[i + 1])
    return last


# Saver processes killed at a random moment (each one saves in a loop until then, so each one
# costs its whole life in CPU).
KILLED_RUNS = 12


def test_killed_saves_leave_a_whole_saved_state(micropython, tmp_path):
    rng = random.Random(20240613)
    prefix = str(tmp_path / "ckpt")
    arrays = [array(tc, bytes(n * checkpoint.ITEMSIZE[tc])) for tc, n in KILL_SIZES]
    ints = [0, 0]
    cut = 0
    for run in range(KILLED_RUNS):
        last = _killed_run(micropython, prefix, rng.uniform(0.03, 0.4))
        seq, ignored = checkpoint.load(prefix, KILL_CRC, arrays, ints)
        k = ints[0]
        assert seq is not None and seq == k and ints[1] == -k, (run, seq, ints, ignored)
        assert last <= k <= last + 1, (run, last, k)  # a finished save is never lost
        for j, a in enumerate(arrays):
            assert a.tobytes() == bytes([(k * 31 + j * 7) & 255]) * len(a.tobytes()), (run, j)
        cut += bool(ignored)
    assert k > KILLED_RUNS  # it saved many times
    print("runs whose newer slot was cut:", cut)


WASM_SCRIPT = """
from array import array
from device import checkpoint as c

P = "/run/ckpt"
w = array("h", [-32768, 32767, 5])
b = array("i", [-(2**31), 2**31 - 1])
assert c.save(P, 0xFFFFFFFF, [w, b], [1, 2**30]) == 1
w[2] = 6
assert c.save(P, 0xFFFFFFFF, [w, b], [2, 2**30]) == 2
x, y, ints = array("h", [0] * 3), array("i", [0] * 2), [0, 0]
seq, ignored = c.load(P, 0xFFFFFFFF, [x, y], ints)
assert seq == 2 and ignored == [] and list(x) == list(w) and list(y) == list(b), (seq, x, y)
assert ints == [2, 2**30]
with open(P + ".1", "rb") as f:
    data = bytearray(f.read())
for i in range(len(data)):
    data[i] ^= 0x40
    with open(P + ".1", "wb") as f:
        f.write(data)
    data[i] ^= 0x40
    x, y, ints = array("h", [7] * 3), array("i", [7] * 2), [7, 7]
    seq, ignored = c.load(P, 0xFFFFFFFF, [x, y], ints)
    assert seq == 1 and list(x) == [-32768, 32767, 5] and ints == [1, 2**30], (i, seq, x)
    assert ignored[0][0] == P + ".1", ignored
c.clear(P)
x = array("h", [7] * 3)
assert c.load(P, 0xFFFFFFFF, [x, y], ints) == (None, []) and list(x) == [7] * 3
print("ok wasm", len(data))
"""


def test_wasm_port_roundtrip_and_corrupt_slot():
    require_wasm()
    assert run_wasm(WASM_SCRIPT).startswith("ok wasm")


def as_version_2(data):
    """Checkpoint bytes of version 3 as version 2 wrote them: the header without the mount."""
    head = list(struct.unpack_from(checkpoint.HEAD, data, 0))
    head[1], head[4] = 2, head[4] - 1  # version, length
    body = struct.pack(checkpoint.HEAD_2, *head[:-1]) + data[checkpoint.HEAD_SIZE : -4]
    return body + struct.pack("<I", binascii.crc32(body))


def test_the_mount_round_trips_and_version_2_loads_as_the_identity(tmp_path):
    """Version 3 keeps the mount in its header; a slot of version 2 (no mount) still loads, as
    mount 0, and `check` sees the mount before anything is used."""
    prefix = str(tmp_path / "ck")
    w, ints = array("h", [1, -2, 300]), [7, -8]
    assert checkpoint.save(prefix, 0xABC, [w], ints, 1, 3, 17) == 1
    seen = []

    def check(got, mode, batch, mount):
        seen.append((got, mode, batch, mount))
        return [None]

    for data, mount in (((tmp_path / "ck.0").read_bytes(), 17), (None, 0)):
        if data is None:  # the same slot as version 2 wrote it
            data = as_version_2((tmp_path / "ck.0").read_bytes())
            (tmp_path / "ck.0").write_bytes(data)
        assert checkpoint.inspect(prefix + ".0")[0]["mount"] == mount
        w2, ints2, head = array("h", [0] * 3), [0, 0], {}
        assert checkpoint.load(prefix, 0xABC, [w2], ints2, check, head) == (1, [])
        assert list(w2) == list(w) and ints2 == ints and seen.pop() == (ints, 1, 3, mount)
        assert head == dict(checkpoint.inspect(prefix + ".0")[0], mount=mount)
        assert head["version"] == (3 if mount else 2)
    # a version 2 slot is kept by the next save, which writes version 3 beside it
    assert checkpoint.save(prefix, 0xABC, [w], ints, 1, 3, 4) == 2
    assert checkpoint.inspect(prefix + ".1")[0]["version"] == 3
    head = {}
    assert checkpoint.load(prefix, 0xABC, [w2], ints2, None, head) == (2, [])
    assert head["mount"] == 4
    refused = checkpoint.load(prefix, 0xABC, [w2], ints2, lambda *a: "mount %d" % a[3])
    assert refused == (None, [(prefix + ".0", "mount 0"), (prefix + ".1", "mount 4")])
