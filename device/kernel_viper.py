"""Viper dense-layer kernel: int8 inputs -> int8 outputs, the same integers as the portable one.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
`device/infer.py` imports it when it can and falls back to the portable kernel otherwise.

Viper loads are unsigned (ptr8, ptr16), ptr32 sign-extends on some ports only, and arithmetic
wraps at the machine word. So this kernel reads only ptr8 and ptr16 and folds the sign
handling out of the inner loop. With u_i = x_i + 128 and v_ji = w_ji + 128 (both 0..255,
one xor from the stored byte):

    sum_i w_ji * (x_i - zp_x) = sum_i v_ji * u_i - 128 * sum_i u_i - (128 + zp_x) * sum_i w_ji

The last term is the per-row constant `c_j` computed once at load; `sum_i u_i` once per call.
The inner loop is a load, an xor, a load, a multiply and an add, with no branch. Every
intermediate is below 2**31 in magnitude, and the result is exact modulo the machine word
whenever the true accumulator fits, which the model file guarantees.
"""

# ruff: noqa: F821 (ptr8, ptr16 are viper types, known to the MicroPython compiler)

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
        if act == 1:
            if z < zp_z:
                z = zp_z
        elif act == 2 or act == 3:
            z = int(t[z + 128])
        y[j] = z
