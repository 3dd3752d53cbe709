"""The layers point one way, they are the folders, and nothing imports in a circle: the
runners (``shapes_pipeline/runners/``) on top, then the DAG (``pipeline.py``), then the KFP
components (``components/``), then the steps as plain functions
(``shapes_pipeline/steps/``), then the helpers (``shapes_pipeline/helpers/``). Read from the
source (every ``import``, top-level or inside a function, so a lazy import cannot hide an
upward one), and from the installed library: it claims no import name but its own."""

import ast
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIBRARY = "shapes_pipeline"
# Top to bottom: a layer's folder (or file) and its import prefix. A module may import its
# own layer and the ones below.
LAYERS = {
    "runners": (REPO / LIBRARY / "runners", f"{LIBRARY}.runners"),
    "pipeline": (REPO / "pipeline.py", f"{LIBRARY}.kubeflow.pipeline"),
    "components": (REPO / "components", f"{LIBRARY}.kubeflow.components"),
    "steps": (REPO / LIBRARY / "steps", f"{LIBRARY}.steps"),
    "helpers": (REPO / LIBRARY / "helpers", f"{LIBRARY}.helpers"),
}


def modules() -> dict[str, tuple[int, Path]]:
    """Every module of the project by its import name: its layer's rank and its file."""
    found = {}
    for rank, (where, prefix) in enumerate(LAYERS.values()):
        if where.suffix == ".py":
            found[prefix] = (rank, where)
            continue
        for path in where.glob("*.py"):
            name = prefix if path.stem == "__init__" else f"{prefix}.{path.stem}"
            found[name] = (rank, path)
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The project's modules ``path`` imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found & known


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, (_, path) in found.items()}


def test_the_library_holds_no_module_outside_a_layer():
    loose = [p for p in (REPO / LIBRARY).rglob("*.py") if p.parent.name not in LAYERS]
    assert [p.name for p in loose] == ["__init__.py"], loose
    assert not [p for p in (REPO / "components").glob("*.py") if p.stem not in {
        "__init__", "kfp_components"}], "components/ holds the KFP components only"  # fmt: skip


def test_no_module_imports_a_layer_above_its_own():
    rank = {name: r for name, (r, _) in modules().items()}
    upward = {(a, b) for a, deps in graph().items() for b in deps if rank[b] < rank[a]}
    assert not upward, f"imports of a layer above: {sorted(upward)}"


def test_the_check_sees_an_upward_import(tmp_path):
    """The reader of imports finds a lazy one inside a function, in both spellings."""
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from shapes_pipeline.runners import cli\n"
        "    import shapes_pipeline.kubeflow.pipeline\n"
    )
    known = set(modules())
    assert imports(source, known) == {
        "shapes_pipeline.runners", "shapes_pipeline.runners.cli",
        "shapes_pipeline.kubeflow.pipeline"}  # fmt: skip


def test_no_import_cycle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != "open", f"import cycle: {' -> '.join([*path, nxt])}"
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])


def test_the_design_diagram_names_every_module_in_its_layer():
    """docs/design.md's diagram is the layers as they are: each module under its layer."""
    text = (REPO / "docs" / "design.md").read_text().split("## Layers")[1]
    blocks = text.split("```")[1].split("\n     |\n")
    assert len(blocks) == len(LAYERS)
    for rank, block in enumerate(blocks):
        named = set(re.findall(r"(\w+)\.py\b", block))
        for name, (layer, path) in modules().items():
            if path.stem != "__init__":
                assert (path.stem in named) == (layer == rank), (name, rank)


def test_help_does_not_build_the_pipeline():
    """``--help`` answers without importing the DAG, its components or KFP's compiler."""
    code = (
        "import sys\nfrom shapes_pipeline.runners import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('shapes_pipeline.kubeflow', "
        "'kfp.compiler', 'tensorflow'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-2000:] + done.stderr


@pytest.mark.slow
def test_the_wheel_installs_only_the_librarys_own_import_name(tmp_path):
    """Built as a user installs it: one top-level name, with the DAG and the components
    under it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {LIBRARY}
    assert f"{LIBRARY}/kubeflow/pipeline.py" in names
    assert f"{LIBRARY}/kubeflow/components/kfp_components.py" in names
    assert not [n for n in names if n.startswith(f"{LIBRARY}/kubeflow/tests")]


def private_uses(path: Path) -> list[str]:
    """What in ``path`` reaches past a library's public API: a private module
    (``keras.src``, ``tensorflow.python``, a name starting with ``_``), a private name or
    attribute (``x._y`` but for ``self``/``cls``), or a library patched from outside
    (an assignment to another module's attribute, ``builtins``, ``sys.modules``)."""
    tree = ast.parse(path.read_text())
    modules_here = {
        (a.asname or a.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for a in node.names
    }
    found = []
    for node in ast.walk(tree):
        line = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names]
            for name in set(names) - {"__future__"}:
                if name.startswith(("keras.src", "tensorflow.python", "tensorflow.core")) or any(
                    part.startswith("_") for part in name.split(".")
                ):
                    found.append(f"{line}: imports {name}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            owner = node.value
            own = isinstance(owner, ast.Name) and owner.id in {"self", "cls"}
            if not own and not (node.attr.startswith("__") and node.attr.endswith("__")):
                found.append(f"{line}: reads .{node.attr}")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                root = target
                while isinstance(root, ast.Attribute | ast.Subscript):
                    root = root.value
                patched = target is not root and isinstance(root, ast.Name)
                if patched and root.id == "sys":  # its own search path is a process's to set
                    patched = ast.unparse(target).startswith("sys.modules")
                if patched and root.id in modules_here | {"builtins", "sys"}:
                    found.append(f"{line}: assigns into {root.id}")
    return found


def test_no_private_api_and_no_patching():
    """issue 31: private internals behind exact pins made every upgrade start with
    debugging. Only the public APIs of TensorFlow, Keras and KFP are used, and nothing of
    theirs is patched from here."""
    found = [use for _, path in modules().values() for use in private_uses(path)]
    assert not found, found


def test_the_private_api_check_sees_each_kind(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import builtins\nimport sys\nimport tensorflow as tf\n"
        "from keras.src.applications import imagenet_utils\n"
        "from tensorflow.python.ops import gen_resource_variable_ops\n"
        "from kfp.local import _helpers\n"
        "x = tf.keras.optimizers.Adam()._momentums\n"
        "tf.raw_ops.VarHandleOp = None\n"
        "builtins.print = print\n"
        "sys.modules['tensorflow.lite'] = None\n"
        "class A:\n    def f(self):\n        self._ok = self.__class__\n"
    )
    kinds = sorted(use.split(": ", 1)[1] for use in private_uses(source))
    assert kinds == sorted([
        "imports keras.src.applications", "imports tensorflow.python.ops",
        "imports _helpers", "reads ._momentums", "assigns into tf",
        "assigns into builtins", "assigns into sys",
    ])  # fmt: skip
