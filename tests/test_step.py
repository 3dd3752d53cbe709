"""A step's seconds, and where they went (what `make bench` reports per step)."""

import gc
import inspect
import json
import os
import subprocess
import sys
import time

from components import kfp_components
from components.step import EVENT, KERAS_EXTRAS, PHASES, lap, step


def test_a_step_records_where_its_seconds_went(capsys):
    metadata: dict = {}
    with step("x", metadata):
        time.sleep(0.05)
        lap("import")
        time.sleep(0.1)
        lap("build")
        time.sleep(0.03)  # after the last lap: work
    phases = metadata["phase_seconds"]
    assert list(phases) == list(PHASES)
    assert phases["import"] >= 0.05 and phases["build"] >= 0.1 and phases["work"] >= 0.03
    assert phases["trace"] == phases["save"] == 0
    assert abs(sum(phases.values()) - metadata["seconds"]) <= 0.03
    end = json.loads(capsys.readouterr().out.splitlines()[-1][len(EVENT) :])
    assert end["event"] == "end" and end["phase_seconds"] == phases


def test_each_step_starts_its_laps_afresh():
    first: dict = {}
    with step("one", first):
        time.sleep(0.05)
        lap("save")
    second: dict = {}
    with step("two", second):
        lap("import")
    assert first["phase_seconds"]["save"] >= 0.05
    assert second["phase_seconds"]["save"] == 0 and second["phase_seconds"]["import"] < 0.05


def _collectable(obj: object) -> bool:
    """Whether the collector's next sweeps would walk ``obj`` (frozen objects are not listed)."""
    return any(o is obj for o in gc.get_objects())


def test_imports_run_without_the_collector_and_what_they_loaded_is_frozen():
    """What makes a TensorFlow step's import and its process's exit faster (`make bench`)."""
    try:
        with step("x", {}):
            assert not gc.isenabled()  # importing
            loaded = [[]]
            lap("import")
            assert gc.isenabled() and not _collectable(loaded)
            built = [[]]
            assert _collectable(built)
        assert gc.isenabled() and not _collectable(built)  # the exit's sweep skips it
    finally:
        gc.unfreeze()
        gc.enable()


_LOADED = (
    "import json, sys\n{block}"
    "from components import extract, train\n"
    "from components.step import KERAS_EXTRAS\n"
    "print(json.dumps(sorted(m for m in KERAS_EXTRAS if sys.modules.get(m))))\n"
)


def _extras_loaded(*blocks: str) -> list[list[str]]:
    """Which of Keras' extras each fresh process loads, the processes run side by side."""
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _LOADED.format(block=block)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": "."},
        )
        for block in blocks
    ]
    outputs = [process.communicate()[0] for process in started]
    assert all(process.returncode == 0 for process in started)
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def test_extract_and_train_run_without_keras_extras():
    """The extract and train components keep what Keras imports for its integrations out of
    their processes (a third of their TensorFlow import, `make bench`); they still run
    (the end-to-end tests), and Keras still loads these without the block: when it no
    longer does, ``without_keras_extras`` has nothing left to save and can go."""
    block = "from components.step import without_keras_extras\nwithout_keras_extras()\n"
    assert _extras_loaded("", block) == [sorted(KERAS_EXTRAS), []]
    for name in ("extract", "train", "extract_and_train"):
        body = inspect.getsource(getattr(kfp_components, name).python_func)
        assert body.index("without_keras_extras()") < body.index("with step(")
