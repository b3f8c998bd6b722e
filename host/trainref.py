"""Bit-exact NumPy reference of the board's training step, its bound proof, and a float
fine-tuning baseline of the same layers.

Runs on: host.

`TrainRef` is `device/train.py`'s Trainer in NumPy: the same forward (host/reference.py), the
same int16 error signals, int32 gradient sums, stochastic rounding from the same xorshift16
draws in the same order, the same int16 master weights and clamped int32 biases. Every value it
computes is checked against the 31-bit small-int range (a BoundError if one leaves it). The
integer formats, scales and shifts are written out in the docstrings of device/train_portable.py
and device/train_plan.py; the functions here say which step they mirror.

`check_train_bounds(qmodel, mode, batch)` is the worst-case proof for a mode and batch size,
for ANY int8 weight: it raises ValueError naming the stage that could leave 31 bits, and
returns the largest safe batch (the board computes the same number and refuses larger ones).
Like the board, it first refuses a layer whose weights learn but that reads only its zero
point (device/train_plan.check_inputs, the same rule and message).

`float_finetune` trains the same layers of the dequantized network in float64 with plain SGD
at the same learning rate 2**-lr_shift on gradients summed over each mini-batch: the baseline
the integer trainer is compared with. Its forward and backward are host/mlp.py's (one float
forward and backward on the host); `float_finetune_many` runs it for a grid of rates at once.
Which layers learn in each mode is the device's `learns` (device/train_plan.py), here as on
the board.

`hidden_shift` (default 0) is discriminative fine-tuning: every layer below the last learns
at 2**-(lr_shift + hidden_shift), the last layer at 2**-lr_shift, in the integer trainer (its
update shifts, nothing else) and in the float baseline alike.
"""

import copy

import numpy as np

from microprop.device.config import DEFAULTS, MAX_SHIFT
from microprop.device.prng import seed_state, xorshift16
from microprop.device.train import DEFAULT_LR_SHIFT, settings
from microprop.device.train_plan import DELTA_MAX, LEARN_MODES, learns, plan

from . import modelfile, reference
from .bounds import check_zero_inputs
from .fixedpoint import SMALL_INT_MAX, check_small, rounding_rshift
from .mlp import backward_pass, forward_pass, output_error

DEFAULT_MODE = DEFAULTS["learn"]  # the Trainer's, as board.json's
MASTER_MAX = DELTA_MAX  # |int16| master weights, as device/train_plan.prove
DERIV_SHIFT = {"sigmoid": 16, "tanh": 14}


def clamp(x, lo, hi):
    """Integers x clamped to [lo, hi]: np.clip without its per-call limit checks (TrainRef
    clamps a few times a step)."""
    return np.minimum(np.maximum(x, lo), hi)


# --- the random number generator: device/prng.py's xorshift16, drawn n at a time ---


_CYCLE = None  # (states in generation order starting after 1, position of each state)


def xorshift_cycle():
    """xorshift16's whole period, made once: (states (65535,) in the order the generator
    visits them starting after 1, the position of each state in that order (65536,))."""
    global _CYCLE
    if _CYCLE is None:
        states = np.empty(65535, dtype=np.int64)
        x = 1
        for i in range(65535):
            x = xorshift16(x)
            states[i] = x
        if x != 1 or len(set(states.tolist())) != 65535:
            raise AssertionError("xorshift16: period is not 65535")
        pos = np.zeros(65536, dtype=np.int64)
        pos[states] = np.arange(65535)
        _CYCLE = (states, pos)
    return _CYCLE


def draws(state, n):
    """The next n xorshift16 states after `state` -> (int64 array (n,), the new state)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64), state
    states, pos = xorshift_cycle()
    idx = (pos[state] + 1 + np.arange(n)) % 65535
    r = states[idx]
    return r, int(r[-1])


# --- the plan: what learns, the scales and shifts per layer (device/train_plan.plan) ---


def _check_mode(mode):
    if mode not in LEARN_MODES:
        raise ValueError("trainref: mode %r, expected one of %s" % (mode, ", ".join(LEARN_MODES)))


def check_hidden_shift(hidden_shift):
    """-> hidden_shift as an int, or ValueError unless an int in 0..MAX_SHIFT."""
    if not isinstance(hidden_shift, (int, np.integer)) or not (0 <= hidden_shift <= MAX_SHIFT):
        raise ValueError(
            "trainref: hidden_shift %r, expected an int in 0..%d" % (hidden_shift, MAX_SHIFT)
        )
    return int(hidden_shift)


def train_plan(qmodel, mode=DEFAULT_MODE, lr_shift=DEFAULT_LR_SHIFT, hidden_shift=0):
    """Per layer, the board's plan (device/train_plan.plan): what learns (trains_w, trains_b,
    has_delta), error-signal scale f_delta, backward shift sback (from the layer above into
    this one), update shifts sw / sb (layers below the last: lr_shift + hidden_shift),
    dmax = max|x - zp_x|, bias_limit, delta_max."""
    _check_mode(mode)
    if not isinstance(lr_shift, (int, np.integer)) or not 0 <= lr_shift <= MAX_SHIFT:
        raise ValueError("trainref: lr_shift %r, expected an int in 0..%d" % (lr_shift, MAX_SHIFT))
    hidden_shift = check_hidden_shift(hidden_shift)
    if qmodel.layers[-1].act != "softmax":
        raise ValueError("trainref: last layer %r, expected softmax" % qmodel.layers[-1].act)
    layers = modelfile.to_dict(qmodel)["layers"]  # as the board reads them from the file
    return plan(layers, mode, int(lr_shift), hidden_shift)


def effective_lr(lr_shift):
    """The float learning rate the integer update implements for a layer: 2**-lr_shift on
    gradients summed over the mini-batch (layers below the last: lr_shift + hidden_shift)."""
    return 2.0**-lr_shift


def check_train_bounds(qmodel, mode=DEFAULT_MODE, batch=1, lr_shift=None, hidden_shift=None):
    """Prove a training step in `mode` with mini-batches of `batch` stays within 31 bits for
    any int8 weight, or raise ValueError naming the stage. Returns {"max_batch", "stage" (the
    one limiting the batch), "stages": {name: worst value at this batch}}."""
    _, lr_shift, _, hidden_shift = settings(qmodel.training, mode, lr_shift, batch, hidden_shift)
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError("train bounds: batch %r, expected an int >= 1" % (batch,))
    plan = train_plan(qmodel, mode, lr_shift, hidden_shift)
    check_zero_inputs(qmodel, [p["trains_w"] for p in plan])
    stages = {}

    def prove(stage, value):
        stages[stage] = int(value)
        if value > SMALL_INT_MAX:
            raise ValueError(
                "train bounds: %s may reach %d (%s, batch %d), over 2**30 - 1"
                % (stage, value, mode, batch)
            )

    max_batch, limiting = SMALL_INT_MAX, "no trainable parameter"
    for k, (layer, p) in enumerate(zip(qmodel.layers, plan, strict=True)):
        where = "layer %d " % k
        if p["trains_w"] or p["trains_b"]:
            acc = 127 * layer.n_in * p["dmax"] + p["bias_limit"]
            prove(where + "accumulator", acc)
            prove(where + "zp_z + R(acc, s)", 128 + (acc >> layer.shift) + 1)
        if p["has_delta"] and k > 0 and plan[k - 1]["has_delta"]:
            prove(where + "backward sum", 127 * layer.n_out * p["delta_max"])
            prove(where + "backward product T * D", DELTA_MAX * 16384)
        groups = []
        if p["trains_w"]:
            groups.append(("weight", p["delta_max"] * p["dmax"], p["sw"], MASTER_MAX))
        if p["trains_b"]:
            groups.append(("bias", p["delta_max"], p["sb"], p["bias_limit"]))
        for name, g_max, s, base in groups:
            per = g_max << max(-s, 0)
            prove(where + name + " gradient sum", g_max * batch)
            prove(where + name + " update", base + per * batch + 1)
            cap = (SMALL_INT_MAX - base - 1) // per
            if cap < max_batch:
                max_batch, limiting = cap, where + name + " update"
    return {"max_batch": int(max_batch), "stage": limiting, "stages": stages}


# --- the training step (device/train.py, Trainer.step; device/train_portable.py) ---


class TrainRef:
    """The board's Trainer in NumPy, on a private copy of `qmodel` (see the module docstring).

    Attributes as on the board: qmodel (its w, b are the trained int8 weights and biases),
    master_w (int16 values, (n_out, n_in) per trainable layer, else None), state (PRNG),
    steps, n_correct, max_batch, plan, hidden_shift.
    """

    def __init__(
        self, qmodel, mode=None, lr_shift=None, batch=None, seed=None, hidden_shift=None
    ):  # fmt: skip
        mode, lr_shift, batch, hidden_shift = settings(
            qmodel.training, mode, lr_shift, batch, hidden_shift
        )
        self.qmodel = copy.deepcopy(qmodel)
        self.mode, self.lr_shift, self.batch = mode, int(lr_shift), int(batch)
        self.hidden_shift = check_hidden_shift(hidden_shift)
        proof = check_train_bounds(self.qmodel, mode, 1, lr_shift, hidden_shift)
        self.max_batch = proof["max_batch"]
        if self.batch > self.max_batch:
            raise ValueError(
                "trainref: batch %d over the proven maximum %d (%s)"
                % (self.batch, self.max_batch, proof["stage"])
            )
        self.plan = train_plan(self.qmodel, mode, lr_shift, hidden_shift)
        self.master_w, self.gw, self.gb = [], [], []
        for layer, p in zip(self.qmodel.layers, self.plan, strict=True):
            w = np.asarray(layer.w, dtype=np.int64)
            self.master_w.append(w * 256 if p["trains_w"] else None)
            self.gw.append(np.zeros_like(w) if p["trains_w"] else None)
            self.gb.append(np.zeros(layer.n_out, dtype=np.int64) if p["trains_b"] else None)
            layer.w = w.copy()
            layer.b = np.asarray(layer.b, dtype=np.int64).copy()
        self.state = seed_state(DEFAULTS["seed"] if seed is None else seed)
        self.steps = 0
        self.n_correct = 0
        self._count = 0

    def forward(self, raw):
        """int raw features (F,) -> (inputs per layer, outputs per layer, scores, class)."""
        q = self.qmodel
        x = reference.input_stage(q, np.asarray(raw, dtype=np.int64)[None, :])
        xs, ys = [], []
        for k, layer in enumerate(q.layers):
            xs.append(x[0])
            _, x = reference.dense(layer, x, k)
            ys.append(x[0])
        scores = reference.softmax_q(q, x)[0] + 128
        return xs, ys, scores, int(np.argmax(x[0]))

    def errors(self, ys, scores, label):
        """int16 error signals per layer (None where backprop does not reach)."""
        plan = self.plan
        n = len(plan)
        deltas = [None] * n
        e = np.asarray(scores, dtype=np.int64).copy()
        e[label] -= 256
        deltas[-1] = e
        for k in range(n - 1, 0, -1):
            if not plan[k - 1]["has_delta"]:
                break
            deltas[k - 1] = self._backward(k, deltas[k], ys[k - 1])
        return deltas

    def _backward(self, k, d, y):
        """delta(k) -> delta(k - 1): S = W^T delta, T = clamp16(R(S, sback)), times D."""
        w = self.qmodel.layers[k].w
        below = self.qmodel.layers[k - 1]
        where = "layer %d backward" % k
        check_small(np.abs(d) @ np.abs(w), where + " partial sums")
        s = check_small(d @ w, where + " sum")
        t = clamp(rounding_rshift(s, self.plan[k - 1]["sback"]), -32768, 32767)
        act = below.act
        if act == "relu":
            return np.where(y > below.zp_z, t, 0)
        if act in DERIV_SHIFT:
            if act == "sigmoid":
                deriv = (y + 128) * (128 - y)
            else:
                deriv = 16384 - y * y
            prod = check_small(t * deriv, where + " T * D")
            return rounding_rshift(prod, DERIV_SHIFT[act])
        return t

    def gradient_terms(self, xs, deltas):
        """Per layer (gw, gb) of one sample: delta_j * (x_i - zp_x) and delta_j (or None)."""
        out = []
        for k, (layer, p) in enumerate(zip(self.qmodel.layers, self.plan, strict=True)):
            d = deltas[k]
            gw = gb = None
            if p["trains_w"]:
                gw = check_small(np.outer(d, xs[k] - layer.zp_x), "layer %d gradient" % k)
            if p["trains_b"]:
                gb = d.copy()
            out.append((gw, gb))
        return out

    def step(self, raw, label):
        """The board's Trainer.step: -> (predicted class, correct 0/1)."""
        n_out = self.qmodel.layers[-1].n_out
        if not 0 <= label < n_out:
            raise ValueError("trainref: label %d, expected 0..%d" % (label, n_out - 1))
        xs, ys, scores, cls = self.forward(raw)
        deltas = self.errors(ys, scores, label)
        for k, (gw, gb) in enumerate(self.gradient_terms(xs, deltas)):
            if gw is not None:
                self.gw[k] = check_small(self.gw[k] + gw, "layer %d weight gradient sum" % k)
            if gb is not None:
                self.gb[k] = check_small(self.gb[k] + gb, "layer %d bias gradient sum" % k)
        self._count += 1
        if self._count >= self.batch:
            self._update()
            self._count = 0
        correct = int(cls == label)
        self.steps += 1
        self.n_correct += correct
        return cls, correct

    def _stochastic(self, g, s, what):
        """SR(g, s): floor(g / 2**s) + [dropped top t bits > (draw - 1) >> (16 - t)] for s > 0
        (one draw per value, in order), g << -s for s <= 0."""
        g = np.asarray(g, dtype=np.int64)
        if s <= 0:
            return check_small(g << -s, what)
        t = min(s, 16)
        r, self.state = draws(self.state, g.size)
        frac = (g >> (s - t)) & ((1 << t) - 1)
        return (g >> s) + (frac > ((r - 1) >> (16 - t)))

    def _update(self):
        """Apply the summed gradients: layer by layer, weights row-major, then biases."""
        for k, (layer, p) in enumerate(zip(self.qmodel.layers, self.plan, strict=True)):
            where = "layer %d " % k
            if p["trains_w"]:
                u = self._stochastic(self.gw[k].ravel(), p["sw"], where + "weight step")
                v = check_small(self.master_w[k].ravel() - u, where + "master weight update")
                v = clamp(v, -32768, 32767).reshape(layer.w.shape)
                self.master_w[k] = v
                layer.w = clamp((v + 128) >> 8, -127, 127)
                self.gw[k][:] = 0
            if p["trains_b"]:
                u = self._stochastic(self.gb[k], p["sb"], where + "bias step")
                v = check_small(layer.b - u, where + "bias update")
                lim = p["bias_limit"]
                layer.b = clamp(v, -lim, lim)
                self.gb[k][:] = 0

    def gradients(self, raw, labels):
        """Integer gradients summed over the samples (n, F), without updating anything:
        [(gw int (n_out, n_in) or None, gb int (n_out,) or None) per layer], and the scale
        of each: the real gradient is gw * 2**-(f_delta + f_x), gb * 2**-f_delta."""
        sums = [[None, None] for _ in self.plan]
        for r, label in zip(np.asarray(raw), np.asarray(labels), strict=True):
            xs, ys, scores, _ = self.forward(r)
            deltas = self.errors(ys, scores, int(label))
            for k, terms in enumerate(self.gradient_terms(xs, deltas)):
                for i, g in enumerate(terms):
                    if g is not None:
                        total = g if sums[k][i] is None else sums[k][i] + g
                        sums[k][i] = check_small(total, "layer %d gradient sum" % k)
        return [tuple(s) for s in sums]


def train_steps(
    qmodel, raw, labels, mode=None, lr_shift=None, batch=None, seed=None, hidden_shift=None
):  # fmt: skip
    """Run TrainRef over the samples in order; returns the TrainRef (its qmodel is trained)."""
    ref = TrainRef(qmodel, mode, lr_shift, batch, seed, hidden_shift)
    for r, label in zip(np.asarray(raw), np.asarray(labels), strict=True):
        ref.step(r, int(label))
    return ref


# --- the float baseline: the same layers of the dequantized network, float64 SGD ---


def dequantize(qmodel):
    """QModel -> float network {"W", "b", "acts", "input_stage"}: W = w * 2**-f_w,
    b = b * 2**-(f_x + f_w); the activations in float (softmax output)."""
    Ws, bs, acts = [], [], []
    for layer in qmodel.layers:
        Ws.append(np.asarray(layer.w, dtype=np.float64) * 2.0**-layer.f_w)
        bs.append(np.asarray(layer.b, dtype=np.float64) * 2.0 ** -(layer.f_x + layer.f_w))
        acts.append(layer.act)
    return {"W": Ws, "b": bs, "acts": acts, "input_stage": qmodel.input_stage}


def float_inputs(net, raw):
    """int raw features (n, F) -> the dequantized int8 network inputs (the board's input)."""
    return net["input_stage"].transform(np.asarray(raw, dtype=np.int64))


def float_gradients(net, x, labels):
    """Cross-entropy gradients summed over the samples x (n, n_in) with class indices
    `labels`: (dW list, db list), per layer (mlp.forward_pass and backward_pass)."""
    a = forward_pass(net["W"], net["b"], net["acts"], np.asarray(x, dtype=np.float64))
    Y = np.eye(a[-1].shape[-1])[np.asarray(labels, dtype=np.int64)]
    return backward_pass(net["W"], net["acts"], a, output_error(a[-1], Y, "cross_entropy"))


def float_finetune(
    qmodel, raw, labels, mode=DEFAULT_MODE, lr_shift=DEFAULT_LR_SHIFT, batch=1, lr=None,
    hidden_shift=0,
):  # fmt: skip
    """Fine-tune the layers `mode` names of the dequantized `qmodel` with float64 SGD, one
    pass over the samples in order (as the board sees them), updating every `batch` samples
    with lr * (gradient summed over the batch), lr * 2**-hidden_shift below the last layer;
    lr defaults to 2**-lr_shift, the integer trainer's rate. Returns (net, correct): the
    float network and, per sample, whether it was predicted right before learning from it."""
    lr = effective_lr(lr_shift) if lr is None else float(lr)
    nets, correct = float_finetune_many(qmodel, raw, labels, mode, [(lr, hidden_shift)], batch)
    return nets[0], correct[0]


def float_finetune_many(qmodel, raw, labels, mode, rates, batch=1, snapshots=None):
    """float_finetune for each (lr, hidden_shift) of `rates` over the same samples, at once:
    one copy of the network per rate, stacked on a leading axis that mlp.forward_pass and
    backward_pass carry along (each copy computes what it would alone, to the last bit).
    Returns (a float network per rate, correct (rates, n)); with `snapshots` (ascending step
    counts) the first item is a list per snapshot of those networks, after that many steps."""
    _check_mode(mode)
    for _, h in rates:
        check_hidden_shift(h)
    net = dequantize(qmodel)
    acts, c, n = net["acts"], len(rates), len(net["W"])
    trains_w, trains_b, lowest = learns(mode, n)
    W = [np.repeat(w[None], c, axis=0) for w in net["W"]]  # (c, n_out, n_in)
    b = [np.repeat(v[None, None], c, axis=0) for v in net["b"]]  # (c, 1, n_out)
    # the layers below the last learn 2**hidden_shift times slower
    lrs = [
        np.array([lr * (2.0**-h if k < n - 1 else 1.0) for lr, h in rates])[:, None, None]
        for k in range(n)
    ]
    x = float_inputs(net, raw)
    labels = np.asarray(labels, dtype=np.int64)
    Y = np.eye(W[-1].shape[1])[labels]
    correct = np.zeros((c, len(x)), dtype=np.int64)
    gw, gb = [None] * n, [None] * n  # gradients summed over the batch so far
    count = 0
    ends = [len(x)] if snapshots is None else [int(s) for s in snapshots]
    if ends != sorted(ends) or ends[-1] > len(x) or ends[0] < 0:
        raise ValueError(
            "trainref: snapshots %r, expected ascending counts <= %d" % (ends, len(x))
        )
    taken = [_copies(net, W, b) for _ in range(ends.count(0))]
    for i in range(ends[-1]):
        a = forward_pass(W, b, acts, np.repeat(x[None, i : i + 1], c, axis=0))
        correct[:, i] = np.argmax(a[-1][:, 0], axis=1) == labels[i]
        delta = output_error(a[-1], Y[i], "cross_entropy")
        dW, db = backward_pass(W, acts, a, delta, lowest=lowest)
        for k in range(lowest, n):
            gw[k] = dW[k] if count == 0 else gw[k] + dW[k]
            gb[k] = db[k][:, None] if count == 0 else gb[k] + db[k][:, None]
        count += 1
        if count == batch:
            for k in range(lowest, n):
                if trains_w[k]:
                    W[k] = W[k] - lrs[k] * gw[k]
                if trains_b[k]:
                    b[k] = b[k] - lrs[k] * gb[k]
            count = 0
        taken += [_copies(net, W, b) for _ in range(ends.count(i + 1))]
    return (taken[0] if snapshots is None else taken), correct


def _copies(net, W, b):
    """The networks of the stacked copies: one dict like `net` per copy."""
    nets = []
    for j in range(W[0].shape[0]):
        one = dict(net)
        one["W"] = [w[j].copy() for w in W]
        one["b"] = [v[j, 0].copy() for v in b]
        nets.append(one)
    return nets


def float_predict(net, raw):
    """int raw features (n, F) -> class indices (n,) of the float network (argmax)."""
    a = forward_pass(net["W"], net["b"], net["acts"], float_inputs(net, raw))
    return np.argmax(a[-1], axis=1)
