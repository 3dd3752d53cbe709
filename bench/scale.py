"""`make bench-scale`: the whole pipeline at growing sizes, step by step.

For each size, demo shapes are generated once, then ``shapes-pipeline run`` runs on them
(MobileNetV3Small, ``--weights none``, 96 px, 3 epochs) with each ``--extract-workers``
value. Each step's seconds and peak memory (its process's maximum resident set) come from
the run's summary. ``--before REV`` also runs the code of git revision REV (checked out
in a temporary worktree and put first on ``PYTHONPATH``) on the same data, side by side.

Writes ``bench/scale.json`` and prints the Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.worktree import checkouts, cli_module  # noqa: E402

SETTINGS = ["--backbone", "MobileNetV3Small", "--weights", "none", "--image-size", "96",
            "--epochs", "3", "--min-accuracy", "0"]  # fmt: skip


def run(code: Path, data: Path, work: Path, workers: int | None) -> dict:
    """One whole run of the code in ``code``; its summary's timings and memory."""
    summary = work / "summary.json"
    extra = ["--extract-workers", str(workers)] if workers else []
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", cli_module(code), "run", "--data", str(data),
         "--registry", str(work / "registry"), "--pipeline-root", str(work / "runs"),
         "--summary", str(summary), "-q", *SETTINGS, *extra],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run failed ({code}, {workers}):\n{done.stdout}\n{done.stderr}")
    facts = json.loads(summary.read_text())
    return {
        "wall_s": round(wall, 1),
        "seconds": facts["timings_s"],
        "peak_mb": facts["peak_memory_mb"],
        "accuracy": facts["test_accuracy"],
    }


def table(results: list[dict]) -> str:
    steps = ["split", "plan", "extract", "train", "evaluate", "export"]
    lines = [
        "| code | images | extract workers | whole run s | ms per image | "
        + " | ".join(f"{s} s / peak MB" for s in steps)
        + " |",
        "|---" * (5 + len(steps)) + "|",
    ]
    for r in results:
        cells = []
        for s in steps:
            seconds, peak = r["seconds"].get(s), r["peak_mb"].get(s)
            cells.append("-" if seconds is None else f"{seconds:.1f} / {peak or '-'}")
        total = r["seconds"]["total"]
        lines.append(
            f"| {r['code']} | {r['images']:,} | {r['workers'] or '-'} | {total:.1f} | "
            f"{1000 * total / r['images']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__)
    cli.add_argument("--sizes", type=int, nargs="+", default=[3000, 30000])
    cli.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    cli.add_argument("--before", help="git revision to measure side by side")
    cli.add_argument("--output", default=str(REPO / "bench" / "scale.json"))
    args = cli.parse_args()
    from shapes_pipeline.helpers.demo_data import generate

    results = []
    with (
        tempfile.TemporaryDirectory(prefix="shapes-scale-") as tmp,
        checkouts([args.before] if args.before else [], Path(tmp)) as trees,
    ):
        tmp = Path(tmp)
        codes = [(f"before ({rev})", tree, [None]) for rev, tree in trees.items()]
        codes.append(("after", REPO, args.workers))
        for size in args.sizes:
            data = tmp / f"data-{size}"
            generate(str(data), per_class=size // 3, seed=0)
            for name, code, workers in codes:
                for w in workers:
                    work = tmp / f"work-{size}-{len(results)}"
                    work.mkdir()
                    result = {"code": name, "images": size, "workers": w,
                              **run(code, data, work, w)}  # fmt: skip
                    print(json.dumps(result), flush=True)
                    results.append(result)
    Path(args.output).write_text(json.dumps({"settings": SETTINGS, "runs": results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
