"""A layer whose weights learn but that reads only its zero point is refused, never divided by:
by the board's Trainer (under the real `micropython` binary and CPython), by its NumPy twin
host/trainref.py, and by `microprop export`; the board app then predicts without learning.

Runs on: host (pytest), plus the `micropython` binary.

Such a layer sees x - zp_x = 0 for every input, so max|x - zp_x| = 0 and the weight-update
bound of device/train_plan.prove divided by it (ZeroDivisionError). It comes from a relu below
with zero point 127, a sigmoid / tanh table of the zero point only, or an input stage whose
every mult is 0 (device/train_plan.zero_input). "bias" mode trains no weights: it stays allowed.
"""

import numpy as np
import pytest

from microprop.device import train as dtrain
from microprop.device import train_plan
from microprop.device.infer import Model
from microprop.firmware_tools.cli import main
from microprop.host import bounds, modelfile, trainref
from microprop.host.rehearsal import path_for

from .conftest import ROOT, run_micropython
from .helpers import (
    FAST,
    WINDOW,
    assert_one_line_error,
    configure,
    mlp_model,
    records,
    run_app,
    write_log,
)

MODES = dtrain.LEARN_MODES
NOTHING = "input takes one value (%s): nothing to learn from"


def _relu127(q, k=0):
    """Layer k (a relu) gets zero point 127: it outputs 127 = the next layer's zp_x only."""
    q.layers[k].zp_z = 127
    q.layers[k + 1].zp_x = 127
    return q


def _table_of_zero_point(q):
    """Layer 0's sigmoid / tanh table holds only layer 1's zero point."""
    q.layers[0].table = np.full(256, q.layers[1].zp_x, dtype=np.int64)
    return q


def _no_input(q):
    q.input_stage.mult[:] = 0
    return q


def cases():
    """[(name, QModel, {mode: the layer and reason it is refused for, or None})]."""
    rng = np.random.default_rng(21)
    relu = _relu127(mlp_model(rng, [5, 8, 3], "relu")[0])
    deep = _relu127(mlp_model(rng, [5, 8, 6, 3], "relu")[0])
    tanh = _table_of_zero_point(mlp_model(rng, [5, 8, 3], "tanh")[0])
    sigmoid = _table_of_zero_point(mlp_model(rng, [5, 8, 3], "sigmoid")[0])
    stage = _no_input(mlp_model(rng, [5, 8, 3], "relu")[0])
    single = _no_input(mlp_model(rng, [5, 3], "relu")[0])
    normal = mlp_model(rng, [5, 8, 6, 3], "relu")[0]
    r1 = (1, "zero point 127 after relu")
    t1, s1 = (1, "tanh table of 0 only"), (1, "sigmoid table of -128 only")
    m0 = (0, "every input stage mult is 0")
    return [
        ("relu", relu, {"last": r1, "bias": None, "all": r1}),
        ("deep relu", deep, {"last": None, "bias": None, "all": r1}),
        ("tanh", tanh, {"last": t1, "bias": None, "all": t1}),
        ("sigmoid", sigmoid, {"last": s1, "bias": None, "all": s1}),
        ("input stage", stage, {"last": None, "bias": None, "all": m0}),
        ("one layer", single, {"last": m0, "bias": None, "all": m0}),
        ("normal", normal, {"last": None, "bias": None, "all": None}),
    ]


def _message(refused):
    k, why = refused
    return "train: layer %d %s" % (k, NOTHING % why)


def test_the_cases_read_only_the_zero_point():
    for name, q, want in cases():
        layers, mult = bounds.plan_layers(q), [int(m) for m in q.input_stage.mult]
        zero = [train_plan.zero_input(layers, k, mult) for k in range(len(layers))]
        if want["all"] is None:
            assert zero == [None] * len(layers), name
            continue
        k, why = want["all"]
        assert zero[k] == why and zero[:k] == [None] * k, (name, zero)
        plan = train_plan.plan(Model(modelfile.to_bytes(q)).layers, "all", 6, 0)
        assert (plan[k]["dmax"] == 0) == (k > 0)  # layer 0's proof takes any int8 input: d >= 128


def test_host_twin_and_device_refuse_the_same_way_under_cpython():
    for name, q, want in cases():
        for mode in MODES:
            refused = want[mode]
            if refused is None:
                host = trainref.check_train_bounds(q, mode, 1)
                t = dtrain.Trainer(Model(modelfile.to_bytes(q)), mode)
                assert t.max_batch == host["max_batch"], (name, mode)
                ref = trainref.TrainRef(q, mode)
                assert ref.max_batch == t.max_batch
                continue
            msg = _message(refused)
            for make, args in (
                (trainref.check_train_bounds, (q, mode, 1)),
                (trainref.TrainRef, (q, mode)),
                (dtrain.Trainer, (Model(modelfile.to_bytes(q)), mode)),
            ):
                with pytest.raises(ValueError) as e:
                    make(*args)
                assert str(e.value).startswith(msg), (name, mode, str(e.value))


def test_bias_mode_still_trains_the_model_whose_hidden_relu_is_dead():
    _, q, _ = cases()[0]
    rng = np.random.default_rng(22)
    raw = rng.integers(-3000, 3000, size=(12, 5))
    labels = rng.integers(0, 3, size=12)
    ref = trainref.train_steps(q, raw, labels, "bias", 4, 2)
    t = dtrain.Trainer(Model(modelfile.to_bytes(q)), "bias", 4, 2)
    for r, label in zip(raw.tolist(), labels.tolist(), strict=True):
        t.step(r, label)
    for k, layer in enumerate(t.model.layers):
        assert list(layer["b"]) == ref.qmodel.layers[k].b.tolist()
    assert t.state == ref.state


SCRIPT = """
import sys
from device.infer import Model
from device.train import Trainer

for path in sys.argv[1:]:
    for mode in ("last", "bias", "all"):
        try:
            t = Trainer(Model(path), mode)
            print("%s %s ok %d" % (path, mode, t.max_batch))
        except ValueError as e:
            print("%s %s ValueError %s" % (path, mode, e))
        except Exception as e:
            print("%s %s %s %s" % (path, mode, type(e).__name__, e))
"""


def test_device_trainer_refuses_under_micropython(micropython, tmp_path):
    paths, want = [], {}
    for i, (_, q, refused) in enumerate(cases()):
        path = str(tmp_path / ("m%d.mpm" % i))
        modelfile.write_model(path, q)
        paths.append(path)
        for mode in MODES:
            r = refused[mode]
            if r is None:
                want[path, mode] = "ok %d" % trainref.check_train_bounds(q, mode, 1)["max_batch"]
            else:
                want[path, mode] = "ValueError " + _message(r)
    out = run_micropython(micropython, SCRIPT, paths, cwd=ROOT).splitlines()
    assert len(out) == len(want)
    for line in out:
        path, mode, got = line.split(" ", 2)
        assert got.startswith(want[path, mode]), line
        assert "ZeroDivisionError" not in line
    n_refused = sum(v.startswith("ValueError") for v in want.values())
    assert n_refused == 10 and sum("ValueError" in line for line in out) == n_refused


def test_the_board_app_keeps_predicting_and_says_why_it_cannot_learn(
    micropython,
    board,
    folder,
):
    _, q, _, _ = board
    dead = _relu127(modelfile.from_bytes(modelfile.to_bytes(q)))
    modelfile.write_model(folder / "model.mpm", dead)
    configure(folder, learn="last")
    schedule = [(WINDOW, "label " + q.classes[0]), (WINDOW, "info")]
    recs, _ = records(run_app(micropython, folder, schedule, 3 * WINDOW))
    assert recs[0].fields["trainer"] == "none"
    info = [r for r in recs if r.__class__.__name__ == "Info" and "learn" in r.fields]
    assert info and info[0].fields["learn"] == "off"
    reason = "train:_layer_1_input_takes_one_value_(zero_point_127_after_relu)"
    assert info[0].fields["reason"].startswith(reason), info[0].fields
    assert any(r.__class__.__name__ == "Pred" for r in recs)


# --- the exporter ---


def test_export_proof_refuses_every_layer_that_reads_only_its_zero_point():
    for name, q, want in cases():
        if name == "normal":
            assert bounds.check_bounds(q, -(2**15), 2**15 - 1)["layers"]
            continue
        k, why = want["all"] if want.get("all") else want["last"]
        msg = "bounds: layer %d input takes one value (%s" % (k, why)
        with pytest.raises(ValueError) as e:
            bounds.check_bounds(q, -(2**15), 2**15 - 1)
        assert str(e.value).startswith(msg), (name, str(e.value))
        assert "cannot train its weights" in str(e.value)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    log = write_log(d / "log.csv")
    out = d / "m.npz"
    argv = ["train", "--data", str(log), "--window", "20", "--hop", "10", "--out", str(out)]
    assert main(argv + FAST) == 0
    return out


def _dead_quantizer(monkeypatch):
    from microprop.host import quantize

    real = quantize.quantize

    def quantize_dead(*args, **kwargs):
        return _relu127(real(*args, **kwargs))

    monkeypatch.setattr(quantize, "quantize", quantize_dead)


def test_export_refuses_with_one_line_and_writes_nothing(
    float_model, tmp_path, capsys, monkeypatch
):
    mpm = tmp_path / "dead.mpm"
    _dead_quantizer(monkeypatch)
    code = main(["export", str(float_model), "--out", str(mpm)])
    out, err = capsys.readouterr()
    assert_one_line_error(code, err, "layer 1 input takes one value (zero point 127 after relu)")
    assert "wrote" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_refused_export_leaves_the_files_of_the_last_export(
    float_model, tmp_path, capsys, monkeypatch
):
    mpm = tmp_path / "m.mpm"
    code = main(["export", str(float_model), "--out", str(mpm)])
    out, err = capsys.readouterr()
    assert code == 0, err
    rh = path_for(str(mpm))
    assert mpm.exists() and "wrote %s" % rh in out
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"m.mpm", "m.rh"}
    q = modelfile.read_model(str(mpm))  # the normal model: every mode of the board accepts it
    for mode in MODES:
        dtrain.Trainer(Model(str(mpm)), mode)
        trainref.check_train_bounds(q, mode, 1)
    _dead_quantizer(monkeypatch)
    code = main(["export", str(float_model), "--out", str(mpm)])
    _, err = capsys.readouterr()
    assert_one_line_error(code, err, "bounds: layer 1 input takes one value")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
