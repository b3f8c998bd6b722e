"""The model file layout, defined once: encoder (host) and checked decoder (board and host).

Runs on: board and host (MicroPython >= 1.22 and CPython; imports only struct, array, binascii).

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

`decode` returns (and `encode` takes) a dict:
    {"sensor": {"kind", "rate_mhz", "channels", "units", "full_scale"},
     "features": {"window", "hop", "names"},
     "input": {"f_in", "zp_in", "offset", "mult", "shift"},
     "layers": [{"act" (name), "n_in", "n_out", "f_x", "zp_x", "f_w", "f_z", "zp_z",
                 "w" (array 'b'), "b" (array 'i'), "table" (array 'b' or None)}, ...],
     "softmax_exp": array 'i' or None, "classes": [names], "training": {key: int or str}}
encode accepts plain lists in place of the arrays.
"""

import binascii
import struct
from array import array

MAGIC = b"MPRP"
VERSION = 1
ACTIVATIONS = ("linear", "relu", "sigmoid", "tanh", "softmax")
# Output scale (f_y, zp_y) of the table activations, as TFLite.
TABLE_OUT = {"sigmoid": (8, -128), "tanh": (7, 0)}
MAX_UNITS = 1024
MAX_LAYERS = 16
MAX_CHANNELS = 64
MAX_TRAINING = 32
SHIFT_MAX = 24
MULT_MAX = 65535
SMALL = 1 << 30
EXP_ONE = 1 << 16
_HEADER = 12  # magic, version, flags, length
_CRC = 4


def _fail(msg, *args):
    raise ValueError("model file: " + (msg % args if args else msg))


def _in_range(value, lo, hi, what):
    if value < lo or value > hi:
        _fail("%s %d, expected %d..%d", what, value, lo, hi)
    return value


class _Reader:
    """Reads fields from buf[pos:end], checking that each one is there before it is read."""

    def __init__(self, buf, pos, end):
        self.buf = buf
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

    def unpack(self, fmt, size, what):
        return struct.unpack_from(fmt, self.buf, self.need(size, what))[0]

    def u8(self, what):
        return self.unpack("<B", 1, what)

    def i8(self, what):
        return self.unpack("<b", 1, what)

    def u16(self, what):
        return self.unpack("<H", 2, what)

    def u32(self, what):
        return self.unpack("<I", 4, what)

    def i32(self, what):
        return self.unpack("<i", 4, what)

    def str(self, what):
        n = self.u8(what)
        p = self.need(n, what)
        try:
            return str(self.buf[p : p + n], "utf-8")
        except Exception:
            _fail("%s is not UTF-8", what)

    def bytes_array(self, typecode, n, size, what):
        """n items of `size` bytes as array(typecode), native byte order (little-endian)."""
        p = self.need(n * size, what)
        return array(typecode, self.buf[p : p + n * size])


def _check_header(buf):
    n = len(buf)
    if n < 4:
        _fail("truncated, %d bytes, expected at least %d", n, _HEADER + _CRC)
    if buf[:4] != MAGIC:
        _fail("bad magic %r, expected %r", bytes(buf[:4]), MAGIC)
    if n < _HEADER + _CRC:
        _fail("truncated, %d bytes, expected at least %d", n, _HEADER + _CRC)
    version, flags, length = struct.unpack_from("<HHI", buf, 4)
    if version != VERSION:
        _fail("unknown version %d, expected %d", version, VERSION)
    if flags != 0:
        _fail("flags 0x%x, expected 0", flags)
    if length != n:
        _fail("size %d bytes, header says %d", n, length)
    crc = struct.unpack_from("<I", buf, n - _CRC)[0]
    actual = binascii.crc32(memoryview(buf)[: n - _CRC]) & 0xFFFFFFFF
    if crc != actual:
        _fail("crc mismatch: stored 0x%08x, computed 0x%08x", crc, actual)


def _read_sensor(r):
    kind = r.str("sensor kind")
    rate = _in_range(r.u32("sample rate"), 0, 10**9, "sample rate (mHz)")
    n = _in_range(r.u8("channel count"), 0, MAX_CHANNELS, "channel count")
    names, units, scales = [], [], []
    for _ in range(n):
        names.append(r.str("channel name"))
        units.append(r.str("channel unit"))
        scales.append(r.unpack("<f", 4, "channel full scale"))
    return {
        "kind": kind,
        "rate_mhz": rate,
        "channels": names,
        "units": units,
        "full_scale": scales,
    }


def _read_features(r):
    window = r.u16("window")
    hop = r.u16("hop")
    if window and not hop:
        _fail("hop 0, expected >= 1 for window %d", window)
    n = _in_range(r.u16("feature name count"), 0, MAX_UNITS, "feature name count")
    names = []
    for _ in range(n):
        names.append(r.str("feature name"))
    return {"window": window, "hop": hop, "names": names}


def _read_input(r):
    n = _in_range(r.u16("input count"), 1, MAX_UNITS, "input count")
    f_in = r.i8("f_in")
    zp_in = r.i8("zp_in")
    p = r.need(9 * n, "input stage")
    offset = array("i", bytes(4 * n))
    mult = array("i", bytes(4 * n))
    shift = array("b", bytes(n))
    for i in range(n):
        o, m, s = struct.unpack_from("<iiB", r.buf, p + 9 * i)
        offset[i] = _in_range(o, 1 - SMALL, SMALL - 1, "input offset")
        mult[i] = _in_range(m, 0, MULT_MAX, "input mult")
        shift[i] = _in_range(s, 0, SHIFT_MAX, "input shift")
    return {"f_in": f_in, "zp_in": zp_in, "offset": offset, "mult": mult, "shift": shift}


def _read_layer(r, k, last, f_x, zp_x, n_in):
    where = "layer %d " % k
    act_id = r.u8(where + "activation")
    if act_id >= len(ACTIVATIONS):
        _fail("%sactivation id %d, expected 0..%d", where, act_id, len(ACTIVATIONS) - 1)
    act = ACTIVATIONS[act_id]
    if act == "softmax" and not last:
        _fail("%sactivation softmax, expected it on the last layer only", where)
    _in_range(r.u32(where + "n_in"), n_in, n_in, where + "n_in")
    n_out = _in_range(r.u32(where + "n_out"), 1, MAX_UNITS, where + "n_out")
    _in_range(r.i8(where + "f_x"), f_x, f_x, where + "f_x")
    _in_range(r.i8(where + "zp_x"), zp_x, zp_x, where + "zp_x")
    f_w = r.i8(where + "f_w")
    f_z = r.i8(where + "f_z")
    zp_z = r.i8(where + "zp_z")
    _in_range(f_x + f_w - f_z, 0, SHIFT_MAX, where + "shift f_x + f_w - f_z")
    p = r.pos
    w = r.bytes_array("b", n_out * n_in, 1, where + "weights")
    if r.buf.find(b"\x80", p, r.pos) >= 0:
        _fail("%sweight -128 at index %d, expected -127..127", where, r.buf.find(b"\x80", p) - p)
    b = r.bytes_array("i", n_out, 4, where + "biases")
    for j in range(n_out):
        _in_range(b[j], 1 - SMALL, SMALL - 1, where + "bias")
    table = None
    if act in TABLE_OUT:
        table = r.bytes_array("b", 256, 1, where + "table")
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


def _out_scale(layer):
    if layer["act"] in TABLE_OUT:
        return TABLE_OUT[layer["act"]]
    return layer["f_z"], layer["zp_z"]


def _read_layers(r, inp, n_features):
    n = _in_range(r.u8("layer count"), 1, MAX_LAYERS, "layer count")
    layers = []
    f_x, zp_x, n_in = inp["f_in"], inp["zp_in"], n_features
    for k in range(n):
        layer = _read_layer(r, k, k == n - 1, f_x, zp_x, n_in)
        layers.append(layer)
        f_x, zp_x = _out_scale(layer)
        n_in = layer["n_out"]
    return layers


def _read_softmax(r):
    e = r.bytes_array("i", 256, 4, "softmax table")
    for i in range(256):
        _in_range(e[i], 0, EXP_ONE, "softmax table entry")
    _in_range(e[0], EXP_ONE, EXP_ONE, "softmax table entry 0")
    return e


def _read_training(r):
    n = _in_range(r.u8("training item count"), 0, MAX_TRAINING, "training item count")
    items = {}
    for _ in range(n):
        key = r.str("training key")
        kind = r.u8("training value kind")
        if kind == 0:
            items[key] = _in_range(r.i32("training value"), 1 - SMALL, SMALL - 1, key)
        elif kind == 1:
            items[key] = r.str("training value")
        else:
            _fail("training value kind %d, expected 0 (int) or 1 (str)", kind)
    return items


def decode(buf):
    """bytes -> model dict (see the module docstring); raises ValueError on any bad field."""
    if not isinstance(buf, (bytes, bytearray)):
        buf = bytes(buf)
    _check_header(buf)
    r = _Reader(buf, _HEADER, len(buf) - _CRC)
    m = {"sensor": _read_sensor(r), "features": _read_features(r)}
    m["input"] = _read_input(r)
    m["layers"] = _read_layers(r, m["input"], len(m["input"]["offset"]))
    m["softmax_exp"] = _read_softmax(r) if m["layers"][-1]["act"] == "softmax" else None
    n = r.u16("class count")
    n_out = m["layers"][-1]["n_out"]
    if n != 0 and n != n_out:
        _fail("class count %d, expected 0 or %d (the last layer's n_out)", n, n_out)
    m["classes"] = [r.str("class name") for _ in range(n)]
    m["training"] = _read_training(r)
    if r.pos != r.end:
        _fail("%d unread bytes before the crc at offset %d", r.end - r.pos, r.pos)
    return m


def load(path):
    """Read and decode the model file at `path`."""
    with open(path, "rb") as f:
        return decode(f.read())


# --- encoder (host; also runs under MicroPython) ---


class _Writer:
    def __init__(self):
        self.parts = []

    def pack(self, fmt, value, lo, hi, what):
        self.parts.append(struct.pack(fmt, _in_range(value, lo, hi, what)))

    def u8(self, v, what):
        self.pack("<B", v, 0, 255, what)

    def i8(self, v, what):
        self.pack("<b", v, -128, 127, what)

    def u16(self, v, what):
        self.pack("<H", v, 0, 65535, what)

    def u32(self, v, what):
        self.pack("<I", v, 0, 0xFFFFFFFF, what)

    def i32(self, v, what):
        self.pack("<i", v, -(1 << 31), (1 << 31) - 1, what)

    def str(self, s, what):
        b = s.encode("utf-8")
        self.u8(len(b), what + " length")
        self.parts.append(b)

    def ints(self, typecode, values, lo, hi, what):
        for v in values:
            _in_range(v, lo, hi, what)
        self.parts.append(bytes(array(typecode, values)))


def _write_layer(wr, k, layer):
    where = "layer %d " % k
    act = layer["act"]
    if act not in ACTIVATIONS:
        _fail("%sactivation %r, expected one of %r", where, act, ACTIVATIONS)
    wr.u8(ACTIVATIONS.index(act), where + "activation")
    wr.u32(layer["n_in"], where + "n_in")
    wr.u32(layer["n_out"], where + "n_out")
    for key in ("f_x", "zp_x", "f_w", "f_z", "zp_z"):
        wr.i8(layer[key], where + key)
    n = layer["n_in"] * layer["n_out"]
    if len(layer["w"]) != n or len(layer["b"]) != layer["n_out"]:
        _fail("%sweights/biases sizes %d/%d", where, len(layer["w"]), len(layer["b"]))
    wr.ints("b", layer["w"], -128, 127, where + "weight")
    wr.ints("i", layer["b"], -(1 << 31), (1 << 31) - 1, where + "bias")
    if act in TABLE_OUT:
        if layer["table"] is None or len(layer["table"]) != 256:
            _fail("%s%s needs a 256-entry table", where, act)
        wr.ints("b", layer["table"], -128, 127, where + "table")


def encode(m):
    """Model dict (see the module docstring) -> bytes; decodes its own output as a check."""
    wr = _Writer()
    s, f, inp = m["sensor"], m["features"], m["input"]
    wr.str(s["kind"], "sensor kind")
    wr.u32(s["rate_mhz"], "sample rate")
    wr.u8(len(s["channels"]), "channel count")
    for i in range(len(s["channels"])):
        wr.str(s["channels"][i], "channel name")
        wr.str(s["units"][i], "channel unit")
        wr.parts.append(struct.pack("<f", s["full_scale"][i]))
    wr.u16(f["window"], "window")
    wr.u16(f["hop"], "hop")
    wr.u16(len(f["names"]), "feature name count")
    for name in f["names"]:
        wr.str(name, "feature name")
    wr.u16(len(inp["offset"]), "input count")
    wr.i8(inp["f_in"], "f_in")
    wr.i8(inp["zp_in"], "zp_in")
    for i in range(len(inp["offset"])):
        wr.i32(inp["offset"][i], "input offset")
        wr.i32(inp["mult"][i], "input mult")
        wr.u8(inp["shift"][i], "input shift")
    wr.u8(len(m["layers"]), "layer count")
    for k in range(len(m["layers"])):
        _write_layer(wr, k, m["layers"][k])
    if m["layers"][-1]["act"] == "softmax":
        exp = m["softmax_exp"]
        if exp is None or len(exp) != 256:
            _fail("a softmax output layer needs a 256-entry exp table")
        wr.ints("i", exp, 0, EXP_ONE, "softmax table entry")
    wr.u16(len(m["classes"]), "class count")
    for name in m["classes"]:
        wr.str(name, "class name")
    items = m.get("training") or {}
    wr.u8(len(items), "training item count")
    for key in sorted(items):
        wr.str(key, "training key")
        value = items[key]
        if isinstance(value, str):
            wr.u8(1, "kind")
            wr.str(value, "training value")
        elif isinstance(value, int):
            wr.u8(0, "kind")
            wr.pack("<i", value, 1 - SMALL, SMALL - 1, key)
        else:
            _fail("training value %r of %r, expected an int or a str", value, key)
    body = b"".join(wr.parts)
    length = _HEADER + len(body) + _CRC
    out = MAGIC + struct.pack("<HHI", VERSION, 0, length) + body
    out += struct.pack("<I", binascii.crc32(out) & 0xFFFFFFFF)
    decode(out)
    return out
