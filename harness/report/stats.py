"""Interval estimates and comparisons for success rates, shared by evaluation and the leaderboard.

Small samples mislead in this field (one released checkpoint scored 80-96% on Push-T over five
evaluation seeds of 50 episodes, REFERENCE.md), so every success rate travels with an interval:
Wilson for one binomial rate, a stratified bootstrap over seeds and episodes for a trial group,
and the rliable summaries (interquartile mean, probability of improvement; Agarwal et al., 2021)
across tasks. Perturbed conditions are compared with the clean condition of the same trial on the
same seeded cases, so those differences are paired (bootstrap of the differences, exact McNemar).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

# scipy.stats is imported by the functions that use it (the leaderboard's summaries): its import costs ~1.6 s,
# and every trial process computes a Wilson interval but no other statistic.

CONFIDENCE = 0.95  # every interval here is a 95% interval unless a caller asks otherwise
BOOTSTRAP_SAMPLES = 2000  # resamples per interval: the percentile endpoints move < 1 pp between runs


@dataclass(frozen=True)
class Interval:
    """A point estimate with the two ends of its confidence interval."""

    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def wilson_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval:
    """Wilson score interval of a binomial success rate (stays inside [0, 1] at 0% and 100%)."""
    if trials <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    z = special.ndtri(0.5 + confidence / 2)  # the normal quantile (what scipy.stats.norm.ppf computes)
    rate = successes / trials
    denominator = 1 + z**2 / trials
    centre = (rate + z**2 / (2 * trials)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / trials + z**2 / (4 * trials**2)) / denominator
    return Interval(rate, max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(
    successes_x: int, trials_x: int, successes_y: int, trials_y: int, confidence: float = CONFIDENCE
) -> Interval:
    """Difference of two independent binomial rates x − y with Newcombe's hybrid score interval (his method 10),
    built from the two Wilson intervals, so it agrees with them; NaN when either has no trials."""
    x, y = wilson_interval(successes_x, trials_x, confidence), wilson_interval(successes_y, trials_y, confidence)
    if trials_x <= 0 or trials_y <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    difference = x.estimate - y.estimate
    below = np.sqrt((x.estimate - x.low) ** 2 + (y.high - y.estimate) ** 2)
    above = np.sqrt((x.high - x.estimate) ** 2 + (y.estimate - y.low) ** 2)
    return Interval(difference, float(difference - below), float(difference + above))


def _as_groups(groups: Sequence[Sequence[float]]) -> list[np.ndarray]:
    arrays = [np.asarray(g, dtype=float) for g in groups]
    arrays = [a for a in arrays if a.size]
    if not arrays:
        raise ValueError("a bootstrap needs at least one seed with at least one episode; got none")
    return arrays


def hierarchical_draws(
    groups: Sequence[Sequence[float]], samples: int = BOOTSTRAP_SAMPLES, rng: np.random.Generator | None = None
) -> np.ndarray:
    """(samples, K) bootstrap draws of K per-seed means: seeds with replacement, then episodes within each seed.

    Every chosen seed slot gets its own resample of that seed's episodes (a seed drawn twice is
    resampled twice). Returning the K slot means, not their mean, lets the IQM trim over them.
    """
    arrays = _as_groups(groups)
    rng = rng if rng is not None else np.random.default_rng(0)
    seeds = len(arrays)
    slot_means = np.empty((samples, seeds, seeds))  # (B, slot, seed): seed's resampled mean if it fills the slot
    for k, values in enumerate(arrays):
        picks = rng.integers(0, values.size, size=(samples, seeds, values.size))  # (B, slot, n_k)
        slot_means[:, :, k] = values[picks].mean(axis=2)
    chosen = rng.integers(0, seeds, size=(samples, seeds, 1))  # (B, slot, 1) seeds with replacement
    return np.take_along_axis(slot_means, chosen, axis=2)[:, :, 0]


def _percentile_interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    alpha = 1 - confidence
    low, high = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    return Interval(float(estimate), float(low), float(high))


def stratified_bootstrap_ci(
    groups: Sequence[Sequence[float]],
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> Interval:
    """Mean over seeds of per-seed mean outcomes, with a percentile CI from the two-level bootstrap.

    ``groups`` holds one array of episode outcomes per seed (0/1 successes, or paired differences
    in {-1, 0, 1}). Resampling both levels carries seed-to-seed and case-to-case variation; when
    seeds agree it is conservative (wider than nominal), never narrower.
    """
    arrays = _as_groups(groups)
    estimate = float(np.mean([a.mean() for a in arrays]))
    draws = hierarchical_draws(arrays, samples, rng).mean(axis=1)  # (B,)
    return _percentile_interval(estimate, draws, confidence)


def unpaired_difference_ci(
    groups_x: Sequence[Sequence[float]],
    groups_y: Sequence[Sequence[float]],
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> Interval:
    """Difference of means X − Y from two independent stratified bootstraps (cases not matched)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    x, y = _as_groups(groups_x), _as_groups(groups_y)
    estimate = float(np.mean([a.mean() for a in x]) - np.mean([a.mean() for a in y]))
    draws = hierarchical_draws(x, samples, rng).mean(axis=1) - hierarchical_draws(y, samples, rng).mean(axis=1)
    return _percentile_interval(estimate, draws, confidence)


def interquartile_mean(scores: Sequence[float]) -> float:
    """Mean of the middle 50% of scores (rliable's IQM: ``scipy.stats.trim_mean(scores, 0.25)``)."""
    from scipy import stats as sps

    values = np.asarray(scores, dtype=float).ravel()
    if not values.size:
        return float("nan")
    return float(sps.trim_mean(values, 0.25))


def iqm_bootstrap_ci(
    episodes_by_task: Sequence[Sequence[Sequence[float]]],
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> Interval:
    """IQM across tasks of per-seed success rates, with a CI stratified by task.

    ``episodes_by_task[t][k]`` holds the episode outcomes of seed k on task t. Each task is
    resampled on its own (seeds with replacement, episodes within seeds), as rliable stratifies
    runs by task; resampling episodes keeps the interval honest when a task has a single seed.
    """
    from scipy import stats as sps

    rng = rng if rng is not None else np.random.default_rng(0)
    tasks = [_as_groups(seeds) for seeds in episodes_by_task]
    if not tasks:
        raise ValueError("an IQM needs at least one task; got none")
    estimate = interquartile_mean([a.mean() for seeds in tasks for a in seeds])
    draws = np.concatenate([hierarchical_draws(seeds, samples, rng) for seeds in tasks], axis=1)  # (B, ΣK_t)
    return _percentile_interval(estimate, sps.trim_mean(draws, 0.25, axis=1), confidence)


def probability_of_improvement(scores_x: Sequence[float], scores_y: Sequence[float]) -> float:
    """P(X > Y) + ½ P(X = Y) over runs of one task (the Mann-Whitney U statistic, normalised; rliable)."""
    x = np.asarray(scores_x, dtype=float)[:, None]
    y = np.asarray(scores_y, dtype=float)[None, :]
    if not x.size or not y.size:
        return float("nan")
    return float(np.mean((x > y) + 0.5 * (x == y)))


@dataclass(frozen=True)
class PairedComparison:
    """A treatment against a reference on the same cases (perturbed vs clean, or this run vs a baseline)."""

    difference: Interval  # mean(treatment) − mean(reference), paired bootstrap CI
    pairs: int
    reference_only: int  # discordant pairs: solved by the reference only
    treatment_only: int  # discordant pairs: solved by the treatment only
    mcnemar_p: float


def mcnemar_exact(reference_only: int, treatment_only: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs against ½."""
    from scipy import stats as sps

    discordant = reference_only + treatment_only
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(treatment_only, discordant, 0.5).pvalue)


def paired_comparison(
    reference_by_seed: Sequence[Sequence[bool]],
    treatment_by_seed: Sequence[Sequence[bool]],
    samples: int = BOOTSTRAP_SAMPLES,
    confidence: float = CONFIDENCE,
    rng: np.random.Generator | None = None,
) -> PairedComparison:
    """Paired difference treatment − reference; element i of a seed's two arrays is the same case."""
    differences, reference_only, treatment_only = [], 0, 0
    for reference, treatment in zip(reference_by_seed, treatment_by_seed, strict=True):
        reference = np.asarray(reference, dtype=bool)
        treatment = np.asarray(treatment, dtype=bool)
        if reference.shape != treatment.shape:
            raise ValueError(f"paired outcomes must match case for case; got {reference.size} and {treatment.size}")
        differences.append(treatment.astype(float) - reference.astype(float))
        reference_only += int(np.sum(reference & ~treatment))
        treatment_only += int(np.sum(~reference & treatment))
    interval = stratified_bootstrap_ci(differences, samples, confidence, rng)
    pairs = int(sum(d.size for d in differences))
    p_value = mcnemar_exact(reference_only, treatment_only)
    return PairedComparison(interval, pairs, reference_only, treatment_only, p_value)


def normalised_auc(magnitudes: Sequence[float], success: Sequence[float]) -> float:
    """Trapezoid area under success-vs-magnitude divided by the magnitude range: mean success over the range.

    1.0 means success 1 at every magnitude; a model that keeps its clean success scores its clean
    success. NaN with fewer than two distinct magnitudes (no curve to integrate).
    """
    x = np.asarray(magnitudes, dtype=float)
    y = np.asarray(success, dtype=float)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if np.unique(x).size < 2:
        return float("nan")
    return float(np.trapezoid(y, x) / (x[-1] - x[0]))


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation of paired values (``scipy.stats.spearmanr``, ties ranked by their mean rank);
    NaN with fewer than three pairs or when either side is constant (no ranking to correlate)."""
    from scipy import stats as sps

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(sps.spearmanr(x, y).statistic)
