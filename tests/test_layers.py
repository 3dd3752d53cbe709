"""The package's layers point one way, and nothing imports in a circle: the command line and
its runners on top, then the pipeline, then the KFP components, then the steps as plain
functions, then the helpers. Read from the source (every ``import``, top-level or inside a
function), so a lazy import cannot hide an upward one."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Top to bottom; a module may import its own layer and the ones below.
LAYERS = {
    "runners": {"cli", "cli_models", "local_run", "cluster", "parameters", "exits"},
    "pipeline": {"pipeline"},
    "components": {"kfp_components"},
    "steps": {"split", "extract", "train", "evaluate", "export", "verify", "preflight"},
}


def modules() -> dict[str, Path]:
    found = {p.stem: p for p in (REPO / "components").glob("*.py") if p.stem != "__init__"}
    return {**found, "pipeline": REPO / "pipeline.py"}


def layer(module: str) -> int:
    """0 for the top layer; every module not named in LAYERS is a helper, the bottom."""
    for rank, members in enumerate(LAYERS.values()):
        if module in members:
            return rank
    return len(LAYERS)


def imports(path: Path, known: set[str]) -> set[str]:
    """The project's modules ``path`` imports, wherever in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "components":
                found |= {a.name for a in node.names}
            elif node.module.startswith("components.") or node.module == "pipeline":
                found.add(node.module.split(".")[-1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[-1] for a in node.names if a.name.startswith("components.")}
    return (found & known) - {path.stem}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def test_every_layer_named_exists():
    assert set().union(*LAYERS.values()) <= set(modules())


def test_no_module_imports_a_layer_above_its_own():
    upward = {(a, b) for a, deps in graph().items() for b in deps if layer(b) < layer(a)}
    assert not upward, f"imports of a layer above: {sorted(upward)}"


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
    text = (REPO / "docs" / "design.md").read_text().split("## One pipeline")[0]
    blocks = text.split("\n     |\n")
    assert len(blocks) == len(LAYERS) + 1
    for rank, block in enumerate(blocks):
        named = set(re.findall(r"(\w+)\.py\b", block))
        for module in modules():
            assert (module in named) == (layer(module) == rank), (module, rank)
