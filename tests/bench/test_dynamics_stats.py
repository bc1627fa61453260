"""The pre-registered verdict rule of the seeded Figure 2 bench (bench/dynamics_stats.py), against independent
computations: the normal approximation of a mean's interval, a loop written out separately, and the rule's cases."""

import math
import sys

import numpy as np
import pytest

from tests.helpers.runs import REPO_ROOT


sys.path.insert(0, str(REPO_ROOT / "bench"))
import dynamics_stats as stats  # noqa: E402


def test_one_seed_interval_matches_the_normal_approximation_of_a_mean():
    """With one seed the bootstrap is over pairs only: for 400 normal values its 95% interval is the textbook
    mean +- 1.96 sd / sqrt(n), within bootstrap noise."""
    values = np.random.default_rng(1).normal(0.3, 2.0, size=(1, 400))
    got = stats.interval(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert got.mean == pytest.approx(values.mean())
    assert got.low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert got.high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_two_level_resampling_is_seeds_then_pairs_within_each_seed():
    """The vectorised resampler against a loop that draws the same random numbers in the same order."""
    values = np.random.default_rng(2).normal(size=(3, 5))
    got = stats.bootstrap_means(values, resamples=50, seed=7)
    rng = np.random.default_rng(7)
    seed_draws = rng.integers(0, 3, size=(50, 3))
    pair_draws = rng.integers(0, 5, size=(50, 3, 5))
    expected = [
        np.mean([[values[seed_draws[b, s], pair_draws[b, s, p]] for p in range(5)] for s in range(3)])
        for b in range(50)
    ]
    np.testing.assert_allclose(got, expected)


def test_shared_pairs_are_drawn_once_for_every_drawn_seed():
    """Crossed resampling (every seed holds out the same pairs) against a loop with the same random numbers."""
    values = np.random.default_rng(2).normal(size=(3, 5))
    got = stats.bootstrap_means(values, resamples=50, seed=7, shared_pairs=True)
    rng = np.random.default_rng(7)
    seed_draws = rng.integers(0, 3, size=(50, 3))
    pair_draws = rng.integers(0, 5, size=(50, 1, 5))
    expected = [
        np.mean([[values[seed_draws[b, s], pair_draws[b, 0, p]] for p in range(5)] for s in range(3)])
        for b in range(50)
    ]
    np.testing.assert_allclose(got, expected)
    with pytest.raises(ValueError, match="as many values per seed"):
        stats.bootstrap_means([[1.0, 2.0], [1.0]], shared_pairs=True)


def test_shared_pairs_keep_the_pair_to_pair_variance():
    """Three seeds evaluating the same 300 pairs: each pair's own effect (sd 1) appears in every seed. The mean's
    standard error is sqrt(1/300 + 0.01/900) ~ 0.058; the crossed bootstrap finds it, while drawing pairs anew within
    each seed would divide the pair variance by the 3 seeds (~0.033, an interval sqrt(3) too narrow)."""
    rng = np.random.default_rng(5)
    values = rng.normal(0, 1.0, size=(1, 300)) + rng.normal(0, 0.1, size=(3, 300))
    expected = math.sqrt(1 / 300 + 0.01 / 900)
    crossed = stats.bootstrap_means(values, resamples=4000, shared_pairs=True).std()
    nested = stats.bootstrap_means(values, resamples=4000).std()
    assert crossed == pytest.approx(expected, rel=0.15)
    assert nested < 0.7 * expected


def test_seed_to_seed_spread_widens_the_interval():
    """Pairs agree within each seed but seeds disagree: the interval must reflect the seeds, not the 300 pairs."""
    rng = np.random.default_rng(3)
    per_seed = np.array([[0.5], [-0.3], [0.1]])
    values = per_seed + rng.normal(0, 0.01, size=(3, 300))
    got = stats.interval(values)
    assert got.low < 0 < got.high  # with one seed's spread ignored, it would exclude 0


def test_pairing_removes_the_variation_shared_by_both_losses():
    """Per-pair values vary a lot, but AdaDPO is above DPO on every pair by 0.05: paired, the interval excludes 0."""
    rng = np.random.default_rng(4)
    dpo = rng.normal(0, 3.0, size=(3, 300))
    adadpo = dpo + 0.05 + rng.normal(0, 0.01, size=(3, 300))
    got = stats.paired_difference(dpo, adadpo)
    assert got.mean == pytest.approx(0.05, abs=0.002) and got.low > 0
    with pytest.raises(ValueError, match="not paired"):
        stats.paired_difference(dpo, adadpo[:, :10])


@pytest.mark.parametrize(
    "low, high, direction, expected",
    [
        (0.01, 0.05, "higher", stats.REPRODUCED),
        (-0.05, -0.01, "lower", stats.REPRODUCED),
        (-0.05, -0.01, "higher", stats.CONTRADICTED),
        (0.01, 0.05, "lower", stats.CONTRADICTED),
        (-0.01, 0.05, "higher", stats.INCONCLUSIVE),
        (0.0, 0.05, "higher", stats.INCONCLUSIVE),  # touching 0 is not excluding it
    ],
)
def test_verdict_per_panel(low, high, direction, expected):
    assert stats.verdict(stats.Interval((low + high) / 2, low, high), direction) == expected


def test_learning_precondition_needs_dpo_above_chance():
    rng = np.random.default_rng(5)
    assert stats.learned((rng.random((3, 300)) < 0.62).astype(float))
    assert not stats.learned((rng.random((3, 300)) < 0.5).astype(float))


def test_overall_summary():
    reproduced = {(panel, beta): stats.REPRODUCED for panel in stats.DECISIVE_PANELS for beta in (0.05, 0.01)}
    assert stats.overall(reproduced) == stats.REPRODUCED
    assert stats.overall(reproduced | {("β×KL margin", 0.05): stats.CONTRADICTED}) == stats.INCONCLUSIVE
    assert stats.overall(reproduced | {("eval loss", 0.01): stats.CONTRADICTED}) == stats.CONTRADICTED
    assert stats.overall(reproduced | {("reward accuracy", 0.05): stats.INCONCLUSIVE}) == stats.INCONCLUSIVE
    assert stats.overall(reproduced | {("reward accuracy", 0.05): stats.NOT_TESTED}) == stats.INCONCLUSIVE


def test_seeds_with_different_held_out_counts():
    """Seeds whose held-out splits differ in size (rows dropped per split): the pooled mean weighs every pair once,
    and the interval behaves as for equal counts (a consistent +0.05 on every pair excludes 0)."""
    rng = np.random.default_rng(6)
    dpo = [rng.normal(0, 3.0, size=n) for n in (300, 280, 310)]
    adadpo = [d + 0.05 + rng.normal(0, 0.01, size=d.size) for d in dpo]
    got = stats.paired_difference(dpo, adadpo)
    pooled = np.concatenate([a - d for d, a in zip(dpo, adadpo)]).mean()
    assert got.mean == pytest.approx(pooled) and got.low > 0 and got.low < got.mean < got.high
    equal = stats.interval(np.stack([v[:280] for v in (a - d for d, a in zip(dpo, adadpo))]))
    assert got.high - got.low == pytest.approx(equal.high - equal.low, rel=0.3)
