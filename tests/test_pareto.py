"""Front extraction and hypervolume on hand-made points (pure Python, milliseconds)."""

import pytest

from mutate.results.pareto import Point, dominates, front, hypervolume


def pt(size, metric, trial="t", step=0):
    return Point(trial, step, size, size / 100, metric, "", "", {})


def test_single_point_is_its_own_front():
    p = pt(10, 0.5)
    assert front([p]) == [p]


def test_all_dominated_but_one():
    best = pt(5, 0.9)
    others = [pt(10, 0.8), pt(5, 0.7), pt(50, 0.9), pt(6, 0.89)]
    assert front([*others, best]) == [best]


def test_staircase_sorted_smallest_first():
    pts = [pt(40, 0.95), pt(10, 0.80), pt(20, 0.90), pt(30, 0.85), pt(20, 0.88)]
    assert [(p.size, p.metric) for p in front(pts)] == [(10, 0.80), (20, 0.90), (40, 0.95)]


def test_duplicates_and_ties_keep_the_first_reported():
    a, b = pt(10, 0.8, trial="a"), pt(10, 0.8, trial="b")
    assert front([a, b]) == [a]
    same_metric_bigger = pt(12, 0.8)
    assert front([same_metric_bigger, a]) == [a]
    assert not dominates(a, b) and not dominates(b, a)


def test_ties_in_size_and_metric_go_to_the_lower_validation_loss():
    def lp(trial, loss):
        return Point(trial, 0, 10, 0.1, 0.8, "", "", {}, loss=loss)

    first, lower, none = lp("first", 0.40), lp("lower", 0.30), lp("none", None)
    assert front([first, lower]) == [lower] and front([lower, first]) == [lower]
    assert dominates(lower, first) and not dominates(first, lower)
    # a point without a recorded loss (a run of an earlier version) never wins the tie over one with it
    assert front([none, first]) == [first] and not dominates(none, first)
    # the loss only breaks ties: a better metric or a smaller size still wins
    assert front([lp("a", 0.1), Point("b", 0, 10, 0.1, 0.81, "", "", {}, loss=9.0)])[0].trial == "b"
    assert Point.from_row({"trial": "t", "step": 1, "bytes": 5, "ratio": 0.5, "val_accuracy": 0.5,
                           "val_loss": 0.25}).loss == 0.25


def test_perplexity_is_minimised():
    pts = [pt(10, 120.0), pt(20, 100.0), pt(30, 110.0)]
    assert [p.metric for p in front(pts, higher_is_better=False)] == [120.0, 100.0]


def test_hypervolume_by_hand():
    # ratios 0.1 and 0.4 with accuracies 0.6 and 0.9 over chance 0.1:
    # [0.1, 0.4) x 0.5 + [0.4, 1.0) x 0.8 = 0.15 + 0.48
    pts = [pt(10, 0.6), pt(40, 0.9), pt(50, 0.7)]
    assert hypervolume(pts, reference_metric=0.1) == pytest.approx(0.63)
    assert hypervolume([pt(100, 0.99), pt(10, 0.05)], reference_metric=0.1) == 0.0
    assert hypervolume([], reference_metric=0.1) == 0.0
    assert hypervolume([pt(0, 1.0)], reference_metric=0.0) == pytest.approx(1.0)


def test_hypervolume_for_perplexity():
    # uniform guess over 1000 words; ratio 0.5 at perplexity 200 -> 0.5 x 800
    assert hypervolume([pt(50, 200.0)], reference_metric=1000.0, higher_is_better=False) == pytest.approx(400.0)
