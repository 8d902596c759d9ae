"""PNG plots of an evaluation: one-vs-rest ROC curves, confusion matrix, training-loss curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve


def plot_roc_curves(
    probabilities: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    title: str = "ROC (one-vs-rest)",
) -> Path:
    """One ROC curve per class from `(N, C)` probabilities and `(N,)` class indices."""
    figure, axis = plt.subplots(figsize=(5, 5))
    for index, name in enumerate(class_names):
        positive = labels == index
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probabilities[:, index])
        axis.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(positive, probabilities[:, index]):.3f})")
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    axis.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def plot_confusion_matrix(
    predictions: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    path: Path,
    title: str = "confusion matrix",
) -> Path:
    """Row-normalised confusion matrix with counts annotated."""
    counts = confusion_matrix(labels, predictions, labels=list(range(len(class_names))))
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (row, column), value in np.ndenumerate(counts):
        axis.text(
            column,
            row,
            str(value),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if rates[row, column] > 0.5 else "black",
        )
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(ticks, class_names, fontsize=7)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    return _save(figure, path)


def plot_loss_curve(curves: dict[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Training-loss curves: `{name: [(step, loss), ...]}` (e.g. stage 1 and stage 2)."""
    figure, axes = plt.subplots(1, max(1, len(curves)), figsize=(5 * max(1, len(curves)), 4), squeeze=False)
    for axis, (name, points) in zip(axes[0], curves.items()):
        if points:
            steps, losses = zip(*points)
            axis.plot(steps, losses, linewidth=1)
        axis.set(xlabel="step", ylabel="loss", title=name)
    return _save(figure, path)


def plot_validation_curves(validation: dict[str, dict[str, Sequence[tuple[int, float]]]], path: Path) -> Path:
    """Validation metrics during training: `{stage: {metric: [(step, value), ...], "best": {...}}}`, one panel
    per stage, one line per metric, the best step marked."""
    figure, axes = plt.subplots(1, max(1, len(validation)), figsize=(5 * max(1, len(validation)), 4), squeeze=False)
    for axis, (stage, curves) in zip(axes[0], validation.items()):
        for metric, points in curves.items():
            if metric != "best" and points:
                steps, values = zip(*points)
                axis.plot(steps, values, marker="o", markersize=3, linewidth=1, label=metric)
        best = curves.get("best") or {}
        if "step" in best:
            axis.axvline(best["step"], color="grey", linestyle=":", label=f"best {best['metric']}")
        axis.set(xlabel="step", ylabel="validation", ylim=(0, 1.02), title=stage)
        axis.legend(fontsize=8)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
