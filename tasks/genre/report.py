"""The classifier's plots and tables: confusion matrix, per-class precision/recall/F1, CV per candidate.

CSV for `dvc plots` and diffs between experiments, PNG for people and for MLflow's artefact view.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support  # noqa: E402

CV_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")


def per_class_table(actual: pd.Series, predicted: np.ndarray, classes: list[str]) -> pd.DataFrame:
    precision, recall, f1, support = precision_recall_fscore_support(actual, predicted, labels=classes, zero_division=0)
    return pd.DataFrame({"genre": classes, "precision": precision.round(4), "recall": recall.round(4),
                         "f1": f1.round(4), "support": support})


def cv_table(candidates: dict[str, dict[str, object]]) -> pd.DataFrame:
    """Each candidate's CV scores and, where it was scored there, its held-out test balanced accuracy."""
    rows = [{"candidate": name, "metric": f"cv_{metric}", "score": round(summary["cv"][f"{metric}_mean"], 4)}
            for name, summary in candidates.items() for metric in CV_METRICS]
    rows += [{"candidate": name, "metric": "test_balanced_accuracy", "score": round(summary["test"]["balanced_accuracy"], 4)}
             for name, summary in candidates.items() if "test" in summary]
    return pd.DataFrame(rows)


def plot_cv(table: pd.DataFrame, target: Path) -> None:
    wide = table.pivot(index="candidate", columns="metric", values="score")
    wide = wide.sort_values(wide.columns[0])
    axes = wide.plot.barh(figsize=(8, 1.2 + 0.6 * len(wide)), width=0.8)
    axes.set_xlim(0, 1)
    axes.set_xlabel("score (cv_: cross-validated on the training split; test_: the held-out test split)")
    axes.set_title("Genre classifier candidates")
    axes.legend(loc="lower right", fontsize=8)
    plt.tight_layout()
    plt.savefig(target, dpi=110)
    plt.close()


def plot_confusion(actual: pd.Series, predicted: np.ndarray, classes: list[str], target: Path) -> None:
    """Rows are normalised to recall, so small genres are as readable as big ones."""
    counts = confusion_matrix(actual, predicted, labels=classes)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(6.0, 0.32 * len(classes))
    figure, axes = plt.subplots(figsize=(size + 2, size))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    axes.set_yticks(range(len(classes)), classes, fontsize=7)
    axes.set_xlabel("predicted genre")
    axes.set_ylabel("actual genre")
    axes.set_title("Confusion on the held-out test split (row-normalised)")
    figure.colorbar(image, ax=axes, fraction=0.04)
    plt.tight_layout()
    plt.savefig(target, dpi=110)
    plt.close(figure)


def write_reports(plots_dir: Path, candidates: dict[str, dict[str, object]], actual: pd.Series, predicted: np.ndarray,
                  classes: list[str], per_class: pd.DataFrame) -> list[Path]:
    """Every report file of the stage; returns their paths for MLflow."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: plots_dir / name for name in (
        "classifier_cv.csv", "classifier_cv.png", "classifier_confusion.csv", "classifier_confusion.png",
        "classifier_per_class.csv")}
    table = cv_table(candidates)
    table.to_csv(paths["classifier_cv.csv"], index=False)
    plot_cv(table, paths["classifier_cv.png"])
    pd.DataFrame({"actual": actual.to_numpy(), "predicted": predicted}).to_csv(paths["classifier_confusion.csv"], index=False)
    plot_confusion(actual, predicted, classes, paths["classifier_confusion.png"])
    per_class.to_csv(paths["classifier_per_class.csv"], index=False)
    return list(paths.values())
