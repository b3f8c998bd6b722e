"""Model files on the host: QModel <-> bytes through the one layout in `device/modelfile.py`
(decoder) and `device/modelfile_write.py` (encoder).

Runs on: host.

The QModel's free-form dicts map to the file like this (what `host/pipeline.py` writes):

    features: {"window": int, "hop": int, "names": [feature kinds], "channels": [names]}
    sensor:   {"kind": str, "rate_hz": float or None,
               "full_scale": {channel: [value, unit]}}      (value stored as float32)
    training: {key: int or str}                             (on-board training defaults)

Channels come from features["channels"] (else sensor["channels"], else the full-scale keys).
"""

import os
import tempfile

import numpy as np

from device import modelfile as layout
from device.modelfile_write import encode

from .inputstage import InputStage
from .qmodel import QLayer, QModel


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
    """QModel -> the plain dict that `device.modelfile_write.encode` takes."""
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
    data = to_bytes(qmodel)
    write_bytes_atomic(path, data, ".mpm")
    return len(data)


def write_bytes_atomic(path, data, suffix=""):
    """Write `data` to `path` through a temporary file in the same folder, synced, then
    renamed over it: a crash leaves the old file or the new one, never part of one."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=os.path.dirname(path) or ".")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_model(path):
    """Read a model file -> QModel."""
    with open(path, "rb") as f:
        return from_bytes(f.read())
