"""Evaluation: accuracy, per-class precision / recall / F1, confusion matrix, plots.

Runs on: host.
"""

import numpy as np


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


def format_report(report, title=None):
    """The report as plain-text tables: per-class scores, then the confusion matrix."""
    classes = report["classes"]
    width = max(8, max(len(c) for c in classes) + 1)
    lines = []
    if title:
        lines.append(title)
    lines.append(
        "accuracy %.4f  (%d windows)  macro F1 %.4f"
        % (report["accuracy"], report["n"], report["macro_f1"])
    )
    lines.append("")
    lines.append("%-*s %9s %9s %9s %8s" % (width, "class", "precision", "recall", "f1", "support"))
    for i, name in enumerate(classes):
        lines.append(
            "%-*s %9.3f %9.3f %9.3f %8d"
            % (
                width,
                name,
                report["precision"][i],
                report["recall"][i],
                report["f1"][i],
                report["support"][i],
            )
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
        raise RuntimeError(
            "plot: matplotlib is not installed; install it with pip install 'microprop[plot]'"
        ) from e
    return plt


def plot_training(history, report, path):
    """Draw the training curves and the confusion matrix into a PNG at `path`.

    Needs matplotlib (`pip install 'microprop[plot]'`); raises RuntimeError saying so.
    """
    plt = require_matplotlib()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax1.plot(epochs, history.get("loss", []), label="training loss")
    if history.get("val_loss"):
        ax1.plot(epochs, history["val_loss"], label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    if history.get("val_acc"):
        ax3 = ax1.twinx()
        ax3.plot(epochs, history["val_acc"], color="tab:green", label="validation accuracy")
        ax3.set_ylabel("validation accuracy")
        ax3.set_ylim(0, 1)
    best = history.get("best_epoch")
    if best is not None:
        ax1.axvline(best + 1, color="grey", linestyle=":", label="best epoch")
    ax1.legend(loc="upper right")
    ax1.set_title("training curves")
    cm = np.asarray(report["confusion"])
    classes = report["classes"]
    ax2.imshow(cm, cmap="Blues")
    ax2.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax2.set_yticks(range(len(classes)), classes)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax2.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
            )
    ax2.set_xlabel("predicted")
    ax2.set_ylabel("true")
    ax2.set_title("confusion matrix (accuracy %.3f)" % report["accuracy"])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
