"""`microprop info`: what a model file holds and what the board needs to run it.

Runs on: host.
"""

from . import features
from .bounds import headroom
from .names import shown

# Bytes per array item on the board: array('b') 1, array('h') 2, array('i') 4.
_ARRAY_OVERHEAD = 32  # a MicroPython array object and its heap block header, roughly


def board_memory(qm):
    """Estimated RAM in bytes the board needs for inference, per part (arrays and buffers)."""
    n_ch = len(qm.features.get("channels") or qm.sensor.get("channels") or [])
    window = int(qm.features.get("window", 0))
    parts = {
        "weights (int8)": sum(layer.w.size for layer in qm.layers),
        "biases (int32)": 4 * sum(layer.n_out for layer in qm.layers),
        "activations (int8)": sum(layer.n_out for layer in qm.layers) + qm.sizes[0],
        "input stage (int32 x3)": 12 * qm.sizes[0],
        "tables": 256 * sum(1 for layer in qm.layers if layer.table is not None)
        + (4 * 256 if qm.softmax_exp is not None else 0),
        "ring buffer (int16)": 2 * n_ch * window,
        "features (int32)": 4 * n_ch * len(features.FEATURES),
    }
    n_arrays = 3 * len(qm.layers) + 6
    parts["array headers"] = _ARRAY_OVERHEAD * n_arrays
    return parts


def describe(qm, path=""):
    """A plain-text description: layers, scales, flash and RAM, accumulator headroom."""
    import os

    lines = []
    size = os.path.getsize(path) if path and os.path.exists(path) else None
    lines.append("model %s%s" % (path, " (%d bytes on flash)" % size if size else ""))
    lines.append("network  " + "-".join(str(n) for n in qm.sizes))
    lines.append("classes  " + ", ".join(map(shown, qm.classes)))
    sensor = qm.sensor or {}
    feats = qm.features or {}
    lines.append(
        "sensor   %s, %s Hz, channels %s"
        % (
            sensor.get("kind") or "unspecified",
            _num(sensor.get("rate_hz")),
            ",".join(map(shown, feats.get("channels") or sensor.get("channels") or [])),
        )
    )
    lines.append(
        "features window %s samples, hop %s, %s per channel"
        % (feats.get("window"), feats.get("hop"), ",".join(feats.get("names") or []))
    )
    st = qm.input_stage
    lines.append(
        "input    %d features -> int8 at 2**-%d, zero point %d (shift %d..%d)"
        % (st.n_features, st.f_in, st.zp_in, int(st.shift.min()), int(st.shift.max()))
    )
    lines.append("")
    lines.append(
        "%-5s %-8s %9s %7s %5s %5s %5s %6s %6s %11s %5s"
        % (
            "layer",
            "act",
            "in->out",
            "params",
            "f_x",
            "zp_x",
            "f_w",
            "f_z",
            "zp_z",
            "max |acc|",
            "bits",
        )
    )
    room = headroom(qm, trainable_layers=(len(qm.layers) - 1,))
    for k, (layer, h) in enumerate(zip(qm.layers, room, strict=True)):
        lines.append(
            "%-5d %-8s %9s %7d %5d %5d %5d %6d %6d %11d %5d%s"
            % (
                k,
                layer.act,
                "%d->%d" % (layer.n_in, layer.n_out),
                layer.w.size + layer.b.size,
                layer.f_x,
                layer.zp_x,
                layer.f_w,
                layer.f_z,
                layer.zp_z,
                h["max_acc"],
                h["bits"],
                "  (trainable: any int8 weight)" if h["trainable"] else "",
            )
        )
    lines.append("  shift s = f_x + f_w - f_z; bits = headroom below 2**30 at the worst case")
    mem = board_memory(qm)
    lines.append("")
    lines.append("board RAM for inference, about %d bytes:" % sum(mem.values()))
    for name, n in mem.items():
        lines.append("  %-24s %7d" % (name, n))
    if qm.training:
        lines.append("")
        lines.append(
            "training defaults: "
            + " ".join("%s=%s" % (k, v) for k, v in sorted(qm.training.items()))
        )
    return "\n".join(lines)


def _num(v):
    if v is None:
        return "?"
    return ("%g" % v) if isinstance(v, float) else str(v)
