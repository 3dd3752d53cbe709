"""`make mutation`, generated part: mutmut's mutants of the modules whose logic is plain
Python, scored per module.

The curated list of ``tests/mutations/`` holds the bugs its authors thought of; these are
the ones nobody chose. mutmut (configured in ``pyproject.toml``) runs in ``.mutation/``, a
copy of the tracked files as they are in the working tree (scratch files cannot break it),
writes every mutant into ``.mutation/mutants/`` and runs, for each, the tests that reach
its function. A module passes at ``--target`` killed; every survivor must be explained in
``docs/testing.md``'s table of surviving mutants, and one that no longer survives must
leave it, so the table stays the truth about today's code. ``--again`` reruns only the last
run's survivors against today's tests (the loop while writing tests); ``--modules`` and
``--work`` run part of the scope in a copy of one's own; ``cd .mutation && mutmut show
NAME`` prints a mutant's change.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mutation import copy_repo  # noqa: E402

# Module -> the functions in scope (None: all of them). The rest of a listed module is
# TensorFlow work, which the curated list covers (mutants of it take minutes each).
SCOPE: dict[str, tuple[str, ...] | None] = {
    "split": None,
    "shards": ("plan", "write", "read_index", "of_group", "groups", "checked", "count_records"),
    "archive": None,
    "parameters": None,
    "registry": None,
    "storage": None,
    "evaluate": ("wilson_interval", "stratified_sample", "class_change", "decide"),
    "predictions": None,
    "verify": ("verify",),
    "export": None,
    "preflight": None,
}
# mutmut's exit codes of a mutant its tests failed on. A timeout is not counted: a
# TensorFlow test hangs in a forked process whatever the mutant (seen with mutmut's
# default isolation), so a timeout proves nothing until it is looked at.
DETECTED = {1, 3}
LAYERS = ("steps", "helpers", "runners")
TIMEOUTS = {24, -24, 152, 255, 36}


def explained() -> set[str]:
    """The mutants ``docs/testing.md`` explains: the first cell of each row of the table
    under its "Surviving mutants" heading, a mutant's name in backticks."""
    text = (REPO / "docs" / "testing.md").read_text()
    section = text.split("### Surviving mutants", 1)[-1].split("\n#", 1)[0]
    return set(re.findall(r"^\| `(shapes_pipeline\.[\w.]+)`", section, re.MULTILINE))


def dotted(module: str) -> str:
    """A module in scope by its import name, which starts mutmut's names of its mutants."""
    (layer,) = [f for f in LAYERS if (REPO / "shapes_pipeline" / f / f"{module}.py").is_file()]
    return f"shapes_pipeline.{layer}.{module}"


def patterns(modules: list[str]) -> list[str]:
    """mutmut's name globs for the functions in scope of ``modules``."""
    globs = []
    for module in modules:
        functions = SCOPE[module]
        prefix = f"{dotted(module)}.x"
        globs += (
            [f"{prefix}*"] if functions is None else [f"{prefix}_{f}__mutmut_*" for f in functions]
        )
    return globs


def function_glob(text: str) -> str:
    """``module.function`` (in scope) as mutmut's name glob of that function's mutants."""
    module, _, function = text.partition(".")
    if module not in SCOPE or not function or function not in (SCOPE[module] or (function,)):
        raise argparse.ArgumentTypeError(f"{text}: not a function in scope (module.function)")
    return f"{dotted(module)}.x_{function}__mutmut_*"


def results(work: Path, modules: list[str]) -> dict[str, int | None]:
    """Every in-scope mutant's exit code, from mutmut's per-file records."""
    globs = patterns(modules)
    codes: dict[str, int | None] = {}
    for module in modules:
        meta = work / "mutants" / Path(*dotted(module).split(".")).with_suffix(".py.meta")
        if meta.is_file():
            found = json.loads(meta.read_text())["exit_code_by_key"]
            codes.update({k: v for k, v in found.items() if any(fnmatch(k, g) for g in globs)})
    return codes


def table(
    codes: dict[str, int | None], modules: list[str], target: float
) -> tuple[list[str], list[str]]:
    """The per-module lines, and the modules below ``target``. A mutant not run (an
    interrupted run) or timed out counts as not killed, and is shown."""
    total: Counter[str] = Counter()
    killed: Counter[str] = Counter()
    unrun: Counter[str] = Counter()
    slow: Counter[str] = Counter()
    for name, code in codes.items():
        module = name.split(".")[2]
        total[module] += 1
        killed[module] += code in DETECTED
        unrun[module] += code is None
        slow[module] += code in TIMEOUTS
    lines = [
        "| module | mutants | killed | survived | timed out | not run | score |",
        "|---|---|---|---|---|---|---|",
    ]
    low = []
    for module in [*modules, None]:
        n, k, u, t = (
            (c[module] for c in (total, killed, unrun, slow))
            if module
            else (sum(c.values()) for c in (total, killed, unrun, slow))
        )
        score = k / n if n else 1.0
        name = f"`{module}.py`" if module else "all"
        lines.append(f"| {name} | {n} | {k} | {n - k - u - t} | {t} | {u} | {score:.1%} |")
        if module and score < target:
            low.append(module)
    return lines, low


def refresh(work: Path, keep_results: bool) -> None:
    """``work`` as a new copy of the repository; mutmut's results kept if asked. Its record
    of which tests reach which function is never kept: mutmut refreshes it only for
    functions that changed, so a test written since for an unchanged one would not run."""
    for entry in work.glob("*") if work.exists() else []:
        if not (keep_results and entry.name == "mutants"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    work.mkdir(exist_ok=True)
    copy_repo(work, untracked=False)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--target", type=float, default=0.9, help="least share killed per module")
    cli.add_argument("--report-only", action="store_true", help="score the last run again")
    cli.add_argument("--again", action="store_true", help="rerun the last run's survivors")
    cli.add_argument(
        "--functions",
        nargs="+",
        type=function_glob,
        metavar="MODULE.FUNCTION",
        help="rerun only these functions' mutants (after changing them), keeping the rest",
    )
    cli.add_argument("--output", default="test-artifacts/mutants.md", help="the table's file")
    cli.add_argument("--modules", nargs="+", choices=list(SCOPE), default=list(SCOPE))
    cli.add_argument("--work", type=Path, default=REPO / ".mutation", help="mutmut's copy")
    args = cli.parse_args(argv)
    started = time.monotonic()
    work, modules = args.work.resolve(), args.modules
    if not args.report_only:
        last = results(work, modules)
        names = [k for k, v in last.items() if v not in DETECTED] if args.again else []
        names += args.functions or []
        refresh(work, keep_results=args.again or bool(args.functions))
        subprocess.run(
            [str(Path(sys.executable).parent / "mutmut"), "run", *(names or patterns(modules))],
            cwd=work,
            env={"HYPOTHESIS_PROFILE": "ci", **os.environ},
            check=True,
        )
    codes = results(work, modules)
    lines, low = table(codes, modules, args.target)
    survived = sorted(k for k, v in codes.items() if v not in DETECTED)
    documented = explained()
    unexplained = [s for s in survived if s not in documented]
    stale = sorted(n for n in documented - set(survived) if n.split(".")[2] in modules)
    seconds = time.monotonic() - started
    lines.append(
        f"\nsurvivors: {len(survived)}, explained in docs/testing.md: "
        f"{len(survived) - len(unexplained)}; {seconds:.0f} s"
    )
    lines += [
        f"not run: {n}" if codes[n] is None else f"unexplained: {n}  (mutmut show {n})"
        for n in unexplained
    ]
    lines += [f"no longer a survivor, remove it from docs/testing.md: {n}" for n in stale]
    Path(REPO, args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(REPO, args.output).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if low or unexplained or stale else 0


if __name__ == "__main__":
    sys.exit(main())
