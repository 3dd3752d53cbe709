"""The README's parameter table is the pipeline's parameters, no more and no fewer, each
with the default the pipeline has (the README is a manual: a parameter added, renamed or
re-defaulted in ``pipeline.py`` must reach it)."""

import re
from pathlib import Path

from helpers import pipeline_inputs

from shapes_pipeline.helpers import settings

README = Path(__file__).resolve().parents[1] / "README.md"


def table() -> dict[str, str]:
    """Parameter name -> the default cell, from the README's "The parameters" table."""
    section = README.read_text().split("## The parameters", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            names = re.findall(r"`(\w+)`", cells[0])
            defaults = [d.strip() for d in cells[1].split(",")] if len(names) > 1 else [cells[1]]
            rows.update(zip(names, defaults, strict=True))
    return rows


def test_the_readme_lists_every_parameter_and_only_those():
    assert set(table()) == set(pipeline_inputs())


def test_each_default_in_the_readme_is_the_pipelines():
    """Numbers as written (``40,000,000``, ``10°``, ``1e-4``), switches as on/off, text in
    backticks; the local run's own defaults are in parentheses after the pipeline's."""
    for name, cell in table().items():
        default = settings.defaults()[name]
        shown = cell.split(" (")[0].strip()
        if default is None:
            assert shown.startswith("(required"), name
        elif isinstance(default, bool):
            assert shown == ("on" if default else "off"), name
        elif isinstance(default, str):
            assert shown == (f"`{default}`" if default else "empty"), name
        else:
            assert float(shown.replace(",", "").rstrip("°")) == float(default), name
