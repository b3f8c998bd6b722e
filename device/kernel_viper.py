"""Viper kernels of inference: the same integers as the portable code in `device/infer.py`.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
`device/infer.py` imports it when it can and falls back to the portable code otherwise.

`dense` is the int8 dense layer; `input_stage` and `classify` are the input stage and the
argmax and softmax around it, so that `predict` runs no bytecode loop. None allocates.
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
The inner loop is a load, an xor, a load, a multiply and an add, with no branch. Every
intermediate is below 2**31 in magnitude, and the result is exact modulo the machine word
whenever the true accumulator fits, which the model file guarantees.
"""

# ruff: noqa: F821 (ptr8, ptr16, ptr32 are viper types, known to the MicroPython compiler)

import micropython


@micropython.viper
def dense(x: ptr8, w: ptr8, b: ptr16, c: ptr16, y: ptr8, p: ptr16, u: ptr8, t: ptr8):
    """int8 x (n_in) -> int8 y (n_out): acc = w.(x - zp_x) + b, z = clamp(zp_z + R(acc, s)),
    then the activation. TFLite rounding (see fixedpoint.rounding_rshift), saturated.

    b: biases array('i') and c: per-row constants array('i'), each item read as two ptr16
    halves and sign-extended from the high one; p: array('h') of
    (n_in, n_out, zp_x, s, zp_z, act); u: scratch of n_in bytes; t: the 256-byte table.
    """
    n_in = int(p[0])
    n_out = int(p[1])
    s = int(p[3])
    zp_z = (int(p[4]) ^ 0x8000) - 0x8000
    act = int(p[5])
    su = 0
    for i in range(n_in):
        v = int(x[i]) ^ 0x80
        u[i] = v
        su += v
    su = su << 7
    row = int(w)
    for j in range(n_out):
        wj = ptr8(row)
        acc = 0
        for i in range(n_in):
            acc += (int(wj[i]) ^ 0x80) * int(u[i])
        row += n_in
        acc += (((int(b[2 * j + 1]) ^ 0x8000) - 0x8000) << 16) + int(b[2 * j])
        acc += (((int(c[2 * j + 1]) ^ 0x8000) - 0x8000) << 16) + int(c[2 * j]) - su
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
        z = zp_z + acc
        if z < -128:
            z = -128
        if z > 127:
            z = 127
        if act == 1:  # the ids of modelfile.ACTIVATIONS, literal here: see the docstring
            if z < zp_z:
                z = zp_z
        elif act == 2 or act == 3:
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
