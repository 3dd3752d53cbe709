"""The gate's reasons in full (what a user reads on a refused or passed run) and the
stratified sample's per-class counts, where the broader tests check only a fragment."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shapes_pipeline.steps.evaluate import class_change, decide, stratified_sample, wilson_interval

URI = "registry/shapes/20260101T000000Z-0123abcd"


@given(accuracy=st.floats(0.5, 1.0), min_accuracy=st.sampled_from([0.0, 0.25, 0.5]))
def test_with_no_production_model_the_reason_quotes_both_figures(accuracy, min_accuracy):
    assert decide(accuracy, min_accuracy, 0.1, None) == (
        True,
        f"no production model yet; test accuracy {accuracy:.4f} >= {min_accuracy}",
    )


def test_a_refusal_for_min_accuracy_quotes_both_figures():
    assert decide(0.49999, 0.5, 0.1, None) == (
        False,
        "test accuracy 0.5000 is below min_accuracy 0.5",
    )


def test_an_allowed_class_change_says_what_changed_and_why_it_passes():
    champion = {"uri": URI, "classes": ["a", "b"], "accuracy": 1.0}
    change = class_change(["a", "c"], champion)
    assert change == (["c"], ["b"])
    assert decide(0.75, 0.5, 0.0, champion, change, allow_class_change=True) == (
        True,
        "the classes change (classes added ['c'], lost ['b']), which allow_class_change "
        "permits; test accuracy 0.7500 >= 0.5",
    )
    added_only = class_change(["a", "b", "c"], champion)
    assert decide(0.75, 0.5, 0.0, champion, added_only) == (
        False,
        f"the production model {URI} has other classes (classes added ['c'], lost none); "
        "allow_class_change lets this model replace it",
    )


def test_an_older_champion_is_named_and_min_accuracy_decides():
    old = {"uri": URI, "classes": None, "accuracy": None}
    assert decide(0.625, 0.5, 0.0, old) == (
        True,
        f"the production model {URI} cannot be compared (an older format); "
        "test accuracy 0.6250 >= 0.5",
    )


def test_without_a_sample_the_whole_splits_accuracy_is_compared():
    """A champion scored on the whole test split (no ``challenger_accuracy``, not
    ``sampled``): the challenger's own accuracy is compared, and no sample is mentioned."""
    champion = {"uri": URI, "classes": ["a"], "accuracy": 0.9}
    assert decide(0.85, 0.5, 0.05, champion) == (
        True,
        "test accuracy 0.8500 >= 0.5 and within max_regression 0.05 of the production "
        "model's 0.9000",
    )
    assert decide(0.8, 0.5, 0.05, champion) == (
        False,
        "test accuracy 0.8000 is worse than the production model's 0.9000 by more than "
        "max_regression 0.05",
    )


@given(
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5),
    most=st.integers(1, 60),
    seed=st.integers(0, 3),
)
def test_each_class_gets_its_share_rounded_down_but_at_least_one(sizes, most, seed):
    """Past ``most`` labels: each class gives max(1, most * its size // all) distinct
    images of its own (a class of three with a share of 0 gives one, not two); up to
    ``most``, every index in order."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(seed)
    rng.shuffle(labels)
    chosen = stratified_sample(labels, most, seed)
    if len(labels) <= most:
        assert chosen.tolist() == list(range(len(labels)))
        return
    assert chosen.tolist() == sorted(set(chosen.tolist()))  # sorted, no repeats
    counts = np.bincount(labels[chosen], minlength=len(sizes))
    expected = [min(size, max(1, most * size // len(labels))) for size in sizes]
    assert counts.tolist() == expected


def test_a_rare_class_gives_exactly_one_image():
    labels = np.array([0] * 97 + [1] * 3)
    chosen = stratified_sample(labels, 10)
    assert np.bincount(labels[chosen]).tolist() == [9, 1]


def test_the_default_seed_is_zero_so_evaluate_and_verify_sample_alike():
    """Both callers omit the seed: the sample is the seed-0 one every run."""
    labels = np.repeat(np.arange(3), [50, 30, 20])
    np.testing.assert_array_equal(stratified_sample(labels, 10), stratified_sample(labels, 10, 0))
    assert not np.array_equal(stratified_sample(labels, 10, 0), stratified_sample(labels, 10, 1))


@pytest.mark.parametrize("correct, total", [(0, 10), (5, 10), (10, 10), (1, 3)])
def test_the_wilson_interval_holds_the_accuracy_within_zero_and_one(correct, total):
    low, high = wilson_interval(correct, total)
    assert 0.0 <= low <= correct / total <= high <= 1.0
    assert type(low) is float and type(high) is float
