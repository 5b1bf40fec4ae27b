"""Statistics of drirl.eval.stats against hand-computed numbers."""

import math

import pytest

from drirl.eval.stats import (
    aligned_outcomes,
    is_binary,
    mcnemar_exact,
    paired_bootstrap_difference,
    paired_comparison,
    seed_summary,
    wilson_interval,
)


def test_wilson_interval_hand_computed():
    # 5 of 10, z = 1.959964: centre 0.5, half-width z·√(0.025 + z²/400) / (1 + z²/10) = 0.263408.
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.236593, abs=1e-6) and high == pytest.approx(0.763407, abs=1e-6)
    # 8 of 8 is not [1, 1]: (1 + z²/16 − z·√(z²/256)) / (1 + z²/8) = 0.675592.
    low, high = wilson_interval(8, 8)
    assert low == pytest.approx(0.675592, abs=1e-6) and high == 1.0
    low, high = wilson_interval(0, 8)
    assert low == 0.0 and high == pytest.approx(1 - 0.675592, abs=1e-6)
    # A wider confidence gives a wider interval.
    assert wilson_interval(5, 10, 0.99)[0] < 0.236593
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson_interval(3, 2)


def test_mcnemar_exact_hand_computed():
    assert mcnemar_exact(1, 5) == pytest.approx(2 * (1 + 6) / 64)   # 0.21875
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)              # 0.03125
    assert mcnemar_exact(6, 0) == mcnemar_exact(0, 6)                # two-sided: symmetric
    assert mcnemar_exact(3, 3) == 1.0                                # capped at 1
    assert mcnemar_exact(0, 0) == 1.0                                # no discordant pair: no evidence
    assert mcnemar_exact(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_paired_bootstrap_difference_resamples_prompts_together():
    a, b = [1, 1, 1, 0], [0, 1, 1, 0]   # differences 1, 0, 0, 0
    diff, low, high = paired_bootstrap_difference(a, b, seed=0)
    assert diff == 0.25
    # A resample of 4 differences has k ones with k ~ Binomial(4, 1/4): P(k = 0) = 0.316 > 2.5 %, so the lower end is
    # 0; P(k >= 3) = 5.1 % and P(k = 4) = 0.4 %, so the 97.5 % quantile is 3/4.
    assert low == 0.0 and high == 0.75
    assert paired_bootstrap_difference(a, b, seed=0) == (diff, low, high)  # seeded
    # Identical answers: no difference and a zero-width interval (every resample agrees).
    assert paired_bootstrap_difference([1, 0, 1], [1, 0, 1]) == (0.0, 0.0, 0.0)
    # A pair with a missing side is left out.
    assert paired_bootstrap_difference([1, None, 1], [0, 1, 0])[0] == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap_difference([1, 0], [1])


def test_paired_comparison_counts_discordant_pairs_and_carries_seed_variance():
    one = paired_comparison([[1, 1, 1, 0, 1, 1, 1, 1]], [[0, 0, 0, 0, 0, 0, 1, 1]])
    assert one.difference == pytest.approx(5 / 8) and (one.only_a, one.only_b) == (5, 0)
    assert one.p_value == pytest.approx(mcnemar_exact(5, 0)) and one.n_pairs == 8 and one.n_seeds == 1
    # Seed 1: A always better by 1; seed 2: never. Within a seed every pair has the same difference, so only the
    # seeds vary: the two-level bootstrap draws {1, 1} or {2, 2} a quarter of the time each.
    two = paired_comparison([[1, 1], [0, 0]], [[0, 0], [0, 0]], n_resamples=1000)
    assert two.difference == 0.5 and (two.low, two.high) == (0.0, 1.0)
    assert (two.only_a, two.only_b, two.n_pairs, two.n_seeds) == (2, 0, 4, 2)
    # Graded outcomes: a difference and an interval, no McNemar test.
    graded = paired_comparison([[0.5, 0.7]], [[0.25, 0.7]])
    assert graded.difference == pytest.approx(0.125) and graded.p_value is None
    assert paired_comparison([[None]], [[1]]).n_pairs == 0


def test_seed_summary_t_interval_hand_computed():
    s = seed_summary([0.5, 0.7, 0.6])
    assert s.mean == pytest.approx(0.6) and s.sd == pytest.approx(0.1) and s.n_seeds == 3
    # t_{0.975, 2} = 4.302653: half-width 4.302653 · 0.1 / √3 = 0.248414.
    assert s.low == pytest.approx(0.6 - 0.248414, abs=1e-6) and s.high == pytest.approx(0.6 + 0.248414, abs=1e-6)
    single = seed_summary([0.4, None])
    assert (single.mean, single.sd, single.low, single.high, single.n_seeds) == (0.4, 0.0, 0.4, 0.4, 1)
    assert seed_summary([]).n_seeds == 0


def test_helpers():
    assert is_binary([1, 0, None, 1.0]) and not is_binary([0.5, 1]) and not is_binary([None])
    assert aligned_outcomes({"b": 1, "a": 0, "c": 1}, {"a": 1, "b": 1, "d": 0}) == ([0, 1], [1, 1])
