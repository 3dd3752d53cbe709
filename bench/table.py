"""`make bench`'s printed table: one column per code measured, the notebook's way beside
them, then the storing run and the digits accuracies (``bench/run.py`` measures them)."""

from __future__ import annotations

STEPS = ("split", "plan", "extract", "train", "evaluate", "export")
PHASES = ("import", "build", "trace", "work", "save")


def table(results: dict) -> str:
    """Markdown: one column per code measured, the notebook's way beside them."""
    nb = results["notebook"]
    names = list(results["codes"])
    runs = [results["codes"][n]["run"] for n in names]
    rates = [results["codes"][n]["ratios"] for n in names]
    n = len(names)
    rows = [
        ("notebook's way: seconds per epoch (median of all rounds) / 500 epochs",
         [f"{nb['median_epoch_seconds']:.2f} / {nb['extrapolated_500_epochs_s']:.0f}"] * n),
        ("whole `shapes-pipeline run`, s (median)", [f"{r['wall_s']:.1f}" for r in runs]),
        ("**whole run in notebook epochs** (target at most 6)",
         [f"**{r['whole_run_in_notebook_epochs']:.1f}**" for r in rates]),
        ("extract + train steps, s", [f"{r['training_steps_s']:.1f}" for r in rates]),
        ("**their speed-up on the notebook's 500 epochs** (target at least 150x)",
         [f"**{r['training_steps_speedup']:.0f}x**" for r in rates]),
    ]  # fmt: skip
    for step in STEPS:
        cells = []
        for r in runs:
            seconds, peak, phases = (
                r["seconds"][step],
                r["peak_memory_mb"][step],
                r["phase_seconds"][step],
            )
            if seconds is None:
                cells.append("-")
                continue
            shares = ""
            if phases:
                shares = (
                    " ("
                    + ", ".join(
                        f"{p} {phases[p] / max(seconds, 1e-9):.0%}" for p in PHASES if phases[p]
                    )
                    + ")"
                )
            cells.append(f"{seconds:.1f} s, {peak} MB{shares}")
        rows.append((f"step {step}: seconds, peak memory (where the seconds go)", cells))
    lines = [
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        *(f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows),
    ]
    if "storing_run" in results:
        stored = results["storing_run"]
        lines += [
            "",
            f"The run that stored the backbone in the cache, before the rounds: whole run "
            f"{stored['wall_s']:.1f} s ({stored['ratios']['whole_run_in_notebook_epochs']:.1f} "
            f"notebook epochs), extract + train {stored['ratios']['training_steps_s']:.1f} s "
            f"({stored['ratios']['training_steps_speedup']:.0f}x).",
        ]
    if "digits" in results:
        lines += ["", "| digits variant | test accuracy (95% CI) | train step s | whole run s |",
                  "|---|---|---|---|"]  # fmt: skip
        for name, v in results["digits"]["variants"].items():
            low, high = v["accuracy_ci95"]
            lines.append(
                f"| {name} | {v['test_accuracy']:.3f} ({low:.3f}-{high:.3f}) | "
                f"{v['seconds']['train']:.1f} | {v['seconds']['total']:.1f} |"
            )
    return "\n".join(lines)
