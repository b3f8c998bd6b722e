"""host/trainref.py's TrainRef for many learning rates at once: the same steps on one model,
one copy of its weights per (lr_shift, hidden_shift), vectorised over the copies.

Runs on: host.

The rates change only the update shifts (train_plan's sw, sb), so every copy runs the same
int32 forward, error signals and gradient sums as TrainRef on its own weights, and the same
stochastic rounding from its own xorshift16 state (a copy whose shift is <= 0 draws nothing,
as on the board). The adaptation experiment (host/adapt.py) tries a grid of rates on each
subject; one step for the whole grid costs what one step for one rate did. tests/test_adapt.py
proves every copy bit-identical to TrainRef. When any value of any copy leaves 31 bits, each
rate is run again on its own by TrainRef, so a BoundError lands on the rates that raise it.
(The float baseline's grid is trainref.float_finetune_many.)
"""

import copy

import numpy as np

from . import reference, trainref
from .fixedpoint import BoundError, check_small, clamp_int8, rounding_rshift


def train_steps_many(qmodel, raw, labels, mode, rates, batch=1, seed=None, snapshots=None):
    """trainref.train_steps for each (lr_shift, hidden_shift) of `rates` over the same samples
    -> a list, per rate, of its trained QModel or the ValueError TrainRef raised for it.

    snapshots: ascending step counts (at most len(raw)); then a list per snapshot of such
    lists, the models after that many steps (a longer run continues the shorter one, as the
    board's training does)."""
    ends = [len(raw)] if snapshots is None else [int(n) for n in snapshots]
    if ends != sorted(ends) or ends[-1] > len(raw) or ends[0] < 0:
        raise ValueError(
            "trainmany: snapshots %r, expected ascending counts <= %d" % (ends, len(raw))
        )
    results = [[None] * len(rates) for _ in ends]
    ok = []
    for i, (lr_shift, hidden_shift) in enumerate(rates):
        try:
            trainref.TrainRef(qmodel, mode, lr_shift, batch, seed, hidden_shift)
        except ValueError as e:  # refused by the bound proof: no candidate
            for r in results:
                r[i] = e
        else:
            ok.append(i)
    if ok:
        try:
            many = Many(qmodel, mode, [rates[i] for i in ok], batch, seed)
            done = 0
            for r, end in zip(results, ends, strict=True):
                many.run(raw[done:end], labels[done:end])
                done = end
                for j, i in enumerate(ok):
                    r[i] = many.qmodel(j)
        except BoundError:  # some copy left 31 bits: TrainRef says which, and where
            for i in ok:
                _one_by_one(qmodel, raw, labels, mode, rates[i], batch, seed, ends, results, i)
    return results[0] if snapshots is None else results


def _one_by_one(qmodel, raw, labels, mode, rate, batch, seed, ends, results, i):
    """TrainRef alone for rate i, its models at `ends` (or its ValueError from there on)."""
    ref = trainref.TrainRef(qmodel, mode, rate[0], batch, seed, rate[1])
    done = 0
    try:
        for r, end in zip(results, ends, strict=True):
            for x, label in zip(raw[done:end], labels[done:end], strict=True):
                ref.step(x, int(label))
            done = end
            r[i] = copy.deepcopy(ref.qmodel)
    except ValueError as e:
        for r in results:
            if r[i] is None:
                r[i] = e


class Many:
    """TrainRef's state with a leading axis of C copies (one per rate)."""

    def __init__(self, qmodel, mode, rates, batch, seed):
        self.q = qmodel
        self.batch = int(batch)
        plans = [trainref.train_plan(qmodel, mode, k, h) for k, h in rates]
        self.plan = plans[0]  # all but the update shifts are the same for every rate
        c = len(rates)
        self.sw = [
            np.array([p[k]["sw"] for p in plans])[:, None] for k in range(len(qmodel.layers))
        ]
        self.sb = [
            np.array([p[k]["sb"] for p in plans])[:, None] for k in range(len(qmodel.layers))
        ]
        self.w, self.b, self.master_w, self.gw, self.gb = [], [], [], [], []
        for layer, p in zip(qmodel.layers, self.plan, strict=True):
            w = np.repeat(np.asarray(layer.w, dtype=np.int64)[None], c, axis=0)
            self.w.append(w)
            self.b.append(np.repeat(np.asarray(layer.b, dtype=np.int64)[None], c, axis=0))
            self.master_w.append(w * 256 if p["trains_w"] else None)
            self.gw.append(np.zeros_like(w) if p["trains_w"] else None)
            self.gb.append(np.zeros((c, layer.n_out), dtype=np.int64) if p["trains_b"] else None)
        self.state = np.full(c, trainref.seed_state(1 if seed is None else seed), dtype=np.int64)
        self._count = 0

    def qmodel(self, j):
        """The trained QModel of copy j."""
        q = copy.deepcopy(self.q)
        for k, layer in enumerate(q.layers):
            layer.w = self.w[k][j].copy()
            layer.b = self.b[k][j].copy()
        return q

    def run(self, raw, labels):
        x0 = reference.input_stage(self.q, np.asarray(raw, dtype=np.int64))
        n_out = self.q.layers[-1].n_out
        for x, label in zip(x0, np.asarray(labels), strict=True):
            label = int(label)
            if not 0 <= label < n_out:
                raise ValueError("trainref: label %d, expected 0..%d" % (label, n_out - 1))
            self.step(x, label)

    def _dense(self, k, x):
        """TrainRef.forward's reference.dense for every copy: x (C, n_in) -> y (C, n_out)."""
        layer, w, where = self.q.layers[k], self.w[k], "layer %d" % k
        d = x - layer.zp_x
        check_small(_matvec(np.abs(w), np.abs(d)), where + " partial sums")
        acc = check_small(_matvec(w, d) + self.b[k], where + " accumulator")
        z = clamp_int8(
            check_small(layer.zp_z + rounding_rshift(acc, layer.shift), where + " zp_z + R")
        )
        if layer.act in ("linear", "softmax"):
            return z
        if layer.act == "relu":
            return np.maximum(z, layer.zp_z)
        return np.asarray(layer.table, dtype=np.int64)[z + 128]

    def step(self, x0, label):
        """TrainRef.step on every copy, from the int8 layer-0 inputs x0 (n_in,)."""
        n = len(self.q.layers)
        x = np.repeat(x0[None], len(self.state), axis=0)
        xs, ys = [], []
        for k in range(n):
            xs.append(x)
            x = self._dense(k, x)
            ys.append(x)
        e = reference.softmax_q(self.q, x) + 128  # TrainRef.errors
        e[:, label] -= 256
        deltas = [None] * n
        deltas[-1] = e
        for k in range(n - 1, 0, -1):
            if not self.plan[k - 1]["has_delta"]:
                break
            deltas[k - 1] = self._backward(k, deltas[k], ys[k - 1])
        for k, (layer, p) in enumerate(zip(self.q.layers, self.plan, strict=True)):
            d = deltas[k]
            if p["trains_w"]:
                g = check_small(d[:, :, None] * (xs[k] - layer.zp_x)[:, None, :], "gradient")
                self.gw[k] = check_small(self.gw[k] + g, "layer %d weight gradient sum" % k)
            if p["trains_b"]:
                self.gb[k] = check_small(self.gb[k] + d, "layer %d bias gradient sum" % k)
        self._count += 1
        if self._count >= self.batch:
            self.update()
            self._count = 0

    def _backward(self, k, d, y):
        """TrainRef's _backward for every copy: delta(k) (C, n_out) -> delta(k - 1)."""
        w, below = self.w[k], self.q.layers[k - 1]
        where = "layer %d backward" % k
        check_small(_vecmat(np.abs(d), np.abs(w)), where + " partial sums")
        s = check_small(_vecmat(d, w), where + " sum")
        t = trainref.clamp(rounding_rshift(s, self.plan[k - 1]["sback"]), -32768, 32767)
        if below.act == "relu":
            return np.where(y > below.zp_z, t, 0)
        if below.act in trainref.DERIV_SHIFT:
            deriv = (y + 128) * (128 - y) if below.act == "sigmoid" else 16384 - y * y
            prod = check_small(t * deriv, where + " T * D")
            return rounding_rshift(prod, trainref.DERIV_SHIFT[below.act])
        return t

    def _stochastic(self, g, s, what):
        """TrainRef's _stochastic for every copy: g (C, m), s (C, 1) -> the update steps."""
        low = s[:, 0] <= 0
        if not low.any():  # every copy draws (the usual case): no masked copies of g
            return self._rounded(g, s, slice(None))
        out = np.empty_like(g)
        out[low] = check_small(g[low] << -s[low], what)
        up = ~low
        if up.any():
            out[up] = self._rounded(g[up], s[up], up)
        return out

    def _rounded(self, g, s, which):
        """SR(g, s) for s > 0 of the copies `which` (rows of g, s), drawing from their states."""
        states, pos = _cycle_twice()
        m = g.shape[1]
        idx = pos[self.state[which]][:, None] + np.arange(1, m + 1)
        if m > 65535:  # more steps than one period: wrap the index (else the cycle twice over)
            idx %= 65535
        r = states[idx]
        self.state[which] = r[:, -1]
        t = np.minimum(s, 16)
        frac = (g >> (s - t)) & ((1 << t) - 1)
        return (g >> s) + (frac > ((r - 1) >> (16 - t)))

    def update(self):
        """TrainRef's _update for every copy: layer by layer, weights row-major, then biases."""
        c = len(self.state)
        for k, p in enumerate(self.plan):
            where = "layer %d " % k
            if p["trains_w"]:
                shape = self.w[k].shape
                u = self._stochastic(self.gw[k].reshape(c, -1), self.sw[k], where + "weight step")
                v = check_small(self.master_w[k].reshape(c, -1) - u, where + "master weight")
                v = trainref.clamp(v, -32768, 32767).reshape(shape)
                self.master_w[k] = v
                self.w[k] = trainref.clamp((v + 128) >> 8, -127, 127)
                self.gw[k][:] = 0
            if p["trains_b"]:
                u = self._stochastic(self.gb[k], self.sb[k], where + "bias step")
                v = check_small(self.b[k] - u, where + "bias update")
                lim = p["bias_limit"]
                self.b[k] = trainref.clamp(v, -lim, lim)
                self.gb[k][:] = 0


_CYCLE_TWICE = None


def _cycle_twice():
    """trainref.xorshift_cycle with its states repeated once: states[pos[x] + k] for
    1 <= k <= 65535."""
    global _CYCLE_TWICE
    if _CYCLE_TWICE is None:
        states, pos = trainref.xorshift_cycle()
        _CYCLE_TWICE = (np.concatenate([states, states]), pos)
    return _CYCLE_TWICE


def _matvec(w, x):
    """(C, n_out, n_in) . (C, n_in) -> (C, n_out), exact in int64."""
    return np.matmul(w, x[:, :, None])[:, :, 0]


def _vecmat(d, w):
    """(C, n_out) . (C, n_out, n_in) -> (C, n_in), exact in int64."""
    return np.matmul(d[:, None, :], w)[:, 0, :]
