"""The host pipeline: the input stage (feature standardisation) sees the training subjects only;
validation holds out whole subjects; what train and eval score.

Runs on: host (pytest).
"""

import dataclasses

import numpy as np
import pytest

from microprop.host import features, pipeline
from microprop.host.errors import UserError
from microprop.host.inputstage import InputStage, fit_input_stage

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


# --- validation held out by subject, and what train and eval score ---


def test_validation_holds_out_whole_training_subjects(synth_ds):
    ds = synth_ds
    train = ~np.isin(ds.subjects, ["s7", "s8"])
    fit, val, held, kind = pipeline.validation_split(ds, train, seed=0)
    assert kind == "subjects" and len(held) == 1  # 20 % of 6 training subjects
    assert set(ds.subjects[val].tolist()) == set(held) <= {"s1", "s2", "s3", "s4", "s5", "s6"}
    assert not set(ds.subjects[fit].tolist()) & set(held)  # no window of theirs trains
    assert ((fit | val) == train).all() and not (fit & val).any()
    # another seed, another draw (GroupShuffleSplit's random groups)
    assert {tuple(pipeline.validation_split(ds, train, seed=s)[2]) for s in range(6)} != {
        tuple(held)
    }


def test_validation_with_one_training_subject_holds_out_recordings(synth_ds):
    ds = synth_ds
    train = ds.subjects == "s1"
    fit, val, held, kind = pipeline.validation_split(ds, train, seed=0)
    recordings = np.asarray(ds.log.recordings)[ds.starts]
    assert kind == "recordings" and len(held) == 1  # 20 % of its 4 recordings
    assert held[0] in {"s1-idle", "s1-walking", "s1-running", "s1-shaking"}
    assert set(recordings[val].tolist()) == set(held)
    assert held[0] not in set(recordings[fit].tolist())
    one = train & (recordings == "s1-idle")
    fit, val, held, kind = pipeline.validation_split(ds, one, seed=0)
    assert held == [] and not val.any() and (fit == one).all()


def test_train_counts_and_labels_what_it_trained_validated_and_tested(synth_ds):
    ds = synth_ds
    options = dict(TRAIN, patience=1)
    _, meta, report, history = pipeline.train_model(ds, test_subjects=["s7", "s8"], **options)
    w = history["windows"]
    test = np.isin(ds.subjects, ["s7", "s8"])
    assert w["test"] == test.sum() == report["n"]
    assert w["train"] + w["validation"] == (~test).sum() and w["validation"] > 0
    held = history["held_out"]["ids"]
    assert history["validation"] == "held-out subjects %s (%d windows)" % (
        ",".join(held),
        w["validation"],
    )
    assert meta["history"]["validation"] == history["validation"]
    # with patience >= epochs early stopping can stop nothing: no validation set, as
    # scikit-learn's validation_fraction is only for early_stopping
    _, _, _, history = pipeline.train_model(ds, test_subjects=["s7", "s8"], **TRAIN)
    assert history["windows"]["train"] == (~test).sum() and history["windows"]["validation"] == 0
    assert history["validation"] == "none (early stopping is off: patience >= epochs)"


def test_numeric_classes_sort_as_numbers(synth_ds):
    ds = synth_ds
    names = {"idle": "10", "walking": "2", "running": "-1", "shaking": "1"}
    labels = np.array([names[v] for v in ds.labels.tolist()])
    numeric = pipeline.Dataset(ds.log, ds.window, ds.hop, ds.X, labels, ds.subjects, ds.starts, "")
    _, meta, _, _ = pipeline.train_model(numeric, test_subjects=["s8"], **TRAIN)
    assert meta["classes"] == ["-1", "1", "2", "10"]


def test_a_diverging_training_stops_with_one_line(synth_ds):
    with pytest.raises(UserError, match=r"^train: training diverged in epoch 1 \(.*--lr\)$"):
        pipeline.train_model(synth_ds, test_subjects=["s8"], lr=1e30, **TRAIN)
    with pytest.raises(UserError, match="diverged"):
        pipeline.train_model(synth_ds, test_subjects=["s8"], lr=1e30, optimizer="sgd", **TRAIN)


def test_export_refuses_weights_no_int8_scale_holds(synth_ds):
    mlp, meta, _, _ = pipeline.train_model(synth_ds, test_subjects=["s8"], **TRAIN)
    w = mlp.W[1]
    mlp.W[1] = w * (pipeline.WEIGHT_LIMIT * 1.01 / np.abs(w).max())
    with pytest.raises(UserError, match=r"layer 1 .* a weight of 8.41e\+06, beyond the 8.32e\+06"):
        pipeline.quantize_model(mlp, meta, synth_ds)
    mlp.W[1] = w * (pipeline.WEIGHT_LIMIT / np.abs(w).max())  # as large as can be: quantizes
    pipeline.quantize_model(mlp, meta, synth_ds)
    mlp.W[0][0, 0] = np.nan
    with pytest.raises(UserError, match="layer 0 of the float model has NaN or infinite"):
        pipeline.quantize_model(mlp, meta, synth_ds)


def test_a_log_without_a_rate_is_refused(synth_ds):
    log = dataclasses.replace(synth_ds.log, rate_hz=None, path="log.csv")
    with pytest.raises(UserError, match="^log.csv: no sample rate: .* give --rate HZ"):
        pipeline.make_dataset(log, window=100)


def test_eval_scores_the_models_test_subjects_by_default(synth_ds):
    meta = {"data": {"test_subjects": ["s8", "s9"]}}
    assert pipeline.eval_subjects(meta, synth_ds) == (["s8"], "the model's test subjects s8")
    subjects, which = pipeline.eval_subjects({"data": {"test_subjects": ["x"]}}, synth_ds)
    assert len(subjects) == 8 and which.startswith("every subject (s1,s2,")
    assert pipeline.eval_subjects(meta, synth_ds, ["s2"]) == (["s2"], "subjects s2")
    with pytest.raises(UserError, match="subjects s9 have no windows in the data"):
        pipeline.eval_subjects(meta, synth_ds, ["s9"])


def test_basic_motions_tests_on_the_archives_test_split(datasets):
    log = pipeline.load_log("basic_motions")
    subjects = np.asarray(log.subjects)
    assert pipeline.pick_test_subjects(subjects, meta=log.meta) == ["test"]
    assert pipeline.pick_test_subjects(subjects) == ["train"]  # what the last sorted id gives
    ds = pipeline.make_dataset(log, source="basic_motions")
    _, meta, report, _ = pipeline.train_model(ds, **TRAIN)
    assert meta["data"]["test_subjects"] == ["test"]
    assert report["n"] == (ds.subjects == "test").sum() == 360
