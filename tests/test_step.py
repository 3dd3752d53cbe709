"""A step's seconds, and where they went (what `make bench` reports per step)."""

import json
import time

from shapes_pipeline.helpers.step import EVENT, PHASES, lap, step


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
