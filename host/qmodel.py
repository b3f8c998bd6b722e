"""The quantized model in memory: what the quantizer produces, the model file stores,
the NumPy reference and the board execute.

Runs on: host.

Numeric contract (../DESIGN.md, "The numeric contract"), per dense layer l:

    acc_j = sum_i w[j][i] * (x_i - zp_x) + b_j                     (int32, within 31 bits)
    z_j   = clamp(zp_z + R(acc_j, s), -128, 127),  s = f_x + f_w - f_z in [0, 24]

then the activation maps the int8 pre-activation z to the layer output y:

    linear  : y = z                             (f_y = f_z, zp_y = zp_z)
    relu    : y = max(z, zp_z)                  (f_y = f_z, zp_y = zp_z)
    sigmoid : y = table[z + 128]                (f_y = 8, zp_y = -128, TFLite's output scale)
    tanh    : y = table[z + 128]                (f_y = 7, zp_y = 0)
    softmax : y = the output layer's logits z; probabilities are computed from them with
              the model's `softmax_exp` table (see below). Only the last layer.

The next layer's (f_x, zp_x) equal this layer's (f_y, zp_y); the first layer's are the input
stage's (f_in, zp_in).

Softmax (board and reference): m = max_j z_j; e_j = softmax_exp[m - z_j] (Q16 values in
[0, 2**16], softmax_exp[0] = 2**16); S = sum_j e_j;
p_j = clamp((e_j * 256 + (S >> 1)) // S - 128, -128, 127): probability at scale 1/256, zero
point -128. Scores reported by the board are p_j + 128 in [0, 255]. The predicted class is the
argmax of the logits z, ties to the lower index.
"""

from dataclasses import dataclass, field

import numpy as np

from microprop.device.modelfile import ACTIVATIONS, TABLE_OUT  # noqa: F401 (ACTIVATIONS: re-exported)

SIGMOID_OUT = TABLE_OUT["sigmoid"]
TANH_OUT = TABLE_OUT["tanh"]


@dataclass
class QLayer:
    w: np.ndarray  # int8 values as int64, shape (n_out, n_in), in [-127, 127]
    b: np.ndarray  # int32 values as int64, shape (n_out,), scale 2**-(f_x + f_w)
    act: str  # one of ACTIVATIONS
    f_x: int
    zp_x: int
    f_w: int
    f_z: int  # pre-activation scale
    zp_z: int
    table: np.ndarray | None = None  # int8 (256,) for sigmoid / tanh, indexed by z + 128

    @property
    def n_in(self):
        return self.w.shape[1]

    @property
    def n_out(self):
        return self.w.shape[0]

    @property
    def shift(self):
        return self.f_x + self.f_w - self.f_z

    @property
    def out_scale(self):
        """(f_y, zp_y) of the layer's output, what the next layer reads."""
        if self.act == "sigmoid":
            return SIGMOID_OUT
        if self.act == "tanh":
            return TANH_OUT
        return (self.f_z, self.zp_z)


@dataclass
class QModel:
    input_stage: "object"  # host.inputstage.InputStage
    layers: list
    softmax_exp: np.ndarray | None = None  # int (256,), Q16, when the last layer is softmax
    classes: list = field(default_factory=list)
    features: dict = field(default_factory=dict)  # window, hop, feature names, channels
    sensor: dict = field(default_factory=dict)  # sensor kind, channel units, full scale, rate
    training: dict = field(default_factory=dict)  # on-board training defaults: str -> int or str

    @property
    def sizes(self):
        return [self.layers[0].n_in] + [layer.n_out for layer in self.layers]
