"""predictions.csv, the one file evaluate writes and export's verification and the report
read back: its columns, its number format, and a round trip that keeps every class and path
as text, whatever it looks like."""

import csv
import re
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.helpers import predictions

# Names a CSV reader would turn into something else unless told they are text.
TRICKY = ["NA", "nan", "null", "None", "1e3", "007", "-0", "True", "", "a,b", 'say "hi"']
# Split refuses file and class names that are not printable, so no path or class holds one.
NAMES = st.one_of(st.sampled_from(TRICKY), st.text(min_size=1, max_size=8).filter(str.isprintable))


@st.composite
def tables(draw):
    """paths, classes, y_true, y_pred and probabilities: ``predictions.write``'s arguments."""
    classes = draw(st.lists(NAMES.filter(bool), min_size=1, max_size=4, unique=True))
    paths = draw(st.lists(NAMES, min_size=1, max_size=6, unique=True))
    n, k = len(paths), len(classes)
    y_true = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    y_pred = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    cells = draw(st.lists(st.floats(0, 1), min_size=n * k, max_size=n * k))
    probabilities = np.array(cells, dtype=np.float64).reshape(n, k)
    return paths, classes, np.array(y_true, int), np.array(y_pred, int), probabilities


def _write(folder: str, table) -> Path:
    path = Path(folder, "predictions.csv")
    predictions.write(path, *table)
    return path


@given(table=tables())
def test_predictions_read_back_as_written_whatever_the_names(table):
    """Every class (in the model's order) and every path come back as the exact text
    written, even "NA", "1e3" or "007", and each path's probabilities within the file's
    six decimals: verification compares them with the exported model's."""
    paths, classes, _, _, probabilities = table
    with tempfile.TemporaryDirectory() as tmp:
        got_classes, by_path = predictions.read(_write(tmp, table))
    assert got_classes == classes
    assert list(by_path) == paths
    for path, row in zip(paths, probabilities, strict=True):
        assert by_path[path].dtype == np.float64 and by_path[path].shape == (len(classes),)
        np.testing.assert_allclose(by_path[path], row, rtol=0, atol=5.1e-7)


@given(table=tables())
def test_predictions_file_has_one_row_per_image_with_named_classes(table):
    """The header is path, true_class, predicted_class, then ``p_<class>`` per class in the
    model's order, and no index column; each row names the image, its true and predicted
    class by name, and its probabilities with six decimals (what the report shows)."""
    paths, classes, y_true, y_pred, probabilities = table
    with tempfile.TemporaryDirectory() as tmp, open(_write(tmp, table), newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["path", "true_class", "predicted_class"] + [f"p_{c}" for c in classes]
    assert len(rows) == len(paths)
    for row, path, t, p, probs in zip(rows, paths, y_true, y_pred, probabilities, strict=True):
        assert row[:3] == [path, classes[t], classes[p]]
        assert all(re.fullmatch(r"[01]\.\d{6}", cell) for cell in row[3:]), row
        assert [float(cell) for cell in row[3:]] == [float(f"{x:.6f}") for x in probs]
