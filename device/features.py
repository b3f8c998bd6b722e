"""Integer window features of int16 sensor counts, read straight from a ring buffer.

Runs on: board and host (MicroPython; CPython for tests). The NumPy reference, with the exact
definitions and the proof that every intermediate stays in [-2**30, 2**30), is
`host/features.py`; tests prove the two bit-identical.

Seven features per channel, channel-major: mean, std, min, max, mad, crossings, energy.

Ring buffer layout: `buf` is an interleaved int16 `array('h')` of `capacity` frames, one frame
= one sample of every channel, frame j at buf[j * n_channels : (j + 1) * n_channels]. The
window is the `length` frames starting at frame `start` and wrapping past the end: frames
start, start + 1, ..., taken modulo `capacity`. With `head` the next frame to write, the latest
window starts at (head - length) % capacity. Nothing is copied and nothing is allocated: the
features go into a caller-provided `array('i')` (or list) `out` at out[offset : offset + 7 C].
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


FEATURES = ("mean", "std", "min", "max", "mad", "crossings", "energy")  # per channel
N_FEATURES = len(FEATURES)
MAX_WINDOW = 512
_SIG = const(1024)  # 2**10: samples keep 10 significant bits before squaring
_TOP4 = const(1048576)  # 2**20: highest power of 4 that isqrt meets


def isqrt(v):
    """int 0 <= v < 2**22 -> floor(sqrt(v)), bitwise digit-by-digit."""
    r = 0
    b = _TOP4
    while b > v:
        b >>= 2
    while b:
        if v >= r + b:
            v -= r + b
            r = (r >> 1) + b
        else:
            r >>= 1
        b >>= 2
    return r


def _sig_shift(m):
    """Smallest s >= 0 with (m >> s) < 2**10."""
    s = 0
    while (m >> s) >= _SIG:
        s += 1
    return s


def check_args(buf, n_channels, capacity, start, length, out, offset=0):
    """Raise ValueError unless the arguments describe a valid window and output."""
    if n_channels < 1:
        raise ValueError("features: n_channels must be >= 1, found %d" % n_channels)
    if length < 1 or length > MAX_WINDOW or length > capacity:
        raise ValueError(
            "features: length must be in [1, min(%d, capacity %d)], found %d"
            % (MAX_WINDOW, capacity, length)
        )
    if len(buf) < capacity * n_channels:
        raise ValueError(
            "features: buffer holds %d values, expected >= %d" % (len(buf), capacity * n_channels)
        )
    if start < 0 or start >= capacity:
        raise ValueError("features: start must be in [0, %d), found %d" % (capacity, start))
    if offset < 0 or len(out) < offset + N_FEATURES * n_channels:
        raise ValueError(
            "features: out holds %d values, expected >= %d"
            % (len(out), offset + N_FEATURES * n_channels)
        )


def window_features(buf, n_channels, capacity, start, length, out, offset=0):
    """int16 ring-buffer window -> 7 int features per channel into out[offset:], exact.

    Integer-only, floor rounding as defined in host/features.py; allocates nothing.
    """
    check_args(buf, n_channels, capacity, start, length, out, offset)
    wrap = capacity * n_channels
    for c in range(n_channels):
        # Pass 1: sum, min, max, sum of |x_i - x_{i-1}|.
        i = start * n_channels + c
        x = buf[i]
        total = x
        lo = x
        hi = x
        dsum = 0
        prev = x
        for _ in range(length - 1):
            i += n_channels
            if i >= wrap:
                i -= wrap
            x = buf[i]
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
        mean = total // length
        m = hi - mean
        if mean - lo > m:
            m = mean - lo
        s = _sig_shift(m)
        a = hi
        if -lo > a:
            a = -lo
        t = _sig_shift(a)

        # Pass 2: sums of squares (after the adaptive shifts) and mean crossings.
        i = start * n_channels + c
        vsum = 0
        esum = 0
        cross = 0
        above = buf[i] >= mean
        for _ in range(length):
            x = buf[i]
            r = (x - mean) >> s
            vsum += r * r
            r = x >> t
            esum += r * r
            if (x >= mean) != above:
                cross += 1
                above = not above
            i += n_channels
            if i >= wrap:
                i -= wrap

        k = offset + N_FEATURES * c
        out[k] = mean
        out[k + 1] = isqrt(vsum // length) << s
        out[k + 2] = lo
        out[k + 3] = hi
        out[k + 4] = dsum // (length - 1) if length > 1 else 0
        out[k + 5] = cross
        out[k + 6] = (esum // length) >> (14 - 2 * t)
