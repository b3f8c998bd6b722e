"""Input stage: raw integer window features -> standardised int8 network inputs.

Runs on: host (fitting and the NumPy reference); the board applies the same integers.

Per feature i, with integers offset_i, mult_i in [0, 2**11) and shift_i in [0, 24]:

    q_i = clamp(zp_in + R((r_i - offset_i) * mult_i, shift_i), -128, 127)

where R is `fixedpoint.rounding_rshift` (TFLite rounding). It approximates
(r_i - mean_i) / std_i * 2**f_in + zp_in: the network input is the real value
2**-f_in * (q_i - zp_in), a standardised feature clipped near +/-4 standard deviations
(f_in = 5). The stage is fitted on training data only, and the float trainer trains on exactly
these dequantised integers, so host training and board inference see the same inputs.

Bound: given the range [lo_i, hi_i] a feature can take for any int16 input, `fit` limits
mult_i so that |r_i - offset_i| * mult_i < 2**30 for every r_i in that range.
"""

from dataclasses import dataclass

import numpy as np

from .fixedpoint import SHIFT_MAX, check_small, clamp_int8, rounding_rshift

F_IN = 5
ZP_IN = 0
MULT_BITS = 11


@dataclass
class InputStage:
    offset: np.ndarray  # int64 (n_features,)
    mult: np.ndarray  # int64 (n_features,), in [0, 2**MULT_BITS)
    shift: np.ndarray  # int64 (n_features,), in [0, SHIFT_MAX]
    f_in: int = F_IN
    zp_in: int = ZP_IN

    @property
    def n_features(self):
        return len(self.offset)

    def apply(self, r):
        """int raw features (n, F) -> int8 inputs (n, F), TFLite rounding, saturated."""
        r = np.asarray(r, dtype=np.int64)
        if r.ndim != 2 or r.shape[1] != self.n_features:
            raise ValueError(
                "input stage: expected features of shape (n, %d), found %s"
                % (self.n_features, r.shape)
            )
        d = check_small(r - self.offset, "input stage r - offset")
        prod = check_small(d * self.mult, "input stage (r - offset) * mult")
        return clamp_int8(self.zp_in + rounding_rshift(prod, self.shift))

    def to_float(self, q):
        """int8 inputs -> float64 standardised values 2**-f_in * (q - zp_in)."""
        return (np.asarray(q, dtype=np.float64) - self.zp_in) * 2.0**-self.f_in

    def transform(self, r):
        """Raw integer features -> the float inputs the network trains on (exactly the board's)."""
        return self.to_float(self.apply(r))

    def to_dict(self):
        return {
            "offset": [int(v) for v in self.offset],
            "mult": [int(v) for v in self.mult],
            "shift": [int(v) for v in self.shift],
            "f_in": int(self.f_in),
            "zp_in": int(self.zp_in),
        }

    @classmethod
    def from_dict(cls, d):
        return cls(
            np.array(d["offset"], dtype=np.int64),
            np.array(d["mult"], dtype=np.int64),
            np.array(d["shift"], dtype=np.int64),
            int(d["f_in"]),
            int(d["zp_in"]),
        )


def fit_input_stage(r, lo, hi, f_in=F_IN, zp_in=ZP_IN):
    """Fit offset, mult and shift per feature from training features `r` (n, F).

    `lo`, `hi`: per-feature bounds any input can produce (for the bound proof).
    A constant feature gets mult 0 (it carries no information).
    """
    r = np.asarray(r, dtype=np.int64)
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    if r.ndim != 2 or len(r) == 0:
        raise ValueError("input stage: need a non-empty (n, F) array of training features")
    mean = r.mean(axis=0)
    std = r.std(axis=0)
    offset = np.clip(np.round(mean).astype(np.int64), lo, hi)
    mult = np.zeros(r.shape[1], dtype=np.int64)
    shift = np.zeros(r.shape[1], dtype=np.int64)
    span = np.maximum(np.abs(hi - offset), np.abs(lo - offset)) + 1
    for i in range(r.shape[1]):
        if std[i] <= 0:
            continue
        gain = 2.0**f_in / std[i]  # wanted mult / 2**shift
        # Largest shift keeping mult < 2**MULT_BITS and |r - offset| * mult < 2**30.
        m_cap = min(2**MULT_BITS - 1, (2**30 - 1) // int(span[i]))
        best = None
        for s in range(SHIFT_MAX + 1):
            m = int(np.floor(gain * 2.0**s + 0.5))
            if m > m_cap:
                break
            best = (m, s)
        if best is None:  # gain too large even at shift 0: saturate
            best = (m_cap, 0)
        mult[i], shift[i] = best
    return InputStage(offset, mult, shift, f_in, zp_in)
