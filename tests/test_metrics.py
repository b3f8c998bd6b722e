"""Evaluation metrics against hand-computed values, including the 0/0 cases.

Runs on: host (pytest).
"""

import warnings

import numpy as np
import pytest

from microprop.host.metrics import classification_report, confusion_matrix, format_report

CLASSES = ["a", "b", "c", "d"]
# c is never predicted (precision 0/0); d never occurs (recall 0/0) but is predicted once.
Y_TRUE = [0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 1, 1, 0, 0, 3]


def report():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 must not warn either
        return classification_report(Y_TRUE, Y_PRED, CLASSES)


def test_confusion_matrix_rows_are_true_columns_predicted():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 4)
    assert cm.tolist() == [
        [2, 1, 0, 0],
        [1, 1, 0, 0],
        [1, 0, 0, 1],
        [0, 0, 0, 0],
    ]
    assert report()["confusion"] == cm.tolist()


def test_precision_recall_f1_by_hand():
    r = report()
    # predicted per class: a 4, b 2, c 0, d 1; support: a 3, b 2, c 2, d 0.
    assert r["precision"] == pytest.approx([2 / 4, 1 / 2, 0.0, 0 / 1])
    assert r["recall"] == pytest.approx([2 / 3, 1 / 2, 0 / 2, 0.0])
    f1_a = 2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3)  # 4/7
    assert r["f1"] == pytest.approx([f1_a, 0.5, 0.0, 0.0])
    assert r["support"] == [3, 2, 2, 0]
    assert r["accuracy"] == pytest.approx(3 / 7)
    assert r["n"] == 7
    # Macro F1 averages the classes that occur (a, b, c); d, with no support, is left out.
    assert r["macro_f1"] == pytest.approx((4 / 7 + 0.5 + 0.0) / 3)
    assert r["classes"] == CLASSES


def test_zero_over_zero_is_zero_not_nan():
    r = report()
    for key in ("precision", "recall", "f1"):
        assert np.all(np.isfinite(r[key])), key
    assert r["precision"][2] == 0.0  # c: 0 true positives / 0 predicted
    assert r["recall"][3] == 0.0  # d: 0 true positives / 0 support
    assert r["f1"][2] == 0.0 and r["f1"][3] == 0.0


def test_perfect_and_empty_predictions():
    r = classification_report([0, 1, 1], [0, 1, 1], ["x", "y"])
    assert r["precision"] == [1.0, 1.0] and r["recall"] == [1.0, 1.0] and r["f1"] == [1.0, 1.0]
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0
    none = np.zeros(0, dtype=np.int64)  # what class_indices and predict return for no windows
    r = classification_report(none, none, ["x", "y"])
    assert r["accuracy"] == 0.0 and r["macro_f1"] == 0.0 and r["n"] == 0
    assert r["confusion"] == [[0, 0], [0, 0]]


def test_format_report_shows_the_hand_computed_values():
    text = format_report(report(), "title")
    lines = text.splitlines()
    assert lines[0] == "title"
    assert "accuracy 0.4286  (7 windows)  macro F1 0.3571" in text
    row_a = next(line for line in lines if line.startswith("a "))
    assert row_a.split() == ["a", "0.500", "0.667", "0.571", "3"]
    row_c = lines[-2]  # confusion row of class c
    assert row_c.split() == ["c", "1", "0", "0", "1"]


def test_tiny_sets_are_flagged_and_absent_classes_marked():
    text = format_report(classification_report([1], [1], ["a", "b", "c"]), "one window")
    lines = text.splitlines()
    assert lines[1] == "accuracy 1.0000  (1 windows)  macro F1 1.0000"
    assert lines[2].startswith("warning: only 1 window scored: too few")
    row = {line.split()[0]: line.split()[1:] for line in lines[4:7]}
    assert row["a"] == ["-", "-", "-", "0", "absent"]  # never there, never predicted
    assert row["b"] == ["1.000", "1.000", "1.000", "1"]
    # d was predicted once although absent: its precision (0/1) is a real number
    d = next(line for line in format_report(report()).splitlines() if line.startswith("d "))
    assert d.split() == ["d", "0.000", "-", "-", "0", "absent"]
    assert "warning" not in format_report(classification_report([0] * 30, [0] * 30, ["a"]))


def test_training_plot_labels_validation_and_eval_plots_the_confusion_matrix():
    from microprop.host.metrics import confusion_figure, training_figure

    history = {
        "loss": [1.0, 0.5, 0.4],
        "val_loss": [1.1, 0.7, 0.8],
        "val_acc": [0.5, 0.8, 0.7],
        "best_epoch": 1,
        "validation": "held-out subjects 4 (120 windows)",
    }
    fig = training_figure(history, report())
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    held = " (held-out subjects 4 (120 windows))"
    assert legend == [
        "training loss",
        "validation loss" + held,
        "lowest validation loss",
        "validation accuracy" + held,
    ]
    fig = confusion_figure(report(), "m.mpm on log.csv")
    assert len(fig.axes) == 1 and fig.axes[0].get_title().startswith("confusion matrix")
