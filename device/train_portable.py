"""A learning layer of device/train.py's Trainer: its arrays, and its backward pass, gradient
sums and SGD update in plain Python.

Runs on: board and host (MicroPython >= 1.22; also CPython). `device/kernel_train_viper.py`'s
ViperLayer computes the same integers in native code; `host/trainref.py` in NumPy. No method
but the constructor allocates.

    top.output_error(scores, label)   # the output layer: its error signal from the softmax
    layer.backward()                  # its error signal -> the one of the layer below
    layer.accumulate()                # gradient sums, in a mini-batch (batch > 1)
    state = layer.update(state)       # SGD on the sums; PRNG state in and out

The integers of one step (layer k reads x at (f_x, zp_x), weights at f_w):

- output error, probability scale 2**-8: e_j = (q_j + 128) - 256 * [j == label] in
  [-256, 255], q the softmax output (scores - 128). This is dL/dz of cross-entropy.
- error signals delta(k): int16 at a fixed scale 2**-f_d(k); f_d = 8 at the output; going
  down from layer k + 1 to the hidden layer k below:
      S_i = sum_j w[j][i] * delta_j(k+1)                     scale 2**-(f_w(k+1) + f_d(k+1))
      T_i = clamp(R(S_i, sback(k)), -32768, 32767)         sback(k) = clamp(f_w(k+1) + f_d(k+1)
                                                                        - 12, 0, 24)
      delta_i(k) = T_i * D_i at the derivative's scale, rounded back by R:
          relu / linear: T_i if y_i > zp_y (relu) else 0
          sigmoid: R(T_i * (y_i + 128) * (128 - y_i), 16)     p(1 - p), D <= 2**14 at 2**-16
          tanh:    R(T_i * (16384 - y_i * y_i), 14)           1 - a*a,  D <= 2**14 at 2**-14
  so f_d(k) = f_w(k+1) + f_d(k+1) - sback(k): 12 fractional bits unless the shift clamps.
  R is fixedpoint.rounding_rshift (TFLite rounding, ties away from zero).
- gradients, summed over the mini-batch in int32: gw[j][i] = sum delta_j * (x_i - zp_x),
  gb[j] = sum delta_j.
- update, SGD at the real learning rate lr = 2**-L on the summed gradient, L = lr_shift for
  the last layer and lr_shift + hidden_shift below it (discriminative fine-tuning: the
  hidden features move slower than the classifier; hidden_shift defaults to 0):
      master_w -= SR(gw, sw),  sw = L + f_d + f_x - f_w - 8  (master: 8 more bits)
      b        -= SR(gb, sb),  sb = L + f_d - f_x - f_w
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

from array import array

from .fixedpoint import rounding_rshift
from .modelfile import ACTIVATIONS, RELU, SIGMOID, TANH  # activation ids
from .prng import xorshift16


def _zeros(typecode, n, size):
    return array(typecode, bytes(n * size))


class Layer:
    """A layer of the model as it learns: Layer(spec, x, below, plan, batch, c) for the layer
    whose dict in model.layers is `spec`, its plan `plan` (its dict of train_plan.plan) and the
    model's row constants `c` of its viper forward kernel (None with the portable one); made by
    the Trainer for each layer from the lowest that learns up. It owns (None where it has
    none):

        w, b          the model's int8 weights and int32 biases, learned in place (the bias is
                      its own master: it has f_x more fractional bits than the weight)
        x, zp_x       its int8 inputs (model.x, or the outputs of the layer below) and zero point
        delta         int16 error signals, one per output, at 2**-f_delta
        master_w      int16 master weights (w with 8 more fractional bits), when w learns;
                      w is always clamp((master_w + 128) >> 8): restart, round_master and
                      update keep it so (the viper update relies on it)
        gw, gb        int32 gradient sums of the weights / biases of a mini-batch (batch > 1)
        c             the viper forward kernel's row constants (model.consts), kept in step
                      with w
        act, zp_z     its activation id and output zero point: the derivative that the layer
                      above applies to the error signal it passes down (`backward`)
        below         the Layer below, which `backward` feeds, or None

    and its plan (device/train_plan.plan): trains_w, sback (the shift of the error signal from
    the layer above into this one), sw and sb (update shifts) and bias_limit. Its biases always
    learn: every mode trains the biases of each layer its error signals reach.
    """

    # None unless the layer has them: class defaults, so that an instance holds only what learns
    master_w = None
    gw = None
    gb = None
    c = None

    def __init__(self, spec, x, below, plan, batch, c):
        n_in, n_out = spec["n_in"], spec["n_out"]
        self.w = spec["w"]
        self.b = spec["b"]
        self.x = x
        self.zp_x = spec["zp_x"]
        self.act = ACTIVATIONS.index(spec["act"])
        self.zp_z = spec["zp_z"]
        self.below = below
        self.trains_w = plan["trains_w"]
        self.sback = plan["sback"]
        self.sw = plan["sw"]
        self.sb = plan["sb"]
        self.bias_limit = plan["bias_limit"]
        self.delta = _zeros("h", n_out, 2)
        if self.trains_w:
            self.master_w = _zeros("h", n_in * n_out, 2)
            if c is not None:
                self.c = c
            if batch > 1:
                self.gw = _zeros("i", n_in * n_out, 4)
        if batch > 1:
            self.gb = _zeros("i", n_out, 4)
        self.restart()

    def output_error(self, scores, label):
        """softmax scores (q + 128, 0..255) -> e_j = scores_j - 256 [j == label] in delta,
        scale 2**-8 (the output layer)."""
        d = self.delta
        for j in range(len(d)):
            d[j] = scores[j]
        d[label] -= 256

    def backward(self):
        """int16 delta -> int16 delta of the layer below: W^T delta, shift, clamp, times the
        derivative of the layer below's activation (see the module docstring for the scales)."""
        w = self.w
        d = self.delta
        below = self.below
        out = below.delta
        y = self.x  # the layer below's output
        n_in = len(out)
        n_out = len(d)
        s = below.sback
        act = below.act
        zp = below.zp_z
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

    def accumulate(self):
        """gw[j][i] += delta_j * (x_i - zp_x) when the weights learn, gb[j] += delta_j, int32."""
        d = self.delta
        if self.trains_w:
            g = self.gw
            x = self.x
            zp_x = self.zp_x
            n_in = len(x)
            idx = 0
            for j in range(len(d)):
                dj = d[j]
                for i in range(n_in):
                    g[idx] += dj * (x[i] - zp_x)
                    idx += 1
        g = self.gb
        for j in range(len(d)):
            g[j] += d[j]

    def update(self, st):
        """SGD on what learns, weights first (row-major), then biases; gradient sums back to
        0. `st`: the xorshift16 state of the stochastic rounding -> the state after its draws."""
        if self.trains_w:
            st = self._update_weights(st)
        return self._update_biases(st)

    def _update_weights(self, st):
        """master_w -= SR(gw + delta x, sw); int8 w = clamp((master + 128) >> 8); gw = 0."""
        gw = self.gw
        d = self.delta
        x = self.x
        mw = self.master_w
        w = self.w
        zp_x = self.zp_x
        s = self.sw
        n_drop = s if s < 16 else 16
        r_shift = 16 - n_drop
        f_shift = s - n_drop
        mask = (1 << n_drop) - 1 if s > 0 else 0
        c = self.c
        cz = -(128 + zp_x)
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
        return st

    def _update_biases(self, st):
        """b -= SR(gb + delta, sb), clamped to +/- the bias limit; gb = 0."""
        gb = self.gb
        d = self.delta
        b = self.b
        lim = self.bias_limit
        s = self.sb
        n_drop = s if s < 16 else 16
        r_shift = 16 - n_drop
        f_shift = s - n_drop
        mask = (1 << n_drop) - 1 if s > 0 else 0
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
        return st

    # -- after the weights changed outside a step (device/train_state.py; not in `step`) -------

    def restart(self):
        """Master weights from the int8 weights, gradient sums 0 (the exported weights)."""
        mw = self.master_w
        if mw is not None:
            w = self.w
            for i in range(len(w)):
                mw[i] = w[i] * 256
        for g in (self.gw, self.gb):
            if g is not None:
                for i in range(len(g)):
                    g[i] = 0
        self.refresh()

    def round_master(self):
        """int8 weights from the int16 master weights: (m + 128) >> 8, clamped to [-127, 127]
        (a loaded checkpoint)."""
        mw = self.master_w
        w = self.w
        for i in range(len(mw)):
            v = (mw[i] + 128) >> 8
            w[i] = -127 if v < -127 else (127 if v > 127 else v)
        self.refresh()

    def refresh(self):
        """The viper forward kernel's row constants -(128 + zp_x) * sum_i w_ji, from w."""
        c = self.c
        if c is None:
            return
        w = self.w
        n_in = len(self.x)
        cz = -(128 + self.zp_x)
        idx = 0
        for j in range(len(c)):
            total = 0
            for i in range(n_in):
                total += w[idx + i]
            idx += n_in
            c[j] = cz * total
