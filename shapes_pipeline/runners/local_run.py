"""The whole pipeline on this machine through ``kfp.local``: what ``shapes-pipeline run``,
``scripts/e2e_containers.py`` and ``bench/run.py`` all call.

Each run has a folder of its own, ``<pipeline root>/<run id>/``, which is kfp.local's
pipeline root for that run, so two runs sharing a pipeline root never see each other's
outputs; kfp.local's cache is shared in ``<pipeline root>/.kfp_cache``. Results are the
pipeline's declared outputs, as kfp.local returns them. Everything a step prints
(kfp.local's lines, TensorFlow's, a failure's traceback) goes to ``<run>/logs/<step>.log``;
the console gets a line as each step starts and ends, and one progress line for training.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import pickle
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from shapes_pipeline.helpers import registry
from shapes_pipeline.helpers.facts import Evaluation, Summary, TrainingFacts
from shapes_pipeline.helpers.step import parse_event
from shapes_pipeline.runners import local_child

STEPS = ("split", "plan", "extract", "train", "evaluate", "export")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TAIL_LINES = 20


class StepFailed(Exception):
    """A step of the run failed; its error line, the end of its log and the log's path."""

    def __init__(self, step: str, error: str, log: Path, tail: list[str]):
        super().__init__(f"step {step!r} failed: {error}")
        self.step, self.error, self.log, self.tail = step, error, log, tail


class Console:
    """What the user sees. ``verbosity``: 0 nothing but the result, 1 a line per step and a
    training progress line, 2 every line the steps print, as kfp.local prints them."""

    def __init__(self, stream: TextIO, verbosity: int = 1):
        self.stream, self.verbosity = stream, verbosity
        self.tty = stream.isatty()
        self._progress_shown = 0.0
        self._open_line = False

    def say(self, text: str) -> None:
        if self.verbosity >= 1:
            self._end_progress()
            print(text, file=self.stream, flush=True)

    def raw(self, line: str) -> None:
        if self.verbosity >= 2:
            print(line if self.tty else ANSI.sub("", line), file=self.stream, flush=True)

    def progress(self, text: str) -> None:
        """One updating line on a terminal; elsewhere a line every few seconds."""
        if self.verbosity != 1:
            return
        if self.tty:
            print(f"\r{text[:110]:<110}", end="", file=self.stream, flush=True)
            self._open_line = True
        elif time.monotonic() - self._progress_shown >= 5:
            print(text, file=self.stream, flush=True)
            self._progress_shown = time.monotonic()

    def _end_progress(self) -> None:
        if self._open_line:
            print(file=self.stream, flush=True)
            self._open_line = False


class StepLogs(io.TextIOBase):
    """The output of a run's child process: each line goes to the running step's log
    (before the first step, to ``run.log``), and the steps' events to the console.

    kfp.local runs a ``ParallelFor``'s tasks on threads at once: their lines share one log
    (``extract.log``), and the step ends when every task that started has ended.
    """

    def __init__(self, log_dir: Path, console: Console):
        self.log_dir, self.console = log_dir, console
        log_dir.mkdir(parents=True, exist_ok=True)
        self.files = {"run": open(log_dir / "run.log", "w")}  # noqa: SIM115 (closed in close)
        self.current = "run"
        self.started: dict[str, float] = {}
        self.running: Counter[str] = Counter()
        self.ended: dict[str, dict] = {}
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line: str) -> None:
        event = parse_event(ANSI.sub("", line).strip())
        if event and event["event"] == "start" and event["step"] in STEPS:
            self._start(event)
        self.files[self.current].write(ANSI.sub("", line) + "\n")
        self.files[self.current].flush()
        self.console.raw(line)
        if not event:
            return
        if event["event"] == "epoch":
            self.console.progress(
                f"{self._label('train')}  epoch {event['epoch']}/{event['epochs']}  "
                f"loss {event['loss']:.4f}  val_loss {_number(event.get('val_loss'))}"
            )
        elif event["event"] == "end" and event["step"] in STEPS:
            self._end(event)

    def _start(self, event: dict) -> None:
        step = event["step"]
        self.current = step
        if step not in self.files:
            self.files[step] = open(self.log_dir / f"{step}.log", "w")  # noqa: SIM115
            self.started[step] = time.monotonic()
        self.running[step] += 1
        group = f" (group {event['group']})" if "group" in event else ""
        self.console.say(f"{self._label(step)}  started{group}")

    def _end(self, event: dict) -> None:
        """A step's end; for a step of several tasks, its seconds are from the first start
        to the last end, its peak memory the largest task's, its phases the longest's."""
        step = event["step"]
        self.running[step] -= 1
        before = self.ended.get(step, {})
        longest = max(before, event, key=lambda e: e.get("task_seconds", e.get("seconds", 0)))
        self.ended[step] = {
            **event,
            "seconds": round(time.monotonic() - self.started[step], 2)
            if before
            else event["seconds"],
            "peak_memory_mb": max(event["peak_memory_mb"], before.get("peak_memory_mb", 0)),
            "tasks": before.get("tasks", 0) + 1,
            "task_seconds": longest.get("task_seconds", longest.get("seconds")),
            "phase_seconds": longest.get("phase_seconds"),
        }
        group = f" (group {event['group']})" if "group" in event else ""
        self.console.say(f"{self._label(step)}  {'.' * 8}  {event['seconds']:.1f} s{group}")

    def _label(self, step: str) -> str:
        return f"[{STEPS.index(step) + 1}/{len(STEPS)}] {step:<8}"

    def failed(self) -> StepFailed:
        """The step that started and did not end, with its error line and log's end."""
        self.flush_pending()
        running = [s for s in self.started if self.running[s] > 0]
        step = running[-1] if running else "run"
        log = self.log_dir / f"{step}.log"
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        errors = [line.strip() for line in lines if line.strip().startswith("error: ")]
        raised = [line.strip() for line in lines if re.match(r"\s*\w+(Error|Exception): ", line)]
        error = (errors or raised or ["see its log"])[-1]
        return StepFailed(step, error.removeprefix("error: "), log, lines[-TAIL_LINES:])

    def flush_pending(self) -> None:
        if self._pending:
            self._line(self._pending)
            self._pending = ""

    def close(self) -> None:
        self.flush_pending()
        for file in self.files.values():
            file.close()
        super().close()


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def new_run_dir(pipeline_root: str | Path) -> Path:
    """``<pipeline root>/<UTC time>-<random>``: sorts by time, unique for runs at once."""
    now = dt.datetime.now(dt.UTC)
    return Path(pipeline_root).resolve() / f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def run_locally(
    params: dict,
    *,
    pipeline_root: str | Path,
    runner: object | None = None,
    cache: bool = False,
    console: Console | None = None,
    pipeline: Callable[[], Callable] | None = None,
    run_dir: Path | None = None,
) -> Summary:
    """Runs the pipeline with ``params`` (every pipeline parameter, already checked) and
    returns the summary. Raises :class:`StepFailed` when a step fails.

    kfp.local runs in a child process (``local_child``), and every line it and the steps
    print is read from that process's output: this process's ``print`` and standard
    streams stay as they are.
    ``runner``: a kfp.local runner (default: each step a subprocess of this Python);
    ``pipeline``: a picklable function of no arguments that builds another pipeline
    (default: the one ``compile`` writes, with no retry policy);
    ``run_dir``: a folder of the caller's
    (the container runner mounts only it) instead of a new one under ``pipeline_root``.
    """
    console = console or Console(sys.stdout)
    run_dir = Path(run_dir or new_run_dir(pipeline_root)).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    request = local_child.Request(
        params=params,
        run_dir=str(run_dir),
        cache_root=str(Path(pipeline_root).resolve() / ".kfp_cache"),
        cache=cache,
        outputs=str(run_dir / "outputs.json"),
        runner=runner,
        pipeline=pipeline,
    )
    started = time.perf_counter()
    logs = StepLogs(run_dir / "logs", console)
    try:
        status = _run_child(request, logs)
        if status != 0:
            raise logs.failed()
    finally:
        logs.close()
    outputs = {
        name: Output(**found)
        for name, found in json.loads(Path(request.outputs).read_text()).items()
    }
    return summarize(params, outputs, run_dir, logs.ended, time.perf_counter() - started)


@dataclass(frozen=True)
class Output:
    """One of the pipeline's output artifacts, as the child process found it."""

    path: str
    metadata: dict


def _run_child(request: local_child.Request, logs: StepLogs) -> int:
    """Starts ``local_child`` with ``request``, feeds its output to ``logs`` line by line
    as it comes, and returns its exit status. Stopped (Ctrl-C), it stops the child too."""
    command = [sys.executable, "-m", local_child.__name__]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # each line as it is printed
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
    ) as child:
        try:
            pickle.dump(sys.path, child.stdin)
            pickle.dump(request, child.stdin)
            child.stdin.close()
            for line in child.stdout:
                logs.write(line.decode("utf-8", "replace"))
            return child.wait()
        finally:
            if child.poll() is None:
                child.kill()


def summarize(
    params: dict, outputs: dict[str, Output], run_dir: Path, ended: dict[str, dict], seconds: float
) -> Summary:
    """The run's summary, from the pipeline's outputs and the steps' end events."""
    from shapes_pipeline.helpers import report

    evaluation: Evaluation = json.loads(Path(outputs["evaluation"].path).read_text())
    # The train step's own metadata also holds what came after training.json was written
    # (the SavedModel's save time), and its step's seconds and peak memory.
    # (KFP's metadata holds every number as a float: training.json's own values win.)
    training: TrainingFacts = {**outputs["model"].metadata, **evaluation["training"]}
    gate = evaluation["gate"]
    published = (
        registry.find_by_content(
            params["registry"], params["model_name"], evaluation["model_sha256"]
        )
        if gate["passed"]
        else None
    )
    made_here = {
        "split": _inside(outputs["dataset"].path, run_dir),
        "train": _inside(outputs["model"].path, run_dir),
    }
    # Each step's seconds and peak memory: from its end event, else (a runner that lost the
    # last lines of a container's log) from the metadata of its output, if it ran here.
    figures = {
        step: ended.get(step) or (made_here.get(step, True) and outputs[output].metadata) or {}
        for step, output in (("split", "dataset"), ("train", "model"), ("evaluate", "evaluation"))
    }
    figures.update({s: ended.get(s, {}) for s in ("plan", "extract", "export")})
    logs_written = {p.stem for p in (run_dir / "logs").glob("*.log")}
    report_html = run_dir / "report.html"  # the KFP artifact has no extension
    report_html.write_bytes(Path(outputs["report"].path).read_bytes())
    return Summary(
        parameters=params,
        test_accuracy=evaluation["test_accuracy"],
        accuracy_ci95=evaluation["accuracy_ci95"],
        classes=evaluation["classes"],
        confusion_matrix=evaluation["confusion_matrix"],
        classification_report=evaluation["classification_report"],
        gate=gate,
        exported=published is not None,
        model_uri=published["uri"] if published else None,
        report_uri=outputs["report"].path,
        report_html=str(report_html),
        predictions_uri=outputs["predictions"].path,
        trained_model_uri=outputs["model"].path,
        dataset_uri=outputs["dataset"].path,
        tensorboard_logdir=str(Path(outputs["model"].path, "logs")),
        backbone=training["backbone"],
        weights=training["weights"],
        warnings=evaluation["warnings"],
        epochs_run=training["epochs_run"],
        best_epoch=training["best_epoch"],
        early_stopping=training["early_stopping"],
        training_outcome=report.training_outcome(training),
        caching=training["caching"],
        precision=training["precision"],
        devices=training["devices"],
        training=training,
        timings_s={
            **{s: round(figures[s].get("seconds", 0.0), 2) for s in STEPS},
            "total": round(seconds, 2),
        },
        peak_memory_mb={s: figures[s].get("peak_memory_mb") for s in STEPS},
        phase_seconds={s: figures[s].get("phase_seconds") for s in STEPS},
        run_dir=str(run_dir),
        logs={s: str(run_dir / "logs" / f"{s}.log") for s in STEPS if s in logs_written},
        reused=[step for step, here in made_here.items() if not here],
    )


def _inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder)
