"""What on-board learning buys a new wearer: the adaptation experiment, integer vs float.

Runs on: host.

Protocol. A model is trained on `train_subjects` (host.pipeline.train_model, the subject-wise
split, then quantize_model as export does). For each subject of `test_subjects`, on its own:

- its windows in time order (recording, then first sample);
- the adaptation set: the first `per_class` windows of each class;
- the evaluation set: its other windows that share no sample with an adaptation window
  (windows overlap, so the neighbours in the same recording are left out too);
- integer training with TrainRef (bit for bit the board's Trainer, batch 1) for `epochs`
  passes over the adaptation set, in one seeded shuffle per epoch;
- the float baseline: float64 SGD on the same layers of the dequantized model
  (trainref.float_finetune), same samples, same order, same epochs;
- accuracy on the evaluation set before and after, integer (host/reference.py) and float.

The rates are never chosen on the test subjects: the integer lr_shift and the float learning
rate, with the epochs, are picked, each on its own grid, by the same protocol run
leave-one-subject-out over the training subjects (a model trained on the others, adapted to
the one left out, turned as the test subjects are with a re-mount), by the one-standard-error
rule: of the candidates whose mean accuracy after adaptation is within one standard error of
the best mean, the one that learns least (rate times epochs; ties to the smaller rate). On
wearers like the training ones the folds' best beats a gentle rate by less than their noise,
and the gentle rate keeps what the model knew (bench/README.md has the figures); where
learning pays (a re-mount) the best beats it by far more.

When hidden layers learn ("bias", "all") the rate is a pair: the last layer's rate and
`hidden_shift`, the hidden layers learning 2**hidden_shift times slower (discriminative
fine-tuning: the features a model learnt from many wearers should move less, on 35 windows,
than the classifier on top of them). Integer and float choose the pair jointly, each on its
own grid, by the same rule; ties go to the smaller rate, then the larger shift.

The grids start around the leave-one-out best on the shoulder subjects 1-7 and grow past an
edge where the best of some epoch count lies (search_grid), up to the board's limits.

Rehearsal. When the mode trains hidden layers ("bias", "all"; REHEARSE), each adaptation step
is followed by one on the next of the model's rehearsal windows (host/rehearsal.py: 5 windows
per class of the subjects the model was trained on, drawn with `seed`), as the board does with
the model.rh that `microprop export` writes; integer and float see the same sequence, and the
rates are chosen with it. Without it, all-layer adaptation on the shoulder data loses on the
windows of each subject's other recordings (below); bench/adapt_variants.py compares rehearsal
with other remedies (a pull towards the exported weights, mirrored windows, weight averaging,
fewer epochs, tanh models).

Where the gain lands. Each subject's evaluation windows are also scored in two parts: those of
the recordings the adaptation windows come from, and those of the subject's other recordings.
In the shoulder data every subject has two recordings of each exercise, one per arm (the
`side` column; recording ids are not chronological), so the first windows of a class come from
one arm and the other part is the other arm. All-layer adaptation without rehearsal gains on
the arm it saw and loses on the other one: the hidden features move towards what 35 windows
of one arm show (bench/README.md has the figures).
"""

import time

import numpy as np

from microprop.device import mount as device_mount
from microprop.device.config import MAX_SHIFT
from microprop.device.train_plan import LEARN_MODES, learns

from . import mount, pipeline, reference, rehearsal, remount, trainmany, trainref
from .errors import UserError

DEFAULT_LEARN_MODES = ("last", "all")  # what `microprop adapt` compares
PER_CLASS = 5
# Passes over the adaptation set when the rates are given: on shoulder subjects 1-7
# (leave-one-out, the sensor as recorded) 10 and 20 epochs adapt equally well (5 is worse), so
# 10: 350 board steps for 5 windows of 7 classes. When the rates are chosen, the epochs are
# chosen with them from EPOCH_CHOICES (one run to the longest, scored at each: a longer run
# continues the shorter one, as the board's training would).
DEFAULT_EPOCHS = 10
EPOCH_CHOICES = (10, 20, 40)
# The starting grids of the selection. A grid grows past an edge where the best rate lies
# (the board's integer rates 2**-0 .. 2**-MAX_SHIFT, float ones FLOAT_LR_LIMITS, hidden shifts
# 0 .. MAX_SHIFT in steps of 2), so the chosen rate is never a grid's edge unless a limit is.
LR_SHIFTS = tuple(range(4, 10))  # the board's rates 2**-4 .. 2**-9
FLOAT_LRS = tuple(2.0 ** (-k / 2) for k in range(4, 17))  # 2**-2 .. 2**-8, half-octave steps
FLOAT_LR_LIMITS = (2.0**-12, 2.0**2)
HIDDEN_SHIFTS = (0, 2, 4)  # hidden layers 1, 1/4, 1/16 of the last layer's rate


def trains_hidden(mode):
    """Whether `mode` trains a layer below the last ("bias", "all"; device.train_plan.learns)."""
    trains_w, trains_b, _ = learns(mode, 2)
    return trains_w[0] or trains_b[0]


# rehearsal windows per class (host/rehearsal.py) interleaved when the mode trains hidden layers
REHEARSE = {m: rehearsal.PER_CLASS if trains_hidden(m) else 0 for m in LEARN_MODES}


def window_recordings(ds):
    """Recording id of each window of a pipeline.Dataset (its first sample's)."""
    return np.asarray(ds.log.recordings)[ds.starts]


def natural_key(s):
    s = str(s)
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def time_order(ds, subject):
    """Indices of `subject`'s windows in time order: by recording, then first sample."""
    idx = np.flatnonzero(ds.subjects == str(subject))
    rec = window_recordings(ds)[idx]
    keys = sorted(range(len(idx)), key=lambda i: (natural_key(rec[i]), int(ds.starts[idx[i]])))
    return idx[np.asarray(keys, dtype=np.int64)]


def adaptation_split(ds, subject, classes, per_class=PER_CLASS):
    """(adaptation indices, evaluation indices) of one subject's windows (see the module
    docstring): the first `per_class` windows of each class in time order, and the windows
    of the model's classes that share no sample with any of them."""
    order = time_order(ds, subject)
    order = order[np.isin(ds.labels[order], list(classes))]
    taken = {c: 0 for c in classes}
    adapt = []
    for i in order:
        c = ds.labels[i]
        if taken[c] < per_class:
            taken[c] += 1
            adapt.append(i)
    adapt = np.asarray(adapt, dtype=np.int64)
    rec = window_recordings(ds)
    lo, hi = ds.starts, ds.starts + ds.window  # sample range [lo, hi) of each window
    overlap = np.zeros(len(ds.starts), dtype=bool)
    for a in adapt:
        overlap |= (rec == rec[a]) & (lo < hi[a]) & (lo[a] < hi)
    keep = order[~overlap[order]]
    return adapt, keep


def epoch_order(n, epochs, seed):
    """Sample order of `epochs` passes over n samples: one seeded permutation per epoch."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(n) for _ in range(epochs)] or [np.zeros(0, int)])


def accuracy(pred, y):
    """Fraction of predictions equal to the labels y (NaN when there are none)."""
    return float(np.mean(np.asarray(pred) == np.asarray(y))) if len(y) else float("nan")


class Trial:
    """One subject's adaptation and evaluation sets on one quantized model: `samples(mode,
    epochs)` the steps in order, integer and float predictions on the evaluation set after
    them. `epochs` at construction is the most any call asks for."""

    def __init__(
        self, qm, ds, subject, per_class, epochs, seed, fit_subjects=(), rehearse=None,
        unmounted=None,
    ):  # fmt: skip
        classes = list(qm.classes)
        adapt, keep = adaptation_split(ds, subject, classes, per_class)
        if len(adapt) == 0 or len(keep) == 0:
            raise UserError(
                "adapt: subject %s leaves %d adaptation and %d evaluation windows, expected "
                "some of each" % (subject, len(adapt), len(keep)),
                path=ds.source or None,
            )
        self.qm, self.subject, self.seed = qm, str(subject), seed
        self.n_adapt, self.n_eval = len(adapt), len(keep)
        order = epoch_order(len(adapt), epochs, seed)
        self.x_adapt = ds.X[adapt][order]
        self.y_adapt = pipeline.class_indices(ds.labels[adapt], classes)[order]
        self.x_eval = ds.X[keep]
        self.y_eval = pipeline.class_indices(ds.labels[keep], classes)
        # the model's rehearsal windows, from the subjects it was trained on, per mode
        self.rehearse = dict(REHEARSE if rehearse is None else rehearse)
        self._rehearsal = {}
        for k in set(self.rehearse.values()) - {0}:
            self._rehearsal[k] = rehearsal.pick(ds, fit_subjects, classes, k, seed)
        # evaluation windows of the recordings the adaptation windows come from, and of the
        # subject's other recordings (in the shoulder data: the other arm)
        rec = window_recordings(ds)
        self.same = np.isin(rec[keep], rec[adapt])
        net = trainref.dequantize(qm)
        # before adapting: on `unmounted` (the wearer's data before the board's mount search
        # turned `ds`) when given, and then "mounted" is the accuracy with the mount alone
        x_before = self.x_eval if unmounted is None else unmounted.X[keep]
        self.int_before_pred = reference.predict(qm, x_before)[0]
        self.float_before_pred = trainref.float_predict(net, x_before)
        self.int_before = accuracy(self.int_before_pred, self.y_eval)
        self.float_before = accuracy(self.float_before_pred, self.y_eval)
        self.int_mounted = accuracy(reference.predict(qm, self.x_eval)[0], self.y_eval)
        self.float_mounted = accuracy(trainref.float_predict(net, self.x_eval), self.y_eval)

    def samples(self, mode, epochs=None):
        """(raw features, class indices) of the steps `mode` takes in `epochs` passes (default
        all), in order: the adaptation sequence, each window followed by a rehearsal window
        when `mode` rehearses."""
        n = len(self.x_adapt) if epochs is None else epochs * self.n_adapt
        x, y = self.x_adapt[:n], self.y_adapt[:n]
        k = self.rehearse.get(mode, 0)
        if not k:
            return x, y
        return rehearsal.interleave(x, y, *self._rehearsal[k])

    def steps(self, mode, epochs):
        """How many training steps `epochs` passes take in `mode` (rehearsal doubles them)."""
        return epochs * self.n_adapt * (2 if self.rehearse.get(mode, 0) else 1)

    def integer_predictions(self, mode, lr_shift, hidden_shift=0, epochs=None):
        """Evaluation-set classes after board-exact training (TrainRef, batch 1; its
        stochastic rounding draws from the board's xorshift16 seeded with seed + 1)."""
        x, y = self.samples(mode, epochs)
        ref = trainref.train_steps(
            self.qm, x, y, mode=mode, lr_shift=lr_shift, batch=1, seed=self.seed + 1,
            hidden_shift=hidden_shift,
        )  # fmt: skip
        return reference.predict(ref.qmodel, self.x_eval)[0]

    def integer_many(self, mode, rates, epochs):
        """integer() for each (lr_shift, hidden_shift) of `rates` after each number of passes
        in `epochs` (ascending), at once (host/trainmany.py) -> {(lr_shift, hidden_shift,
        epochs): accuracy, or None where the bound proof refuses the rate}."""
        x, y = self.samples(mode, max(epochs))
        ends = [self.steps(mode, e) for e in epochs]
        runs = trainmany.train_steps_many(self.qm, x, y, mode, rates, 1, self.seed + 1, ends)
        out = {}
        for e, trained in zip(epochs, runs, strict=True):
            for (k, h), q in zip(rates, trained, strict=True):
                out[k, h, e] = (
                    None
                    if isinstance(q, ValueError)
                    else accuracy(reference.predict(q, self.x_eval)[0], self.y_eval)
                )
        return out

    def floating_many(self, mode, rates, epochs):
        """floating() for each (lr, hidden_shift) of `rates` after each number of passes in
        `epochs` (ascending), at once (trainref.float_finetune_many) -> {(lr, hidden_shift,
        epochs): accuracy}."""
        x, y = self.samples(mode, max(epochs))
        ends = [self.steps(mode, e) for e in epochs]
        runs, _ = trainref.float_finetune_many(self.qm, x, y, mode, rates, snapshots=ends)
        out = {}
        for e, nets in zip(epochs, runs, strict=True):
            for (lr, h), net in zip(rates, nets, strict=True):
                out[lr, h, e] = accuracy(trainref.float_predict(net, self.x_eval), self.y_eval)
        return out

    def float_predictions(self, mode, lr, hidden_shift=0, epochs=None):
        """Evaluation-set classes after float64 SGD on the same layers, samples and order
        (hidden layers at lr * 2**-hidden_shift)."""
        x, y = self.samples(mode, epochs)
        net, _ = trainref.float_finetune(
            self.qm, x, y, mode=mode, lr=lr, hidden_shift=hidden_shift
        )
        return trainref.float_predict(net, self.x_eval)

    def integer(self, mode, lr_shift, hidden_shift=0, epochs=None):
        """Accuracy after board-exact training (see integer_predictions)."""
        pred = self.integer_predictions(mode, lr_shift, hidden_shift, epochs)
        return accuracy(pred, self.y_eval)

    def floating(self, mode, lr, hidden_shift=0, epochs=None):
        """Accuracy after float64 SGD on the same layers (see float_predictions)."""
        return accuracy(self.float_predictions(mode, lr, hidden_shift, epochs), self.y_eval)

    def split(self, pred):
        """(accuracy on the adapted recordings' windows, on the other recordings' windows)."""
        y = self.y_eval
        return accuracy(pred[self.same], y[self.same]), accuracy(pred[~self.same], y[~self.same])


def find_mounts(qm, ds, subjects, per_class=PER_CLASS):
    """The board's mount search (host/mount.py, device/mount.py) on each subject's adaptation
    windows -> ({subject: orientation}, {subject: the 24 orientations' scores})."""
    classes = list(qm.classes)
    found, scores = {}, {}
    for s in subjects:
        idx, _ = adaptation_split(ds, s, classes, per_class)
        y = pipeline.class_indices(ds.labels[idx], classes)
        scores[s] = mount.search(qm, mount.windows(ds, idx), y, ds.log.channels)
        found[s] = mount.best(scores[s])
    return found, scores


def mounted(ds, found):
    """A pipeline.Dataset like `ds` with each subject of `found` ({subject: orientation})
    turned by its orientation, as the board turns its samples after `mount pick`."""
    if all(k == device_mount.IDENTITY for k in found.values()):
        return ds
    return pipeline.make_dataset(mount.turn_log(ds.log, found), ds.window, ds.hop, ds.source)


def _subset(ds, subjects):
    keep = np.isin(ds.subjects, [str(s) for s in subjects])
    return pipeline.Dataset(
        ds.log, ds.window, ds.hop, ds.X[keep], ds.labels[keep], ds.subjects[keep],
        ds.starts[keep], ds.source,
    )  # fmt: skip


def _quantize(mlp, meta, ds, modes):
    """Quantize as export does, with the bound proof covering the layers the modes train."""
    n = len(mlp.W)
    plans = [learns(m, n) for m in modes]
    trainable = tuple(k for k in range(n) if any(w[k] or b[k] for w, b, _ in plans))
    return pipeline.quantize_model(mlp, meta, ds, trainable_layers=trainable)


def train_and_quantize(ds, train_subjects, test_subjects, modes, train_options):
    """A float model trained on `train_subjects` only (pipeline.train_model with
    `train_options`), quantized as export does for `modes` -> (qmodel, float test accuracy)."""
    sub = _subset(ds, list(train_subjects) + list(test_subjects))
    mlp, meta, report, _ = pipeline.train_model(
        sub, test_subjects=list(test_subjects), **train_options
    )
    return _quantize(mlp, meta, sub, modes), report["accuracy"]


def pick_best(scores, order):
    """The candidate with the best mean score; ties to the first in `order`."""
    best = None
    for v in sorted(scores, key=order):
        s = scores[v]
        if s is not None and (best is None or s > scores[best] + 1e-12):
            best = v
    return best


def choose(scores, folds, order, amount):
    """The one-standard-error rule: of the candidates whose mean is within one standard error
    (of its fold-by-fold difference to the best) of the best candidate's, the one that learns
    least (`amount`: rate times epochs; then `order`). More passes or a faster rate only where
    they pay beyond the folds' noise. folds: {candidate: per-fold scores}."""
    best = pick_best(scores, order)
    n = len(folds[best])
    within = []
    for c, v in scores.items():
        if v is None:
            continue
        diff = folds[c] - folds[best]
        se = float(np.std(diff, ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        if v >= scores[best] - se - 1e-12:
            within.append(c)
    return min(within, key=lambda c: (amount(c), order(c)))


def hidden_shifts(mode):
    """The hidden shifts worth trying first in `mode`: only 0 when no hidden layer learns."""
    return HIDDEN_SHIFTS if trains_hidden(mode) else (0,)


def int_order(c):
    """Ties: the smaller rate (larger lr_shift), then the larger hidden shift, fewer epochs."""
    k, h, e = c
    return (-k, -h, e)


def float_order(c):
    lr, h, e = c
    return (lr, -h, e)


def int_amount(c):
    """How far a candidate moves the last layer: its rate 2**-lr_shift times its epochs."""
    k, _, e = c
    return e * 2.0**-k


def float_amount(c):
    lr, _, e = c
    return e * lr


def int_steps(mode):
    """Where the integer grid grows: (lr_shift step, limits), (hidden_shift step, limits)."""
    hidden = (2, (0, MAX_SHIFT)) if trains_hidden(mode) else None
    return (1, (0, MAX_SHIFT)), hidden


def float_steps(mode):
    hidden = (2, (0, MAX_SHIFT)) if trains_hidden(mode) else None
    return (2.0**0.5, FLOAT_LR_LIMITS), hidden


def _grow(rates, hs, best, steps):
    """The candidates one step past the edge of the grid (rates x hs) where `best` lies, within
    the limits; none when `best` is inside it."""
    (r_step, (r_lo, r_hi)), hidden = steps
    multiply = isinstance(r_step, float)
    new_rates, new_hs = [], []
    r, h = best[0], best[1]
    if r == min(rates):
        lower = r / r_step if multiply else r - r_step
        if lower >= r_lo * (1 - 1e-9):
            new_rates.append(lower)
    if r == max(rates):
        higher = r * r_step if multiply else r + r_step
        if higher <= r_hi * (1 + 1e-9):
            new_rates.append(higher)
    if hidden is not None:
        h_step, (h_lo, h_hi) = hidden
        if h == max(hs) and h + h_step <= h_hi:
            new_hs.append(h + h_step)
        if h == min(hs) and h - h_step >= h_lo:
            new_hs.append(h - h_step)
    return new_rates, new_hs


def search_grid(evaluate, rates, hs, steps, order, pick=None):
    """Mean score of every candidate (rate, hidden shift, epochs) tried: the grid rates x hs,
    each scored after each number of epochs, grown past an edge while the best candidate of
    some number of epochs lies on it, or while the rate `pick` (scores -> candidate) chooses
    does (its hidden shift may stay at an edge: hidden layers that learn no faster than the
    folds' noise rewards are the rule's answer, not a grid too small).
    evaluate(candidates (rate, hs) list) -> {(rate, h, e): mean score or None}."""
    rates, hs = list(rates), list(hs)
    scores = evaluate([(r, h) for r in rates for h in hs])
    while True:
        new_rates, new_hs = set(), set()
        epochs = {c[2] for c in scores}
        for e in epochs:
            best = pick_best({c: v for c, v in scores.items() if c[2] == e}, order)
            if best is not None:
                more_rates, more_hs = _grow(rates, hs, best, steps)
                new_rates.update(more_rates)
                new_hs.update(more_hs)
        if pick is not None:
            new_rates.update(_grow(rates, hs, pick(scores), steps)[0])
        if not new_rates and not new_hs:
            return scores
        new_rates, new_hs = sorted(new_rates), sorted(new_hs)
        todo = [(r, h) for r in new_rates for h in hs + new_hs]
        todo += [(r, h) for r in rates for h in new_hs]
        rates += new_rates
        hs += new_hs
        scores.update(evaluate(todo))


def select_rates(
    ds, train_subjects, modes=DEFAULT_LEARN_MODES, epochs=None, seed=0,
    per_class=PER_CLASS, train_options=None, progress=None, rehearse=None, turns=None,
    learn_mount=False,
):  # fmt: skip
    """Leave-one-subject-out over `train_subjects` -> {"lr_shift": {mode: k}, "lr": {mode: lr},
    "hidden_shift": {mode: h} (integer), "float_hidden_shift": {mode: h}, "epochs": {mode: e}
    (integer), "float_epochs": {mode: e}, "int_scores": {mode: {(k, h, e): mean accuracy}},
    "float_scores": {mode: {(lr, h, e): ...}}, "before": mean accuracy before, ...}. Only
    `train_subjects`' windows are used.

    Each fold's model and adaptation sets are made once; every candidate is then scored on
    all folds (its mean accuracy after adaptation); the choice is the candidate that learns
    least within one standard error of the best (choose). epochs: an int, or None to choose among
    EPOCH_CHOICES with the rates. The grids start at LR_SHIFTS / FLOAT_LRS x HIDDEN_SHIFTS and
    grow past an edge while the best candidate lies on it (see search_grid). turns: {subject:
    rotation} (host/remount.py) for a re-mounted sensor: each left-out subject is adapted to
    and scored with its sensor turned so, as the test subjects will be. learn_mount: each
    left-out subject's mount is searched first (find_mounts), as it will be for the test
    subjects, and the layers learn with it."""
    train_subjects = [str(s) for s in train_subjects]
    if len(train_subjects) < 2:
        raise UserError(
            "adapt: choosing the rates needs at least 2 training subjects, found %d; "
            "give the learning rates instead" % len(train_subjects)
        )
    options = dict(train_options or {})
    epoch_list = list(EPOCH_CHOICES) if epochs is None else [int(epochs)]
    trials = []
    clock = Progress({"fold": len(train_subjects), "search": 2 * len(modes)}, progress)
    for n, held_out in enumerate(train_subjects):
        clock.say(
            "rates: fold %d/%d, subject %s left out" % (n + 1, len(train_subjects), held_out)
        )
        others = [s for s in train_subjects if s != held_out]
        fold = remount.remount_dataset(ds, {held_out: turns[held_out]} if turns else None)
        qm, _ = train_and_quantize(fold, others, [held_out], modes, options)
        data, unmounted = fold, None
        if learn_mount:
            data, unmounted = mounted(fold, find_mounts(qm, fold, [held_out], per_class)[0]), fold
        trials.append(
            Trial(
                qm, data, held_out, per_class, max(epoch_list), seed, others, rehearse, unmounted
            )
        )
        clock.done("fold")

    def mean_of(scores_per_fold, store):
        out = {}
        for c in scores_per_fold[0]:
            vals = [f[c] for f in scores_per_fold]
            if any(v is None for v in vals):
                out[c] = None
            else:
                store[c] = np.array(vals)
                out[c] = float(np.mean(vals))
        return out

    # per kind: how a trial scores candidates, the starting rates, where the grid grows, ties
    kinds = {
        "int8": (lambda t, *a: t.integer_many(*a), LR_SHIFTS, int_steps, int_order, int_amount),
        "float": (
            lambda t, *a: t.floating_many(*a),
            FLOAT_LRS,
            float_steps,
            float_order,
            float_amount,
        ),
    }
    scores = {kind: {} for kind in kinds}
    picks = {kind: {} for kind in kinds}
    for m in modes:
        for kind, (many, start, steps, order, amount) in kinds.items():
            clock.say("rates: %s candidates for %s" % (kind, m))
            folds = {}

            def evaluate(cands, m=m, many=many, folds=folds):
                return mean_of([many(t, m, cands, epoch_list) for t in trials], folds)

            def pick(scores, folds=folds, order=order, amount=amount):
                return choose(scores, folds, order, amount)

            scores[kind][m] = search_grid(evaluate, start, hidden_shifts(m), steps(m), order, pick)
            picks[kind][m] = pick(scores[kind][m])
            clock.done("search")
    int_pick, float_pick = picks["int8"], picks["float"]
    int_scores, float_scores = scores["int8"], scores["float"]
    return {
        "lr_shift": {m: int_pick[m][0] for m in modes},
        "hidden_shift": {m: int_pick[m][1] for m in modes},
        "epochs": {m: int_pick[m][2] for m in modes},
        "lr": {m: float_pick[m][0] for m in modes},
        "float_hidden_shift": {m: float_pick[m][1] for m in modes},
        "float_epochs": {m: float_pick[m][2] for m in modes},
        "int_scores": int_scores,
        "float_scores": float_scores,
        "before": float(np.mean([t.int_before for t in trials])),
        "float_before": float(np.mean([t.float_before for t in trials])),
        "subjects": train_subjects,
    }


class Progress:
    """Progress lines with the time spent and an estimate of the time left: each kind of part
    (`parts`: {kind: how many}) is expected to last as long as its finished ones did on
    average (before any has finished, as long as the average part so far)."""

    def __init__(self, parts, progress):
        self.parts, self.progress = dict(parts), progress
        self.spent = {k: [] for k in parts}
        self.start = self.mark = time.monotonic()

    def say(self, text):
        if not self.progress:
            return
        done = [t for ts in self.spent.values() for t in ts]
        if done:
            left = 0.0
            for kind, n in self.parts.items():
                ts = self.spent[kind] or done
                left += (n - len(self.spent[kind])) * sum(ts) / len(ts)
            text += " (%.0f s so far, about %.0f s left)" % (time.monotonic() - self.start, left)
        self.progress(text)

    def done(self, kind):
        now = time.monotonic()
        self.spent[kind].append(now - self.mark)
        self.mark = now


def wearer_ceiling(ds, train_subjects, test_subjects, turns, modes, options, per_class):
    """A model trained (and quantized) on the training subjects with their sensors turned by
    `turns`, scored on each test subject's evaluation windows of `ds` (test subjects already
    turned) -> {"int8": mean accuracy, "float": mean accuracy of its dequantized network}."""
    turned = remount.remount_dataset(ds, {s: turns[s] for s in train_subjects})
    qm, _ = train_and_quantize(turned, train_subjects, test_subjects, modes, options)
    net = trainref.dequantize(qm)
    ints, floats = [], []
    for s in test_subjects:
        _, keep = adaptation_split(turned, s, list(qm.classes), per_class)
        y = pipeline.class_indices(turned.labels[keep], list(qm.classes))
        ints.append(accuracy(reference.predict(qm, turned.X[keep])[0], y))
        floats.append(accuracy(trainref.float_predict(net, turned.X[keep]), y))
    return {"int8": float(np.mean(ints)), "float": float(np.mean(floats))}


def _options_from_meta(meta):
    """train_model keyword arguments that reproduce a saved model's training."""
    t = dict(meta.get("training") or {})
    keys = set(pipeline.TRAIN_DEFAULTS) | {"hidden", "activation", "seed"}
    out = {k: v for k, v in t.items() if k in keys}
    if "hidden" in out:
        out["hidden"] = tuple(out["hidden"])
    return out


def run_adaptation(
    log_or_dataset, train_subjects, test_subjects, modes=DEFAULT_LEARN_MODES,
    epochs=None, seed=0, per_class=PER_CLASS, lr_shift=None, lr=None, model=None,
    train_options=None, progress=None, hidden_shift=None, float_hidden_shift=None, rehearse=None,
    remount_sensor=False, remount_seed=None, ceiling=False, learn_mount=False,
):  # fmt: skip
    """The adaptation experiment (module docstring) -> dict with "rows" (one per test
    subject and mode: accuracies before/after, integer and float), "mean" per mode (with the
    gains and "ratio" = integer gain / float gain), "accepted" per mode (float gain > 0 and
    integer gain >= 0.8 of it), the rates and how they were chosen ("selection").

    log_or_dataset: a SensorLog (cut into the pipeline's default windows) or a
    pipeline.Dataset. model: an optional (mlp, meta) already trained on `train_subjects`
    (else one is trained with `train_options` and `seed`). lr_shift / lr: an int / float, or a
    {mode: value} dict, to skip choosing them on the training subjects; hidden_shift /
    float_hidden_shift likewise (an int or {mode: int}; chosen with the rates when those are
    chosen, else 0). rehearse: rehearsal windows per class, an int for the modes that train
    hidden layers or a {mode: int} dict (default REHEARSE; 0: none). remount_sensor: turn each
    test subject's sensor, 90 degrees about z, or with `remount_seed` one uniformly random
    rotation per subject from that seed (host/remount.subject_turns, test subjects first). The
    model is trained on the training subjects as recorded; the rates are chosen with each
    left-out training subject turned the same way. ceiling (with a re-mount): also train a
    model on the training subjects with their sensors turned (their own turns) and score it on
    the test subjects' evaluation windows: what a model made for the re-mounted sensor gets.
    learn_mount: before the layers learn, the board's mount search on each test subject's
    adaptation windows (find_mounts) picks the orientation its samples are then turned by,
    for the integer and the float training alike; "before" stays the accuracy without it,
    "int_mounted" / "float_mounted" are those with the mount alone (in the rows and means),
    "mounts" the orientation found per subject.
    """
    for m in modes:
        if m not in LEARN_MODES:
            raise ValueError("adapt: mode %r, expected one of %s" % (m, ", ".join(LEARN_MODES)))
    if epochs is not None and (not isinstance(epochs, (int, np.integer)) or epochs < 1):
        raise ValueError("adapt: epochs %r, expected an int >= 1 (or None)" % (epochs,))
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError("adapt: per_class %r, expected an int >= 1" % (per_class,))
    ds = log_or_dataset
    if not isinstance(ds, pipeline.Dataset):
        ds = pipeline.make_dataset(ds, source=getattr(ds, "path", "") or "")
    train_subjects = [str(s) for s in train_subjects]
    test_subjects = [str(s) for s in test_subjects]
    both = set(train_subjects) & set(test_subjects)
    if both:
        raise UserError("adapt: subjects %s are both training and test" % ",".join(sorted(both)))
    options = dict(train_options or {})
    if model is not None:
        options = dict(_options_from_meta(model[1]), **options)
    options.setdefault("seed", seed)
    if rehearse is None or isinstance(rehearse, dict):
        rehearse = dict(REHEARSE, **(rehearse or {}))
    else:
        rehearse = {m: (int(rehearse) if trains_hidden(m) else 0) for m in REHEARSE}
    if any(not isinstance(k, (int, np.integer)) or k < 0 for k in rehearse.values()):
        raise ValueError("adapt: rehearse %r, expected windows per class >= 0" % (rehearse,))

    turns = None
    if remount_sensor or remount_seed is not None:
        turns = remount.subject_turns(test_subjects + train_subjects, remount_seed)
    selection = None
    if lr_shift is None or lr is None:
        selection = select_rates(
            ds, train_subjects, modes, epochs, seed, per_class, options, progress, rehearse,
            turns, learn_mount,
        )  # fmt: skip
    if turns:
        ds = remount.remount_dataset(ds, {s: turns[s] for s in test_subjects})
    lr_shift = _per_mode(lr_shift, selection and selection["lr_shift"], modes)
    lr = _per_mode(lr, selection and selection["lr"], modes)
    fixed = DEFAULT_EPOCHS if epochs is None else int(epochs)
    int_epochs = dict(selection["epochs"]) if selection else {m: fixed for m in modes}
    float_epochs = dict(selection["float_epochs"]) if selection else {m: fixed for m in modes}
    if selection and lr_shift != selection["lr_shift"]:  # given integer rates: given epochs
        int_epochs = {m: fixed for m in modes}
    if selection and lr != selection["lr"]:
        float_epochs = {m: fixed for m in modes}
    zero = {m: 0 for m in modes}
    hidden_shift = _per_mode(hidden_shift, selection["hidden_shift"] if selection else zero, modes)
    float_hidden_shift = _per_mode(
        float_hidden_shift, selection["float_hidden_shift"] if selection else zero, modes
    )

    if model is None:
        if progress:
            progress("model: training on subjects %s" % ",".join(train_subjects))
        qm, float_test = train_and_quantize(ds, train_subjects, test_subjects, modes, options)
    else:
        mlp, meta = model
        qm = _quantize(mlp, meta, ds, modes)
        float_test = None
    wearer = None
    if ceiling and turns:
        if progress:
            progress("ceiling: training on subjects %s turned" % ",".join(train_subjects))
        wearer = wearer_ceiling(
            ds, train_subjects, test_subjects, turns, modes, options, per_class
        )
    data, found, mount_scores = ds, None, None
    if learn_mount:
        if progress:
            progress("mount: searching each test subject's orientation")
        found, mount_scores = find_mounts(qm, ds, test_subjects, per_class)
        data = mounted(ds, found)
    rows = []
    for s in test_subjects:
        most = max(list(int_epochs.values()) + list(float_epochs.values()))
        trial = Trial(
            qm, data, s, per_class, most, seed, train_subjects, rehearse, ds if found else None
        )
        for m in modes:
            int_after = trial.integer_predictions(m, lr_shift[m], hidden_shift[m], int_epochs[m])
            float_after = trial.float_predictions(m, lr[m], float_hidden_shift[m], float_epochs[m])
            row = {
                "subject": s,
                "mode": m,
                "n_adapt": trial.n_adapt,
                "n_eval": trial.n_eval,
                "n_same": int(trial.same.sum()),
                "n_other": int((~trial.same).sum()),
                "int_before": trial.int_before,
                "int_after": accuracy(int_after, trial.y_eval),
                "float_before": trial.float_before,
                "float_after": accuracy(float_after, trial.y_eval),
                "int_mounted": trial.int_mounted,
                "float_mounted": trial.float_mounted,
            }
            for name, pred in (
                ("int_before", trial.int_before_pred), ("int_after", int_after),
                ("float_before", trial.float_before_pred), ("float_after", float_after),
            ):  # fmt: skip
                row[name + "_same"], row[name + "_other"] = trial.split(pred)
            rows.append(row)
    mean = {}
    for m in modes:
        r = [row for row in rows if row["mode"] == m]
        avg = {k: float(np.mean([row[k] for row in r])) for k in _ACC_KEYS + _MOUNTED_KEYS}
        for k in _ACC_KEYS:
            for part in ("_same", "_other"):
                vals = [row[k + part] for row in r if not np.isnan(row[k + part])]
                avg[k + part] = float(np.mean(vals)) if vals else float("nan")
        avg["int_gain"] = avg["int_after"] - avg["int_before"]
        avg["float_gain"] = avg["float_after"] - avg["float_before"]
        fg = avg["float_gain"]
        avg["ratio"] = avg["int_gain"] / fg if fg > 0 else float("nan")
        mean[m] = avg
    return {
        "source": ds.source,
        "train_subjects": train_subjects,
        "test_subjects": test_subjects,
        "modes": list(modes),
        "epochs": int_epochs,
        "float_epochs": float_epochs,
        "per_class": int(per_class),
        "seed": int(seed),
        "rehearse": {m: rehearse[m] for m in modes},
        "remount": None if turns is None else remount.describe(remount_seed),
        "lr_shift": lr_shift,
        "lr": lr,
        "hidden_shift": hidden_shift,
        "float_hidden_shift": float_hidden_shift,
        "selection": selection,
        "float_test_accuracy": float_test,
        "sizes": list(qm.sizes),
        "rows": rows,
        "mean": mean,
        "accepted": {m: accepted(mean[m]) for m in modes},
        "ceiling": wearer,
        "mounts": found and {s: mount_text(found[s], mount_scores[s]) for s in test_subjects},
    }


def mount_text(k, scores):
    """Orientation k as the board names it, with its score and the identity's."""
    identity = scores[device_mount.IDENTITY]
    return "%s (score %d, identity %d)" % (device_mount.name(k), scores[k], identity)


_ACC_KEYS = ("int_before", "int_after", "float_before", "float_after")
_MOUNTED_KEYS = ("int_mounted", "float_mounted")  # with the mount alone (= before without)
RATIO = 0.8


def accepted(mean):
    """The issue's criterion on the means: float gain > 0, integer gain >= 0.8 of it."""
    return bool(mean["float_gain"] > 0 and mean["int_gain"] >= RATIO * mean["float_gain"])


def _per_mode(given, chosen, modes):
    if given is None:
        return dict(chosen)
    if isinstance(given, dict):
        missing = [m for m in modes if m not in given]
        if missing:
            raise ValueError("adapt: no rate for modes %s" % ",".join(missing))
        return {m: given[m] for m in modes}
    return {m: given for m in modes}


def _subjects_text(subjects):
    return ",".join(subjects)


def format_adaptation(result):
    """The result of run_adaptation as a text table (accuracy in %, gains in points)."""
    r = result
    lines = [
        "on-board adaptation (%s): model trained on subjects %s, adapted to each of %s"
        % (
            r["source"] or "data",
            _subjects_text(r["train_subjects"]),
            _subjects_text(r["test_subjects"]),
        ),  # fmt: skip
        "adaptation set: first %d windows per class in time order; evaluation: that subject's "
        "windows sharing no sample with them; seeded shuffle %d per epoch, batch 1"
        % (r["per_class"], r["seed"]),
    ]
    if r.get("remount"):
        lines.append(
            "re-mounted sensor: each test subject's accelerometer and gyroscope %s; the model "
            "trained on the training subjects as recorded" % r["remount"]
        )
    if r.get("mounts"):
        first = r["mean"][r["modes"][0]]
        lines.append(
            "mount learnt first, as the board's `mount search` / `mount pick` does on the "
            "adaptation windows: %s; with the mount alone, mean int8 %.1f, float %.1f"
            % (
                "; ".join("subject %s %s" % (s, t) for s, t in r["mounts"].items()),
                100 * first["int_mounted"], 100 * first["float_mounted"],
            )
        )  # fmt: skip
    rehearsing = ["%s %d" % (m, k) for m, k in r["rehearse"].items() if k]
    if rehearsing:
        lines.append(
            "rehearsal: each adaptation step followed by one on a window of the model's training "
            "subjects, as the board does (windows per class: %s)" % ", ".join(rehearsing)
        )
    sel = r["selection"]
    how = (
        "chosen leave-one-subject-out on subjects %s%s"
        % (
            _subjects_text(sel["subjects"]),
            ", each left-out one's sensor turned alike" if r.get("remount") else "",
        )
        if sel
        else "given"
    )
    lines.append("rates (%s):" % how)
    for m in r["modes"]:
        k, lr = r["lr_shift"][m], r["lr"][m]
        h, fh = r["hidden_shift"][m], r["float_hidden_shift"][m]
        e, fe = r["epochs"][m], r["float_epochs"][m]
        text = "  %-4s integer lr_shift %d (2**-%d), %d epochs; float lr %.4g, %d epochs" % (
            m, k, k, e, lr, fe,
        )  # fmt: skip
        if trains_hidden(m):
            text += "; hidden_shift int8 %d, float %d" % (h, fh)
        if sel:
            i_score = sel["int_scores"][m].get((k, h, e))
            f_score = sel["float_scores"][m].get((lr, fh, fe))
            if i_score is not None and f_score is not None:
                text += "; leave-one-out mean there: int8 %.1f -> %.1f, float %.1f -> %.1f" % (
                    100 * sel["before"], 100 * i_score, 100 * sel["float_before"], 100 * f_score,
                )  # fmt: skip
        lines.append(text)
    if sel:
        lines.append("  (%s)" % _grid_text(sel))
    head = "%-5s %-8s %5s %5s | %-21s | %-21s" % (
        "mode", "subject", "adapt", "eval", "  int8 board (TrainRef)", "   float SGD baseline"
    )  # fmt: skip
    sub = "%-5s %-8s %5s %5s | %6s %6s %7s | %6s %6s %7s" % (
        "", "", "", "", "before", "after", "gain", "before", "after", "gain"
    )  # fmt: skip
    lines += ["", head, sub, "-" * len(sub)]
    for m in r["modes"]:
        for row in r["rows"]:
            if row["mode"] == m:
                lines.append(_row(m, row["subject"], row, row["n_adapt"], row["n_eval"]))
        mean = r["mean"][m]
        lines.append(_row(m, "mean", mean, "", ""))
        lines.append("-" * len(sub))
    if r.get("ceiling"):
        lines.append(
            "ceiling: a model trained on subjects %s with their sensors turned as well, on the "
            "same evaluation windows: int8 %.1f, float %.1f"
            % (_subjects_text(r["train_subjects"]), 100 * r["ceiling"]["int8"],
               100 * r["ceiling"]["float"])
        )  # fmt: skip
    lines += [""] + _where_lines(r) + [""]
    for m in r["modes"]:
        mean = r["mean"][m]
        lines.append(
            "%-4s integer gain %+.1f points, float gain %+.1f points: ratio %s -> %s"
            % (
                m,
                100 * mean["int_gain"],
                100 * mean["float_gain"],
                "n/a" if mean["float_gain"] <= 0 else "%.2f" % mean["ratio"],
                "accepted (float gain > 0, integer >= %.0f %% of it)" % (100 * RATIO)
                if r["accepted"][m]
                else "NOT accepted (needs float gain > 0, integer >= %.0f %% of it)"
                % (100 * RATIO),
            )
        )
    return "\n".join(lines)


def _grid_text(sel):
    """The candidates the selection scored, per mode, in words."""
    parts = []
    for m, scores in sel["int_scores"].items():
        ks = sorted({c[0] for c in scores})
        hs = sorted({c[1] for c in scores})
        es = sorted({c[2] for c in scores})
        fl = sorted({c[0] for c in sel["float_scores"][m]})
        text = "%s: lr_shift %d..%d, float lr %.3g..%.3g" % (m, ks[0], ks[-1], fl[0], fl[-1])
        if len(hs) > 1:
            text += ", hidden_shift %s" % ",".join(str(h) for h in hs)
        parts.append(text + ", epochs %s" % ",".join(str(e) for e in es))
    return "candidates scored: " + "; ".join(parts)


def _where_lines(r):
    """Where the gain lands: the evaluation windows of the recordings the adaptation windows
    come from, against those of the subject's other recordings (accuracy before -> after)."""
    lines = [
        "where the gain lands (accuracy before -> after): windows of the recordings adapted on,"
        " and of the subject's other recordings",
        "%-5s %-8s | %-22s | %-22s" % ("", "", "int8 board (TrainRef)", "float SGD baseline"),
        "%-5s %-8s | %-10s  %-10s | %-10s  %-10s"
        % ("mode", "subject", "adapted", "other", "adapted", "other"),
    ]  # fmt: skip
    for m in r["modes"]:
        rows = [row for row in r["rows"] if row["mode"] == m] + [
            dict(r["mean"][m], subject="mean")
        ]
        for row in rows:
            cells = []
            for kind in ("int", "float"):
                for part in ("_same", "_other"):
                    b, a = row[kind + "_before" + part], row[kind + "_after" + part]
                    cells.append("  n/a" if np.isnan(b) else "%4.1f->%4.1f" % (100 * b, 100 * a))
            lines.append("%-5s %-8s | %s  %s | %s  %s" % ((m, row["subject"]) + tuple(cells)))
    return lines


def _row(mode, subject, a, n_adapt, n_eval):
    return "%-5s %-8s %5s %5s | %6.1f %6.1f %+7.1f | %6.1f %6.1f %+7.1f" % (
        mode, subject, n_adapt, n_eval,
        100 * a["int_before"], 100 * a["int_after"], 100 * (a["int_after"] - a["int_before"]),
        100 * a["float_before"], 100 * a["float_after"],
        100 * (a["float_after"] - a["float_before"]),
    )  # fmt: skip
