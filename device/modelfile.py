"""The model file layout, defined once, and its checked decoder (board and host).

Runs on: board and host (MicroPython >= 1.22 and CPython; imports only struct, array, binascii).
The board only reads model files: the encoder is the host's (`host/modelfile.encode`, which
takes the layout's constants and range checks from here).

Binary, little-endian. `str` is a u8 byte count then that many UTF-8 bytes. Sections follow
each other with no padding; `n_*` counts come before what they count.

| section  | field            | type          | check on reading                           |
|----------|------------------|---------------|--------------------------------------------|
| header   | magic            | 4 bytes       | b'MPRP'                                    |
|          | version          | u16           | 1                                          |
|          | flags            | u16           | 0 (reserved)                               |
|          | length           | u32           | the file size, CRC included                |
| sensor   | kind             | str           |                                            |
|          | rate_mhz         | u32           | sample rate in millihertz, <= 10**9        |
|          | n_channels       | u8            | <= 64                                      |
|          | per channel      | str, str, f32 | name, unit, full scale                     |
| features | window, hop      | u16, u16      | hop >= 1 when window >= 1                  |
|          | n_names          | u16           | 0..1024 (feature kinds, per channel)       |
|          | per name         | str           |                                            |
| input    | n_inputs         | u16           | 1..1024, = layer 0's n_in                  |
|          | f_in, zp_in      | i8, i8        |                                            |
|          | per input        | i32, i32, u8  | offset |o| < 2**30, mult 0..65535,         |
|          |                  |               | shift 0..24                                |
| layers   | n_layers         | u8            | 1..16                                      |
|          | per layer: act   | u8            | 0 linear, 1 relu, 2 sigmoid, 3 tanh,       |
|          |                  |               | 4 softmax (last layer only)                |
|          | n_in, n_out      | u32, u32      | 1..1024; n_in = the previous n_out         |
|          | f_x, zp_x        | i8, i8        | = the previous layer's output scale        |
|          | f_w, f_z, zp_z   | i8, i8, i8    | s = f_x + f_w - f_z in 0..24               |
|          | w                | n_out*n_in i8 | row-major (n_out, n_in), no -128           |
|          | b                | n_out i32     | |b| < 2**30                                |
|          | table            | 256 i8        | sigmoid and tanh only, index z + 128       |
| softmax  | exp              | 256 u32       | last layer softmax only; Q16 in 0..2**16,  |
|          |                  |               | exp[0] = 2**16                             |
| classes  | n_classes        | u16           | 0 or the last layer's n_out                |
|          | per class        | str           | name                                       |
| training | n_items          | u8            | <= 32                                      |
|          | per item         | str, u8, ...  | key, kind (0 int: i32 |v| < 2**30;         |
|          |                  |               | 1 str: str)                                |
| crc      | crc32            | u32           | binascii.crc32 of every byte before it     |

A sigmoid layer's output scale is (8, -128) and a tanh layer's (7, 0), as TFLite; the next
layer's (f_x, zp_x) must match. Counts are capped and every read is checked against the bytes
left before anything is allocated; the header's length and the CRC are checked first.
`load` reads the file twice in small pieces (once for the CRC, once for the fields), never
holding the whole file in memory: each array field is read straight into its final array.

`decode` returns (and the host's `encode` takes) a dict:
    {"sensor": {"kind", "rate_mhz", "channels", "units", "full_scale"},
     "features": {"window", "hop", "names"},
     "input": {"f_in", "zp_in", "offset", "mult", "shift"},
     "layers": [{"act" (name), "n_in", "n_out", "f_x", "zp_x", "f_w", "f_z", "zp_z",
                 "w" (array 'b'), "b" (array 'i'), "table" (array 'b' or None)}, ...],
     "softmax_exp": array 'i' or None, "classes": [names], "training": {key: int or str}}
The host's encode accepts plain lists in place of the arrays.
"""

import binascii
import struct
from array import array

try:
    from micropython import const
except ImportError:  # CPython
    const = int

MAGIC = b"MPRP"
VERSION = 1
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")  # a layer's act id: its index
RELU = ACTIVATIONS.index("relu")  # the ids the kernels test (device/infer.py, train_portable.py)
SIGMOID = ACTIVATIONS.index("sigmoid")
TANH = ACTIVATIONS.index("tanh")
# Output scale (f_y, zp_y) of the table activations, as TFLite.
TABLE_OUT = {"sigmoid": (8, -128), "tanh": (7, 0)}
SMALL = 1 << 30  # every stored int32 is in (-SMALL, SMALL)
EXP_ONE = 1 << 16
HEADER = 12  # magic, version, flags, length
CRC = 4
_MAX_UNITS = const(1024)
_MAX_LAYERS = const(16)
MAX_CHANNELS = const(64)  # channels a model file may name (the app reads all of them)
_MAX_TRAINING = const(32)
_SHIFT_MAX = const(24)
_MULT_MAX = const(65535)
_CHUNK = const(256)  # bytes per read while load() computes the CRC


def _fail(msg, *args):
    raise ValueError("model file: " + (msg % args if args else msg))


def _in_range(value, lo, hi, what):
    if value < lo or value > hi:
        _fail("%s %d, expected %d..%d", what, value, lo, hi)
    return value


class Reader:
    """Reads the fields in order from `buf` (the whole file) or, when `buf` is None, from the
    open file `f`; checks that each field is there before it is read."""

    def __init__(self, buf, f, pos, end):
        self.buf = buf
        self.f = f
        self.pos = pos
        self.end = end

    def need(self, n, what):
        if n > self.end - self.pos:
            _fail(
                "%s needs %d bytes at offset %d, found %d", what, n, self.pos, self.end - self.pos
            )
        p = self.pos
        self.pos = p + n
        return p

    def take(self, n, what):
        """The next field's n bytes."""
        p = self.need(n, what)
        if self.buf is None:
            return self.f.read(n)
        return self.buf[p : p + n]

    def field(self, code, what):
        """One little-endian number of struct type `code` (B, b, H, I, i or f)."""
        fmt = "<" + code
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def str(self, what):
        data = self.take(self.field("B", what), what)
        try:
            return str(data, "utf-8")
        except Exception:
            _fail("%s is not UTF-8", what)

    def array(self, typecode, n, what):
        """n items as array(typecode), native byte order (little-endian, as every board); from
        a file, read straight into the array, with no temporary copy."""
        size = n * struct.calcsize(typecode)
        if self.buf is not None:
            return array(typecode, self.take(size, what))
        self.need(size, what)
        a = _sized(typecode, n)
        self.f.readinto(a)
        return a


def _sized(typecode, n):
    """An array(typecode) of n items to read into, made from range(n) with no n-byte
    temporary: MicroPython truncates each item to the typecode's width. CPython checks item
    ranges (past 127 for 'b') and gets zero bytes instead."""
    try:
        return array(typecode, range(n))
    except OverflowError:
        return array(typecode, bytes(n * struct.calcsize(typecode)))


def _check_header(head, n):
    """The first 12 bytes (fewer if the file is shorter) of a file of n bytes."""
    if n < 4:
        _fail("truncated, %d bytes, expected at least %d", n, HEADER + CRC)
    if head[:4] != MAGIC:
        _fail("bad magic %r, expected %r", bytes(head[:4]), MAGIC)
    if n < HEADER + CRC:
        _fail("truncated, %d bytes, expected at least %d", n, HEADER + CRC)
    version, flags, length = struct.unpack_from("<HHI", head, 4)
    if version != VERSION:
        _fail("unknown version %d, expected %d", version, VERSION)
    if flags != 0:
        _fail("flags 0x%x, expected 0", flags)
    if length != n:
        _fail("size %d bytes, header says %d", n, length)


def _check_crc(tail, crc):
    """tail: the file's last 4 bytes; crc: binascii.crc32 of every byte before them."""
    stored = int.from_bytes(tail, "little")
    crc &= 0xFFFFFFFF
    if stored != crc:
        _fail("crc mismatch: stored 0x%08x, computed 0x%08x", stored, crc)


def _read_sensor(r):
    kind = r.str("sensor kind")
    rate = _in_range(r.field("I", "sample rate"), 0, 10**9, "sample rate (mHz)")
    n = _in_range(r.field("B", "channel count"), 0, MAX_CHANNELS, "channel count")
    names, units, scales = [], [], []
    for _ in range(n):
        names.append(r.str("channel name"))
        units.append(r.str("channel unit"))
        scales.append(r.field("f", "channel full scale"))
    return {
        "kind": kind,
        "rate_mhz": rate,
        "channels": names,
        "units": units,
        "full_scale": scales,
    }


def _read_features(r):
    window = r.field("H", "window")
    hop = r.field("H", "hop")
    if window and not hop:
        _fail("hop 0, expected >= 1 for window %d", window)
    n = _in_range(r.field("H", "feature name count"), 0, _MAX_UNITS, "feature name count")
    names = []
    for _ in range(n):
        names.append(r.str("feature name"))
    return {"window": window, "hop": hop, "names": names}


def _read_input(r):
    n = _in_range(r.field("H", "input count"), 1, _MAX_UNITS, "input count")
    f_in = r.field("b", "f_in")
    zp_in = r.field("b", "zp_in")
    data = r.take(9 * n, "input stage")
    offset = array("i", bytes(4 * n))
    mult = array("i", bytes(4 * n))
    shift = array("b", bytes(n))
    for i in range(n):
        o, m, s = struct.unpack_from("<iiB", data, 9 * i)
        offset[i] = _in_range(o, 1 - SMALL, SMALL - 1, "input offset")
        mult[i] = _in_range(m, 0, _MULT_MAX, "input mult")
        shift[i] = _in_range(s, 0, _SHIFT_MAX, "input shift")
    return {"f_in": f_in, "zp_in": zp_in, "offset": offset, "mult": mult, "shift": shift}


def _read_layer(r, k, last, f_x, zp_x, n_in):
    where = "layer %d " % k
    act_id = r.field("B", where + "activation")
    if act_id >= len(ACTIVATIONS):
        _fail("%sactivation id %d, expected 0..%d", where, act_id, len(ACTIVATIONS) - 1)
    act = ACTIVATIONS[act_id]
    if act == "softmax" and not last:
        _fail("%sactivation softmax, expected it on the last layer only", where)
    _in_range(r.field("I", where + "n_in"), n_in, n_in, where + "n_in")
    n_out = _in_range(r.field("I", where + "n_out"), 1, _MAX_UNITS, where + "n_out")
    _in_range(r.field("b", where + "f_x"), f_x, f_x, where + "f_x")
    _in_range(r.field("b", where + "zp_x"), zp_x, zp_x, where + "zp_x")
    f_w = r.field("b", where + "f_w")
    f_z = r.field("b", where + "f_z")
    zp_z = r.field("b", where + "zp_z")
    _in_range(f_x + f_w - f_z, 0, _SHIFT_MAX, where + "shift f_x + f_w - f_z")
    w = r.array("b", n_out * n_in, where + "weights")
    for i in range(len(w)):
        if w[i] == -128:
            _fail("%sweight -128 at index %d, expected -127..127", where, i)
    b = r.array("i", n_out, where + "biases")
    for j in range(n_out):
        _in_range(b[j], 1 - SMALL, SMALL - 1, where + "bias")
    table = None
    if act in TABLE_OUT:
        table = r.array("b", 256, where + "table")
    return {
        "act": act,
        "n_in": n_in,
        "n_out": n_out,
        "f_x": f_x,
        "zp_x": zp_x,
        "f_w": f_w,
        "f_z": f_z,
        "zp_z": zp_z,
        "w": w,
        "b": b,
        "table": table,
    }


def _read_training(r):
    n = _in_range(r.field("B", "training item count"), 0, _MAX_TRAINING, "training item count")
    items = {}
    for _ in range(n):
        key = r.str("training key")
        kind = r.field("B", "training value kind")
        if kind == 0:
            items[key] = _in_range(r.field("i", "training value"), 1 - SMALL, SMALL - 1, key)
        elif kind == 1:
            items[key] = r.str("training value")
        else:
            _fail("training value kind %d, expected 0 (int) or 1 (str)", kind)
    return items


def _read(r):
    """The fields after the header, from the Reader `r`, -> the model dict."""
    m = {"sensor": _read_sensor(r), "features": _read_features(r)}
    inp = m["input"] = _read_input(r)
    n = _in_range(r.field("B", "layer count"), 1, _MAX_LAYERS, "layer count")
    layers = m["layers"] = []
    # Each layer's input scale and size are the previous output's; a table activation's
    # output scale is fixed (TABLE_OUT).
    f_x, zp_x, n_in = inp["f_in"], inp["zp_in"], len(inp["offset"])
    for k in range(n):
        layer = _read_layer(r, k, k == n - 1, f_x, zp_x, n_in)
        layers.append(layer)
        f_x, zp_x = TABLE_OUT.get(layer["act"]) or (layer["f_z"], layer["zp_z"])
        n_in = layer["n_out"]
    e = None
    if layers[-1]["act"] == "softmax":
        e = r.array("i", 256, "softmax table")
        for i in range(256):
            _in_range(e[i], 0, EXP_ONE, "softmax table entry")
        _in_range(e[0], EXP_ONE, EXP_ONE, "softmax table entry 0")
    m["softmax_exp"] = e
    n = r.field("H", "class count")
    if n != 0 and n != n_in:
        _fail("class count %d, expected 0 or %d (the last layer's n_out)", n, n_in)
    m["classes"] = [r.str("class name") for _ in range(n)]
    m["training"] = _read_training(r)
    if r.pos != r.end:
        _fail("%d unread bytes before the crc at offset %d", r.end - r.pos, r.pos)
    return m


def decode(buf):
    """bytes -> model dict (see the module docstring); raises ValueError on any bad field."""
    if not isinstance(buf, (bytes, bytearray)):
        buf = bytes(buf)
    n = len(buf)
    _check_header(buf, n)
    _check_crc(buf[n - CRC :], binascii.crc32(memoryview(buf)[: n - CRC]))
    return _read(Reader(buf, None, HEADER, n - CRC))


def load(path):
    """Read and decode the model file at `path`: the checks of `decode`, in small reads."""
    with open(path, "rb") as f:
        n = f.seek(0, 2)
        f.seek(0)
        _check_header(f.read(HEADER), n)
        f.seek(0)
        chunk = bytearray(_CHUNK)
        crc = 0
        left = n - CRC
        while left > 0:
            k = f.readinto(chunk)
            if not k:
                break
            k = min(k, left)
            crc = binascii.crc32(memoryview(chunk)[:k], crc)
            left -= k
        chunk = None
        f.seek(n - CRC)
        _check_crc(f.read(CRC), crc)
        f.seek(HEADER)
        return _read(Reader(None, f, HEADER, n - CRC))
