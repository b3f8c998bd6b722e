"""Export a QModel as a TensorFlow Lite flatbuffer (.tflite) for TFLite Micro.

Runs on: host. Needs no TensorFlow: the flatbuffer is written by a small forward writer below,
following the table layouts of TFLite's schema.fbs (field slot numbers in the comments).

The graph is the network after the input stage: an int8 input tensor (scale 2**-f_in, zero
point zp_in), then per layer a FULLY_CONNECTED (int8 weights, per-tensor scale 2**-f_w, zero
point 0; int32 bias at 2**-(f_x + f_w); fused RELU for relu layers, whose output tensor has the
pre-activation's scale and zero point), a LOGISTIC or TANH for sigmoid / tanh layers (outputs
1/256 zp -128 and 1/128 zp 0), and a SOFTMAX (beta 1, output 1/256 zp -128) after the last layer
when it is a softmax layer. Run on TFLite Micro, its integers equal the NumPy reference's
(softmax: within 1 LSB).
"""

import struct

import numpy as np

from microprop.device.modelfile import TABLE_OUT

# schema.fbs enums
_INT32, _INT8 = 2, 9  # TensorType
_FULLY_CONNECTED, _LOGISTIC, _SOFTMAX, _TANH = 9, 14, 25, 28  # BuiltinOperator
_OPT_NONE, _OPT_FULLY_CONNECTED, _OPT_SOFTMAX = 0, 8, 9  # BuiltinOptions
_ACT_NONE, _ACT_RELU = 0, 1  # ActivationFunctionType
_SCHEMA_VERSION = 3
_FILE_ID = b"TFL3"


# -- a minimal flatbuffer writer ---------------------------------------------------------------
#
# Objects are laid out front to back: a table's vtable comes right before the table, and the
# objects it points to (tables, vectors, strings) come after it, so every uoffset is positive.


class Table:
    """A flatbuffer table; each keyword is name=(slot, struct format, value), with format None
    for a field that points to another object (table, vector, string)."""

    def __init__(self, **fields):
        self.fields = fields


class Vector:
    """A vector of scalars (struct format `fmt`) or, with fmt None, of tables / strings."""

    def __init__(self, fmt, items, align=4):
        self.fmt, self.items, self.align = fmt, list(items), align


class String:
    def __init__(self, text):
        self.data = text.encode("utf-8")


def _pad_to(buf, align, extra=0):
    """Pad with zeros until (len(buf) + extra) is a multiple of align."""
    while (len(buf) + extra) % align:
        buf.append(0)


def _emit(buf, obj):
    """Append obj (and everything it points to) to buf; return its position."""
    if isinstance(obj, Table):
        return _emit_table(buf, obj)
    if isinstance(obj, String):
        _pad_to(buf, 4)
        pos = len(buf)
        buf += struct.pack("<I", len(obj.data)) + obj.data + b"\0"
        return pos
    if isinstance(obj, Vector):
        if obj.fmt is not None:
            size = struct.calcsize("<" + obj.fmt)
            _pad_to(buf, max(obj.align, size, 4), extra=4)
            pos = len(buf)
            buf += struct.pack("<I", len(obj.items))
            buf += struct.pack("<%d%s" % (len(obj.items), obj.fmt), *obj.items)
            return pos
        _pad_to(buf, 4)
        pos = len(buf)
        buf += struct.pack("<I", len(obj.items)) + bytes(4 * len(obj.items))
        for i, item in enumerate(obj.items):
            slot = pos + 4 + 4 * i
            struct.pack_into("<I", buf, slot, _emit(buf, item) - slot)
        return pos
    raise TypeError("tflite: cannot serialise %r" % (obj,))


def _emit_table(buf, table):
    fields = list(table.fields.values())
    n_slots = max((slot for slot, _, _ in fields), default=-1) + 1
    # Inline layout: the soffset to the vtable, then fields from the largest to the smallest.
    sized = []
    for slot, fmt, value in fields:
        sized.append((4 if fmt is None else struct.calcsize("<" + fmt), slot, fmt, value))
    sized.sort(key=lambda t: -t[0])
    offsets, end = {}, 4
    for size, slot, _, _ in sized:
        end = (end + size - 1) // size * size
        offsets[slot] = end
        end += size
    table_align = max([4] + [size for size, _, _, _ in sized])
    inline_size = (end + 3) // 4 * 4

    _pad_to(buf, 2)
    vt_pos = len(buf)
    vtable = [4 + 2 * n_slots, inline_size] + [offsets.get(i, 0) for i in range(n_slots)]
    buf += struct.pack("<%dH" % len(vtable), *vtable)
    _pad_to(buf, table_align)
    pos = len(buf)
    buf += bytes(inline_size)
    struct.pack_into("<i", buf, pos, pos - vt_pos)
    children = []
    for _, slot, fmt, value in sized:
        if fmt is None:
            children.append((pos + offsets[slot], value))
        else:
            struct.pack_into("<" + fmt, buf, pos + offsets[slot], value)
    for field_pos, child in children:
        struct.pack_into("<I", buf, field_pos, _emit(buf, child) - field_pos)
    return pos


def serialize(root, file_identifier=_FILE_ID):
    """Root table -> flatbuffer bytes (root uoffset, file identifier, objects)."""
    buf = bytearray(8)
    buf[4:8] = file_identifier
    struct.pack_into("<I", buf, 0, _emit(buf, root))
    _pad_to(buf, 16)
    return bytes(buf)


# -- TFLite tables (schema.fbs) ----------------------------------------------------------------


def _quantization(scale_f, zero_point):
    # QuantizationParameters: 2 scale [float], 3 zero_point [long]
    return Table(
        scale=(2, None, Vector("f", [2.0**-scale_f])),
        zero_point=(3, None, Vector("q", [int(zero_point)])),
    )


def _tensor(name, shape, dtype, buffer, scale_f, zero_point):
    # Tensor: 0 shape [int], 1 type byte, 2 buffer uint, 3 name string, 4 quantization
    return Table(
        shape=(0, None, Vector("i", shape)),
        type=(1, "b", dtype),
        buffer=(2, "I", buffer),
        name=(3, None, String(name)),
        quantization=(4, None, _quantization(scale_f, zero_point)),
    )


def _operator(opcode_index, inputs, outputs, options_type=_OPT_NONE, options=None):
    # Operator: 0 opcode_index uint, 1 inputs [int], 2 outputs [int],
    #           3 builtin_options_type ubyte, 4 builtin_options (union)
    fields = dict(
        opcode_index=(0, "I", opcode_index),
        inputs=(1, None, Vector("i", inputs)),
        outputs=(2, None, Vector("i", outputs)),
    )
    if options is not None:
        fields["options_type"] = (3, "B", options_type)
        fields["options"] = (4, None, options)
    return Table(**fields)


def _buffer(data=None):
    # Buffer: 0 data [ubyte] (force_align 16)
    if data is None:
        return Table()
    return Table(data=(0, None, Vector("B", data, align=16)))


def _operator_code(code):
    # OperatorCode: 0 deprecated_builtin_code byte, 2 version int, 3 builtin_code int
    return Table(
        deprecated=(0, "b", min(code, 127)),
        version=(2, "i", 1),
        builtin_code=(3, "i", code),
    )


def to_tflite(qmodel, description="microprop"):
    """QModel -> .tflite flatbuffer bytes: int8 in, FULLY_CONNECTED / LOGISTIC / TANH /
    SOFTMAX, int8 out. The input is the network input after the input stage."""
    tensors, operators, buffers = [], [], [_buffer()]
    opcodes = []

    def opcode(code):
        if code not in opcodes:
            opcodes.append(code)
        return opcodes.index(code)

    def add_tensor(name, shape, dtype, scale_f, zero_point, data=None):
        buffer = 0
        if data is not None:
            buffers.append(_buffer(data))
            buffer = len(buffers) - 1
        tensors.append(_tensor(name, shape, dtype, buffer, scale_f, zero_point))
        return len(tensors) - 1

    stage = qmodel.input_stage
    x = add_tensor("input", [1, qmodel.sizes[0]], _INT8, stage.f_in, stage.zp_in)
    for i, layer in enumerate(qmodel.layers):
        if (layer.f_x, layer.zp_x) != _input_scale(qmodel, i):
            raise ValueError("tflite: layer %d input scale does not match its source" % i)
        w = np.asarray(layer.w, dtype=np.int64)
        b = np.asarray(layer.b, dtype=np.int64)
        w_t = add_tensor(
            "layer%d/weights" % i,
            [layer.n_out, layer.n_in],
            _INT8,
            layer.f_w,
            0,
            w.astype(np.int8).tobytes(),
        )
        b_t = add_tensor(
            "layer%d/bias" % i,
            [layer.n_out],
            _INT32,
            layer.f_x + layer.f_w,
            0,
            b.astype("<i4").tobytes(),
        )
        z = add_tensor("layer%d/z" % i, [1, layer.n_out], _INT8, layer.f_z, layer.zp_z)
        fused = _ACT_RELU if layer.act == "relu" else _ACT_NONE
        # FullyConnectedOptions: 0 fused_activation_function byte
        options = Table(fused=(0, "b", fused))
        operators.append(
            _operator(opcode(_FULLY_CONNECTED), [x, w_t, b_t], [z], _OPT_FULLY_CONNECTED, options)
        )
        x = z
        if layer.act in ("sigmoid", "tanh"):
            f_y, zp_y = layer.out_scale
            y = add_tensor("layer%d/%s" % (i, layer.act), [1, layer.n_out], _INT8, f_y, zp_y)
            code = _LOGISTIC if layer.act == "sigmoid" else _TANH
            operators.append(_operator(opcode(code), [x], [y]))
            x = y
        elif layer.act == "softmax":
            if i != len(qmodel.layers) - 1:
                raise ValueError("tflite: softmax only on the last layer, found on layer %d" % i)
            y = add_tensor("probabilities", [1, layer.n_out], _INT8, 8, -128)
            # SoftmaxOptions: 0 beta float
            options = Table(beta=(0, "f", 1.0))
            operators.append(_operator(opcode(_SOFTMAX), [x], [y], _OPT_SOFTMAX, options))
            x = y

    subgraph = Table(  # SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators, 4 name
        tensors=(0, None, Vector(None, tensors)),
        inputs=(1, None, Vector("i", [0])),
        outputs=(2, None, Vector("i", [x])),
        operators=(3, None, Vector(None, operators)),
        name=(4, None, String("main")),
    )
    model = Table(  # Model: 0 version, 1 operator_codes, 2 subgraphs, 3 description, 4 buffers
        version=(0, "I", _SCHEMA_VERSION),
        operator_codes=(1, None, Vector(None, [_operator_code(c) for c in opcodes])),
        subgraphs=(2, None, Vector(None, [subgraph])),
        description=(3, None, String(description)),
        buffers=(4, None, Vector(None, buffers)),
    )
    return serialize(model)


def activation_tflite(act, n, f_z, zp_z):
    """A one-operator graph: int8 (n,) at 2**-f_z, zp_z -> LOGISTIC, TANH or SOFTMAX -> int8.

    For checking the tables of host/tables.py against TFLite Micro over all inputs.
    """
    codes = {
        "sigmoid": (_LOGISTIC, TABLE_OUT["sigmoid"]),
        "tanh": (_TANH, TABLE_OUT["tanh"]),
        "softmax": (_SOFTMAX, (8, -128)),
    }
    if act not in codes:
        raise ValueError("tflite: expected sigmoid, tanh or softmax, found %r" % (act,))
    code, (f_y, zp_y) = codes[act]
    tensors = [
        _tensor("x", [1, n], _INT8, 0, f_z, zp_z),
        _tensor("y", [1, n], _INT8, 0, f_y, zp_y),
    ]
    if act == "softmax":
        op = _operator(0, [0], [1], _OPT_SOFTMAX, Table(beta=(0, "f", 1.0)))
    else:
        op = _operator(0, [0], [1])
    subgraph = Table(
        tensors=(0, None, Vector(None, tensors)),
        inputs=(1, None, Vector("i", [0])),
        outputs=(2, None, Vector("i", [1])),
        operators=(3, None, Vector(None, [op])),
    )
    model = Table(
        version=(0, "I", _SCHEMA_VERSION),
        operator_codes=(1, None, Vector(None, [_operator_code(code)])),
        subgraphs=(2, None, Vector(None, [subgraph])),
        buffers=(4, None, Vector(None, [_buffer()])),
    )
    return serialize(model)


def _input_scale(qmodel, i):
    """(f, zp) that layer i reads: the input stage's for layer 0, else the previous output's."""
    if i == 0:
        return (qmodel.input_stage.f_in, qmodel.input_stage.zp_in)
    return qmodel.layers[i - 1].out_scale


def tensor_index_of_layers(qmodel):
    """Tensor index of each layer's output (y; the logits z for a softmax layer) in to_tflite's
    graph, for reading intermediate tensors from an interpreter that preserves them."""
    index, out = 1, []
    for layer in qmodel.layers:
        index += 3  # weights, bias, z
        z = index - 1
        if layer.act in ("sigmoid", "tanh"):
            index += 1
            out.append(index - 1)
        else:
            out.append(z)
            if layer.act == "softmax":
                index += 1
    return out
