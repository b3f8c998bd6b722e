"""The NumPy integer reference refuses values outside the 31-bit small-int range, naming the
layer and the stage, and accepts everything up to the bound itself.

Runs on: host (pytest).
"""

import numpy as np
import pytest

from microprop.host import bounds, reference
from microprop.host.fixedpoint import BoundError
from microprop.host.inputstage import InputStage
from microprop.host.qmodel import QLayer, QModel

LIMIT = 2**30


def identity_stage(n):
    """Input stage q = clamp(r, -128, 127): raw features are the int8 inputs."""
    one = np.ones(n, dtype=np.int64)
    return InputStage(0 * one, one, 0 * one, f_in=0, zp_in=0)


def linear(w, b, zp_x=0, zp_z=0):
    w = np.asarray(w, dtype=np.int64)
    return QLayer(w, np.asarray(b, dtype=np.int64), "linear", 0, zp_x, 0, 0, zp_z)


def two_layer_model(w1, b1, zp_x=0, zp_z=0):
    """Layer 0 copies one input to len(w1[0]) units (weight 1); layer 1 is the one under test."""
    n = np.asarray(w1).shape[1]
    layer0 = linear(np.ones((n, 1)), np.zeros(n))
    return QModel(identity_stage(1), [layer0, linear(w1, b1, zp_x, zp_z)])


def run(qm, raw):
    return reference.forward_layers(qm, reference.input_stage(qm, [[raw]]))[-1][0]


def test_partial_sums_over_the_bound_raise_even_when_the_sum_cancels():
    # k weights 127 then k weights -127 on inputs 127 - (-128) = 255: summed in order, the
    # partial sum after the first k products is k * 127 * 255 > 2**30, though the total is 0.
    # The export-time proof refuses this model; the reference must refuse it too.
    k = 33200
    w = np.concatenate([np.full(k, 127), np.full(k, -127)])[None, :]
    qm = two_layer_model(w, [0], zp_x=-128)
    with pytest.raises(ValueError, match="layer 1 accumulator may reach 2150364000"):
        bounds.check_bounds(qm, -128, 127)
    with pytest.raises(BoundError, match=r"layer 1 partial sums reaches 2150364000, outside"):
        run(qm, 127)
    # A quarter as wide: sum |w| * |x - zp_x| = 2 * 8300 * 127 * 255 < 2**30, and no raise.
    qm = two_layer_model(w[:, k - k // 4 : k + k // 4], [0], zp_x=-128)
    assert run(qm, 127).tolist() == [0]


def test_accumulator_over_the_bound_raises():
    # One product 3 * 100 = 300 is in bound, the bias takes the sum past it.
    qm = two_layer_model([[3]], [LIMIT - 300])
    with pytest.raises(BoundError, match=r"layer 1 accumulator reaches 1073741824, outside"):
        run(qm, 100)
    qm = two_layer_model([[-3]], [-LIMIT + 299])
    with pytest.raises(BoundError, match=r"layer 1 accumulator reaches -1073741825, outside"):
        run(qm, 100)


def test_accumulator_at_the_bound_is_accepted():
    # acc = 2**30 - 1 and -2**30 exactly: the largest and smallest small ints.
    assert run(two_layer_model([[3]], [LIMIT - 301]), 100).tolist() == [127]
    assert run(two_layer_model([[-3]], [-LIMIT + 300]), 100).tolist() == [-128]


def test_zero_point_plus_rounded_accumulator_over_the_bound_raises():
    # acc = 2**30 - 1 at shift 0: zp_z + acc leaves the range by one.
    qm = two_layer_model([[3]], [LIMIT - 301], zp_z=1)
    with pytest.raises(BoundError, match=r"layer 1 zp_z \+ R\(acc, s\) reaches 1073741824"):
        run(qm, 100)


def test_input_stage_over_the_bound_raises():
    stage = InputStage(np.array([-(2**20)]), np.array([2047]), np.array([24]), 0, 0)
    qm = QModel(stage, [linear([[1]], [0])])
    with pytest.raises(BoundError, match=r"input stage \(r - offset\) \* mult reaches"):
        reference.predict(qm, [[32767]])
    with pytest.raises(BoundError, match="raw features reaches 1073741824"):
        reference.predict(qm, [[LIMIT]])


def test_models_within_the_proof_do_not_raise():
    rng = np.random.default_rng(7)
    for _ in range(30):
        qm = reference.random_qmodel(rng)
        cls, scores = reference.predict(qm, reference.random_raw(rng, qm, 64))
        assert cls.shape == (64,)
        assert scores.min() >= 0 and scores.max() <= 255
