"""Viper kernels of inference: the same integers as the portable code in `device/infer.py`.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
`device/infer.py` imports it when it can and falls back to the portable code otherwise.

`forward` runs every int8 dense layer in one call, finding the buffers through a table of
their addresses (`forward_table`); `input_stage` and `classify` are the input stage and the
argmax and softmax around it, so that `predict` runs no bytecode loop. None allocates.
`forward` takes the inner loop's accumulator and weight address as its first arguments: the
native emitter keeps a function's first locals in machine registers, every other in memory.
TFLite rounding (`fixedpoint.rounding_rshift`) is written out inline in `dense` and
`input_stage`: a call from viper would box its arguments. So are the activation ids, the
indices of `modelfile.ACTIVATIONS` (1 relu, 2 sigmoid, 3 tanh; `infer.py` imports them as
RELU, SIGMOID, TANH): read from module globals they cost this module's code and globals about
100 bytes of heap on the board, and tests/test_infer_parity.py runs every activation.

Viper loads are unsigned (ptr8, ptr16), ptr32 sign-extends on some ports only, and arithmetic
wraps at the machine word. So these kernels read signed values as ptr8 and ptr16 (ptr32 only
for values that are never negative), and `dense` folds the sign handling out of its inner
loop. With u_i = x_i + 128 and v_ji = w_ji + 128 (both 0..255, one xor from the stored byte):

    sum_i w_ji * (x_i - zp_x) = sum_i v_ji * u_i - 128 * sum_i u_i - (128 + zp_x) * sum_i w_ji

The last term is the per-row constant `c_j` computed once at load; `sum_i u_i` once per call.
The inner loop is a load, an xor, a load, a multiply and an add, with no branch, unrolled by
8. Every intermediate is below 2**31 in magnitude, and the result is exact modulo the machine
word whenever the true accumulator fits, which the model file guarantees.
"""

# ruff: noqa: F821 (ptr8, ptr16, ptr32 are viper types, known to the MicroPython compiler)

from array import array

import micropython
from micropython import const

# A layer's slots in the forward table (forward_table): the address of each buffer as two
# uint32 words, low first, at twice these slots.
_X = const(0)  # int8 inputs
_W = const(1)  # int8 weights, n_out rows of n_in
_B = const(2)  # int32 biases
_C = const(3)  # int32 row constants
_Y = const(4)  # int8 outputs
_P = const(5)  # array('h') (n_in, n_out, zp_x, s, zp_z, act)
_T = const(6)  # the 256-byte activation table
_SLOTS = const(7)


@micropython.viper
def _address(b: ptr8) -> uint:
    return uint(b)


def forward_table(layers):
    """array('I') of the buffer addresses of each layer (x, w, b, c, y, p, t, in _SLOTS order)
    for `forward`: one native call with three arguments instead of one per layer with eight.
    Built once (it allocates); every buffer must stay alive and in place while the table is
    used (MicroPython's heap never moves an object)."""
    t = array("I", bytes(8 * _SLOTS * len(layers)))
    i = 0
    for buffers in layers:
        for buf in buffers:
            a = _address(buf)
            t[i] = a & 0xFFFFFFFF
            t[i + 1] = (a >> 16) >> 16
            i += 2
    return t


@micropython.viper
def forward(acc: int, wp: int, a: ptr32, n_layers: int, u: ptr8):
    """Every layer in turn, int8 x (n_in) -> int8 y (n_out): acc = w.(x - zp_x) + b,
    z = clamp(zp_z + R(acc, s)), then the activation. TFLite rounding (see
    fixedpoint.rounding_rshift), saturated.

    acc, wp: register arguments, pass 0. a: forward_table of the n_layers layers, whose
    b: biases and c: row constants array('i') are read as two ptr16 halves each, sign-extended
    from the high one; u: scratch of the widest n_in bytes.
    """
    for k in range(n_layers):
        q = 2 * _SLOTS * k
        x = ptr8(int(a[q + 2 * _X]) + (int(a[q + 2 * _X + 1]) << 16 << 16))
        w = int(a[q + 2 * _W]) + (int(a[q + 2 * _W + 1]) << 16 << 16)
        bp = int(a[q + 2 * _B]) + (int(a[q + 2 * _B + 1]) << 16 << 16)
        cp = int(a[q + 2 * _C]) + (int(a[q + 2 * _C + 1]) << 16 << 16)
        y = ptr8(int(a[q + 2 * _Y]) + (int(a[q + 2 * _Y + 1]) << 16 << 16))
        p = ptr16(int(a[q + 2 * _P]) + (int(a[q + 2 * _P + 1]) << 16 << 16))
        t = ptr8(int(a[q + 2 * _T]) + (int(a[q + 2 * _T + 1]) << 16 << 16))
        n_in = int(p[0])
        n_out = int(p[1])
        s = int(p[3])
        zp_z = (int(p[4]) ^ 0x8000) - 0x8000
        act = int(p[5])
        # R(acc, s) for s > 0 with h = (acc >> 1) + (acc & 1): (h >> e) + ((h & mask) >
        # half - (h >> 31)), the comparison as a sign bit (h, and both sides, below 2**31)
        e = s - 1
        mask = (1 << e) - 1
        half = mask >> 1
        # the int8 clamp; ReLU after it is a higher floor (ids of modelfile.ACTIVATIONS, literal
        # here: see the docstring)
        lo = -128
        if act == 1 and zp_z > lo:
            lo = zp_z
        table = act == 2 or act == 3
        # u_i = x_i + 128, su = 128 * sum_i u_i (acc and wp hold the sum and x's address)
        acc = 0
        wp = int(x)
        up = int(u)
        uend = up + n_in
        while up < uend:
            ptr8(up)[0] = int(ptr8(wp)[0]) ^ 0x80
            acc = int(ptr8(up)[0]) + acc
            wp += 1
            up += 1
        su = acc << 7
        u8end = int(u) + (n_in & ~7)
        wp = w
        for j in range(n_out):
            acc = (
                (((int(ptr16(bp)[1]) ^ 0x8000) + (int(ptr16(cp)[1]) ^ 0x8000) - 0x10000) << 16)
                + int(ptr16(bp)[0])
                + int(ptr16(cp)[0])
                - su
            )
            bp += 4
            cp += 4
            # the row: wp walks it (and on into the next row), up walks u, 8 bytes a turn
            up = int(u)
            while up < u8end:
                acc = (int(ptr8(wp)[0]) ^ 0x80) * int(ptr8(up)[0]) + acc
                acc = (int(ptr8(wp)[1]) ^ 0x80) * int(ptr8(up)[1]) + acc
                acc = (int(ptr8(wp)[2]) ^ 0x80) * int(ptr8(up)[2]) + acc
                acc = (int(ptr8(wp)[3]) ^ 0x80) * int(ptr8(up)[3]) + acc
                acc = (int(ptr8(wp)[4]) ^ 0x80) * int(ptr8(up)[4]) + acc
                acc = (int(ptr8(wp)[5]) ^ 0x80) * int(ptr8(up)[5]) + acc
                acc = (int(ptr8(wp)[6]) ^ 0x80) * int(ptr8(up)[6]) + acc
                acc = (int(ptr8(wp)[7]) ^ 0x80) * int(ptr8(up)[7]) + acc
                wp += 8
                up += 8
            while up < uend:
                acc = (int(ptr8(wp)[0]) ^ 0x80) * int(ptr8(up)[0]) + acc
                wp += 1
                up += 1
            if s != 0:
                h = (acc >> 1) + (acc & 1)
                acc = (h >> e) - ((half - (h >> 31) - (h & mask)) >> 31)
            z = zp_z + acc
            if z < lo:
                z = lo
            if z > 127:
                z = 127
            if table:
                z = int(t[z + 128])
            y[j] = z


@micropython.viper
def input_stage(raw, x: ptr8, o: ptr16, m: ptr16, sh: ptr8, n: int, zp: int):
    """int raw features -> int8 x: clamp(zp + R((r - offset) * mult, shift)), TFLite rounding,
    saturated.

    raw: n ints, any sequence (list or array); o: offsets array('i'), each item read as two
    ptr16 halves and sign-extended from the high one; m: mults array('i') in 0..65535, the low
    half of each item; sh: shifts array('b') in 0..24. The model file bounds |r - offset| *
    mult below 2**30 for the raw features its pipeline makes: the same value as the portable
    code, so nothing wraps.
    """
    for i in range(n):
        off = (((int(o[2 * i + 1]) ^ 0x8000) - 0x8000) << 16) + int(o[2 * i])
        acc = (int(raw[i]) - off) * int(m[2 * i])
        s = int(sh[i])
        if s != 0:
            h = (acc >> 1) + (acc & 1)
            e = s - 1
            mask = (1 << e) - 1
            threshold = mask >> 1
            if h < 0:
                threshold += 1
            acc = h >> e
            if (h & mask) > threshold:
                acc += 1
        q = zp + acc
        if q < -128:
            q = -128
        if q > 127:
            q = 127
        x[i] = q


@micropython.viper
def classify(z: ptr8, n: int, e: ptr32, soft: int, scores: ptr8) -> int:
    """int8 z (n) -> class index, argmax with ties to the lower index; fills scores (0..255).

    soft != 0: softmax, q_j + 128 = min((e[m - z_j] * 256 + S // 2) // S, 255) with
    S = sum_j e[m - z_j], m = max z, e the 256-entry Q16 exp table array('i') (0..2**16, so a
    ptr32 load is the same signed or not); S <= 1024 * 2**16. soft == 0: z_j + 128.
    With u_j = z_j + 128 (one xor from the stored byte), m - z_j = max u - u_j.
    """
    best = 0
    top = int(z[0]) ^ 0x80
    for j in range(1, n):
        u = int(z[j]) ^ 0x80
        if u > top:
            top = u
            best = j
    if soft == 0:
        for j in range(n):
            scores[j] = int(z[j]) ^ 0x80
        return best
    total = 0
    for j in range(n):
        total += int(e[top - (int(z[j]) ^ 0x80)])
    half = total >> 1
    for j in range(n):
        p = ((int(e[top - (int(z[j]) ^ 0x80)]) << 8) + half) // total
        if p > 255:
            p = 255
        scores[j] = p
    return best
