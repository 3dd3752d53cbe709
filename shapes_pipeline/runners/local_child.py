"""The process a local run's pipeline runs in: ``python -m shapes_pipeline.runners.local_child``.

``local_run.run_locally`` starts it with a :class:`Request` pickled on its standard input
and reads its standard output, which carries every line kfp.local and the steps print.
kfp.local swaps ``print`` and writes to the process's standard output while a task runs;
in a process of its own, that touches nothing of the caller's. The pipeline's outputs go
to ``Request.outputs`` as JSON; the exit status says how the run ended.
"""

from __future__ import annotations

import json
import pickle
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASK_FAILED = 3  # kfp.local raised: a task failed, its lines say which and why


@dataclass(frozen=True)
class Request:
    """What the child needs, pickled: ``runner`` a kfp.local runner (None: each step a
    subprocess of this Python), ``pipeline`` a function of no arguments returning the
    pipeline to run (None: the one ``compile`` writes, with no retry policy)."""

    params: dict[str, Any]
    run_dir: str
    cache_root: str
    cache: bool
    outputs: str
    runner: object | None = None
    pipeline: Callable[[], Callable] | None = None


def run(request: Request) -> int:
    """Runs the pipeline through kfp.local; writes its outputs (each artifact's path and
    metadata) to ``request.outputs``."""
    from kfp import local

    if request.pipeline is None:
        from shapes_pipeline.kubeflow.pipeline import make_pipeline

        # A step that fails here fails again: kfp.local would honour the cluster's retries.
        pipeline = make_pipeline(retry=False)
    else:
        pipeline = request.pipeline()
    # kfp.local says that it ignores base images and GPU requests: expected when local.
    warnings.filterwarnings("ignore", message=".*(base image|no effect in the current local)")
    local.init(
        runner=request.runner or local.SubprocessRunner(use_venv=False),
        pipeline_root=request.run_dir,
        enable_caching=request.cache,
        cache_root=request.cache_root,
    )
    try:
        outputs = pipeline(**request.params).outputs
    except RuntimeError as e:  # kfp.local: a task failed
        print(f"kfp.local: {e}")
        return TASK_FAILED
    found = {name: {"path": a.path, "metadata": a.metadata} for name, a in outputs.items()}
    Path(request.outputs).write_text(json.dumps(found))
    return 0


def main() -> int:
    """Reads the caller's ``sys.path`` and then the request from standard input: the
    caller's own modules (a test's pipeline) unpickle here as they would there."""
    sys.path[:] = pickle.load(sys.stdin.buffer)
    return run(pickle.load(sys.stdin.buffer))


if __name__ == "__main__":
    sys.exit(main())
