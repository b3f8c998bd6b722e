"""The viper form of a learning layer: ViperLayer, a device/train_portable.Layer whose output
error, backward pass, gradient sums and update are each one call of a native kernel here.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
`device/train.py` imports it when it can and keeps the portable Layer otherwise (CPython, the
WebAssembly port). The formats, scales and rounding are those of device/train_portable.py's
docstring; each kernel names the Layer method it replaces. None allocates.

Viper loads are unsigned (ptr8, ptr16), ptr32 loads sign-extend on the 32-bit boards but not
on the 64-bit Unix port, and arithmetic wraps at the machine word. So:

- int8 and int16 values are read through ptr8 / ptr16 and sign-extended as
  `(v ^ 0x80) - 0x80` and `(v ^ 0x8000) - 0x8000`;
- an int32 item (gradient sums, biases, the inference kernel's row constants) is read through
  ptr32 and brought to its signed value as `((v & low) ^ top) - top`, with low the word's low
  32 bits (all of it on a 32-bit port) and top = 2**31 (both computed from a variable: as
  literals mpy-cross would make them long ints), and written through ptr32, which stores its
  low 32 bits on either word width;
- the gradient sums of a mini-batch are added in place through ptr32: a wrapped add stores the
  same 32 bits on either word width, and the bound proof keeps the true sum inside 31 bits;
- shifts by 31 or more are clamped to 31 by the caller (a native shift by the word size is
  undefined; for |g| < 2**30, g >> 31 is the same 0 or -1 as g >> s for any larger s).

Every other intermediate is the portable code's value, which the bound proof of
device/train_plan.py keeps inside 31 bits, so no result depends on the word width. The xorshift16
generator of device/prng.py runs inline, in the portable code's draw order (one draw per
parameter whose update shift is > 0, weights row-major, then biases), and its states stay
below 2**24.

The native emitter keeps a function's first two locals, which are its first arguments, in
machine registers and every other local in memory (on armv6m and x64 in MicroPython 1.29; the
third register holds the constant table). So the kernels with a hot inner loop take their two
hottest scalars as their first arguments, documented as "register" arguments that the caller
passes as 0 (or the PRNG state). Each operation costs a few instructions more than it would in
C: it loads its operands into scratch registers and stores its result back. Written as
`(a op b) op c`, with register locals, locals and constants on the right, an expression keeps
its partial results in registers (`st = ((st << 7) ^ st) & 0xFFFF` is 9 instructions on the
Cortex-M0, `st ^= (st << 7) & 0xFFFF` 11); `if a < b` makes a 0/1 value and tests it (about 9
instructions), `if v:` tests v (4). The inner loops count an index k up from -n to 0 over
pointers to the ends of their arrays (`while k:`, about 8 instructions a turn, 18 for
`for i in range(n)`).

A native call costs about 0.1 us on the Unix port plus about 20 ns per argument, most of it in
converting a buffer to a pointer. So backward_kernel, accumulate_kernel and update_kernel take
one layer's buffers through a table of their addresses (layer_table, built once by ViperLayer)
instead of as arguments, and update_kernel does a layer's weights and biases in one call.
ViperLayer's methods are plain Python, each one kernel call: on the Cortex-M0 such a method
costs about 1.1k instructions more than calling its kernel directly, and a viper method
around the same call saves about 300 of them, for its native code on the board's heap.

The kernels skip the work that is provably zero, which in a relu network is much of it (the
42-32-16-7 benchmark model, random weights, 16 samples: 47 % of layer 0's error signals are 0,
40 % of layer 1's, 62 % of the output errors, and 47 % of layer 1's inputs are its zero point):
backward_kernel sums over the non-zero error signals only and computes none below a relu where
its derivative is 0; update_kernel jumps the PRNG over a row whose error signal is 0 (its
weights keep their values) and only draws for a weight whose input is its zero point. Each
kernel's docstring says why the result is the same.
"""

# ruff: noqa: F821 (ptr8, ptr16, ptr32 are viper types, known to the MicroPython compiler)

from array import array

import micropython
from micropython import const

from .prng import xorshift16
from .train_portable import Layer

_B = const(10)  # update_kernel's parameters: the biases' part
_HAS_W = const(20)  # the layer's weights learn
_HAS_B = const(21)  # its biases learn
_LIM = const(22)  # the bias limit, 15-bit halves, low first

# A layer's buffer table (layer_table): the address of each buffer as two uint32 words, low
# first, at twice these slots.
_D = const(0)  # delta(k)
_X = const(2)  # the layer's int8 inputs
_GW = const(4)  # weight gradient sums
_MW = const(6)  # master weights
_W = const(8)  # int8 weights
_C = const(10)  # the inference kernel's row constants
_GB = const(12)  # bias gradient sums
_BI = const(14)  # int32 biases
_P = const(16)  # update parameters
_OUT = const(18)  # delta(k - 1)
_PB = const(20)  # backward parameters
_J = const(22)  # the PRNG's row jump table
_S = const(24)  # backward_kernel's scratch
_N_WORDS = const(26)


@micropython.viper
def _address(b: ptr8) -> uint:
    return uint(b)


def layer_table(d, x, gw, mw, w, c, gb, b, p, out, pback, jump, scratch):
    """array('I') of the addresses of a layer's buffers, for backward_kernel, accumulate_kernel
    and update_kernel: a native call with one argument instead of thirteen. Built once (it
    allocates); every buffer must stay alive and in place as long as the table is used
    (MicroPython's heap never moves an object). Pass `_EMPTY` for absent ones."""
    t = array("I", bytes(4 * _N_WORDS))
    i = 0
    for buf in (d, x, gw, mw, w, c, gb, b, p, out, pback, jump, scratch):
        a = _address(buf)
        t[i] = a & 0xFFFFFFFF
        t[i + 1] = (a >> 16) >> 16
        i += 2
    return t


@micropython.viper
def output_error_kernel(scores: ptr8, label: int, a: ptr32):
    """softmax scores (0..255) -> int16 e_j = scores_j - 256 [j == label], scale 2**-8, in
    delta of the output layer's table `a` (layer_table). (Layer.output_error)"""
    d = ptr16(int(a[_D]) + (int(a[_D + 1]) << 16 << 16))
    p = ptr16(int(a[_P]) + (int(a[_P + 1]) << 16 << 16))
    for j in range(int(p[1])):
        d[j] = scores[j]
    d[label] = int(scores[label]) - 256


@micropython.viper
def backward_kernel(acc: int, k: int, a: ptr32):
    """int16 delta(k) -> int16 delta(k - 1): T = clamp(R(W^T delta, s)), then times the
    derivative of layer k - 1's activation at y, rounded back by R. TFLite rounding.
    (Layer.backward)

    acc, k: register arguments, pass 0. a: layer k's table (layer_table), of which are read
    w: layer k's int8 weights (n_out rows of n_in); d: delta(k), n_out; out: delta(k - 1),
    n_in; x: layer k's inputs, the int8 outputs y of layer k - 1; pback: array('h') of (n_in,
    n_out, sback, act id, zp_z of layer k - 1); sc: array('i') of 2 * n_out, scratch.
    |W^T delta| <= 127 * n_out * 2**15 and |T * D| <= 2**29 (proven by
    device/train_plan.prove).

    The work skipped is provably zero: a zero delta_j adds nothing to any sum, so the sums run
    over the non-zero ones only, listed first in sc (their row offsets j * n_in, then their
    values); and below a relu, delta_i(k - 1) is 0 wherever y_i <= zp_z, whatever the sum.
    A sum adds (w_ji + 128) * delta_j (one xor from the stored byte) and takes 128 times the
    sum of the deltas off once. The deltas are stored and read as ptr32 (negative ones read
    zero-extended on a 64-bit port): every product and sum is then right modulo 2**32, and the
    sum is brought back to the signed 32-bit value (exact: it is inside 31 bits) once.

    R is fixedpoint.rounding_rshift: h = (acc >> 1) + (acc & 1), then h / 2**e (e = s - 1)
    rounded to nearest, ties away from zero, which for e >= 1 is (h + 2**(e - 1) + (h >> 31))
    >> e (h >> 31 is -1 for h < 0, else 0: |h| < 2**30), and h itself for e = 0.
    """
    w = int(a[_W]) + (int(a[_W + 1]) << 16 << 16)
    d = ptr16(int(a[_D]) + (int(a[_D + 1]) << 16 << 16))
    out = ptr16(int(a[_OUT]) + (int(a[_OUT + 1]) << 16 << 16))
    y = ptr8(int(a[_X]) + (int(a[_X + 1]) << 16 << 16))
    p = ptr16(int(a[_PB]) + (int(a[_PB + 1]) << 16 << 16))
    sc = int(a[_S]) + (int(a[_S + 1]) << 16 << 16)
    n_in = int(p[0])
    n_out = int(p[1])
    s = int(p[2])
    act = int(p[3])
    zp = (int(p[4]) ^ 0x8000) - 0x8000
    n = 0  # the non-zero deltas
    total = 0  # their sum
    offs = ptr32(sc)
    for j in range(n_out):
        dj = (int(d[j]) ^ 0x8000) - 0x8000
        if dj:
            offs[n] = j * n_in
            offs[n_out + n] = dj
            n += 1
            total += dj
    offs = ptr32(sc + 4 * n)  # indexed back from the end: -n .. -1
    deltas = ptr32(sc + 4 * (n_out + n))
    e = 16  # a variable, not a literal: mpy-cross would fold 1 << 31 into a long int
    low = (1 << e << e) - 1  # the low 32 bits of a word: all its bits on a 32-bit port
    top = 1 << (e + 15)
    dead = -1  # y_i + 128 <= dead: below a relu whose derivative is 0 there
    if act == 1:  # relu (modelfile.RELU, literal as in kernel_viper)
        dead = zp + 128
    e = s - 1  # R(acc, s): h = (acc >> 1) + (acc & 1), then h rounded by 2**e (see below)
    half = 0
    neg = 0
    if e > 0:
        half = 1 << (e - 1)
        neg = -1
    for i in range(n_in):
        u = int(y[i]) ^ 0x80  # y_i + 128
        if u <= dead:
            out[i] = 0
            continue
        col = w + i
        acc = 0 - (total << 7)
        k = 0 - n
        while k:
            acc = ((int(ptr8(int(offs[k]) + col)[0]) ^ 0x80) * int(deltas[k])) + acc
            k += 1
        acc = ((acc & low) ^ top) - top
        if s:
            acc = (acc >> 1) + (acc & 1)
            acc = (acc + half + ((acc >> 31) & neg)) >> e
        if (acc + 32768) >> 16:  # outside int16
            if acc < 0:
                acc = -32768
            else:
                acc = 32767
        if act >= 2:  # sigmoid: p (1 - p) at 2**-16; tanh: 1 - a * a at 2**-14; R back
            if act == 2:
                acc = acc * (u * (256 - u))  # u = y + 128: (y + 128) (128 - y)
                acc = (acc >> 1) + (acc & 1)
                acc = (acc + 16384 + (acc >> 31)) >> 15
            else:
                acc = acc * (16384 - (u - 128) * (u - 128))
                acc = (acc >> 1) + (acc & 1)
                acc = (acc + 4096 + (acc >> 31)) >> 13
        out[i] = acc


@micropython.viper
def accumulate_kernel(idx: int, i: int, a: ptr32):
    """gw[j][i] += delta_j * (x_i - zp_x) when has_w, then gb[j] += delta_j when has_b, int32,
    in place. (Layer.accumulate)

    idx, i: register arguments, pass 0. a: the layer's table (layer_table): d, x, the
    gradient sums gw and gb (each read only when its flag is set) and p, the layer's
    parameters (see update_kernel), of which only n_in, n_out, cz, has_w and has_b are read.
    """
    d = ptr16(int(a[_D]) + (int(a[_D + 1]) << 16 << 16))
    x = ptr8(int(a[_X]) + (int(a[_X + 1]) << 16 << 16))
    gw = ptr32(int(a[_GW]) + (int(a[_GW + 1]) << 16 << 16))
    gb = ptr32(int(a[_GB]) + (int(a[_GB + 1]) << 16 << 16))
    p = ptr16(int(a[_P]) + (int(a[_P + 1]) << 16 << 16))
    n_in = int(p[0])
    n_out = int(p[1])
    cz = int(p[2])
    if int(p[_HAS_W]):
        idx = 0
        for j in range(n_out):
            dj = (int(d[j]) ^ 0x8000) - 0x8000
            for i in range(n_in):
                gw[idx] = int(gw[idx]) + dj * ((int(x[i]) ^ 0x80) - cz)
                idx += 1
    if int(p[_HAS_B]):
        for j in range(n_out):
            gb[j] = int(gb[j]) + ((int(d[j]) ^ 0x8000) - 0x8000)


@micropython.viper
def update_kernel(st: int, k: int, a: ptr32) -> int:
    """One layer's update, its weights (when has_w) then its biases (when has_b), in the
    portable code's draw order; one native call. Stochastic rounding from xorshift16 state
    `st`; returns the new state. (Layer.update)

    Weights: master_w -= SR(gw + delta x, sw), clamped to int16; int8 w = clamp((master + 128)
    >> 8, -127, 127); gw = 0; the inference kernel's row constants c_j = -cz * sum_i w_ji.
    Biases: b -= SR(gb + delta, sbias), clamped to +/- lim; gb = 0.

    st: the PRNG state; k: a register argument, pass 0. a: the layer's table (layer_table),
    of which are read d: delta, n_out; x: the layer's int8 inputs, n_in; gw: the int32
    gradient sums of the weights (read only when has_gw); mw: int16 master weights; w: int8
    weights; c: array('i') of row constants (written only when has_c); gb: the int32 gradient
    sums of the biases (read only when has_gb); b: the int32 biases; j: the row jump table of
    the PRNG (see below); p: array('h') of the layer's parameters (built by ViperLayer): at 0
    the weights' (n_in, n_out, cz = 128 + zp_x, draw, ls, fs, t, rt, has_gw, has_c), at _B
    the biases' in the same layout (has_gw there means has_gb), then has_w, has_b and lim as
    two 15-bit halves (low first). For the update shift s: draw = s > 0, ls = max(-s, 0),
    t = min(max(s, 0), 16), fs = min(s - t, 31) when s > 0 else 0, rt = 16 - t. Buffers of a
    part whose flag is 0 are not read.

    SR(g, s) = (g >> s) + carry, carry = ((g >> (s - t)) & (2**t - 1)) > ((r - 1) >> rt)
    with r the next state (s > 0), or g << ls (s <= 0, no draw). With h = g >> fs
    (= g >> (s - t): |g| < 2**30) and (2**t - 1) - ((r - 1) >> rt) = (65536 - r) >> rt
    (r - 1 in 0..65534), that is

        SR(g, s) = ((g << ls >> fs) + ((65536 - r) >> rt)) >> t

    since h >> t = g >> s and the added term is in 0..2**t - 1; |h| + 65535 < 2**31. For
    s <= 0 (t = fs = 0, rt = 16) the added term is 0 for every state r in 1..65535: the loops
    then draw all the same, and the part ends with the state it started with. A weight row
    takes ls into delta_j once: (delta_j << ls) * x = (delta_j * x) << ls.

    The work skipped is provably zero:

    - a row with delta_j = 0 and no gradient sums has g = 0 throughout: SR(0, s) = 0, the
      master weights keep their values and so do the int8 weights, which are always the
      rounded master weights (Layer keeps them so). Only its n_in draws are made, as one
      jump: xorshift16 is linear over GF(2), so n_in steps are a 16 x 16 bit matrix, applied
      as four 16-entry tables `j` of its images of each nibble (ViperLayer builds them);
    - a weight with g = 0 in another row: its draw only;
    - the row constant changes by -cz times the change of the row's int8 weights, summed as
      they change (dw).

    The master weight is worked on biased, v = master + 32768 in 0..65535 (one xor from the
    stored halfword, no sign extension), and so the int8 weight, u = w + 128 = (v + 128) >> 8
    (one xor from the stored byte). Where u is the stored one, it is in 1..255 and v inside
    0..65535: no clamp, nothing else to write. Else the clamps (v to 0..65535, u to 1..255),
    and the int8 weight and the row's change are written. A row runs in the loop without
    gradient sums and shift fs (the common case: batch 1, update shifts up to 16), 7 of its
    about 100 instructions a weight on the Cortex-M0 fewer, or in the general one.

    A bias is worked on as v = b - SR + lim, in 0..2 lim unless it needs its clamp: one
    unsigned comparison (|b - SR| < 2**30 and lim < 2**30 by the bound proof).
    """
    d = ptr16(int(a[_D]) + (int(a[_D + 1]) << 16 << 16))
    x = ptr8(int(a[_X]) + (int(a[_X + 1]) << 16 << 16))
    gw = ptr32(int(a[_GW]) + (int(a[_GW + 1]) << 16 << 16))
    mw = ptr16(int(a[_MW]) + (int(a[_MW + 1]) << 16 << 16))
    w = ptr8(int(a[_W]) + (int(a[_W + 1]) << 16 << 16))
    c = ptr32(int(a[_C]) + (int(a[_C + 1]) << 16 << 16))
    gb = ptr32(int(a[_GB]) + (int(a[_GB + 1]) << 16 << 16))
    b = ptr32(int(a[_BI]) + (int(a[_BI + 1]) << 16 << 16))
    j = ptr16(int(a[_J]) + (int(a[_J + 1]) << 16 << 16))
    p = ptr16(int(a[_P]) + (int(a[_P + 1]) << 16 << 16))
    n_in = int(p[0])
    n_out = int(p[1])
    e = 16  # int32 items: see the module docstring
    low = (1 << e << e) - 1
    top = 1 << (e + 15)
    if int(p[_HAS_W]):
        st0 = st
        cz = int(p[2])
        draw = int(p[3])
        ls = int(p[4])
        fs = int(p[5])
        t = int(p[6])
        rt = int(p[7])
        has_gw = int(p[8])
        has_c = int(p[9])
        fast = 1 if has_gw == 0 and fs == 0 else 0
        x = ptr8(int(x) + n_in)  # the loops index back from the end: k = -n_in .. -1
        mw = ptr16(int(mw) + 2 * n_in)
        w = ptr8(int(w) + n_in)
        gw = ptr32(int(gw) + 4 * n_in)
        for row in range(n_out):
            dj = (int(d[row]) ^ 0x8000) - 0x8000
            if dj or has_gw:
                dj = dj << ls
                dw = 0  # the row's int8 weights, old less new
                k = 0 - n_in
                if fast:  # the loop below with has_gw = fs = 0: k ends at 0, skipping it
                    while k:
                        st = ((st << 7) ^ st) & 0xFFFF
                        st = (st >> 9) ^ st
                        st = ((st & 0xFF) << 8) ^ st
                        g = ((int(x[k]) ^ 0x80) - cz) * dj
                        if g:
                            g = (((0x10000 - st) >> rt) + g) >> t
                            v = (int(mw[k]) ^ 0x8000) - g
                            if (((v + 128) >> 8) ^ 0x80) ^ int(w[k]):
                                if v < 0:
                                    v = 0
                                if v > 0xFFFF:
                                    v = 0xFFFF
                                u = (v + 128) >> 8
                                if u == 0:
                                    u = 1
                                if u == 256:
                                    u = 255
                                dw = ((int(w[k]) ^ 0x80) - u) + dw
                                w[k] = u ^ 0x80
                            mw[k] = v ^ 0x8000
                        k += 1
                while k:
                    st = ((st << 7) ^ st) & 0xFFFF
                    st = (st >> 9) ^ st
                    st = ((st & 0xFF) << 8) ^ st
                    if has_gw:
                        g = ((int(gw[k]) & low) ^ top) - top
                        gw[k] = 0
                        g = ((((int(x[k]) ^ 0x80) - cz) * dj) + (g << ls)) >> fs
                    else:
                        g = (((int(x[k]) ^ 0x80) - cz) * dj) >> fs
                    if g:
                        g = (((0x10000 - st) >> rt) + g) >> t
                        v = (int(mw[k]) ^ 0x8000) - g
                        if (((v + 128) >> 8) ^ 0x80) ^ int(w[k]):  # w changes, or a clamp
                            if v < 0:
                                v = 0
                            if v > 0xFFFF:
                                v = 0xFFFF
                            u = (v + 128) >> 8
                            if u == 0:
                                u = 1
                            if u == 256:
                                u = 255
                            dw = ((int(w[k]) ^ 0x80) - u) + dw
                            w[k] = u ^ 0x80
                        mw[k] = v ^ 0x8000
                    k += 1
                if dw and has_c:
                    c[row] = (((int(c[row]) & low) ^ top) - top) + cz * dw
                if has_gw:
                    gw = ptr32(int(gw) + 4 * n_in)
            elif draw:
                st = (
                    int(j[st & 15])
                    ^ int(j[16 + ((st >> 4) & 15)])
                    ^ int(j[32 + ((st >> 8) & 15)])
                    ^ int(j[48 + (st >> 12)])
                )
            mw = ptr16(int(mw) + 2 * n_in)
            w = ptr8(int(w) + n_in)
        if draw == 0:
            st = st0
    if int(p[_HAS_B]):
        st0 = st
        draw = int(p[_B + 3])
        ls = int(p[_B + 4])
        fs = int(p[_B + 5])
        t = int(p[_B + 6])
        rt = int(p[_B + 7])
        has_gb = int(p[_B + 8])
        lim = (int(p[_LIM + 1]) << 15) + int(p[_LIM])
        for row in range(n_out):
            st = ((st << 7) ^ st) & 0xFFFF
            st = (st >> 9) ^ st
            st = ((st & 0xFF) << 8) ^ st
            g = (int(d[row]) ^ 0x8000) - 0x8000
            if has_gb:
                g = (((int(gb[row]) & low) ^ top) - top) + g
                gb[row] = 0
            if g:
                g = ((((g << ls) >> fs) + ((0x10000 - st) >> rt)) >> t) - lim
                v = (((int(b[row]) & low) ^ top) - top) - g  # b - SR + lim, in 0..2 lim
                if uint(v) > uint(lim + lim):
                    if v < 0:
                        v = 0
                    else:
                        v = lim + lim
                b[row] = v - lim
        if draw == 0:
            st = st0
    return st


# -- the viper form of a learning layer ---------------------------------------------------------

_EMPTY = bytearray(0)  # stands for an absent buffer in a layer table (never read)


class ViperLayer(Layer):
    """A train_portable.Layer whose output_error, backward, accumulate and update are each one
    native call (the kernels above), given the layer's buffer table `table` instead of its
    buffers. The same integers, arrays and plan; the table is built once, here."""

    def __init__(self, spec, x, below, plan, batch, c):
        super().__init__(spec, x, below, plan, batch, c)
        n_in, n_out, zp_x = spec["n_in"], spec["n_out"], spec["zp_x"]
        out = pback = scratch = _EMPTY
        if below is not None:
            out = below.delta
            pback = array("h", [n_in, n_out, below.sback, below.act, below.zp_z])
            scratch = array("i", bytes(8 * n_out))
        pw = _update_params(self.sw, n_in, n_out, zp_x, self.gw is not None, self.c is not None)
        pb = _update_params(self.sb, n_in, n_out, zp_x, self.gb is not None, False)
        lim = self.bias_limit  # < 2**30
        flags = [int(self.trains_w), 1, lim & 0x7FFF, lim >> 15]
        jump = _jump_table(n_in) if self.trains_w and self.sw > 0 else _EMPTY
        self.table = layer_table(
            self.delta,
            x,
            _or_empty(self.gw),
            _or_empty(self.master_w),
            self.w,
            _or_empty(self.c),
            _or_empty(self.gb),
            self.b,
            array("h", pw + pb + flags),
            out,
            pback,
            jump,
            scratch,
        )

    def output_error(self, scores, label):
        output_error_kernel(scores, label, self.table)

    def backward(self):
        backward_kernel(0, 0, self.table)

    def accumulate(self):
        accumulate_kernel(0, 0, self.table)

    def update(self, st):
        return update_kernel(st, 0, self.table)


def _or_empty(buf):
    return _EMPTY if buf is None else buf


def _update_params(s, n_in, n_out, zp_x, has_g, has_c):
    """The update parameters of a layer's weights or biases for update_kernel, update shift s:
    [n_in, n_out, 128 + zp_x, draw, ls, fs, t, rt, has_g, has_c]. Shifts clamp at 31:
    |g| < 2**30, so g >> 31 is g >> s for any s >= 31."""
    t = min(max(s, 0), 16)
    return [
        n_in,
        n_out,
        128 + zp_x,
        1 if s > 0 else 0,
        max(-s, 0),
        min(s - t, 31) if s > 0 else 0,
        t,
        16 - t,
        1 if has_g else 0,
        1 if has_c else 0,
    ]


def _jump_table(n):
    """array('H') of 64 items, xorshift16 advanced n steps as four tables of 16: item 16 * q +
    v is the state n steps after v << 4q (update_kernel xors one item per nibble of a state;
    the generator is linear over GF(2))."""
    images = []  # of each state bit
    for bit in range(16):
        v = 1 << bit
        for _ in range(n):
            v = xorshift16(v)
        images.append(v)
    table = array("H", bytes(128))
    for i in range(64):
        v = 0
        for bit in range(4):
            if (i >> bit) & 1:
                v ^= images[(i >> 4) * 4 + bit]
        table[i] = v
    return table
