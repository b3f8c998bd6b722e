"""The backward pass and SGD update of device/train.py's Trainer, in plain Python.

Runs on: board and host (MicroPython >= 1.22; also CPython). `device/kernel_train_viper.py`
computes the same integers in native code; `host/trainref.py` in NumPy. Every function takes
the Trainer `t` (its buffers, scales and shifts, device/train_plan.py) and allocates nothing.

The integers of one step (layer k reads x at (f_x, zp_x), weights at f_w):

- output error, probability scale 2**-8: e_j = (q_j + 128) - 256 * [j == label] in
  [-256, 255], q the softmax output (scores - 128). This is dL/dz of cross-entropy.
- error signals delta(k): int16 at a fixed scale 2**-f_d(k); f_d = 8 at the output; going
  down from layer k + 1 to the hidden layer k below:
      S_i = sum_j w[j][i] * delta_j(k+1)                     scale 2**-(f_w(k+1) + f_d(k+1))
      T_i = clamp(R(S_i, sb(k)), -32768, 32767)               sb(k) = clamp(f_w(k+1) + f_d(k+1)
                                                                      - 12, 0, 24)
      delta_i(k) = T_i * D_i at the derivative's scale, rounded back by R:
          relu / linear: T_i if y_i > zp_y (relu) else 0
          sigmoid: R(T_i * (y_i + 128) * (128 - y_i), 16)     p(1 - p), D <= 2**14 at 2**-16
          tanh:    R(T_i * (16384 - y_i * y_i), 14)           1 - a*a,  D <= 2**14 at 2**-14
  so f_d(k) = f_w(k+1) + f_d(k+1) - sb(k): 12 fractional bits unless the shift clamps.
  R is fixedpoint.rounding_rshift (TFLite rounding, ties away from zero).
- gradients, summed over the mini-batch in int32: gw[j][i] = sum delta_j * (x_i - zp_x),
  gb[j] = sum delta_j.
- update, SGD at the real learning rate lr = 2**-L on the summed gradient, L = lr_shift for
  the last layer and lr_shift + hidden_shift below it (discriminative fine-tuning: the
  hidden features move slower than the classifier; hidden_shift defaults to 0):
      master_w -= SR(gw, sw),  sw = L + f_d + f_x - f_w - 8  (master: 8 more bits)
      b        -= SR(gb, sbias), sbias = L + f_d - f_x - f_w
  SR(g, s) for s > 0 is floor(g / 2**s) plus 1 when the next t = min(s, 16) dropped bits
  exceed a fresh random draw: (g >> (s - t)) & (2**t - 1) > (r - 1) >> (16 - t), with r the
  next xorshift16 state (prng.py); for s <= 0 it is g << -s, exact, with no draw. Master
  weights clamp to [-32768, 32767]; the int8 weight is (master + 128) >> 8 (nearest, ties
  up) clamped to [-127, 127]. Biases clamp to +/- max(127 * n_in * max|x - zp_x|, max|b| at
  start), the limit of host/bounds.bias_limit. The int32 bias is its own master: it already
  has f_x more fractional bits than the weight.
- draw order: one draw per updated parameter with s > 0, layer by layer from layer 0, the
  weights row-major, then the biases.
"""

from .fixedpoint import rounding_rshift
from .modelfile import RELU, SIGMOID, TANH  # activation ids
from .prng import xorshift16


def learn(t, label):
    """Output error, error signals, gradient sums or update of Trainer `t`, in plain Python."""
    _output_error(t, label)
    for k in range(t._n - 1, t._lowest, -1):
        _backward(t, k)
    t._count += 1
    update = t._count >= t.batch
    for k in range(t._n):
        if t.trains_w[k]:
            if update:
                _update_weights(t, k)
            else:
                _sum_weights(t, k)
        if t.trains_b[k]:
            if update:
                _update_biases(t, k)
            else:
                _sum_biases(t, k)
    if update:
        t._count = 0


def _output_error(t, label):
    """softmax scores (q + 128, 0..255) -> e_j = scores_j - 256 [j == label], scale 2**-8."""
    scores = t.model.scores
    d = t.delta[t._n - 1]
    for j in range(len(d)):
        d[j] = scores[j]
    d[label] -= 256


def _backward(t, k):
    """int16 delta(k) -> int16 delta(k - 1): W^T delta, shift, clamp, times the derivative
    of layer k - 1's activation (see the module docstring for the scales)."""
    w = t._w[k]
    d = t.delta[k]
    out = t.delta[k - 1]
    y = t._inputs[k]  # layer k - 1's output
    n_in = len(out)
    n_out = len(d)
    s = t._sback[k - 1]
    act = t._act[k - 1]
    zp = t.model.layers[k - 1]["zp_z"]
    for i in range(n_in):
        acc = 0
        idx = i
        for j in range(n_out):
            acc += w[idx] * d[j]
            idx += n_in
        r = rounding_rshift(acc, s)
        if r < -32768:
            r = -32768
        elif r > 32767:
            r = 32767
        if act == RELU:
            if y[i] <= zp:
                r = 0
        elif act == SIGMOID:
            p = y[i]
            r = rounding_rshift(r * ((p + 128) * (128 - p)), 16)
        elif act == TANH:
            a = y[i]
            r = rounding_rshift(r * (16384 - a * a), 14)
        out[i] = r


def _sum_weights(t, k):
    """gw[j][i] += delta_j * (x_i - zp_x), int32."""
    g = t._gw[k]
    d = t.delta[k]
    x = t._inputs[k]
    zp_x = t.model.layers[k]["zp_x"]
    n_in = len(x)
    idx = 0
    for j in range(len(d)):
        dj = d[j]
        for i in range(n_in):
            g[idx] += dj * (x[i] - zp_x)
            idx += 1


def _sum_biases(t, k):
    """gb[j] += delta_j, int32."""
    g = t._gb[k]
    d = t.delta[k]
    for j in range(len(d)):
        g[j] += d[j]


def _update_weights(t, k):
    """master_w -= SR(gw + delta x, sw); int8 w = clamp((master + 128) >> 8); gw = 0."""
    gw = t._gw[k]
    d = t.delta[k]
    x = t._inputs[k]
    mw = t.master_w[k]
    w = t._w[k]
    zp_x = t.model.layers[k]["zp_x"]
    s = t._sw[k]
    n_drop = s if s < 16 else 16
    r_shift = 16 - n_drop
    f_shift = s - n_drop
    mask = (1 << n_drop) - 1 if s > 0 else 0
    c = None if t._consts is None else t._consts[k]
    cz = -(128 + zp_x)
    st = t.state
    n_in = len(x)
    idx = 0
    for j in range(len(d)):
        dj = d[j]
        total = 0
        for i in range(n_in):
            g = dj * (x[i] - zp_x)
            if gw is not None:
                g += gw[idx]
                gw[idx] = 0
            if s > 0:
                st = xorshift16(st)
                u = g >> s
                if ((g >> f_shift) & mask) > ((st - 1) >> r_shift):
                    u += 1
            else:
                u = g << -s
            v = mw[idx] - u
            if v < -32768:
                v = -32768
            elif v > 32767:
                v = 32767
            mw[idx] = v
            v = (v + 128) >> 8
            if v < -127:
                v = -127
            elif v > 127:
                v = 127
            w[idx] = v
            total += v
            idx += 1
        if c is not None:  # the viper kernel's row constant -(128 + zp_x) * sum_i w_ji
            c[j] = cz * total
    t.state = st


def _update_biases(t, k):
    """b -= SR(gb + delta, sbias), clamped to +/- the bias limit; gb = 0."""
    gb = t._gb[k]
    d = t.delta[k]
    b = t.master_b[k]
    lim = t._bias_limit[k]
    s = t._sb[k]
    n_drop = s if s < 16 else 16
    r_shift = 16 - n_drop
    f_shift = s - n_drop
    mask = (1 << n_drop) - 1 if s > 0 else 0
    st = t.state
    for j in range(len(d)):
        g = d[j]
        if gb is not None:
            g += gb[j]
            gb[j] = 0
        if s > 0:
            st = xorshift16(st)
            u = g >> s
            if ((g >> f_shift) & mask) > ((st - 1) >> r_shift):
                u += 1
        else:
            u = g << -s
        v = b[j] - u
        if v < -lim:
            v = -lim
        elif v > lim:
            v = lim
        b[j] = v
    t.state = st
