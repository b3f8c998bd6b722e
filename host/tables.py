"""Activation tables of the model file: sigmoid, tanh (int8 -> int8) and the softmax exp table.

Runs on: host.

The sigmoid and tanh tables are TensorFlow Lite Micro's own int8 LOGISTIC and TANH kernels
tabulated over all 256 inputs: this module re-implements their integer arithmetic (gemmlowp
fixed point: `reference_integer_ops::Logistic` / `Tanh` with the input multiplier, left shift
and input radius of `CalculateArithmeticOpDataLogistic` / `...Tanh`), bit for bit; the tests
check every entry against the tflite-micro interpreter. The board then just looks up
`table[z + 128]`, so sigmoid and tanh are exact with TFLite Micro by construction.

The int8 SOFTMAX kernel is re-implemented too (`tflm_softmax_int8`), as the oracle that the
board's table softmax (host/qmodel.py) is held to within 1 LSB of. The board's exp table
`softmax_exp[d]` is TFLite Micro's own exp of the logit difference -d (gemmlowp
`exp_on_negative_values` on the Q5.26 rescaled difference, zero below `diff_min`), rounded from
Q0.31 to Q16: so both compute with the same exponentials and differ only in the final division.

int32 arithmetic is emulated on Python ints; every gemmlowp primitive keeps its C semantics
(truncating division, arithmetic shifts, saturation where gemmlowp saturates).
"""

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
# Pre-activation fractional bits for which the tables are defined (and verified against TFLM).
TABLE_F_MIN = 0
TABLE_F_MAX = 24
SOFTMAX_F_MAX = 25  # TFLM's softmax prepare needs input_scale * 2**26 > 1
EXP_ONE_Q16 = 1 << 16


# -- gemmlowp primitives on int32 raw values ---------------------------------------------------


def _wrap32(x):
    """int -> int32, two's complement wrap (what the C++ compiler does on overflow)."""
    return ((x + 2**31) & 0xFFFFFFFF) - 2**31


def _trunc_div(n, d):
    """n / d rounded toward zero, as C++ integer division."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def srdhm(a, b):
    """int32 x int32 -> int32, (a * b) / 2**31 rounded to nearest, saturated (VQRDMULH)."""
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return _trunc_div(ab + nudge, 1 << 31)


def rdbpot(x, exponent):
    """int32 -> int32, x / 2**exponent rounded to nearest, ties away from zero (gemmlowp)."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def srmbpot(x, exponent):
    """int32 -> int32, x * 2**exponent: saturating left shift or rounding right shift."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rdbpot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


def rescale(x, src_bits, dst_bits):
    """Fixed point with src_bits integer bits -> dst_bits integer bits (gemmlowp::Rescale)."""
    return srmbpot(x, src_bits - dst_bits)


def rounding_half_sum(a, b):
    """(a + b) / 2 rounded to nearest, ties away from zero (VRHADD)."""
    s = a + b
    return _trunc_div(s + (1 if s >= 0 else -1), 2)


def multiply_by_quantized_multiplier(x, multiplier, shift):
    """int32 -> int32, x * multiplier * 2**(shift - 31), TFLite's double-rounding version."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rdbpot(srdhm(_wrap32(x * (1 << left)), multiplier), right)


def quantize_multiplier(m):
    """float multiplier -> (int32 multiplier, shift), as TFLite's QuantizeMultiplier."""
    if m == 0.0:
        return 0, 0
    q, shift = math.frexp(m)
    q_fixed = math.floor(abs(q) * 2**31 + 0.5) * (1 if q > 0 else -1)  # TfLiteRound
    if q_fixed == 1 << 31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def calculate_input_radius(integer_bits, left_shift, total_bits=31):
    """Largest |input| whose rescaled value stays in range (TFLite's CalculateInputRadius)."""
    v = ((1 << integer_bits) - 1) * 2.0 ** (total_bits - integer_bits) / 2.0**left_shift
    return math.floor(v)


# -- gemmlowp transcendental functions ----------------------------------------------------------


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a):
    """Q0.31 a in [-1/4, 0) -> Q0.31 exp(a) (Taylor expansion around -1/8)."""
    constant_term = 1895147668  # exp(-1/8)
    constant_1_over_3 = 715827883
    x = a + (1 << 28)
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rdbpot(x4, 2)
    poly = rdbpot(srdhm(x4_over_4 + x3, constant_1_over_3) + x2, 1)
    return _wrap32(constant_term + srdhm(constant_term, x + poly))


_EXP_BARREL = (
    (-2, 1672461947),
    (-1, 1302514674),
    (0, 790015084),
    (1, 290630308),
    (2, 39332535),
    (3, 720401),
    (4, 242),
)


def exp_on_negative_values(a, integer_bits):
    """Fixed point a <= 0 with `integer_bits` -> Q0.31 exp(a) (gemmlowp)."""
    frac = 31 - integer_bits
    one_quarter = 1 << (frac - 2)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - 1)) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        rescale(a_mod_quarter_minus_one_quarter, integer_bits, 0)
    )
    remainder = a_mod_quarter_minus_one_quarter - a
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent and remainder & (1 << (frac + exponent)):
            result = srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    if a == 0:
        result = INT32_MAX
    return result


def _newton_reciprocal(half_denominator):
    """Q2.29 approximation of 1 / half_denominator (Newton-Raphson, 3 steps, gemmlowp)."""
    x = 1515870810 + srdhm(half_denominator, -1010580540)  # 48/17 - 32/17 * d
    for _ in range(3):
        one_minus_dx = (1 << 29) - srdhm(half_denominator, x)
        x = x + rescale(srdhm(x, one_minus_dx), 4, 2)
    return x


def one_over_one_plus_x_for_x_in_0_1(a):
    """Q0.31 a in (0, 1) -> Q0.31 1 / (1 + a) (gemmlowp)."""
    x = _newton_reciprocal(rounding_half_sum(a, INT32_MAX))
    return rescale(x, 1, 0)  # ExactMulByPot<-1>, then Rescale<0>


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a):
    x = _newton_reciprocal(rounding_half_sum(a, INT32_MAX))
    return rescale(x - (1 << 29), 2, 0)


def gemmlowp_logistic(a, integer_bits):
    """Fixed point a with `integer_bits` -> Q0.31 logistic(a) (gemmlowp::logistic)."""
    if a == 0:
        return 1 << 30
    abs_a = a if a > 0 else -a
    positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-abs_a, integer_bits))
    return positive if a > 0 else INT32_MAX - positive


def gemmlowp_tanh(a, integer_bits):
    """Fixed point a with `integer_bits` -> Q0.31 tanh(a) (gemmlowp::tanh)."""
    if a == 0:
        return 0
    n = a if a < 0 else -a
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))
    return -t if a < 0 else t


# -- TFLite Micro int8 kernels ------------------------------------------------------------------


def _check_f(f, lo, hi, what):
    if not (isinstance(f, (int, np.integer)) and lo <= f <= hi):
        raise ValueError("tables: %s needs f_z in [%d, %d], found %r" % (what, lo, hi, f))


def _activation_params(f):
    """(multiplier, left_shift, radius) of TFLM's int8 LOGISTIC/TANH prepare for scale 2**-f."""
    multiplier, left_shift = quantize_multiplier(2.0**-f * 2.0 ** (31 - 4))
    return multiplier, left_shift, calculate_input_radius(4, left_shift)


def tflm_logistic_int8(q, f, zp):
    """int8 q at scale 2**-f, zero point zp -> int8 logistic at 1/256, zero point -128 (TFLM)."""
    return _tflm_int8(q, f, zp, gemmlowp_logistic, 8, -128)


def tflm_tanh_int8(q, f, zp):
    """int8 q at scale 2**-f, zero point zp -> int8 tanh at 1/128, zero point 0 (TFLM)."""
    return _tflm_int8(q, f, zp, gemmlowp_tanh, 7, 0)


def _tflm_int8(q, f, zp, gemmlowp_fn, out_f, out_zp):
    """TFLM's int8 LOGISTIC / TANH kernel: saturate outside the input radius, else the
    gemmlowp function on Q4.27 input, its Q0.31 result rounded to scale 2**-out_f plus out_zp."""
    multiplier, left_shift, radius = _activation_params(f)
    d = int(q) - int(zp)
    if d <= -radius:
        return -128
    if d >= radius:
        return 127
    x = multiply_by_quantized_multiplier(d, multiplier, left_shift)
    y = rdbpot(gemmlowp_fn(x, 4), 31 - out_f) + out_zp
    return min(max(y, -128), 127)


def _table(fn, f, zp, what):
    _check_f(f, TABLE_F_MIN, TABLE_F_MAX, what)
    if not -128 <= zp <= 127:
        raise ValueError("tables: %s needs zp_z in [-128, 127], found %r" % (what, zp))
    return np.array([fn(q, f, zp) for q in range(-128, 128)], dtype=np.int64)


def sigmoid_table(f_z, zp_z):
    """int8 pre-activation (scale 2**-f_z, zp_z) -> int8 sigmoid (1/256, zp -128), 256 entries.

    Entry i is TFLite Micro's int8 LOGISTIC of q = i - 128, i.e. the board uses table[z + 128].
    """
    return _table(tflm_logistic_int8, f_z, zp_z, "sigmoid table")


def tanh_table(f_z, zp_z):
    """int8 pre-activation (scale 2**-f_z, zp_z) -> int8 tanh (1/128, zp 0), 256 entries.

    Entry i is TFLite Micro's int8 TANH of q = i - 128, i.e. the board uses table[z + 128].
    """
    return _table(tflm_tanh_int8, f_z, zp_z, "tanh table")


def _softmax_params(f):
    """(multiplier, left_shift, diff_min) of TFLM's int8 SOFTMAX prepare, beta 1, scale 2**-f."""
    real = min(2.0**-f * 2.0 ** (31 - 5), 2.0**31 - 1.0)
    multiplier, left_shift = quantize_multiplier(real)
    return multiplier, left_shift, -calculate_input_radius(5, left_shift)


def tflm_exp_q31(d, f):
    """Logit difference d <= 0 (scale 2**-f) -> Q0.31 exp as TFLM's int8 SOFTMAX computes it.

    Differences below the kernel's diff_min count as 0, as they do in the kernel.
    """
    multiplier, left_shift, diff_min = _softmax_params(f)
    if d < diff_min:
        return 0
    x = srdhm(_wrap32(d * (1 << left_shift)), multiplier)
    return exp_on_negative_values(x, 5)


def tflm_softmax_int8(z, f):
    """int8 logits (scale 2**-f) -> int8 probabilities (1/256, zp -128), TFLM's SOFTMAX, beta 1."""
    _check_f(f, -(2**20), SOFTMAX_F_MAX, "softmax")
    z = [int(v) for v in z]
    m = max(z)
    exps = [tflm_exp_q31(v - m, f) for v in z]
    total = 0
    for e in exps:
        total = _wrap32(total + rescale(e, 0, 12))
    headroom_plus_one = 32 - total.bit_length() if total > 0 else 32
    num_bits_over_unit = 12 - headroom_plus_one
    shifted_sum_minus_one = _wrap32(((total << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    diff_min = _softmax_params(f)[2]
    out = []
    for v, e in zip(z, exps, strict=True):
        if v - m < diff_min:
            out.append(-128)
            continue
        y = rdbpot(srdhm(shifted_scale, e), exponent) - 128
        out.append(min(max(y, -128), 127))
    return out


def softmax_exp_table(f_z):
    """Logit scale 2**-f_z -> Q16 table of exp(-d * 2**-f_z) for d in 0..255 (int64, (256,)).

    Each entry is TFLite Micro's own Q0.31 exponential (tflm_exp_q31) rounded to Q16, and
    entry 0 is exactly 2**16; so the board's softmax (host/qmodel.py) divides the same
    exponentials as TFLM does and stays within 1 LSB of its output.
    """
    _check_f(f_z, -(2**20), SOFTMAX_F_MAX, "softmax exp table")
    table = np.array([rdbpot(tflm_exp_q31(-d, f_z), 15) for d in range(256)], dtype=np.int64)
    table[0] = EXP_ONE_Q16
    return table


def softmax_exp_table_float(f_z):
    """The plain table round(2**16 * exp(-d * 2**-f_z)), for comparison with softmax_exp_table."""
    d = np.arange(256, dtype=np.float64)
    return np.floor(2.0**16 * np.exp(-d * 2.0**-f_z) + 0.5).astype(np.int64)


def activation_table(act, f_z, zp_z):
    """The table of a sigmoid or tanh layer, or None for other activations."""
    if act == "sigmoid":
        return sigmoid_table(f_z, zp_z)
    if act == "tanh":
        return tanh_table(f_z, zp_z)
    return None
