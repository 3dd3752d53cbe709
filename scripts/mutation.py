"""`make mutation`: every mutation of ``tests/mutations/``, one at a time, on a copy of
the code; each must make at least one of its tests fail.

The copy is the repository's tracked and untracked-but-not-ignored files, in a temporary
folder that comes first on ``PYTHONPATH``, so the tests, the CLI and kfp.local's step
processes all run the mutated code. A mutation whose text is no longer in its file is an
error, not a pass: the list is kept current with the code.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from mutations import MUTATIONS, Mutation  # noqa: E402


def copy_repo(target: Path, untracked: bool = True) -> None:
    """The repository's files as they are in the working tree: the tracked ones, and with
    ``untracked`` those git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", *(["--others", "--exclude-standard"] * untracked)],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        source = REPO / rel
        if source.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / rel)


def check(copy: Path, mutation: Mutation) -> str:
    """The file's text, if the mutation's ``old`` is in it exactly once."""
    text = (copy / mutation.file).read_text()
    found = text.count(mutation.old)
    if found != 1:
        raise SystemExit(
            f"error: mutation {mutation.name!r}: its text is in {mutation.file} {found} times "
            "(must be once); update tests/mutations/"
        )
    return text


def apply(copy: Path, mutation: Mutation) -> None:
    text = check(copy, mutation)
    (copy / mutation.file).write_text(text.replace(mutation.old, mutation.new))


def killed(copy: Path, mutation: Mutation, env: dict[str, str]) -> tuple[bool, str]:
    """Runs the mutation's tests once; (killed, the first failing test or the summary)."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o",
         "addopts=", *mutation.tests],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )  # fmt: skip
    lines = done.stdout.strip().splitlines()
    failed = [line.split(" ", 1)[1] for line in lines if line.startswith("FAILED")]
    if done.returncode == 1 and failed:
        return True, failed[0]
    return False, (lines[-1] if lines else f"pytest exit status {done.returncode}")


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("names", nargs="*", help="only the mutations whose names contain these")
    cli.add_argument("--output", default="test-artifacts/mutation.md", help="the table's file")
    args = cli.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.names or any(n in m.name for n in args.names)]
    rows, survivors = [], 0
    with tempfile.TemporaryDirectory(prefix="shapes-mutation-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        for mutation in chosen:  # a stale entry is refused before any test runs
            check(copy, mutation)
        env = {"HYPOTHESIS_PROFILE": "thorough", **os.environ, "PYTHONPATH": str(copy)}
        where = subprocess.run(
            [sys.executable, "-c", "import shapes_pipeline; print(shapes_pipeline.__file__)"],
            cwd=copy, env=env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        if not where.startswith(str(copy)):
            raise SystemExit(f"error: the tests would import the code from {where.strip()}")
        baseline = Mutation("none (the code as it is)", "", "", "", tuple(
            dict.fromkeys(t for m in chosen for t in m.tests)
        ))  # fmt: skip
        failed, detail = killed(copy, baseline, env)
        if failed or "passed" not in detail:
            raise SystemExit(f"error: the mutations' tests do not pass unmutated: {detail}")
        for mutation in chosen:
            original = (copy / mutation.file).read_text()
            apply(copy, mutation)
            started = time.perf_counter()
            outcomes = [killed(copy, mutation, env) for _ in range(mutation.repeat)]
            (copy / mutation.file).write_text(original)
            kills = sum(k for k, _ in outcomes)
            ok = kills == mutation.repeat
            survivors += not ok
            verdict = "killed" if ok else "SURVIVED"
            if mutation.repeat > 1:
                verdict += f" {kills}/{mutation.repeat}"
            by = next((detail for k, detail in outcomes if k), outcomes[-1][1])
            test = by.split(" - ")[0]
            rows.append(f"| {mutation.name} | `{mutation.file}` | `{test}` | {verdict} |")
            print(f"{verdict:>10}  {time.perf_counter() - started:6.1f} s  {mutation.name}")
            print(f"{'':20}{by[:160]}")
    header = "| mutation | file | killed by (first failing test) | result |\n|---|---|---|---|"
    table = "\n".join([header, *rows])
    print(f"\n{table}\n\n{len(chosen) - survivors} of {len(chosen)} mutations killed")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(table + "\n")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
