"""The evaluation report: one self-contained HTML file, figures embedded as PNG data URIs."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def confusion_figure(matrix: list[list[int]], classes: list[str]) -> str:
    counts = np.asarray(matrix)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = counts.max() / 2 if counts.size else 0
    for (i, j), value in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > threshold else "black",
        )
    ax.set_title("Confusion matrix (test split)")
    return _png(fig)


def curves_figure(history: dict[str, list[float]], best_epoch: int, head_epochs: int) -> str:
    """Loss and accuracy per epoch of both stages; dashed: the epoch whose weights were kept,
    dotted: where fine-tuning began (when it ran)."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = range(1, len(history.get(metric, [])) + 1)
        ax.plot(epochs, history.get(metric, []), label="train")
        ax.plot(epochs, history.get(f"val_{metric}", []), label="validation")
        ax.axvline(best_epoch, color="grey", linestyle="--", label=f"kept (epoch {best_epoch})")
        if head_epochs < len(epochs):
            ax.axvline(head_epochs + 0.5, color="black", linestyle=":", label="fine-tuning")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    return _png(fig)


def _table(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(evaluation: dict, history: dict[str, list[float]]) -> str:
    classes = evaluation["classes"]
    per_class = evaluation["classification_report"]
    names = [*classes, "macro avg", "weighted avg"]
    rows = [
        [
            n,
            *(f"{per_class[n][k]:.3f}" for k in ("precision", "recall", "f1-score")),
            f"{per_class[n]['support']:.0f}",
        ]
        for n in names
    ]
    training = evaluation["training"]
    fine_tuning = (
        f"{training['fine_tune_layers']} ({training['fine_tune_epochs']} epochs, "
        f"{'kept' if training['fine_tune_kept'] else 'not kept: no better on validation'})"
        if "fine_tune_layers" in training
        else "none"
    )
    facts = [
        ["backbone", training["backbone"]],
        ["weights used", training["weights"]],
        ["image size", str(training["image_size"])],
        ["epochs run", f"{training['epochs_run']} (best {training['best_epoch']})"],
        ["training data", training["caching"]],
        ["fine-tuned layers", fine_tuning],
        ["devices, precision", f"{', '.join(training['devices'])}; {training['precision']}"],
        ["test images", str(evaluation["n_test"])],
    ]
    curves = curves_figure(history, training["best_epoch"], training["head_epochs"])
    warnings = "".join(
        f'<p class="warning">WARNING: {html.escape(w)}</p>' for w in evaluation["warnings"]
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.warning {{ background: #fdd; border: 2px solid #c00; padding: 0.8em; font-weight: bold; }}
</style></head><body>
<h1>Evaluation report</h1>
{warnings}
<p>Test accuracy: <strong>{evaluation["test_accuracy"]:.4f}</strong></p>
{_table(facts, ["fact", "value"])}
<h2>Per class</h2>
{_table(rows, ["class", "precision", "recall", "f1-score", "support"])}
<h2>Confusion matrix</h2>
<img alt="confusion matrix" src="{confusion_figure(evaluation["confusion_matrix"], classes)}">
<h2>Training curves</h2>
<img alt="loss and accuracy curves" src="{curves}">
</body></html>
"""
