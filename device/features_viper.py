"""Window features in native code: the same integers as `device/features.py`, much faster.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
`device/app.py` imports it only when the model's kernel is viper (the WebAssembly port has no
viper); tests/test_features.py proves it bit-identical with host/features.py.

Same definitions and ring-buffer layout as `device/features.py`. Viper loads of ptr16 are
unsigned, so the kernel works on u = x + 32768 = (stored halfword) ^ 0x8000, in [0, 65535]:
sum, min, max, |differences| and the mean of u are those of x shifted by 32768 (32768 N is a
multiple of N, so floor(S_u / N) = mean + 32768), every division is of a non-negative value,
x >> t = (u >> t) - (32768 >> t) for t <= 6, and x >= mean iff u >= mean_u. Every intermediate
keeps the bounds of host/features.py (S_u <= 512 * 65535 < 2**25), so the machine words of any
port give the portable code's integers. The kernel's first three locals are the hot loop's `i`,
`x` and `buf` (the emitter keeps only three locals in registers on x64 and armv6m).
"""

# ruff: noqa: F821 (ptr16, ptr32 are viper types, known to the MicroPython compiler)

import micropython

from .features import check_args


def window_features(buf, n_channels, capacity, start, length, out, offset=0):
    """int16 ring-buffer window -> 7 int features per channel into out[offset:], exact.

    The arguments of `features.window_features`; `out` must be an array('i'). Allocates
    nothing.
    """
    check_args(buf, n_channels, capacity, start, length, out, offset)
    kernel(0, 0, buf, n_channels, capacity, start, length, out, offset)


@micropython.viper
def kernel(i: int, x: int, buf: ptr16, nch: int, cap: int, start: int, n: int, out: ptr32, k: int):
    """The features of every channel into out[k:]; i and x are scratch (pass 0). Unchecked."""
    wrap = start + n - cap  # frames read from the ring's beginning, if > 0
    c = 0
    while c < nch:
        # Pass 1: sum, min, max and sum of |u_i - u_{i-1}|, over one or two runs of the ring.
        i = start * nch + c
        e = wrap * nch + c if wrap > 0 else n * nch + i
        f = e if wrap > 0 else -1
        if wrap > 0:
            e = cap * nch + c
        x = int(buf[i]) ^ 0x8000
        prev = x
        lo = x
        hi = x
        total = 0
        dsum = 0
        while True:
            while i < e:
                x = int(buf[i]) ^ 0x8000
                total += x
                if x < lo:
                    lo = x
                elif x > hi:
                    hi = x
                if x >= prev:
                    dsum += x - prev
                else:
                    dsum += prev - x
                prev = x
                i += nch
            if f < 0:
                break
            i = c
            e = f
            f = -1
        mean = total // n
        m = hi - mean
        if mean - lo > m:
            m = mean - lo
        s = 0
        while (m >> s) >= 1024:
            s += 1
        m = hi - 32768
        if 32768 - lo > m:
            m = 32768 - lo
        t = 0
        while (m >> t) >= 1024:
            t += 1
        bt = 32768 >> t

        # Pass 2: sums of squares after the shifts s and t, and mean crossings.
        i = start * nch + c
        e = wrap * nch + c if wrap > 0 else n * nch + i
        f = e if wrap > 0 else -1
        if wrap > 0:
            e = cap * nch + c
        above = 1 if (int(buf[i]) ^ 0x8000) >= mean else 0
        vsum = 0
        esum = 0
        cross = 0
        while True:
            while i < e:
                x = int(buf[i]) ^ 0x8000
                m = (x - mean) >> s
                vsum += m * m
                m = (x >> t) - bt
                esum += m * m
                if x >= mean:
                    if above == 0:
                        cross += 1
                        above = 1
                elif above:
                    cross += 1
                    above = 0
                i += nch
            if f < 0:
                break
            i = c
            e = f
            f = -1

        # isqrt(vsum // n), bitwise digit by digit as in features.isqrt
        x = vsum // n
        m = 0
        b = 1048576
        while b > x:
            b >>= 2
        while b:
            if x >= m + b:
                x -= m + b
                m = (m >> 1) + b
            else:
                m >>= 1
            b >>= 2
        out[k] = mean - 32768
        out[k + 1] = m << s
        out[k + 2] = lo - 32768
        out[k + 3] = hi - 32768
        out[k + 4] = dsum // (n - 1) if n > 1 else 0
        out[k + 5] = cross
        out[k + 6] = (esum // n) >> (14 - 2 * t)
        k += 7
        c += 1
