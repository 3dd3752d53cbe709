"""The gate's verdict follows the numbers it reports, on cases built so that the plausible
wrong comparisons (>= for >, the challenger's and champion's accuracies swapped,
max_regression added, min_accuracy held against the champion, the whole split's accuracy
used where the compared sample's is due) give another verdict; and every class change,
added, lost or renamed, is named and refused unless allowed.

The rule is restated here in exact arithmetic (accuracies are fractions of images,
thresholds are the decimals a user types), independently of the product's floats.
"""

import ast
import json
import re
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest
from helpers import evaluate_oracle, save_oracle, save_oracle_features
from hypothesis import assume, example, given
from hypothesis import strategies as st
from PIL import Image

from shapes_pipeline.helpers import report
from shapes_pipeline.steps.evaluate import class_change, decide
from shapes_pipeline.steps.split import split_dataset
from shapes_pipeline.steps.verify import VerificationError, verify

URI = "registry/shapes/20260101T000000Z-0123abcd"
# compared-image counts whose fractions are exact decimals, so a regression can be exactly
# max_regression and an accuracy exactly min_accuracy
COUNTS = [4, 5, 8, 10, 20, 25, 40, 50, 100, 200, 1000]


def decimal(numerator: int, denominator: int) -> Decimal:
    return Decimal(numerator) / Decimal(denominator)  # exact: denominators of 2s and 5s


@st.composite
def gate_cases(draw):
    """(accuracy, min_accuracy, max_regression, champion, expected) where ``expected`` is
    None below min_accuracy, else whether the comparison with the champion passes."""
    n = draw(st.sampled_from(COUNTS))  # images both models were scored on
    sampled = draw(st.booleans())  # a stratified sample of a larger test split
    n_all = n * draw(st.sampled_from([2, 4, 5])) if sampled else n
    champion_correct = draw(st.integers(0, n))
    allowed = draw(st.integers(0, champion_correct))  # max_regression, in images
    # mostly the challenger exactly at the edge or one image either side; else anywhere
    edge = st.sampled_from([0, 0, -1, 1]).map(lambda d: champion_correct - allowed + d)
    mine = draw(st.one_of(edge, edge, st.integers(0, n)))
    assume(0 <= mine <= n)
    correct_all = mine if not sampled else draw(st.integers(0, n_all))
    threshold = draw(
        st.one_of(
            st.integers(-1, 1).map(lambda d: correct_all + d),  # min_accuracy at the edge
            st.integers(0, n_all),
        )
    )
    assume(0 <= threshold <= n_all)
    min_accuracy = decimal(threshold, n_all)
    max_regression = decimal(allowed, n)
    champion = {
        "uri": URI,
        "classes": ["circles", "squares"],
        "accuracy": champion_correct / n,
        "challenger_accuracy": mine / n,
        "images": n,
        "sampled": sampled,
    }
    if Fraction(correct_all, n_all) < min_accuracy:
        expected = None
    else:
        expected = Fraction(champion_correct - mine, n) <= max_regression
    return correct_all / n_all, float(min_accuracy), float(max_regression), champion, expected


def figure(value: float) -> str:
    return f"{value:.4f}"


@given(gate_cases())
@example(  # 8/10 against 7/10 with max_regression 0.1: in floats, 0.8 - 0.1 > 0.7
    (0.7, 0.5, 0.1, {"uri": URI, "accuracy": 0.8, "challenger_accuracy": 0.7, "images": 10,
                     "sampled": False}, True)
)  # fmt: skip
def test_the_gate_follows_its_rule_at_every_edge(case):
    """min_accuracy first (on the whole test split), then the champion: refused only when
    the challenger is worse on the compared images by MORE than max_regression; the reason
    quotes the very figures that were compared."""
    accuracy, min_accuracy, max_regression, champion, expected = case
    passed, reason = decide(accuracy, min_accuracy, max_regression, champion)
    if expected is None:
        assert not passed, reason
        assert f"test accuracy {figure(accuracy)} is below min_accuracy {min_accuracy}" in reason
        return
    assert passed is expected, reason
    on = f" on a sample of {champion['images']} test images" if champion["sampled"] else ""
    theirs = figure(champion["accuracy"])
    if passed:
        assert f"test accuracy {figure(accuracy)} >= {min_accuracy}" in reason
        within = f"{on} within max_regression {max_regression} of the production model's"
        assert f"{within} {theirs}" in reason
    else:
        mine = figure(champion["challenger_accuracy"])
        assert f"test accuracy {mine}{on} is worse than the production model's {theirs}" in reason
        assert f"by more than max_regression {max_regression}" in reason


def test_every_regression_at_the_edge_on_up_to_a_hundred_images():
    """Every champion score and max_regression (in images) on n compared images: exactly
    max_regression worse passes, one image more is refused, one image less passes."""
    wrong = []
    for n in (c for c in COUNTS if c <= 100):
        for theirs in range(n + 1):
            for allowed in range(theirs + 1):
                max_regression = float(decimal(allowed, n))
                for d, expected in ((-1, False), (0, True), (1, True)):
                    mine = theirs - allowed + d
                    if not 0 <= mine <= n:
                        continue
                    champion = {"uri": URI, "accuracy": theirs / n, "challenger_accuracy": mine / n}
                    if decide(mine / n, 0.0, max_regression, champion)[0] is not expected:
                        wrong.append((n, theirs, mine, max_regression))
    assert wrong == [], f"{len(wrong)} wrong verdicts, e.g. (n, theirs, mine, max) {wrong[:3]}"


@given(
    accuracy=st.fractions(0, 1, max_denominator=50),
    min_accuracy=st.fractions(0, 1, max_denominator=50),
)
def test_with_no_production_model_only_min_accuracy_counts(accuracy, min_accuracy):
    """No champion: the verdict is accuracy >= min_accuracy, equality passing."""
    passed, reason = decide(float(accuracy), float(min_accuracy), 0.0, None)
    assert passed is (accuracy >= min_accuracy), reason
    if passed:
        assert "no production model yet" in reason


def test_an_older_champion_that_cannot_be_compared_does_not_block():
    """A production model in an older format (no accuracy): min_accuracy alone decides."""
    old = {"uri": URI, "classes": None, "accuracy": None}
    assert decide(0.5, 0.5, 0.0, old)[0]
    assert "cannot be compared" in decide(0.5, 0.5, 0.0, old)[1]
    assert not decide(0.49, 0.5, 0.0, old)[0]


NAMES = st.sampled_from(["circle", "circles", "square", "squares", "triangle", "star"])


def named(reason: str) -> tuple[list[str], list[str]]:
    """The classes the reason names as added and as lost."""
    found = re.search(r"classes added (\[.*?\]|none), lost (\[.*?\]|none)\)", reason)
    assert found, reason
    return tuple(ast.literal_eval(g) if g != "none" else [] for g in found.groups())


@given(
    mine=st.lists(NAMES, min_size=2, max_size=5, unique=True).map(sorted),
    theirs=st.lists(NAMES, min_size=2, max_size=5, unique=True).map(sorted),
    allow=st.booleans(),
)
@example(mine=["circles", "squares"], theirs=["circle", "squares"], allow=False)  # renamed
@example(mine=["circle", "square", "star"], theirs=["circle", "square"], allow=False)  # added
@example(mine=["circle", "square"], theirs=["circle", "square", "star"], allow=False)  # lost
@example(mine=["circle", "star"], theirs=["circle", "square", "triangle"], allow=True)  # both
def test_a_class_change_is_named_both_ways_and_refused_unless_allowed(mine, theirs, allow):
    """added = the challenger's classes the champion lacks, lost = the champion's the
    challenger lacks; any change refuses unless allow_class_change, and the reason names
    each class on its side. No change: the accuracies decide."""
    champion = {"uri": URI, "classes": theirs, "accuracy": 1.0, "challenger_accuracy": 0.9}
    added, lost = class_change(mine, champion)
    assert added == sorted(set(mine) - set(theirs)) and lost == sorted(set(theirs) - set(mine))
    passed, reason = decide(0.9, 0.5, 0.0, champion, (added, lost), allow)
    if not added and not lost:
        assert not passed and "worse than the production model's 1.0000" in reason
        return
    assert passed is allow, reason
    assert named(reason) == (added, lost)
    if not allow:
        assert URI in reason and "allow_class_change lets this model replace it" in reason


@given(mine=st.lists(NAMES, min_size=2, max_size=5, unique=True).map(sorted), allow=st.booleans())
def test_a_class_change_does_not_lift_min_accuracy(mine, allow):
    """Whatever the classes, a model below min_accuracy is refused for that."""
    champion = {"uri": URI, "classes": ["other"], "accuracy": 0.1}
    change = class_change(mine, champion)
    passed, reason = decide(0.4, 0.5, 1.0, champion, change, allow)
    assert not passed and "below min_accuracy 0.5" in reason


def test_no_class_change_against_no_champion_or_an_unknown_one():
    """Nothing to compare: no change named (an older champion's classes are unknown)."""
    assert class_change(["a", "b"], None) == ([], [])
    assert class_change(["a", "b"], {"uri": URI, "classes": None}) == ([], [])


# --------------------------------------------- the report's numbers, from the predictions

COLOURS = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}  # sorted
GAIN = 0.02


@pytest.fixture(scope="module")
def confused(tmp_path_factory):
    """A colour data set and an oracle that cannot see red (it calls red images green), so
    the confusion matrix is neither diagonal nor symmetric; evaluated once, with every
    figure the report draws captured as it is drawn."""
    root = tmp_path_factory.mktemp("confused")
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (root / "src" / name).mkdir(parents=True)
        for i in range(20):
            pixels = np.clip(
                np.array(rgb) * (0.3 + 0.035 * i) + rng.integers(0, 60, (28, 28, 3)), 0, 255
            )
            Image.fromarray(pixels.astype(np.uint8)).save(root / "src" / name / f"{i:02d}.png")
    split_dataset(
        str(root / "src"), str(root / "ds"), seed=230, train_fraction=0.8, val_fraction=0.1
    )
    kernel = np.zeros((3, 3), np.float32)
    kernel[2, 0], kernel[1, 1], kernel[1, 2] = GAIN, GAIN, 0.9 * GAIN  # no red channel
    save_oracle(root / "model", kernel, np.zeros(3, np.float32), list(COLOURS))
    save_oracle_features(root / "ds", root / "features")
    drawn = []
    png = report._png

    def captured(fig):
        (ax, *_) = fig.axes
        drawn.append(
            {
                "title": ax.get_title(),
                "values": np.asarray(ax.images[0].get_array()) if ax.images else None,
                "texts": {
                    (t.get_position()[1], t.get_position()[0]): t.get_text() for t in ax.texts
                },
                "x": [t.get_text() for t in ax.get_xticklabels()],
                "y": [t.get_text() for t in ax.get_yticklabels()],
            }
        )
        drawn[-1]["uri"] = png(fig)
        return drawn[-1]["uri"]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_png", captured)
        evaluation = evaluate_oracle(root, "model")
    return root, evaluation, {d["title"]: d for d in drawn}


@pytest.mark.slow
def test_every_figure_and_table_is_the_matrix_of_the_predictions(confused):
    """The matrix recomputed with numpy from predictions.csv's true and predicted classes is
    the one evaluation.json holds, the one both confusion figures draw (cell (i, j) at row
    i, column j; the normalised one each row over its total) and the one the per-class
    tables of the report and summary are computed from."""
    root, evaluation, drawn = confused
    classes = evaluation["classes"]
    frame = pd.read_csv(root / "predictions.csv", dtype=str)
    index = {c: i for i, c in enumerate(classes)}
    matrix = np.zeros((len(classes), len(classes)), int)
    np.add.at(matrix, (frame["true_class"].map(index), frame["predicted_class"].map(index)), 1)
    assert (matrix != matrix.T).any() and np.trace(matrix) < matrix.sum()  # a telling case
    stored = json.loads((root / "evaluation.json").read_text())
    assert stored["confusion_matrix"] == evaluation["confusion_matrix"] == matrix.tolist()
    assert stored["test_accuracy"] == np.trace(matrix) / matrix.sum()

    rows = matrix.sum(axis=1)
    normalised = matrix / rows[:, None]
    for title, values, text in (
        ("Counts", matrix, "{:.0f}"),
        ("Row-normalised (recall on the diagonal)", normalised, "{:.2f}"),
    ):
        figure = drawn[title]
        np.testing.assert_allclose(figure["values"], values)
        assert figure["texts"] == {
            (i, j): text.format(values[i, j]) for i, j in np.ndindex(values.shape)
        }
        assert figure["x"] == figure["y"] == classes
    page = (root / "report.html").read_text()
    assert f'alt="confusion matrix, counts" src="{drawn["Counts"]["uri"]}"' in page
    normalised_uri = drawn["Row-normalised (recall on the diagonal)"]["uri"]
    assert f'alt="confusion matrix, row-normalised" src="{normalised_uri}"' in page

    summary = (root / "summary.md").read_text()
    columns = matrix.sum(axis=0)
    for i, name in enumerate(classes):
        precision = matrix[i, i] / columns[i] if columns[i] else 0.0
        recall = matrix[i, i] / rows[i]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        figures = [f"{v:.3f}" for v in (precision, recall, f1)] + [str(rows[i])]
        assert stored["classification_report"][name]["support"] == rows[i]
        assert f"<tr><td>{name}</td>" + "".join(f"<td>{v}</td>" for v in figures) in page
        assert f"| {name} | " + " | ".join(figures) + " |" in summary


@pytest.mark.slow
@pytest.mark.parametrize(
    "production, added, lost",
    [
        (["blue", "green", "red", "yellow"], [], ["yellow"]),
        (["blue", "green", "rouge"], ["red"], ["rouge"]),
    ],
    ids=["lost", "renamed"],
)
def test_evaluate_names_a_lost_or_renamed_class_and_refuses_unless_allowed(
    confused, production, added, lost
):
    """The production model knows other classes than this one (the existing test covers a
    class added): the gate, evaluation.json and report name each side; allowed, it passes."""
    root, _, _ = confused
    version = root / "reg" / "shapes-classifier" / "-".join(production)
    kernel = np.zeros((3, len(production)), np.float32)
    kernel[2, 0] = kernel[1, 1] = GAIN
    save_oracle(version, kernel, np.zeros(len(production), np.float32), production)
    (version.parent / "LATEST").write_text(f"{version.name}\n")
    gate = {"registry_uri": str(root / "reg"), "min_accuracy": 0.5}
    for allow in (False, True):
        out = root / f"{version.name}-{allow}"
        result = evaluate_oracle(root, "model", out, allow_class_change=allow, **gate)["gate"]
        assert (result["classes_added"], result["classes_lost"]) == (added, lost)
        assert result["passed"] is allow and named(result["reason"]) == (added, lost)
        shown = f"Classes added: {', '.join(added) or 'none'}; lost: {', '.join(lost)}."
        assert shown in (out / "report.html").read_text()
        assert report.md(shown) in (out / "summary.md").read_text()  # as literal Markdown


@pytest.mark.slow
@pytest.mark.parametrize("change", ["added", "lost"])
def test_export_verification_refuses_a_model_whose_classes_changed(confused, tmp_path, change):
    """Export's verification: the model to publish must have exactly the classes evaluation
    scored, one more (the model added a class) or one fewer (it lost one) is refused."""
    root, evaluation, _ = confused
    frame = pd.read_csv(root / "predictions.csv", dtype=str)
    if change == "added":  # evaluation scored no red: the model has a class more
        frame = frame.drop(columns=["p_red"])
    else:  # evaluation scored yellow too: the model lost it
        frame["p_yellow"] = "0.000000"
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    scored = [c for c in frame.columns if c.startswith("p_")]
    assert verify(str(root / "model"), str(root / "ds"), str(root / "predictions.csv"), 4)
    with pytest.raises(VerificationError, match="but evaluation scored") as refused:
        verify(str(root / "model"), str(root / "ds"), str(tmp_path / "predictions.csv"), 4)
    assert f"classes {evaluation['classes']}, but evaluation scored" in str(refused.value)
    assert str([c[2:] for c in scored]) in str(refused.value)
