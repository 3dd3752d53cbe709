"""Pipelines for ``local_run.run_locally``'s ``pipeline``: functions of no arguments that
build one, looked up by name in the run's child process, so they live in a module that
imports nothing heavy."""

import builtins

from shapes_pipeline.helpers.step import EVENT


def failing_train() -> object:
    """A run whose train step starts, prints an error line and a traceback's last line,
    and fails as kfp.local reports a failed task; on its way it swaps ``print`` for an
    indenting one, as kfp.local does while a task runs."""

    def run(**params: object) -> None:
        original = builtins.print
        builtins.print = lambda *args, **kwargs: original("    ", *args, **kwargs)
        print(EVENT + '{"event": "start", "step": "split"}')
        print(EVENT + '{"event": "end", "step": "split", "seconds": 1.0, "peak_memory_mb": 1}')
        print(EVENT + '{"event": "start", "step": "train"}')
        print("error: the planted failure")
        print("ValueError: a traceback's last line")
        raise RuntimeError("Task 'train' finished with status FAILURE")

    return run
