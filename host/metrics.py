"""Evaluation: accuracy, per-class precision / recall / F1, confusion matrix, plots.

Runs on: host.
"""

import numpy as np

from .errors import UserError


def confusion_matrix(y_true, y_pred, n_classes):
    """Counts (n_classes, n_classes): rows are true classes, columns predicted ones."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def classification_report(y_true, y_pred, classes):
    """Dict with accuracy, per-class precision / recall / F1 / support, macro F1, confusion."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    total = max(len(y_true), 1)
    return {
        "accuracy": float(tp.sum() / total),
        "classes": list(classes),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
        "confusion": cm.tolist(),
        "n": int(len(y_true)),
    }


TINY = 30  # fewer scored windows than this: the accuracy is flagged as saying little


def format_report(report, title=None):
    """The report as plain-text tables: per-class scores, then the confusion matrix.

    A warning line follows the accuracy when fewer than TINY windows were scored; classes that
    do not occur in the data (support 0) show "-" where a score would divide by nothing, and
    are marked "absent".
    """
    classes = report["classes"]
    width = max(8, max(len(c) for c in classes) + 1)
    lines = []
    if title:
        lines.append(title)
    lines.append(
        "accuracy %.4f  (%d windows)  macro F1 %.4f"
        % (report["accuracy"], report["n"], report["macro_f1"])
    )
    if report["n"] < TINY:
        lines.append(
            "warning: only %d window%s scored: too few for the accuracy to mean much (want %d+)"
            % (report["n"], "" if report["n"] == 1 else "s", TINY)
        )
    lines.append("")
    lines.append("%-*s %9s %9s %9s %8s" % (width, "class", "precision", "recall", "f1", "support"))
    predicted = np.asarray(report["confusion"]).sum(axis=0)
    for i, name in enumerate(classes):
        absent = report["support"][i] == 0
        cells = [
            "-" if predicted[i] == 0 else "%.3f" % report["precision"][i],
            "-" if absent else "%.3f" % report["recall"][i],
            "-" if absent or predicted[i] == 0 else "%.3f" % report["f1"][i],
        ]
        lines.append(
            "%-*s %9s %9s %9s %8d%s"
            % (width, name, *cells, report["support"][i], "  absent" if absent else "")
        )
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    cw = max(6, max(len(c) for c in classes) + 1)
    lines.append("%-*s" % (width, "") + "".join("%*s" % (cw, c) for c in classes))
    for i, name in enumerate(classes):
        lines.append(
            "%-*s" % (width, name) + "".join("%*d" % (cw, v) for v in report["confusion"][i])
        )
    return "\n".join(lines)


def require_matplotlib():
    """matplotlib.pyplot on the Agg backend, or RuntimeError saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UserError(
            "plot: matplotlib is not installed",
            hint="install it with pip install 'microprop[plot]'",
        ) from e
    return plt


def plot_training(history, report, path):
    """Draw the training curves and the confusion matrix into a PNG at `path`.

    Needs matplotlib (`pip install 'microprop[plot]'`); raises RuntimeError saying so.
    """
    _save(training_figure(history, report), path)


def plot_confusion(report, path, title=None):
    """Draw the confusion matrix of `report` into a PNG at `path` (needs matplotlib)."""
    _save(confusion_figure(report, title), path)


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)


def training_figure(history, report):
    """The training curves (loss, validation loss and accuracy, labelled with what was held
    out: history["validation"], all in one legend) beside the confusion matrix."""
    plt = require_matplotlib()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    held = history.get("validation") or ""
    held = " (%s)" % held if held and held != "none" else ""
    ax1.plot(epochs, history.get("loss", []), label="training loss")
    if _has_values(history.get("val_loss")):
        ax1.plot(epochs, history["val_loss"], label="validation loss" + held)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    handles = []
    if _has_values(history.get("val_acc")):
        ax3 = ax1.twinx()
        handles = ax3.plot(
            epochs, history["val_acc"], color="tab:green", label="validation accuracy" + held
        )
        ax3.set_ylabel("validation accuracy")
        ax3.set_ylim(0, 1)
    best = history.get("best_epoch")
    if best is not None:
        ax1.axvline(best + 1, color="grey", linestyle=":", label="lowest validation loss")
    # one legend for both y axes, so that the accuracy curve is in it too
    h1, l1 = ax1.get_legend_handles_labels()
    ax1.legend(h1 + handles, l1 + [h.get_label() for h in handles], loc="upper right", fontsize=8)
    ax1.set_title("training curves")
    _draw_confusion(ax2, report)
    fig.tight_layout()
    return fig


def confusion_figure(report, title=None):
    """The confusion matrix alone (what `microprop eval --plot` draws)."""
    plt = require_matplotlib()
    n = len(report["classes"])
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * n + 3), max(4.5, 0.6 * n + 2)))
    _draw_confusion(ax, report)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _has_values(values):
    return bool(values) and bool(np.isfinite(np.asarray(values, dtype=np.float64)).any())


def _draw_confusion(ax, report):
    cm = np.asarray(report["confusion"])
    classes = report["classes"]
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(
        "confusion matrix (accuracy %.3f, %d windows)" % (report["accuracy"], report["n"])
    )
