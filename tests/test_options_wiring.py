"""In the compiled pipeline (both the fanned-out one and the one-task one), each step's
input is wired to the pipeline parameter of its name, never a constant, and every pipeline
parameter reaches a step: so an option given to a run is the one its steps use. The
parameters come from the parameter table (``shapes_pipeline.runners.parameters``), so a
parameter added later is covered."""

import pytest
import yaml
from helpers import pipeline_inputs
from kfp import compiler
from kfp import components as kfp_components

from shapes_pipeline.kubeflow import pipeline

INPUTS = pipeline_inputs()
# A step input named otherwise than the pipeline parameter it takes.
RENAMED = {"groups": "extract_workers"}


def sources(doc: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(step's task, its input parameter) -> where its value comes from, followed through
    loops and conditions: ("parameter", name), ("task", producer), ("loop item", name) or
    ("constant", value). Each task whose component is itself a DAG is followed into it."""
    found = {}

    def follow(dag: dict, outer: dict) -> None:
        for task_name, task in dag["tasks"].items():
            inner = {}
            for key, given_by in task.get("inputs", {}).get("parameters", {}).items():
                if "componentInputParameter" in given_by:
                    name = given_by["componentInputParameter"]
                    inner[key] = outer.get(name, ("loop item", name))
                elif "taskOutputParameter" in given_by:
                    inner[key] = ("task", given_by["taskOutputParameter"]["producerTask"])
                else:
                    inner[key] = ("constant", given_by["runtimeValue"]["constant"])
            component = doc["components"][task["componentRef"]["name"]]
            if "dag" in component:
                follow(component["dag"], inner)
                continue
            declared = set(component.get("inputDefinitions", {}).get("parameters", {}))
            # an input left out takes the component's default: a constant in disguise
            for key in declared - set(inner):
                inner[key] = ("constant", "<the component's default>")
            found.update({(task_name, key): source for key, source in inner.items()})

    follow(doc["root"]["dag"], {name: ("parameter", name) for name in INPUTS})
    return found


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """The pipeline every run uses, compiled and read back by KFP's own loader."""
    path = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    compiler.Compiler().compile(pipeline.shapes_pipeline, str(path))
    loaded = kfp_components.load_component_from_file(str(path))
    assert set(loaded.component_spec.inputs) == set(INPUTS)
    return next(yaml.safe_load_all(path.read_text()))


def test_every_step_input_comes_from_its_pipeline_parameter_never_a_constant(compiled):
    """A step's input named after a pipeline parameter (or renamed, RENAMED) is wired to
    that parameter; every other input is an upstream task's output, a loop item or one of
    KFP's run placeholders, never a value fixed when compiling (a hard-coded default, or a
    component default that pipeline.py left in place). And every parameter reaches a step."""
    wired = sources(compiled)
    wrong = {}
    for (task, key), source in wired.items():
        expected = RENAMED.get(key, key)
        if expected in INPUTS:
            if source != ("parameter", expected):
                wrong[(task, key)] = source
        elif source[0] == "parameter" or (
            source[0] == "constant" and not str(source[1]).startswith("{{$.")
        ):
            wrong[(task, key)] = source
    assert not wrong, f"step inputs not wired to their parameter: {wrong}"
    reached = {source[1] for source in wired.values() if source[0] == "parameter"}
    assert set(INPUTS) - reached == set()
