"""Integer window features of int16 sensor counts: the NumPy reference of device/features.py.

Runs on: host. The board's scalar twin is `device/features.py`; tests prove them identical.

Seven features per channel, channel-major (ch0's seven, then ch1's, ...), named "<ch>_<feat>":
mean, std, min, max, mad, crossings, energy. For one channel's window x_0 .. x_{N-1} of int16
counts, 1 <= N <= MAX_WINDOW = 512 (`//` and `>>` floor, as in Python):

    S      = sum x_i                                  |S| <= 512 * 2**15 = 2**24
    mean   = S // N                                   in [-32768, 32767]
    min, max                                          in [-32768, 32767]
    M      = max(max - mean, mean - min)              in [0, 65535], = max |x_i - mean|
    s      = smallest s >= 0 with (M >> s) < 2**10    in [0, 6] since M < 2**16
    r_i    = (x_i - mean) >> s                        in [-1024, 1023]: -1024 * 2**s < -M
                                                      <= x_i - mean <= M < 1024 * 2**s
    V      = sum r_i**2                               <= 512 * 2**20 = 2**29
    std    = isqrt(V // N) << s                       V // N <= 2**20, std in [0, 65536]
    D      = sum_{i>=1} |x_i - x_{i-1}|               <= 511 * 65535 < 2**25
    mad    = D // (N - 1), 0 when N = 1               in [0, 65535]
    crossings = #{i in 1..N-1 : (x_i >= mean) != (x_{i-1} >= mean)}      in [0, 511]
    A      = max(max, -min)                           in [0, 32768], = max |x_i|
    t      = smallest t >= 0 with (A >> t) < 2**10    in [0, 6]
    u_i    = x_i >> t                                 in [-1024, 1023]; [-512, 511] if t = 6
    E      = sum u_i**2                               <= 2**29
    energy = (E // N) >> (14 - 2 t)                   in [0, 65536]

so every intermediate lies in [-2**30, 2**30) for any int16 input (M, A, D and the partial
sums are non-negative or bounded by the totals above; r_i**2, u_i**2 <= 2**20). The adaptive
shifts s and t keep small signals exact (s = 0 while max |x - mean| < 1024 counts) and large
ones to 10 significant bits. std and mean are in counts; mad is the mean absolute difference of
consecutive samples in counts; energy is the mean square in units of 2**14 counts**2 (1 g at
4096 counts per g gives 1024), computed from samples rounded down to 10 significant bits.

isqrt(v) is the floor square root, by the bitwise digit-by-digit method (all values < 2**22):

    r = 0; b = 2**20; while b > v: b >>= 2
    while b: if v >= r + b: v -= r + b; r = (r >> 1) + b  else: r >>= 1;  b >>= 2

The host computes it with float sqrt and an exact integer correction; the results agree.
"""

from dataclasses import dataclass

import numpy as np

from microprop.device.features import FEATURES, MAX_WINDOW, N_FEATURES

from .errors import UserError
from .fixedpoint import check_small

SIG_BITS = 10  # significant bits kept before squaring
ENERGY_SHIFT = 14  # energy unit: 2**14 counts**2

_LO = (-32768, 0, -32768, -32768, 0, 0, 0)
_HI = (32767, 65536, 32767, 32767, 65535, MAX_WINDOW - 1, 65536)
_CHUNK = 1 << 22  # int64 elements per vectorised block (32 MB)


def feature_names(channels):
    """Channel names -> feature names, channel-major: ['ax_mean', 'ax_std', ...]."""
    return [ch + "_" + f for ch in channels for f in FEATURES]


def feature_bounds(n_channels):
    """(lo, hi) int64 arrays (7 C,): a range each feature stays in for ANY int16 window.

    Sound, not necessarily tight (std stays below 65536 in practice).
    """
    lo = np.tile(np.array(_LO, dtype=np.int64), n_channels)
    hi = np.tile(np.array(_HI, dtype=np.int64), n_channels)
    return lo, hi


def isqrt(v):
    """int64 array >= 0 -> floor(sqrt(v)), exact (float estimate, then integer correction)."""
    v = np.asarray(v, dtype=np.int64)
    r = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    r -= r * r > v
    r += (r + 1) * (r + 1) <= v
    return r


def _sig_shift(m):
    """Smallest s >= 0 with (m >> s) < 2**10, for 0 <= m < 2**16 (so s <= 6)."""
    s = np.zeros(m.shape, dtype=np.int64)
    for k in range(7):
        s += (m >> k) >= (1 << SIG_BITS)
    return s


def _check_window(length):
    if not 1 <= length <= MAX_WINDOW:
        raise ValueError(
            "features: window length must be in [1, %d], found %d" % (MAX_WINDOW, length)
        )


def features_batch(x):
    """int16 windows (W, N, C) -> int64 features (W, 7 C), exact, bound-checked."""
    x = np.asarray(x, dtype=np.int64)
    if x.ndim != 3:
        raise ValueError("features: expected windows of shape (W, N, C), found %s" % (x.shape,))
    w, n, c = x.shape
    _check_window(n)
    if x.size and (x.min() < -32768 or x.max() > 32767):
        raise ValueError("features: expected int16 counts, found values outside [-32768, 32767]")
    out = np.empty((w, c, N_FEATURES), dtype=np.int64)
    if w == 0:
        return out.reshape(0, c * N_FEATURES)
    total = check_small(x.sum(axis=1), "features S")
    mean = total // n
    lo = x.min(axis=1)
    hi = x.max(axis=1)

    m = np.maximum(hi - mean, mean - lo)
    s = _sig_shift(m)
    r = (x - mean[:, None, :]) >> s[:, None, :]
    v = check_small((r * r).sum(axis=1), "features V")
    std = isqrt(v // n) << s

    if n > 1:
        d = check_small(np.abs(np.diff(x, axis=1)).sum(axis=1), "features D")
        mad = d // (n - 1)
        above = x >= mean[:, None, :]
        crossings = (above[:, 1:] != above[:, :-1]).sum(axis=1)
    else:
        mad = np.zeros_like(mean)
        crossings = np.zeros_like(mean)

    a = np.maximum(hi, -lo)
    t = _sig_shift(a)
    u = x >> t[:, None, :]
    e = check_small((u * u).sum(axis=1), "features E")
    energy = (e // n) >> (ENERGY_SHIFT - 2 * t)

    for k, f in enumerate((mean, std, lo, hi, mad, crossings, energy)):
        out[:, :, k] = f
    return out.reshape(w, c * N_FEATURES)


def window_features(x):
    """One int16 window (N, C) -> int64 features (7 C,), channel-major."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError("features: expected a window of shape (N, C), found %s" % (x.shape,))
    return features_batch(x[None])[0]


@dataclass
class Windows:
    """Feature windows cut from a SensorLog."""

    X: np.ndarray  # int64 (n_windows, 7 C) raw integer features
    y: np.ndarray  # str (n_windows,) labels
    subjects: np.ndarray  # str (n_windows,)
    recordings: np.ndarray  # str (n_windows,)
    starts: np.ndarray  # int64 (n_windows,) index of each window's first sample in the log
    names: list  # feature names
    length: int
    hop: int

    def __len__(self):
        return len(self.X)


def _runs(*keys, breaks=None):
    """Run id per sample: increments wherever any of the key arrays changes value, and at each
    index of `breaks` (a SensorLog's splits)."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    for k in keys:
        k = np.asarray(k)
        change[1:] |= k[1:] != k[:-1]
    if breaks is not None and len(breaks):
        change[np.asarray(breaks, dtype=np.int64)] = True
    return np.cumsum(change)


def segments(log):
    """Piece id per sample: a new piece at each change of subject or recording and at each of
    the log's breaks (gaps in t_ms, left-out rows). No window spans two pieces."""
    return _runs(log.subjects, log.recordings, breaks=getattr(log, "breaks", None))


def label_runs(log, seg=None):
    """Run id per sample: a new run at each new piece (`segments`) and each change of label."""
    return _runs(segments(log) if seg is None else seg, log.labels)


def _longest(run):
    """Length of the longest run of equal ids in the sorted-by-position id array `run`."""
    return int(np.bincount(run - run[0]).max())


def window_starts(log, length, hop, what=None):
    """Start indices of the windows `make_windows` keeps (vectorised).

    `what` names the window in errors (default "window of <length> samples").
    """
    _check_window(length)
    if hop < 1:
        raise ValueError("features: hop must be >= 1, found %d" % hop)
    n = len(log.counts)
    if n == 0:
        raise UserError("features: empty sensor log", path=log.path)
    what = what or "window of %d samples" % length
    seg = segments(log)  # contiguous pieces of one recording
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    sizes = np.diff(np.r_[first, n])
    if sizes.max() < length:
        raise UserError(
            "features: %s is longer than every recording (longest %d)%s"
            % (what, sizes.max(), _split_note(log)),
            path=log.path,
        )
    per_seg = np.maximum((sizes - length) // hop + 1, 0)
    k = np.arange(per_seg.sum()) - np.repeat(np.cumsum(per_seg) - per_seg, per_seg)
    starts = np.repeat(first, per_seg) + hop * k
    label_run = label_runs(log, seg)
    starts = starts[label_run[starts] == label_run[starts + length - 1]]
    if len(starts) == 0:
        longest = _longest(label_run)
        raise UserError(
            "features: no %s has one label throughout: the longest stretch of one label in one "
            "recording is %d sample%s%s"
            % (
                what,
                longest,
                "" if longest == 1 else "s",
                " (is it the label column?)" * (longest < 3),
            ),
            path=log.path,
        )
    return starts


def _split_note(log):
    splits = getattr(log, "splits", None) or {}
    n = splits.get("gap_splits", 0) + splits.get("ignore_splits", 0)
    return "; %d splits at gaps in t_ms and left-out rows" % n if n else ""


def make_windows(log, length, hop, what=None):
    """SensorLog -> Windows of `length` samples every `hop` samples, with their features.

    Windows start at each piece's first sample and lie inside one contiguous piece of one
    recording (of one subject), never across the log's breaks; a window whose label changes
    inside it is dropped. `what` names the window in errors.
    """
    starts = window_starts(log, length, hop, what)
    counts = np.asarray(log.counts, dtype=np.int64)
    c = counts.shape[1]
    X = np.empty((len(starts), c * N_FEATURES), dtype=np.int64)
    step = max(1, _CHUNK // (length * c))
    offsets = np.arange(length)
    for i in range(0, len(starts), step):
        idx = starts[i : i + step, None] + offsets
        X[i : i + step] = features_batch(counts[idx])
    return Windows(
        X=X,
        y=np.asarray(log.labels)[starts],
        subjects=np.asarray(log.subjects)[starts],
        recordings=np.asarray(log.recordings)[starts],
        starts=starts.astype(np.int64),
        names=feature_names(log.channels),
        length=int(length),
        hop=int(hop),
    )


def subject_split(subjects, test_subjects):
    """Boolean masks (train, test): test holds the samples of `test_subjects` (compared as str)."""
    subjects = np.asarray(subjects).astype(str)
    test_subjects = [str(s) for s in test_subjects]
    known = set(subjects.tolist())
    unknown = [s for s in test_subjects if s not in known]
    if unknown:
        raise UserError(
            "features: unknown test subject %r, expected one of %s" % (unknown[0], sorted(known))
        )
    test = np.isin(subjects, test_subjects)
    if not test.any() or test.all():
        raise UserError(
            "features: subject split leaves the %s set empty"
            % ("test" if not test.any() else "train")
        )
    return ~test, test
