"""The mutation list stays current with the code, in every `make test`: each mutation's text
is in its file exactly once (else `make mutation` refuses to start), and each test it names
is defined where it says."""

import re
from pathlib import Path

import pytest
from mutations import MUTATIONS, Mutation

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_each_mutation_still_applies_and_names_real_tests(mutation: Mutation):
    assert (REPO / mutation.file).read_text().count(mutation.old) == 1
    for node in mutation.tests:  # a file, or a test in it (with or without parameters)
        file, _, test = node.partition("::")
        name = re.match(r"\w*", test).group()
        defined = rf"^def {name}\(" if name else r"^def test_"
        assert re.search(defined, (REPO / file).read_text(), re.MULTILINE), node


def test_each_function_the_generated_mutants_score_exists():
    """A function renamed or moved would silently leave the generated mutants' scope."""
    import importlib
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from mutants import SCOPE, dotted

    for module, functions in SCOPE.items():
        loaded = importlib.import_module(dotted(module))
        for name in functions or ():
            assert callable(getattr(loaded, name, None)), f"{dotted(module)}.{name}"


def test_functions_to_rerun_are_named_as_mutmut_names_their_mutants():
    """``--functions module.function`` reruns exactly that function's mutants; a function out
    of scope (or a typo) is refused rather than matching nothing."""
    import argparse
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    from mutants import SCOPE, function_glob

    assert function_glob("archive._shown") == "shapes_pipeline.helpers.archive.x__shown__mutmut_*"
    assert function_glob("shards.plan") == "shapes_pipeline.helpers.shards.x_plan__mutmut_*"
    for wrong in ("shards.extract_shard", "archive", "nowhere.f", "archive."):
        with pytest.raises(argparse.ArgumentTypeError, match=wrong):
            function_glob(wrong)
    assert SCOPE["shards"] and "extract_shard" not in SCOPE["shards"]
