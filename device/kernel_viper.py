"""Viper kernel of inference: the same integers as the portable code in `device/infer.py`.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
`device/infer.py` imports it when it can and falls back to the portable code otherwise.

`run` does the steps of a prediction its caller asks for (the input stage, every int8 dense
layer in turn, the argmax and softmax) in one native call, so `Model.predict` runs no bytecode
loop and makes one call. It finds the model's buffers through a table of their addresses
(`table`, built once by the Model): a native call converts each argument, so three objects
instead of eight per layer. None of it allocates. TFLite rounding
(`fixedpoint.rounding_rshift`) is written out inline: a call from viper would box its
arguments. So are the activation ids, the indices of `modelfile.ACTIVATIONS` (1 relu, 2
sigmoid, 3 tanh; `infer.py` imports them as RELU, SIGMOID, TANH): read from module globals they
cost this module's code and globals about 100 bytes of heap on the board, and
tests/test_infer_parity.py runs every activation.

Viper loads are unsigned (ptr8, ptr16), ptr32 sign-extends on some ports only, and arithmetic
wraps at the machine word. So `run` reads signed values as ptr8 and ptr16 (ptr32 only for
values that are never negative and for the halves of the table's addresses), and the dense
layer folds the sign handling out of its inner loop. With u_i = x_i + 128 and v_ji = w_ji + 128
(both 0..255, one xor from the stored byte):

    sum_i w_ji * (x_i - zp_x) = sum_i v_ji * u_i - 128 * sum_i u_i - (128 + zp_x) * sum_i w_ji

The last term is the per-row constant `c_j` computed once at load; `sum_i u_i` once per layer.
The inner loop is a load, an xor, a load, a multiply and an add, with no branch. Every
intermediate is below 2**31 in magnitude, and the result is exact modulo the machine word
whenever the true accumulator fits, which the model file guarantees. R(acc, s) for s > 0 has
no branch either: with h = (acc >> 1) + (acc & 1), e = s - 1 and mask = 2**e - 1, it is
(h >> e) + ((h & mask) > mask // 2 + (h < 0)), where h < 0 is -(h >> 31) and a > b is
-((b - a) >> 31) (h and both sides are below 2**31 in magnitude).

The native emitter keeps a function's first two locals, its first two arguments, in machine
registers (armv6m and x64, MicroPython 1.29; the third register holds the constant table) and
every other local in memory. So `run` takes the dense loop's accumulator and the address of the
weights it reads as "register" arguments, which the caller passes as 0. The loop walks the
weights and u by address, unrolled by 8 (a constant index compiles to a load with an immediate
offset): on the Cortex-M0 a turn is 10 instructions per MAC and 19 for the loop, counted in the
disassembly and by bench/board.py (figures in bench/README.md).
"""

# ruff: noqa: F821 (ptr8, ptr16, ptr32 are viper types, known to the MicroPython compiler)

from array import array

import micropython
from micropython import const

# The steps of `run`, any sum of them.
INPUT_STAGE = const(1)
LAYERS = const(2)
CLASSIFY = const(4)
PREDICT = const(7)

# The table: the address of each buffer as two uint32 words, low first, at twice these slots.
# First the model's slots, then _LAYER slots per layer.
_M = const(0)  # array('h') (n_layers, n_inputs, zp_in, n_outputs, softmax 1 / 0)
_OFFSET = const(1)  # the input stage's offsets array('i')
_MULT = const(2)  # its multipliers array('i'), 0..65535
_SHIFT = const(3)  # its shifts array('b'), 0..24
_EXP = const(4)  # the softmax's 256-entry Q16 exp table array('i') (read only with softmax)
_SCORES = const(5)  # array('B') scores
_U = const(6)  # scratch of the widest n_in bytes
_MODEL = const(7)
# a layer's slots, from _MODEL + _LAYER * k
_X = const(0)  # int8 inputs (layer 0: the input stage's output)
_W = const(1)  # int8 weights, n_out rows of n_in
_B = const(2)  # int32 biases
_C = const(3)  # int32 row constants
_Y = const(4)  # int8 outputs (the last layer's: the logits)
_P = const(5)  # array('h') (n_in, n_out, zp_x, s, zp_z, act)
_T = const(6)  # the 256-byte activation table (sigmoid, tanh)
_LAYER = const(7)


@micropython.viper
def _address(b: ptr8) -> uint:
    return uint(b)


def table(buffers):
    """array('I') of the addresses of `buffers` for `run`: the model's in the order of the slots
    _M to _U, then each layer's in the order of _X to _T. Built once (it allocates); every
    buffer must stay alive and in place while the table is used (MicroPython's heap never moves
    an object)."""
    t = array("I", bytes(8 * len(buffers)))
    i = 0
    for buf in buffers:
        a = _address(buf)
        t[i] = a & 0xFFFFFFFF
        t[i + 1] = (a >> 16) >> 16
        i += 2
    return t


@micropython.viper
def run(acc: int, wp: int, a: ptr32, raw, steps: int) -> int:
    """The `steps` of a prediction on the buffers of table `a` -> the class index (0 without
    CLASSIFY). acc, wp: register arguments, pass 0. TFLite rounding R (see
    fixedpoint.rounding_rshift), saturated; int32 items (offsets, biases, row constants) are
    read as two ptr16 halves, sign-extended from the high one.

    INPUT_STAGE: int raw features (n_inputs, any sequence) -> int8 x of layer 0,
    clamp(zp_in + R((r - offset) * mult, shift)); the model file bounds |r - offset| * mult
    below 2**30 for the raw features its pipeline makes: the same value as the portable code.
    LAYERS: each layer, int8 x (n_in) -> int8 y (n_out): acc = w.(x - zp_x) + b,
    z = clamp(zp_z + R(acc, s)), then the activation.
    CLASSIFY: the last layer's int8 z (n) -> argmax, ties to the lower index; scores 0..255:
    with softmax q_j + 128 = min((e[m - z_j] * 256 + S // 2) // S, 255), S = sum_j
    e[m - z_j], m = max z, e the exp table (0..2**16, so a ptr32 load is the same signed or
    not; S <= 1024 * 2**16), else z_j + 128.
    """
    m = ptr16(int(a[2 * _M]) + (int(a[2 * _M + 1]) << 16 << 16))
    n_layers = int(m[0])
    if steps & INPUT_STAGE:
        x = ptr8(int(a[2 * (_MODEL + _X)]) + (int(a[2 * (_MODEL + _X) + 1]) << 16 << 16))
        # wp walks the offsets, mp the multipliers: 4 bytes a feature
        wp = int(a[2 * _OFFSET]) + (int(a[2 * _OFFSET + 1]) << 16 << 16)
        mp = int(a[2 * _MULT]) + (int(a[2 * _MULT + 1]) << 16 << 16)
        sh = ptr8(int(a[2 * _SHIFT]) + (int(a[2 * _SHIFT + 1]) << 16 << 16))
        zp = (int(m[2]) ^ 0x8000) - 0x8000
        for i in range(int(m[1])):
            acc = ((int(ptr16(wp)[1]) ^ 0x8000) - 0x8000) << 16
            acc = (int(raw[i]) - acc - int(ptr16(wp)[0])) * int(ptr16(mp)[0])
            wp += 4
            mp += 4
            s = int(sh[i])
            if s != 0:
                h = (acc >> 1) + (acc & 1)
                e = s - 1
                mask = (1 << e) - 1
                acc = (h >> e) - (((mask >> 1) - (h >> 31) - (h & mask)) >> 31)
            acc += zp
            if acc < -128:
                acc = -128
            if acc > 127:
                acc = 127
            x[i] = acc
    if steps & LAYERS:
        u = int(a[2 * _U]) + (int(a[2 * _U + 1]) << 16 << 16)
        la = ptr32(int(a) + 8 * _MODEL)  # this layer's slots
        for _ in range(n_layers):
            x = ptr8(int(la[2 * _X]) + (int(la[2 * _X + 1]) << 16 << 16))
            w = int(la[2 * _W]) + (int(la[2 * _W + 1]) << 16 << 16)
            bp = int(la[2 * _B]) + (int(la[2 * _B + 1]) << 16 << 16)
            cp = int(la[2 * _C]) + (int(la[2 * _C + 1]) << 16 << 16)
            y = ptr8(int(la[2 * _Y]) + (int(la[2 * _Y + 1]) << 16 << 16))
            p = ptr16(int(la[2 * _P]) + (int(la[2 * _P + 1]) << 16 << 16))
            t = ptr8(int(la[2 * _T]) + (int(la[2 * _T + 1]) << 16 << 16))
            la = ptr32(int(la) + 8 * _LAYER)
            n_in = int(p[0])
            n_out = int(p[1])
            s = int(p[3])
            zp_z = (int(p[4]) ^ 0x8000) - 0x8000
            act = int(p[5])
            e = s - 1  # R(acc, s): see the module's docstring
            mask = (1 << e) - 1
            half = mask >> 1
            # the int8 clamp; ReLU after it is a higher floor (the ids of
            # modelfile.ACTIVATIONS, literal here: see the docstring)
            lo = -128
            if act == 1 and zp_z > lo:
                lo = zp_z
            lookup = act == 2 or act == 3
            # u_i = x_i + 128, su = 128 * sum_i u_i (acc holds the sum, wp walks x)
            acc = 0
            wp = int(x)
            up = u
            uend = u + n_in
            while uend - up:  # up reaches uend exactly: fewer instructions than `<`
                ptr8(up)[0] = int(ptr8(wp)[0]) ^ 0x80
                acc = int(ptr8(up)[0]) + acc
                wp += 1
                up += 1
            su = acc << 7
            u8end = u + (n_in & ~7)
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
                up = u
                while u8end - up:
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
                while uend - up:
                    acc = (int(ptr8(wp)[0]) ^ 0x80) * int(ptr8(up)[0]) + acc
                    wp += 1
                    up += 1
                if s != 0:
                    h = (acc >> 1) + (acc & 1)
                    acc = (h >> e) - ((half - (h >> 31) - (h & mask)) >> 31)
                acc += zp_z
                if acc < lo:
                    acc = lo
                if acc > 127:
                    acc = 127
                if lookup:
                    acc = int(t[acc + 128])
                y[j] = acc
    if steps & CLASSIFY == 0:
        return 0
    q = 2 * (_MODEL + _LAYER * (n_layers - 1) + _Y)
    z = ptr8(int(a[q]) + (int(a[q + 1]) << 16 << 16))
    scores = ptr8(int(a[2 * _SCORES]) + (int(a[2 * _SCORES + 1]) << 16 << 16))
    n = int(m[3])
    # scores_j = u_j = z_j + 128 (one xor from the stored byte), so m - z_j = max u - u_j
    best = 0
    top = 0
    for j in range(n):
        v = int(z[j]) ^ 0x80
        scores[j] = v
        if v > top:
            top = v
            best = j
    if int(m[4]) == 0:
        return best
    ex = ptr32(int(a[2 * _EXP]) + (int(a[2 * _EXP + 1]) << 16 << 16))
    total = 0
    for j in range(n):
        total += int(ex[top - int(scores[j])])
    half = total >> 1
    for j in range(n):
        v = ((int(ex[top - int(scores[j])]) << 8) + half) // total
        if v > 255:
            v = 255
        scores[j] = v
    return best
