"""The pre-registered verdict rule of the seeded Figure 2 bench, as code (docs/evaluation.md, "Pre-registered verdict
rule for the seeded Figure 2 run", written before the run).

Inputs are per-pair held-out values at the final evaluation, as arrays of shape (seeds, pairs): for one panel and one
β, DPO's and AdaDPO's value of each held-out pair under each seed (the same seed gives both losses the same data
order, so the two arrays are paired element by element). The statistic is the mean AdaDPO − DPO difference; its 95%
interval comes from a bootstrap that resamples seeds with replacement and, within each drawn seed, held-out pairs
with replacement, keeping each pair's DPO and AdaDPO values together.
"""

from dataclasses import dataclass

import numpy as np


REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_TESTED = "reproduced", "contradicted", "inconclusive", "not tested"
RESAMPLES = 10_000
# The panels the rule judges, with the paper's direction for AdaDPO - DPO (the reward margin is reported, not judged:
# its scale is beta_w for AdaDPO and beta for DPO)
JUDGED_PANELS = {
    "eval loss": "lower",
    "reward accuracy": "higher",
    "β×KL margin": "higher",
    "held-out chosen log-prob change per token": "higher",
}
DECISIVE_PANELS = ("eval loss", "reward accuracy")  # the overall summary needs these at every β


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float


def bootstrap_means(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `resamples` two-level resamples of a (seeds, pairs) array: seeds with replacement, then pairs with
    replacement within each drawn seed."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"expected a non-empty (seeds, pairs) array, got shape {values.shape}")
    seeds, pairs = values.shape
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, seeds, size=(resamples, seeds))
    pair_draws = rng.integers(0, pairs, size=(resamples, seeds, pairs))
    return values[seed_draws[..., None], pair_draws].mean(axis=(1, 2))


def interval(values: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The mean of a (seeds, pairs) array and its 95% two-level bootstrap interval (percentiles 2.5 and 97.5)."""
    means = bootstrap_means(values, resamples, seed)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(np.mean(values)), float(low), float(high))


def paired_difference(dpo: np.ndarray, adadpo: np.ndarray, **kwargs) -> Interval:
    """AdaDPO − DPO, pair by pair and seed by seed, then `interval`."""
    dpo, adadpo = np.asarray(dpo, dtype=np.float64), np.asarray(adadpo, dtype=np.float64)
    if dpo.shape != adadpo.shape:
        raise ValueError(f"DPO and AdaDPO values are not paired: shapes {dpo.shape} and {adadpo.shape}")
    return interval(adadpo - dpo, **kwargs)


def verdict(difference: Interval, direction: str) -> str:
    """The rule for one panel at one β: the interval excludes 0 the paper's way, the other way, or neither."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    if difference.low > 0 or difference.high < 0:
        paper_way = (difference.low > 0) == (direction == "higher")
        return REPRODUCED if paper_way else CONTRADICTED
    return INCONCLUSIVE


def learned(dpo_reward_accuracy: np.ndarray, **kwargs) -> bool:
    """The precondition: DPO's own held-out reward accuracy has a 95% interval above chance (0.5)."""
    return interval(dpo_reward_accuracy, **kwargs).low > 0.5


def overall(cells: dict[tuple[str, float], str]) -> str:
    """The summary over (panel, β) verdicts: reproduced only if eval loss and reward accuracy are reproduced at every
    β and no cell is contradicted; contradicted if one of those decisive cells is; otherwise inconclusive."""
    betas = {beta for _, beta in cells}
    decisive = [cells.get((panel, beta), NOT_TESTED) for panel in DECISIVE_PANELS for beta in betas]
    if CONTRADICTED in decisive:
        return CONTRADICTED
    if all(v == REPRODUCED for v in decisive) and CONTRADICTED not in cells.values():
        return REPRODUCED
    return INCONCLUSIVE
