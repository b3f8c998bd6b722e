"""The 32-bit WebAssembly MicroPython port behaves like the boards, and the portable kernel on it
equals the NumPy reference bit for bit with every forward pass inside heap_lock.

Runs on: host (pytest), plus Node.js and the npm package in tests/wasm/
(`npm ci --prefix tests/wasm`). Fails in CI without them; skips with that hint elsewhere.

Why this port: MicroPython on ESP32 and RP2040 keeps ints in 31 bits, [-2**30, 2**30 - 1];
a result outside needs a heap-allocated big int, which `micropython.heap_lock()` turns into a
MemoryError. The 64-bit Unix port has 63-bit small ints and cannot show it; this port can.
"""

import pytest

from .helpers import INFER_SWEEP as SWEEP
from .helpers import N_MODELS, run_micropython, sweep_again, write_sweep
from .helpers import compare_infer as _compare
from .wasm_runner import require_wasm, run_wasm

# Random inputs per model besides the 6 edge inputs on this port, whose portable kernel runs
# about 10x slower than the Unix port's: its difference from the Unix port is the 31-bit bound,
# which the edge inputs press hardest (helpers.N_RAW_AGAIN says why).
N_RAW_WASM = 2


@pytest.fixture(scope="module", autouse=True)
def wasm():
    require_wasm()


# Each probe runs under heap_lock; operands come from variables so that the compiler cannot
# fold them into constants made before the lock.
PROBES = """
import micropython

def probe(name, f, a, b):
    micropython.heap_lock()
    try:
        r = f(a, b)
        micropython.heap_unlock()
        print(name, "ok", r)
    except MemoryError:
        micropython.heap_unlock()
        print(name, "MemoryError")

top = 2**30 - 1
half = 2**29
bottom = -half - half  # a small int; the literal -1073741824 is parsed into a big int
probe("top+0", lambda a, b: a + b, top, 0)
probe("bottom+0", lambda a, b: a + b, bottom, 0)
probe("half+half", lambda a, b: a + b, half, half)
probe("top+1", lambda a, b: a + b, top, 1)
probe("bottom-1", lambda a, b: a - b, bottom, 1)
probe("half*2", lambda a, b: a * b, half, 2)
probe("half<<1", lambda a, b: a << b, half, 1)
probe("-bottom", lambda a, b: -a, bottom, 0)
probe("127*255*33155", lambda a, b: a * b, 127 * 255, 33155)
probe("127*255*33156", lambda a, b: a * b, 127 * 255, 33156)
probe("literal-2**30+0", lambda a, b: a + b, -1073741824, 0)
"""

PROBES_32BIT = [
    "top+0 ok 1073741823",
    "bottom+0 ok -1073741824",
    "half+half MemoryError",
    "top+1 MemoryError",
    "bottom-1 MemoryError",
    "half*2 MemoryError",
    "half<<1 MemoryError",
    "-bottom MemoryError",
    "127*255*33155 ok 1073724675",
    "127*255*33156 MemoryError",
    "literal-2**30+0 MemoryError",
]


def test_small_ints_end_at_2_30_like_the_boards():
    assert run_wasm(PROBES).splitlines() == PROBES_32BIT


def test_the_unix_port_cannot_show_the_bound(micropython):
    # The reason for this port: on the 64-bit Unix port the same values are still small ints.
    out = run_micropython(micropython, PROBES).splitlines()
    assert len(out) == len(PROBES_32BIT) and all(" ok " in line for line in out), out


def test_port_is_32_bit_micropython_without_viper():
    script = (
        "import sys\n"
        "print(sys.maxsize)\n"
        "print(sys.implementation.name, sys.platform)\n"
        "try:\n"
        "    exec('import micropython\\n@micropython.viper\\ndef f():\\n    pass\\n')\n"
        "    print('viper')\n"
        "except SyntaxError as e:\n"
        "    print('no viper:', e)\n"
    )
    maxsize, port, viper = run_wasm(script).splitlines()
    assert int(maxsize) == 2**31 - 1
    assert port == "micropython webassembly"
    assert viper == "no viper: invalid micropython decorator"


def test_device_package_imports_and_infer_falls_back_to_portable():
    script = (
        "import device, device.infer\nprint(device.__file__)\nprint(device.infer.kernel_viper)\n"
    )
    assert run_wasm(script).splitlines() == ["/lib/device/__init__.py", "None"]


def test_runner_reports_exceptions_and_data_files():
    out = run_wasm("print(open('in.bin', 'rb').read())", files={"in.bin": b"\x01ab"})
    assert out == "b'\\x01ab'\n"
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        run_wasm("x = 1\nprint(x // 0)\n")
    # An uncaught MemoryError under heap_lock is reported, not hung on.
    with pytest.raises(AssertionError, match="MemoryError"):
        run_wasm("import micropython\nx = 2**29\nmicropython.heap_lock()\ny = x + x\n")


# The dense kernel itself overflows on this port (and only here) when an accumulator leaves
# 31 bits: proof that the parity sweep below would catch a value out of range.
OVERFLOW = """
import micropython
from array import array
from device.infer import dense_portable

x = array("b", [127, 127])
w = array("b", [127, 127])
y = array("b", [0])
p = array("h", [2, 1, 0, 24, 0, 0])
t = bytearray(1)
for bias in (2**30 - 1 - 2 * 127 * 127, 2**30 - 2 * 127 * 127):
    b = array("i", [bias])
    micropython.heap_lock()
    try:
        dense_portable(x, w, b, y, p, t)
        micropython.heap_unlock()
        print("ok", y[0])
    except MemoryError:
        micropython.heap_unlock()
        print("MemoryError")
"""


def test_portable_kernel_fails_past_the_bound_on_this_port_only(micropython):
    assert run_wasm(OVERFLOW).splitlines() == ["ok 64", "MemoryError"]
    assert run_micropython(micropython, OVERFLOW).splitlines() == ["ok 64", "ok 64"]


def _vm_files(folder, n):
    """The sweep files m0..m{n-1} (.mpm, .raw, .q) of a host folder, as VM paths -> bytes."""
    return {
        "/sweep/m%d%s" % (i, ext): (folder / ("m%d%s" % (i, ext))).read_bytes()
        for i in range(n)
        for ext in (".mpm", ".raw", ".q")
    }


def test_portable_kernel_equals_reference_under_heap_lock(infer_sweep, tmp_path):
    """The parity run of test_infer_parity on this port: the same 200 random models within the
    contract, each with its 6 edge inputs (where the 31-bit bound is pressed hardest) and its
    first N_RAW_WASM random ones; every predict / forward inside heap_lock; one VM."""
    d, cases = infer_sweep
    again = sweep_again(cases, N_RAW_WASM)
    write_sweep(tmp_path, again)
    out = run_wasm(
        SWEEP, files=_vm_files(tmp_path, len(again)), args=("/sweep", str(len(again)), "portable")
    )
    n = _compare(out, again, ("portable",), "/lib/device/infer.py")
    assert n == N_MODELS * (N_RAW_WASM + 6)


def test_portable_kernel_equals_reference_on_trained_models(trained):
    """The models trained on both shared datasets, on real windows and the edges."""
    d, cases = trained
    out = run_wasm(
        SWEEP, files=_vm_files(d, len(cases)), args=("/sweep", str(len(cases)), "portable")
    )
    n = _compare(out, [c[:3] for c in cases], ("portable",), "/lib/device/infer.py")
    assert n == sum(len(c[1]) + len(c[2]) for c in cases)
