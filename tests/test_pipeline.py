"""The host pipeline: the input stage (feature standardisation) sees the training subjects only.

Runs on: host (pytest).
"""

import numpy as np
import pytest

from host import features, pipeline
from host.inputstage import InputStage, fit_input_stage

TRAIN = {"hidden": (4,), "epochs": 2, "patience": 2}


@pytest.fixture(scope="module")
def synth_ds():
    return pipeline.make_dataset(pipeline.load_log("synth", seed=0), source="synth")


def with_features(ds, X):
    return pipeline.Dataset(ds.log, ds.window, ds.hop, X, ds.labels, ds.subjects, ds.starts, "x")


def test_input_stage_is_fitted_on_training_subjects_only(synth_ds):
    ds = synth_ds
    _, meta, _, _ = pipeline.train_model(ds, test_subjects=["s7", "s8"], **TRAIN)
    stage = InputStage.from_dict(meta["input_stage"])
    train = ~np.isin(ds.subjects, ["s7", "s8"])
    X_train = ds.X[train]
    lo, hi = features.feature_bounds(len(ds.log.channels))

    # offset is the training windows' mean, rounded; mult * 2**-shift is 2**f_in / their std.
    assert np.array_equal(stage.offset, np.clip(np.round(X_train.mean(axis=0)), lo, hi))
    std = X_train.std(axis=0)
    live = std > 0
    assert live.all()
    gain = stage.mult[live] * 2.0 ** -stage.shift[live]
    assert np.allclose(gain, 2.0**stage.f_in / std[live], rtol=2**-10)  # mult >= 2**10

    # ...and differ from the statistics of all windows, so the test above can fail.
    everything = fit_input_stage(ds.X, lo, hi)
    assert not np.array_equal(everything.offset, stage.offset)


def test_test_subjects_features_do_not_change_the_input_stage(synth_ds):
    ds = synth_ds
    _, meta, _, _ = pipeline.train_model(ds, test_subjects=["s7", "s8"], **TRAIN)
    test = np.isin(ds.subjects, ["s7", "s8"])
    X = ds.X.copy()
    X[test] = X[test] // 2 + 1000  # very different test windows, same training windows
    _, meta2, _, _ = pipeline.train_model(
        with_features(ds, X), test_subjects=["s7", "s8"], **TRAIN
    )
    assert meta2["input_stage"] == meta["input_stage"]

    # Changing the training windows the same way does change it.
    X = ds.X.copy()
    X[~test] = X[~test] // 2 + 1000
    _, meta3, _, _ = pipeline.train_model(
        with_features(ds, X), test_subjects=["s7", "s8"], **TRAIN
    )
    assert meta3["input_stage"] != meta["input_stage"]
