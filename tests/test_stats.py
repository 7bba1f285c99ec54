"""The interval estimates and comparisons behind every leaderboard number, checked on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from harness.report import stats


def test_wilson_interval_matches_the_textbook_case() -> None:
    """8 of 10 gives (0.4902, 0.9433); 0 of 10 gives (0, 0.2775), never a negative rate."""
    interval = stats.wilson_interval(8, 10)
    assert interval.estimate == pytest.approx(0.8)
    assert (interval.low, interval.high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert (stats.wilson_interval(0, 10).low, stats.wilson_interval(0, 10).high) == pytest.approx(
        (0.0, 0.2775), abs=1e-4
    )


def test_newcombe_difference_matches_his_worked_example() -> None:
    """56/70 − 48/80 = 0.2 with (0.0524, 0.3339) (Newcombe 1998, method 10); no trials on a side: no interval."""
    interval = stats.newcombe_difference(56, 70, 48, 80)
    assert interval.estimate == pytest.approx(0.2)
    assert (interval.low, interval.high) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert np.isnan(stats.newcombe_difference(3, 10, 0, 0).estimate)


def _coverage(seeds: int, episodes: int, spread: float | None, draws: int = 200, samples: int = 500) -> float:
    """Fraction of draws whose bootstrap CI covers the true success rate 0.7.

    ``spread`` None: every seed succeeds at 0.7. Otherwise each seed's rate is Beta with mean 0.7 and
    concentration ``spread`` (seed-to-seed variation, as between training seeds).
    """
    true_rate, rng, covered = 0.7, np.random.default_rng(1), 0
    for _ in range(draws):
        rates = np.full(seeds, true_rate) if spread is None else rng.beta(true_rate * spread, 0.3 * spread, seeds)
        groups = [rng.random(episodes) < rate for rate in rates]
        interval = stats.stratified_bootstrap_ci(groups, samples=samples, rng=rng)
        covered += interval.low <= true_rate <= interval.high
    return covered / draws


@pytest.mark.parametrize(
    ("seeds", "episodes", "spread"),
    [(1, 50, None), (8, 20, 10.0)],
    ids=["one-seed-50-episodes", "eight-varying-seeds-20-episodes"],
)
def test_bootstrap_ci_covers_the_true_mean_at_about_its_nominal_rate(
    seeds: int, episodes: int, spread: float | None
) -> None:
    assert 0.88 <= _coverage(seeds, episodes, spread) <= 0.99


def test_bootstrap_ci_is_never_narrower_than_binomial_when_seeds_agree() -> None:
    """Resampling seeds and episodes counts episode noise twice when seeds agree: wider than Wilson, not narrower."""
    rng = np.random.default_rng(3)
    groups = [rng.random(50) < 0.6 for _ in range(4)]
    bootstrap = stats.stratified_bootstrap_ci(groups, rng=rng)
    wilson = stats.wilson_interval(int(sum(g.sum() for g in groups)), 200)
    assert bootstrap.half_width > wilson.half_width


def test_interquartile_mean_of_a_hand_computed_case() -> None:
    """Eight scores: drop the two lowest and two highest, average 0.3, 0.4, 0.5, 0.7."""
    scores = [0.9, 0.1, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4]
    assert stats.interquartile_mean(scores) == pytest.approx(0.475)


def test_iqm_ci_is_stratified_by_task_and_brackets_the_point_estimate() -> None:
    """Two tasks × four seeds of ten episodes whose rates are the eight scores above."""
    rates = [[0.9, 0.1, 0.5, 0.3], [0.8, 0.2, 0.7, 0.4]]
    by_task = [[np.arange(10) < round(10 * rate) for rate in task] for task in rates]
    interval = stats.iqm_bootstrap_ci(by_task)
    assert interval.estimate == pytest.approx(0.475)
    assert interval.low < interval.estimate < interval.high
    identical = stats.iqm_bootstrap_ci([[np.ones(10, dtype=bool)], [np.ones(10, dtype=bool)]])
    assert (identical.low, identical.high) == (1.0, 1.0)


def test_mcnemar_exact_on_a_known_table() -> None:
    """Discordant pairs 10 vs 2: p = 2 · P(Binom(12, ½) ≤ 2) = 158 / 4096."""
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert stats.mcnemar_exact(2, 10) == pytest.approx(158 / 4096)
    assert stats.mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_paired_comparison_counts_discordant_pairs_case_for_case() -> None:
    clean = [np.array([1, 1, 1, 1, 0, 0, 1, 1], dtype=bool), np.array([1, 1, 0, 1], dtype=bool)]
    perturbed = [np.array([1, 0, 0, 1, 0, 1, 0, 1], dtype=bool), np.array([0, 1, 0, 0], dtype=bool)]
    comparison = stats.paired_comparison(clean, perturbed)
    assert (comparison.pairs, comparison.reference_only, comparison.treatment_only) == (12, 5, 1)
    assert comparison.mcnemar_p == pytest.approx(stats.mcnemar_exact(5, 1))
    # mean over seeds of the per-seed mean differences: (-2/8 + -2/4) / 2
    assert comparison.difference.estimate == pytest.approx(-0.375)
    with pytest.raises(ValueError, match="case for case"):
        stats.paired_comparison([np.ones(3, dtype=bool)], [np.ones(4, dtype=bool)])


def test_unpaired_difference_ci_excludes_zero_only_for_a_real_gap() -> None:
    rng = np.random.default_rng(5)
    strong, weak = [rng.random(100) < 0.9], [rng.random(100) < 0.5]
    assert stats.unpaired_difference_ci(weak, strong).high < 0
    same = stats.unpaired_difference_ci(strong, strong)
    assert same.estimate == 0 and same.low < 0 < same.high


def test_probability_of_improvement_counts_ties_as_half() -> None:
    """X = (0.8, 0.9), Y = (0.7, 0.9): wins 0.8>0.7, 0.9>0.7, tie 0.9=0.9, loss 0.8<0.9 → 2.5 / 4."""
    assert stats.probability_of_improvement([0.8, 0.9], [0.7, 0.9]) == pytest.approx(0.625)
    assert stats.probability_of_improvement([0.7, 0.9], [0.8, 0.9]) == pytest.approx(0.375)


def test_normalised_auc_is_mean_success_over_the_magnitude_range() -> None:
    assert stats.normalised_auc([0.0, 0.1, 0.2], [0.8, 0.7, 0.6]) == pytest.approx(0.7)
    assert stats.normalised_auc([4.0, 0.0, 2.0], [0.2, 1.0, 0.6]) == pytest.approx(0.6)  # order does not matter
    assert stats.normalised_auc([0.0, 0.5, 1.0], [0.3, 0.3, 0.3]) == pytest.approx(0.3)
    assert np.isnan(stats.normalised_auc([0.0], [0.9]))  # no curve from one magnitude


def test_rank_correlation_is_spearman_and_nan_without_a_ranking() -> None:
    """Ranks (1, 2, 3, 4) against (1, 3, 2, 4): ρ = 1 − 6·Σd² / (n(n²−1)) = 1 − 6·2 / 60 = 0.8."""
    assert stats.rank_correlation([0.1, 0.2, 0.3, 0.4], [1.0, 30.0, 20.0, 400.0]) == pytest.approx(0.8)
    assert stats.rank_correlation([1.0, 2.0, 3.0], [9.0, 4.0, 1.0]) == pytest.approx(-1.0)  # monotone, not linear
    assert np.isnan(stats.rank_correlation([1.0, 2.0], [1.0, 2.0]))  # fewer than three pairs
    assert np.isnan(stats.rank_correlation([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))  # one side constant
