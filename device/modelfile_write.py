"""The model file encoder: model dict -> bytes, in the layout `device/modelfile.py` defines.

Runs on: host and board (MicroPython >= 1.22 and CPython; imports only struct, array, binascii).
Kept apart from the decoder so that inference on the board never loads it. The layout (its
table, constants and range checks) stays in `device/modelfile.py`, imported from there, and
every encoded file goes through the decoder's checks before it is returned.
"""

import binascii
import struct
from array import array

from .modelfile import (
    ACTIVATIONS,
    CRC,
    EXP_ONE,
    HEADER,
    MAGIC,
    SMALL,
    TABLE_OUT,
    VERSION,
    _fail,
    _in_range,
    decode,
)


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
    length = HEADER + len(body) + CRC
    out = MAGIC + struct.pack("<HHI", VERSION, 0, length) + body
    out += struct.pack("<I", binascii.crc32(out) & 0xFFFFFFFF)
    decode(out)
    return out
