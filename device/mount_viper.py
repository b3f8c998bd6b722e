"""Native code of the mount search: one orientation's turned copy of a window in one call.

Runs on: board (and the Unix port); needs a port with the native emitter (`@micropython.viper`).
device/mount.py imports it where the port compiles viper, and MountSearch uses it when the
model's kernel is viper (otherwise it copies in plain Python, `mount.turn_window`);
tests/test_mount.py proves the search bit-identical with the host's on both kernels. Viper
reads int16 and int8 arrays unsigned, so a count is negated in 16 bits (0x10000 - v, and
0x8000, -32768, saturates to 0x7FFF, 32767) and a map entry above 127 is a negative one.
"""

import micropython

# ruff: noqa: F821 (ptr8, ptr16 are viper types, known to the MicroPython compiler)


@micropython.viper
def turn_window(src: ptr16, dst: ptr16, m: ptr8, c: int, end: int):
    """dst[d] = channel |m[i]| - 1 of the frame of d (negated, saturating, where m[i] < 0) for
    every d < end, i = d mod c: the window of `src` turned by the channel map m (device/mount.py
    channel_map), frame for frame in the same layout. Unchecked."""
    i = 0
    while i < c:
        s = m[i]
        if s > 127:
            s -= 256
        d = i
        if s > 0:
            off = s - 1 - i
            while d < end:
                dst[d] = src[d + off]
                d += c
        else:
            off = -s - 1 - i
            while d < end:
                v = src[d + off]
                if v == 0x8000:
                    v = 0x7FFF
                else:
                    v = (0x10000 - v) & 0xFFFF
                dst[d] = v
                d += c
        i += 1
