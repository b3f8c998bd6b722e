"""`microprop deploy`'s probe: the board's format, free flash and the files it holds.

Runs on: board (MicroPython, from `mpremote exec`; the host appends
`main(root_files, lib_dir)`). Prints `I <_mpy> <free bytes> <hash algorithm> <platform>
<version>`, `H <size> <hash> <path>` for each existing file of `root_files` and of `lib_dir`,
and `D <path>` for /lib and `lib_dir` if they are folders. Hashes are sha256, or
binascii.crc32 where hashlib lacks it; files are read in 512-byte chunks into one buffer: it
runs on a 64 kB heap.
"""

import binascii
import os
import sys

try:
    from hashlib import sha256 as _sha256

    _ALGO = "sha256"
except ImportError:
    _sha256 = None
    _ALGO = "crc32" if hasattr(binascii, "crc32") else "none"
_buf = bytearray(512)
_view = memoryview(_buf)


def _hash(path):
    try:
        f = open(path, "rb")
    except OSError:
        return
    n = 0
    c = 0
    d = _sha256() if _sha256 else None
    with f:
        while True:
            k = f.readinto(_buf)
            if not k:
                break
            n += k
            if d:
                d.update(_view[:k])
            elif _ALGO == "crc32":
                c = binascii.crc32(_view[:k], c)
    digest = binascii.hexlify(d.digest()).decode() if d else "%08x" % (c & 0xFFFFFFFF)
    print("H", n, digest, path)


def main(root_files, lib_dir):
    s = os.statvfs("/")
    version = ".".join(str(v) for v in sys.implementation.version[:3])
    print("I", getattr(sys.implementation, "_mpy", -1), s[0] * s[4], _ALGO, sys.platform, version)
    for path in root_files:
        _hash(path)
    try:
        entries = list(os.ilistdir(lib_dir))
    except OSError:
        entries = ()
    for e in entries:
        if e[1] == 0x8000:
            _hash(lib_dir + "/" + e[0])
    for path in ("/lib", lib_dir):
        try:
            if os.stat(path)[0] & 0x4000:
                print("D", path)
        except OSError:
            pass
