"""Model files on the host: QModel <-> bytes through the one layout in `device/modelfile.py`,
decoded by the board's own decoder and encoded here.

Runs on: host. The board only reads model files: the encoder lives here, so it never goes to a
board. It takes the layout (its constants and range checks) from `device/modelfile.py`, and
every file it encodes goes through the board's decoder before it is returned.

The QModel's free-form dicts map to the file like this (what `host/pipeline.py` writes):

    features: {"window": int, "hop": int, "names": [feature kinds], "channels": [names]}
    sensor:   {"kind": str, "rate_hz": float or None,
               "full_scale": {channel: [value, unit]}}      (value stored as float32)
    training: {key: int or str}                             (on-board training defaults)

Channels come from features["channels"] (else sensor["channels"], else the full-scale keys).
"""

import binascii
import struct
from array import array

import numpy as np

from microprop.device import modelfile as layout
from microprop.device.modelfile import (
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
)

from . import outputs
from .errors import user_file_error
from .inputstage import InputStage
from .qmodel import QLayer, QModel

# -- the encoder: model dict -> bytes --------------------------------------------------------


_DTYPES = {"b": "<i1", "i": "<i4"}  # array typecodes of the file's integer arrays


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
        """Integers as the board's array(typecode) reads them (little-endian), each in lo..hi."""
        a = np.asarray(values)
        if a.size and a.dtype.kind not in "iu":
            self.parts.append(bytes(array(typecode, values)))  # raises for what is no int
            return
        a = a.astype(np.int64)
        outside = (a < lo) | (a > hi)
        if outside.any():
            _in_range(int(a[outside][0]), lo, hi, what)  # the first one, named
        self.parts.append(a.astype(_DTYPES[typecode]).tobytes())


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
    """Model dict (the one `device.modelfile.decode` returns) -> bytes; decodes its own
    output as a check. Plain lists may stand in for the arrays."""
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
    layout.decode(out)
    return out


# -- QModel <-> model dict ------------------------------------------------------------------


def _float32_text(v):
    """A float32 read from the file -> the shortest float that gives it back (8.0, 3.3)."""
    return float("%.7g" % v)


def _sensor_dict(qmodel):
    sensor, features = qmodel.sensor or {}, qmodel.features or {}
    full_scale = sensor.get("full_scale") or {}
    channels = list(features.get("channels") or sensor.get("channels") or full_scale)
    units, scales = [], []
    for ch in channels:
        fs = full_scale.get(ch)
        if fs is None:
            value, unit = 0.0, ""
        elif isinstance(fs, (int, float)):
            value, unit = float(fs), ""
        else:
            value, unit = float(fs[0]), str(fs[1])
        scales.append(value)
        units.append(unit)
    rate = sensor.get("rate_hz") or 0
    return {
        "kind": str(sensor.get("kind") or ""),
        "rate_mhz": int(np.floor(float(rate) * 1000 + 0.5)),
        "channels": [str(c) for c in channels],
        "units": units,
        "full_scale": scales,
    }


def _ints(a):
    return [int(v) for v in np.asarray(a).ravel()]


def to_dict(qmodel):
    """QModel -> the plain dict that `encode` takes."""
    st = qmodel.input_stage
    layers = []
    for layer in qmodel.layers:
        layers.append(
            {
                "act": layer.act,
                "n_in": int(layer.n_in),
                "n_out": int(layer.n_out),
                "f_x": int(layer.f_x),
                "zp_x": int(layer.zp_x),
                "f_w": int(layer.f_w),
                "f_z": int(layer.f_z),
                "zp_z": int(layer.zp_z),
                "w": _ints(layer.w),
                "b": _ints(layer.b),
                "table": None if layer.table is None else _ints(layer.table),
            }
        )
    features = qmodel.features or {}
    return {
        "sensor": _sensor_dict(qmodel),
        "features": {
            "window": int(features.get("window") or 0),
            "hop": int(features.get("hop") or 0),
            "names": [str(n) for n in features.get("names") or []],
        },
        "input": {
            "f_in": int(st.f_in),
            "zp_in": int(st.zp_in),
            "offset": _ints(st.offset),
            "mult": _ints(st.mult),
            "shift": _ints(st.shift),
        },
        "layers": layers,
        "softmax_exp": None if qmodel.softmax_exp is None else _ints(qmodel.softmax_exp),
        "classes": [str(c) for c in qmodel.classes],
        "training": dict(getattr(qmodel, "training", None) or {}),
    }


def _array(a, shape=None):
    out = np.array(list(a), dtype=np.int64)
    return out if shape is None else out.reshape(shape)


def from_dict(d):
    """The dict `device.modelfile.decode` returns -> QModel."""
    inp = d["input"]
    stage = InputStage(
        _array(inp["offset"]), _array(inp["mult"]), _array(inp["shift"]), inp["f_in"], inp["zp_in"]
    )
    layers = []
    for ld in d["layers"]:
        table = None if ld["table"] is None else _array(ld["table"])
        layers.append(
            QLayer(
                w=_array(ld["w"], (ld["n_out"], ld["n_in"])),
                b=_array(ld["b"]),
                act=ld["act"],
                f_x=ld["f_x"],
                zp_x=ld["zp_x"],
                f_w=ld["f_w"],
                f_z=ld["f_z"],
                zp_z=ld["zp_z"],
                table=table,
            )
        )
    s = d["sensor"]
    full_scale = {}
    for ch, unit, value in zip(s["channels"], s["units"], s["full_scale"], strict=True):
        if value or unit:
            full_scale[ch] = [_float32_text(value), unit]
    return QModel(
        input_stage=stage,
        layers=layers,
        softmax_exp=None if d["softmax_exp"] is None else _array(d["softmax_exp"]),
        classes=list(d["classes"]),
        features={
            "window": d["features"]["window"],
            "hop": d["features"]["hop"],
            "names": list(d["features"]["names"]),
            "channels": list(s["channels"]),
        },
        sensor={
            "kind": s["kind"],
            "rate_hz": s["rate_mhz"] / 1000 if s["rate_mhz"] else None,
            "full_scale": full_scale,
        },
        training=dict(d["training"]),
    )


def to_bytes(qmodel):
    """QModel -> model file bytes (checked by decoding them)."""
    return encode(to_dict(qmodel))


def from_bytes(b):
    """Model file bytes -> QModel; ValueError with expected vs found on any bad field."""
    return from_dict(layout.decode(b))


def write_model(path, qmodel):
    """Write `qmodel` to `path` atomically (a temporary file in the same folder, then rename)."""
    return outputs.write_bytes(path, to_bytes(qmodel))


def read_model(path):
    """Read a model file -> QModel; UserError naming the file when the device's reader
    refuses it (bad magic, version, CRC, size, ...)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return from_bytes(data)
    except ValueError as e:
        raise user_file_error(e, path) from None
