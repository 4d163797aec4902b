"""The statistics of a study's report (:mod:`experiments.report`): confidence bands, IQM, probability of improvement.

* :func:`mean_ci`: mean over seeds with a Student-t confidence interval (the learning curves' bands).
* :func:`interval_estimates`: the IQM (interquartile mean) and the probability of improvement
  (the Mann-Whitney statistic ``P(X > Y) + P(X = Y) / 2``) with 95% stratified-bootstrap confidence
  intervals, from ``rliable`` (Agarwal et al., 2021, "Deep Reinforcement Learning at the Edge of the
  Statistical Precipice").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds and the half-width of its Student-t confidence interval.

    Args:
        values: ``(seeds, points)``; NaN where a run has no value.
        confidence: Coverage of the interval.

    Returns:
        ``(points,)`` means and ``(points,)`` half-widths (0 where fewer than two seeds have a value).
    """
    from scipy import stats

    n = np.isfinite(values).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN points (no run reached them) stay NaN
        mean = np.nanmean(values, axis=0)
        sd = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros(values.shape[1])
        t = stats.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1))
        half = np.where(n > 1, t * sd / np.sqrt(np.maximum(n, 1)), 0.0)
    return mean, np.nan_to_num(half)


def interval_estimates(
    scores: Mapping[str, np.ndarray], pairs: Mapping[str, tuple[str, str]], reps: int = 2000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """IQM of each score set and probability of improvement of each pair, with 95% stratified-bootstrap CIs (rliable).

    Args:
        scores: ``{name: (runs,) final scores}`` (one task per name: the bootstrap resamples its runs).
        pairs: ``{key: (name_x, name_y)}``: the probability that a run of ``x`` beats one of ``y``.
        reps: Bootstrap resamples.
        seed: Seed of the bootstrap (numpy's global generator is seeded with it for the call and restored after).

    Returns:
        ``{"iqm:<name>": (point, low, high), "poi:<key>": (point, low, high)}``.
    """
    from rliable import library, metrics

    warnings.filterwarnings(
        "ignore", message="random_state is deprecated", category=FutureWarning
    )  # arch, under rliable
    out: dict[str, tuple[float, float, float]] = {}
    column = {k: np.asarray(v, dtype=np.float64).reshape(-1, 1) for k, v in scores.items()}
    # rliable's StratifiedBootstrap draws its resamples from numpy's global generator (np.random.choice),
    # not from random_state: seed it before each estimate (and restore it after) so the same runs give
    # the same intervals
    saved = np.random.get_state()
    try:
        if column:
            np.random.seed(seed)
            points, cis = library.get_interval_estimates(
                column, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=reps,
                random_state=np.random.RandomState(seed),
            )  # fmt: skip
            out.update({f"iqm:{k}": (float(points[k][0]), float(cis[k][0, 0]), float(cis[k][1, 0])) for k in column})
        if pairs:
            np.random.seed(seed)
            pair_scores = {k: (column[x], column[y]) for k, (x, y) in pairs.items()}
            points, cis = library.get_interval_estimates(
                pair_scores, lambda x, y: np.array([metrics.probability_of_improvement(x, y)]), reps=reps,
                random_state=np.random.RandomState(seed),
            )  # fmt: skip
            out.update({f"poi:{k}": (float(points[k][0]), float(cis[k][0, 0]), float(cis[k][1, 0])) for k in pairs})
    finally:
        np.random.set_state(saved)
    return out
