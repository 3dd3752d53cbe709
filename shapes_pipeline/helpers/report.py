"""The evaluation report: one self-contained HTML file, figures and thumbnails embedded as
PNG data URIs, and a Markdown summary of it for the KFP UI."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from shapes_pipeline.helpers.step import printable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CORRECT_SAMPLE = 12  # correct predictions shown beside the misclassified ones
MAX_WRONG = 200  # misclassified images shown at most (a large test split has thousands)
THUMBNAIL = 96  # pixels


@dataclass(frozen=True)
class Example:
    """One test image's prediction, for the gallery."""

    path: str  # the manifest's path; ``image`` is the encoded image, read from its shard
    true_class: str
    predicted_class: str
    confidence: float  # the probability of the predicted class
    image: bytes = b""

    @property
    def correct(self) -> bool:
        return self.true_class == self.predicted_class


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _subplots(*shape: int, figsize: tuple[float, float]):
    """``pyplot.subplots`` off-screen; pyplot loads here, not with this module, as the
    command line imports this module only for the result's lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(*shape, figsize=figsize)


def _png(fig: Figure) -> str:
    from matplotlib import pyplot

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot.close(fig)
    return _data_uri(buffer.getvalue())


def thumbnail(encoded: bytes) -> str:
    with Image.open(io.BytesIO(encoded)) as image:
        small = image.convert("RGB")
        small.thumbnail((THUMBNAIL, THUMBNAIL))
        buffer = io.BytesIO()
        small.save(buffer, format="PNG")
    return _data_uri(buffer.getvalue())


def confusion_figure(matrix: list[list[int]], classes: list[str], normalised: bool) -> str:
    """Counts, or each row divided by its total (the share of a true class predicted as each)."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalised else counts
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = _subplots(figsize=(size, size * 0.85))
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalised else None)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    threshold = values.max() / 2 if values.size else 0
    font = 10 if len(classes) <= 6 else 8
    for (i, j), value in np.ndenumerate(values):
        text = f"{value:.2f}" if normalised else f"{value:.0f}"
        colour = "white" if value > threshold else "black"
        ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=font)
    ax.set_title("Row-normalised (recall on the diagonal)" if normalised else "Counts")
    return _png(fig)


def curves_figure(history: dict[str, list[float]], best_epoch: int, head_epochs: int) -> str:
    """Loss and accuracy per epoch of both stages; dashed: the epoch whose weights were kept,
    dotted: where fine-tuning began (when it ran)."""
    fig, axes = _subplots(1, 2, figsize=(10, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        epochs = range(1, len(history.get(metric, [])) + 1)
        ax.plot(epochs, history.get(metric, []), label="train")
        if f"val_{metric}" in history:  # none without a validation split
            ax.plot(epochs, history[f"val_{metric}"], label="validation")
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


def _spread(items: list, most: int) -> list:
    picks = np.linspace(0, len(items) - 1, min(most, len(items))).round()
    return [items[int(i)] for i in picks]


def shown(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """The gallery's misclassified and correct images: every mistake up to ``MAX_WRONG``,
    else an evenly spread sample of them, and an evenly spread sample of correct ones."""
    wrong = [e for e in examples if not e.correct]
    right = [e for e in examples if e.correct]
    return _spread(wrong, MAX_WRONG), _spread(right, CORRECT_SAMPLE)


def gallery(examples: list[Example], wrong: list[Example], right: list[Example]) -> str:
    """``wrong`` and ``right`` (see :func:`shown`, with their images) out of ``examples``."""
    n_wrong = sum(not e.correct for e in examples)

    def cards(chosen: list[Example]) -> str:
        return "".join(
            f'<figure class="{"ok" if e.correct else "wrong"}">'
            f'<img alt="{html.escape(Path(e.path).name)}" src="{thumbnail(e.image)}">'
            f"<figcaption>{html.escape(Path(e.path).name)}<br>true: {html.escape(e.true_class)}<br>"
            f"predicted: {html.escape(e.predicted_class)} ({e.confidence:.0%})</figcaption>"
            "</figure>"
            for e in chosen
        )

    return (
        f"<h3>Misclassified: {len(wrong)} shown of {n_wrong}, of {len(examples)}</h3>"
        f'<div class="gallery">{cards(wrong) or "<p>none</p>"}</div>'
        f"<h3>Correct: {len(right)} of {len(examples) - n_wrong}</h3>"
        f'<div class="gallery">{cards(right)}</div>'
    )


def _facts(evaluation: dict) -> list[list[str]]:
    training, data = evaluation["training"], evaluation["data"]
    fine_tuning = (
        f"{training['fine_tune_layers']} ({training['fine_tune_epochs']} epochs, "
        f"{'kept' if training['fine_tune_kept'] else 'not kept: no better on validation'})"
        if "fine_tune_layers" in training
        else "none"
    )
    return [
        ["data source", data["source"]],
        ["backbone", training["backbone"]],
        ["weights used", training["weights"]],
        ["image size", str(training["image_size"])],
        ["training", training_outcome(training)],
        ["training data", training["caching"]],
        ["fine-tuned layers", fine_tuning],
        ["devices, precision", f"{', '.join(training['devices'])}; {training['precision']}"],
        ["test images", str(evaluation["n_test"])],
    ]


def _accuracy(evaluation: dict) -> str:
    low, high = evaluation["accuracy_ci95"]
    return f"{evaluation['test_accuracy']:.4f} (95% CI {low:.3f}-{high:.3f}, Wilson)"


def _gate(evaluation: dict) -> str:
    gate = evaluation["gate"]
    on = (
        f"a stratified sample of {gate['compared_images']} test images (this model: "
        f"{gate['challenger_accuracy']:.4f})"
        if gate.get("compared_sampled")
        else "these test images"
    )
    champion = (
        f" Production model: {gate['champion_uri']}, accuracy on {on} "
        + ("n/a" if gate["champion_accuracy"] is None else f"{gate['champion_accuracy']:.4f}")
        + "."
        if gate["champion_uri"]
        else ""
    )
    verdict = "passed (export publishes this model)" if gate["passed"] else "BLOCKED (not exported)"
    added, lost = gate.get("classes_added"), gate.get("classes_lost")
    change = (
        f" Classes added: {', '.join(added) or 'none'}; lost: {', '.join(lost) or 'none'}."
        if added or lost
        else ""
    )
    return f"Gate {verdict}: {gate['reason']}.{champion}{change}"


def _per_class_rows(evaluation: dict) -> list[list[str]]:
    per_class = evaluation["classification_report"]
    return [
        [
            name,
            *(f"{per_class[name][k]:.3f}" for k in ("precision", "recall", "f1-score")),
            f"{per_class[name]['support']:.0f}",
        ]
        for name in [*evaluation["classes"], "macro avg", "weighted avg"]
    ]


PER_CLASS_HEADER = ["class", "precision", "recall", "f1-score", "support"]


def figures(
    matrix: list[list[int]], classes: list[str], history: dict[str, list[float]], training: dict
) -> dict[str, str]:
    """The report's plots, as data URIs: they need only the confusion matrix and the
    history, so evaluate draws them while it checks the served model."""
    return {
        "counts": confusion_figure(matrix, classes, normalised=False),
        "normalised": confusion_figure(matrix, classes, normalised=True),
        "curves": curves_figure(history, training["best_epoch"], training["head_epochs"]),
    }


def render(
    evaluation: dict,
    plots: dict[str, str],
    examples: list[Example],
    shown_examples: tuple[list[Example], list[Example]],
) -> str:
    """The report; ``plots`` from :func:`figures`; ``shown_examples`` (from :func:`shown`,
    with images) go in the gallery."""
    classes = evaluation["classes"]
    counts = evaluation["data"]["counts"]
    count_rows = [[c, *(str(counts[s][c]) for s in ("train", "val", "test"))] for c in classes]
    warnings = "".join(
        f'<p class="warning">WARNING: {html.escape(w)}</p>' for w in evaluation["warnings"]
    )
    gate_class = "passed" if evaluation["gate"]["passed"] else "blocked"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Evaluation report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 80em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.8em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.warning {{ background: #fdd; border: 2px solid #c00; padding: 0.8em; font-weight: bold; }}
.passed {{ background: #dfd; padding: 0.5em; }} .blocked {{ background: #fdd; padding: 0.5em; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 0.6em; }}
figure {{ margin: 0; padding: 0.4em; width: 8.5em; font-size: 0.8em; text-align: center; }}
figure.wrong {{ border: 2px solid #c00; }} figure.ok {{ border: 2px solid #3a3; }}
figure img {{ width: {THUMBNAIL}px; height: {THUMBNAIL}px; object-fit: contain; }}
</style></head><body>
<h1>Evaluation report</h1>
{warnings}
<p>Test accuracy: <strong>{_accuracy(evaluation)}</strong></p>
<p class="{gate_class}">{html.escape(_gate(evaluation))}</p>
{_table(_facts(evaluation), ["fact", "value"])}
<h2>Images per class and split</h2>
{_table(count_rows, ["class", "train", "val", "test"])}
<h2>Per class</h2>
{_table(_per_class_rows(evaluation), PER_CLASS_HEADER)}
<h2>Confusion matrix (test split; rows: true class, columns: predicted)</h2>
<img alt="confusion matrix, counts" src="{plots["counts"]}">
<img alt="confusion matrix, row-normalised" src="{plots["normalised"]}">
<h2>Training curves</h2>
<img alt="loss and accuracy curves" src="{plots["curves"]}">
<h2>Test images</h2>
{gallery(examples, *shown_examples)}
</body></html>
"""


def markdown(evaluation: dict) -> str:
    """The report's headline for the KFP UI's Markdown viewer. Every text that comes from
    the data or the run (class and file names, paths, warnings) goes through :func:`md`."""
    rows = [[md(name), *figures] for name, *figures in _per_class_rows(evaluation)]
    table = "\n".join(
        "| " + " | ".join(row) + " |"
        for row in [PER_CLASS_HEADER, ["---"] * len(PER_CLASS_HEADER), *rows]
    )
    warnings = "".join(f"\n**WARNING:** {md(w)}\n" for w in evaluation["warnings"])
    facts = "\n".join(f"- {name}: {md(value)}" for name, value in _facts(evaluation))
    return (
        f"# Evaluation\n{warnings}\nTest accuracy: **{_accuracy(evaluation)}**\n\n"
        f"{md(_gate(evaluation))}\n\n"
        f"{facts}\n\n{table}\n"
    )


def md(text: str) -> str:
    """``text`` as literal Markdown text: what is not printable as its escape (as in a log
    line), then each character but letters and digits as a numeric character reference,
    which CommonMark (and GitHub's tables) show as that character and never read as
    markup, HTML, a line break, a cell's end or whitespace to trim."""
    return "".join(c if c.isalnum() else f"&#{ord(c)};" for c in printable(text))


def training_outcome(training: dict) -> str:
    """One sentence on how training ended."""
    best, run = training["best_epoch"], training["epochs_run"]
    if not training.get("early_stopping", True):
        return f"no validation split, so no early stopping: ran {run} epochs, kept the last"
    tuned = training.get("fine_tune_epochs", 0)
    head = run - tuned
    stopped = head < training.get("epoch_limit", head + 1)
    ended = f"stopped early at epoch {head}" if stopped else f"ran all {head} epochs"
    if tuned:
        kept = "kept" if training.get("fine_tune_kept") else "not kept"
        ended += f", then {tuned} fine-tuning epochs ({kept})"
    loss = training.get("best_val_loss")
    return f"{ended}; kept epoch {best}" + (f" (val_loss {loss:.4f})" if loss is not None else "")


def result_block(summary: dict, summary_path: str) -> str:
    """What ``run`` prints when it ends: the result, and where everything is."""
    low, high = summary["accuracy_ci95"]
    gate = summary["gate"]
    rows = [
        ("training", summary["training_outcome"]),
        ("test accuracy", f"{summary['test_accuracy']:.4f} (95% CI {low:.3f}-{high:.3f})"),
        ("gate", f"{'passed' if gate['passed'] else 'REFUSED'}: {gate['reason']}"),
        ("exported", summary["model_uri"] or "no"),
        ("report", summary["report_html"]),
        ("tensorboard", f"tensorboard --logdir {summary['tensorboard_logdir']}"),
        ("logs", str(Path(summary["run_dir"], "logs"))),
        ("summary", f"{summary_path} ({summary['timings_s']['total']:.1f} s)"),
    ]
    if summary["reused"]:
        rows.insert(0, ("reused (cache)", ", ".join(summary["reused"])))
    lines = [f"WARNING: {w}" for w in summary["warnings"]]
    return "\n".join(lines + [f"{name:<15}{value}" for name, value in rows])
