"""microprop.api, the Python interface: a notebook-style script trains, evaluates, exports and
deploys to the virtual board, whose predictions are the host's, bit for bit; the API's errors
are the command's UserError.

Runs on: host (pytest), with the `micropython` Unix port behind the virtual board.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from microprop import api
from microprop.host import boardeval, reference
from microprop.host.errors import UserError
from microprop.host.modelfile import read_model
from microprop.host.sensorlog import read_sensor_log

NOTEBOOK = """
import json
from microprop import api

data = api.load_data("synth", seed=1)
model = api.train(data, hidden=[16], epochs=60, seed=1)
model.save("model.npz")
float_report = api.evaluate(model, data)
exported = api.export(model, data, "model.mpm")
int_report = api.evaluate("model.mpm", data)
test = model.meta["data"]["test_subjects"]
replay = api.replay_of(data.log, test[:1], seconds=20)
with api.open_board() as board:
    board.deploy("model.mpm", replay=replay, realtime=False)
    preds = board.predictions(seconds=3)
api.load_log("synth", seed=1)  # the same log again: deterministic
from microprop.host.sensorlog import write_sensor_log
write_sensor_log("replay.csv", replay)
json.dump({
    "float": float_report["accuracy"], "int8": int_report["accuracy"],
    "which": int_report["which"], "n": int_report["n"], "test": test,
    "export_int8": exported.int_report["accuracy"], "rehearsal": exported.rehearsal,
    "preds": [[p.t_ms, p.class_name, p.scores] for p in preds],
}, open("out.json", "w"))
"""


@pytest.fixture(scope="module")
def notebook(tmp_path_factory, micropython):
    """The notebook script run in a fresh interpreter in a folder of its own -> (folder, out)."""
    folder = tmp_path_factory.mktemp("notebook")
    proc = subprocess.run(
        [sys.executable, "-c", NOTEBOOK], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(folder / "out.json") as f:
        return folder, json.load(f)


def test_notebook_trains_evaluates_and_exports(notebook):
    folder, out = notebook
    assert (folder / "model.npz").is_file() and (folder / "model.mpm").is_file()
    assert out["rehearsal"] == "model.rh" and (folder / "model.rh").is_file()
    assert out["which"].startswith("the model's test subjects") and out["n"] > 0
    assert out["int8"] == out["export_int8"]
    assert out["float"] > 0.8 and out["int8"] > 0.8, out


def test_notebook_board_predictions_are_the_hosts_bit_for_bit(notebook):
    folder, out = notebook
    qm = read_model(folder / "model.mpm")
    replay = read_sensor_log(folder / "replay.csv")
    preds = out["preds"]
    assert len(preds) >= 10, "too few predictions from the virtual board: %d" % len(preds)
    rate = float(qm.sensor["rate_hz"])
    # without realtime, a prediction's t is its window's last sample: floor(i * 1000 / rate)
    loops = int(preds[-1][0] * rate / 1000) // len(replay) + 2
    stream = np.tile(replay.counts, (loops, 1))
    expected = {
        int(end * 1000 // rate): (int(cls), [int(v) for v in scores])
        for end, cls, scores in boardeval.predict_stream(qm, stream)
    }
    for t, name, scores in preds:
        assert t in expected, "no window of the stream ends at t=%d" % t
        cls, want = expected[t]
        assert name == qm.classes[cls], (t, name, qm.classes[cls])
        assert [scores[c] for c in qm.classes] == want, (t, scores, want)
    # and predict_stream is host.reference's integer pipeline on the window features
    end, cls, scores = boardeval.predict_stream(qm, replay.counts)[0]
    window = int(qm.features["window"])
    raw = boardeval.stream_features(replay.counts[end - window + 1 : end + 1], window, window)[1]
    ref_cls, ref_scores = reference.predict(qm, raw)
    assert int(ref_cls[0]) == cls and ref_scores[0].tolist() == scores.tolist()


def test_api_predict_is_the_boards_computation_on_the_host(notebook):
    folder, _ = notebook
    qm = read_model(folder / "model.mpm")
    replay = read_sensor_log(folder / "replay.csv")
    got = api.predict(str(folder / "model.mpm"), replay.counts)
    want = boardeval.predict_stream(qm, replay.counts)
    assert [(e, c, s.tolist()) for e, c, s in got] == [(e, c, s.tolist()) for e, c, s in want]


def test_loaded_models_evaluate_as_trained(notebook):
    folder, out = notebook
    data = api.load_data("synth", seed=1)
    model = api.load_model(str(folder / "model.npz"))
    assert isinstance(model, api.Model) and model.history is None
    assert api.evaluate(model, data)["accuracy"] == out["float"]
    assert api.evaluate(str(folder / "model.mpm"), data)["accuracy"] == out["int8"]


def test_errors_are_the_commands(tmp_path, monkeypatch):
    monkeypatch.setattr("microprop.host.datasets.shared_folder", lambda: None)
    monkeypatch.delenv("MICROPROP_DATASETS", raising=False)
    with pytest.raises(UserError, match="give --datasets DIR or set MICROPROP_DATASETS"):
        api.load_data("shoulder")
    (tmp_path / "log.csv").write_text("ax,label\n1,a\n")
    with pytest.raises(UserError, match="no sample rate"):
        api.load_data(str(tmp_path / "log.csv"))
    data = api.load_data("synth")
    with pytest.raises(UserError, match="replay: no rows of subject 'nobody'"):
        api.replay_of(data.log, ["nobody"])
    model = api.train(data, hidden=[4], epochs=1)
    with pytest.raises(UserError, match="export: qat 'yes', expected 'auto', True or False"):
        api.export(model, data, tmp_path / "m.mpm", qat="yes")
    with pytest.raises(UserError, match="subjects nobody have no windows in the data"):
        api.evaluate(model, data, subjects=["nobody"])


def test_adapt_runs_the_boards_training_step_on_the_test_subjects(notebook):
    folder, out = notebook
    data = api.load_data("synth", seed=1)
    result = api.adapt(
        str(folder / "model.npz"), data, modes=["last"], epochs=1, lr_shift=6, lr=0.01
    )
    assert sorted({row["subject"] for row in result["rows"]}) == sorted(out["test"])
    assert "last" in result["mean"]
