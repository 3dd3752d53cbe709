"""The compiled spec, checked by loading it with KFP, and the CLI's parameters."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import pipeline_inputs
from kfp import components

from shapes_pipeline.helpers import settings
from shapes_pipeline.helpers.step import InputError
from shapes_pipeline.kubeflow import pipeline
from shapes_pipeline.kubeflow.components import kfp_components
from shapes_pipeline.runners import cli, cluster


def pipeline_doc(spec) -> dict:
    """The pipeline spec; the second YAML document is the Kubernetes platform spec."""
    return next(yaml.safe_load_all(spec.read_text()))


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    cluster.compile_pipeline(str(path), 2, ["cloud.google.com/gke-accelerator=nvidia-l4"], 3)
    return path


def test_spec_loads_in_kfp_with_extract_fanned_out(spec):
    loaded = components.load_component_from_file(str(spec))
    assert loaded.name == settings.PIPELINE_NAME
    doc = pipeline_doc(spec)
    root = doc["root"]["dag"]["tasks"]
    assert set(root) == {"split", "plan", "for-loop-1", "train", "evaluate", "condition-2"}
    assert set(doc["components"]["comp-condition-2"]["dag"]["tasks"]) == {"export"}
    loop = root["for-loop-1"]
    assert loop["iteratorPolicy"] == {"parallelismLimit": 3}  # compile's --extract-parallelism
    assert loop["parameterIterator"]["items"] == {"inputParameter": "pipelinechannel--plan-Output"}
    assert set(doc["components"]["comp-for-loop-1"]["dag"]["tasks"]) == {"extract"}
    extract_inputs = doc["components"]["comp-for-loop-1"]["dag"]["tasks"]["extract"]["inputs"]
    assert extract_inputs["parameters"]["group"] == {
        "componentInputParameter": "pipelinechannel--plan-Output-loop-item"
    }
    for step in ("train", "evaluate"):  # one artifact per group, collected
        features = root[step]["inputs"]["artifacts"]["features"]["taskOutputArtifact"]
        assert features == {
            "outputArtifactKey": "pipelinechannel--extract-features",
            "producerTask": "for-loop-1",
        }


def test_extract_and_train_ask_for_gpus_and_tolerate_gpu_nodes(spec):
    docs = list(yaml.safe_load_all(spec.read_text()))
    executors = docs[0]["deploymentSpec"]["executors"]
    for step in ("extract", "train"):
        container = executors[f"exec-{step}"]["container"]
        assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert container["resources"]["accelerator"]["resourceCount"] == "2"
        assert container["image"] == kfp_components.GPU_IMAGE
    train = executors["exec-train"]["container"]
    assert train["resources"]["cpuRequest"] == 4.0 and train["resources"]["memoryRequest"] == 8.0
    for step in ("split", "plan", "evaluate", "export"):
        assert executors[f"exec-{step}"]["container"]["image"] == kfp_components.CPU_IMAGE
        assert "accelerator" not in executors[f"exec-{step}"]["container"].get("resources", {})
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for step in ("extract", "train"):
        assert platform[f"exec-{step}"]["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
        ]
        assert platform[f"exec-{step}"]["nodeSelector"]["labels"] == {
            "cloud.google.com/gke-accelerator": "nvidia-l4"
        }
    assert set(platform) == {"exec-extract", "exec-train"}


def test_one_image_for_every_step_changes_the_images_and_nothing_else(tmp_path, spec):
    """``make_pipeline(images=...)`` (the offline container run: one image for both) puts
    each of the six steps in its image, on this build only: the spec is otherwise the
    cluster's."""
    from kfp import compiler

    path = tmp_path / "one-image.yaml"
    selector = {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    built = pipeline.make_pipeline(selector, 2, 3, images=("localhost/one:1", "localhost/one:1"))
    compiler.Compiler().compile(built, str(path))
    one, cluster_spec = pipeline_doc(path), pipeline_doc(spec)
    executors = one["deploymentSpec"]["executors"]
    assert len(executors) == 6
    assert {e["container"]["image"] for e in executors.values()} == {"localhost/one:1"}
    for executor in cluster_spec["deploymentSpec"]["executors"].values():
        executor["container"]["image"] = "localhost/one:1"
    assert one == cluster_spec
    compiler.Compiler().compile(pipeline.make_pipeline(selector, 2, 3), str(tmp_path / "a.yaml"))
    assert pipeline_doc(tmp_path / "a.yaml") == pipeline_doc(spec)  # the components untouched


def test_extract_parallelism_is_checked_and_defaults_to_extract_workers(tmp_path):
    with pytest.raises(InputError, match="--extract-parallelism 0: must be between 1 and 100"):
        cluster.compile_pipeline(str(tmp_path / "p.yaml"), 1, [], 0)
    args = cli.parser().parse_args(["compile"])
    assert args.extract_parallelism == settings.DEFAULT_EXTRACT_WORKERS


def test_export_runs_only_past_the_gate(spec):
    doc = pipeline_doc(spec)
    gate = doc["root"]["dag"]["tasks"]["condition-2"]
    assert gate["taskInfo"]["name"] == "gate"
    assert "evaluate" in gate["dependentTasks"]
    condition = gate["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    evaluate_inputs = doc["root"]["dag"]["tasks"]["evaluate"]["inputs"]["parameters"]
    assert {"registry", "model_name", "min_accuracy", "max_regression"} <= set(evaluate_inputs)


def test_components_do_not_install_packages_at_run_time(spec):
    executors = pipeline_doc(spec)["deploymentSpec"]["executors"]
    for executor in executors.values():
        assert "pip install" not in " ".join(executor["container"]["command"])


def test_compiled_defaults_and_run_defaults(spec):
    params = pipeline_doc(spec)["root"]["inputDefinitions"]["parameters"]
    assert params["weights"]["defaultValue"] == "imagenet"
    assert params["backbone"]["defaultValue"] == "InceptionResNetV2"
    assert params["image_size"]["defaultValue"] == 128
    assert params["epochs"]["defaultValue"] == 500
    assert params["seed"]["defaultValue"] == 230
    assert "defaultValue" not in params["data"]
    args = cli.parser().parse_args(["run"])
    assert args.weights == "auto" and args.image_size == 128 and args.data is None


def test_kfps_own_compiler_takes_the_module(tmp_path):
    """``kfp dsl compile --py pipeline.py`` (KFP's CLI) and ``python pipeline.py`` both
    find the pipeline at module level and write the same spec as ``compile``."""
    repo = Path(pipeline.__file__).parent
    kfp_cli = Path(sys.executable).with_name("kfp")
    subprocess.run(
        [kfp_cli, "dsl", "compile", "--py", repo / "pipeline.py", "--output", tmp_path / "a.yaml"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, repo / "pipeline.py"], cwd=tmp_path, check=True, capture_output=True
    )
    assert (tmp_path / "a.yaml").read_text() == (tmp_path / "pipeline.yaml").read_text()
    assert pipeline_doc(tmp_path / "a.yaml")["pipelineInfo"]["name"] == settings.PIPELINE_NAME


def test_parameter_help_comes_from_the_pipelines_docstring(spec):
    """One text per parameter: the pipeline function's ``Args:``, which KFP copies into the
    compiled spec and the CLI shows as each option's help."""
    params = pipeline_doc(spec)["root"]["inputDefinitions"]["parameters"]
    help_text = cli.parser()._subparsers._group_actions[0].choices["run"].format_help()
    for name, described in params.items():
        words = " ".join(described["description"].split())
        assert words and words[:40] in " ".join(help_text.split()), name


def test_the_pipeline_parameters_are_the_table():
    """KFP's view of the pipeline (what its UI shows) is the parameter table: each name in
    order, its type, default and help."""
    kfp_types = {str: "String", int: "Integer", float: "Float", bool: "Boolean"}
    inputs = pipeline_inputs()
    assert list(inputs) == [p.name for p in settings.PARAMETERS]
    for p in settings.PARAMETERS:
        spec = inputs[p.name]
        assert (spec.type, spec.default) == (kfp_types[p.kind], p.default), p.name
        assert " ".join(spec.description.split()) == p.help, p.name


def test_compile_names_the_images_from_its_options(tmp_path):
    """``--image-repository``/``--image-tag`` (shown in ``compile --help``) name each
    step's image: the GPU image for extract and train, the CPU image for the rest."""
    from helpers import cli_here

    done = cli_here("compile", "-o", "p.yaml", "--image-repository", "eu.gcr.io/p/shapes",
                    "--image-tag", "2.0", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    executors = pipeline_doc(tmp_path / "p.yaml")["deploymentSpec"]["executors"]
    images = {name.removeprefix("exec-"): e["container"]["image"] for name, e in executors.items()}
    gpu = {"extract", "train"}
    assert (
        images
        == {step: f"eu.gcr.io/p/shapes-{'gpu' if step in gpu else 'cpu'}:2.0" for step in images}
        and len(images) == 6
    )
    assert "--image-repository" in cli_here("compile", "--help", cwd=tmp_path).stdout
    refused = cli_here("compile", "-o", "q.yaml", "--image-tag", "a b", cwd=tmp_path)
    assert refused.returncode == 2 and "--image-tag a b: not an image tag" in refused.stderr
    assert not (tmp_path / "q.yaml").exists()
