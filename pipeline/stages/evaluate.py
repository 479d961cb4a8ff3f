"""Evaluate stage: the trained model on the test split -> metrics.json and pictures.

Outputs in ``cfg.run_dir``: metrics.json (accuracy, per-class precision/recall/f1/support, confusion
matrix), confusion_matrix.png, training_curves.png.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.dataset import load_split
from pipeline.io import save_figure, write_json_atomic


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, per-class precision/recall/f1/support and the confusion matrix (rows = true labels)."""
    k = len(labels)
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    per_class = {}
    for i, label in enumerate(labels):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": round(float(precision), 6), "recall": round(float(recall), 6),
                            "f1": round(float(f1), 6), "support": int(support)}
    return {"test_accuracy": round(float(np.trace(cm) / max(1, cm.sum())), 6), "num_test_examples": int(cm.sum()),
            "per_class": per_class, "confusion_matrix": cm.tolist(), "labels": labels}


def plot_confusion_matrix(cm: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(6, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    save_figure(fig, path, dpi=110)


def plot_training_curves(history_csv: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) + 1 for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, ax in (("loss", ax_loss), ("accuracy", ax_acc)):
        if rows and key in rows[0]:
            ax.plot(epochs, [float(r[key]) for r in rows], label=f"train {key}")
        if rows and f"val_{key}" in rows[0]:
            ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path, dpi=100)


def run(cfg: Config) -> Path:
    import keras

    run_dir = cfg.run_dir
    model = keras.models.load_model(run_dir / "model.keras", compile=False)
    features, labels, rows = load_split(cfg.features_dir, "test")
    probs = model.predict(np.asarray(features[0, rows], np.float32), batch_size=256, verbose=0)
    metrics = classification_metrics(labels, probs.argmax(axis=1), cfg.labels)
    write_json_atomic(run_dir / "metrics.json", metrics)
    plot_confusion_matrix(np.array(metrics["confusion_matrix"]), cfg.labels, run_dir / "confusion_matrix.png",
                          f"{cfg.run.name}: test accuracy {metrics['test_accuracy']:.2%} (n={metrics['num_test_examples']})")
    if (run_dir / "history.csv").is_file():
        plot_training_curves(run_dir / "history.csv", run_dir / "training_curves.png")
    print(f"evaluate: test accuracy {metrics['test_accuracy']:.4f} on {metrics['num_test_examples']} clips "
          f"-> {run_dir / 'metrics.json'}")
    return run_dir / "metrics.json"
