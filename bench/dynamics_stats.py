"""The pre-registered verdict rule of the seeded Figure 2 bench, as code (docs/evaluation.md, "Pre-registered verdict
rule for the seeded Figure 2 run", written before the run).

Inputs are per-pair held-out values at the final evaluation, as arrays of shape (seeds, pairs): for one panel and one
β, DPO's and AdaDPO's value of each held-out pair under each seed (the same seed gives both losses the same data
order, so the two arrays are paired element by element). The statistic is the mean AdaDPO − DPO difference; its 95%
interval comes from a bootstrap that resamples seeds with replacement and held-out pairs with replacement, keeping
each pair's DPO and AdaDPO values together. Every seed holds out the same pairs, so seeds and pairs are crossed: one
draw of pairs serves every drawn seed (`shared_pairs`). Drawing pairs anew within each seed (nested, right when the
seeds' pairs differ, as for trained pairs) would divide the pair-to-pair variance by the number of seeds.
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


def _per_seed(values) -> list[np.ndarray]:
    per_seed = [np.asarray(v, dtype=np.float64).ravel() for v in values]
    if not per_seed or any(v.size == 0 for v in per_seed):
        raise ValueError("expected per-seed values, each with at least one held-out pair")
    return per_seed


def bootstrap_means(values, resamples: int = RESAMPLES, seed: int = 0, shared_pairs: bool = False) -> np.ndarray:
    """Means of `resamples` two-level resamples of per-seed values (a (seeds, pairs) array, or one array per seed
    when the seeds hold out different numbers of pairs): seeds with replacement, then pairs with replacement, one
    draw for all drawn seeds when they share their pairs (`shared_pairs`, crossed), else a draw per drawn seed
    (nested); a resample's mean is over all the values it drew."""
    per_seed = _per_seed(values)
    rng = np.random.default_rng(seed)
    seeds = len(per_seed)
    seed_draws = rng.integers(0, seeds, size=(resamples, seeds))
    if shared_pairs:
        if len({v.size for v in per_seed}) != 1:
            raise ValueError(f"shared pairs need as many values per seed, got {[v.size for v in per_seed]}")
        matrix = np.stack(per_seed)
        pair_draws = rng.integers(0, matrix.shape[1], size=(resamples, 1, matrix.shape[1]))
        return matrix[seed_draws[..., None], pair_draws].mean(axis=(1, 2))
    if len({v.size for v in per_seed}) == 1:  # equal counts: one gather
        matrix = np.stack(per_seed)
        pair_draws = rng.integers(0, matrix.shape[1], size=(resamples, seeds, matrix.shape[1]))
        return matrix[seed_draws[..., None], pair_draws].mean(axis=(1, 2))
    sums, counts = np.zeros(resamples), np.zeros(resamples)
    for slot in range(seeds):
        for index, pairs in enumerate(per_seed):
            drawn = seed_draws[:, slot] == index
            if drawn.any():
                sums[drawn] += pairs[rng.integers(0, pairs.size, size=(int(drawn.sum()), pairs.size))].sum(axis=1)
                counts[drawn] += pairs.size
    return sums / counts


def interval(values, resamples: int = RESAMPLES, seed: int = 0, shared_pairs: bool = False) -> Interval:
    """The mean of per-seed values (over all pairs) and its 95% two-level bootstrap interval (percentiles 2.5 and
    97.5)."""
    means = bootstrap_means(values, resamples, seed, shared_pairs)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(np.concatenate(_per_seed(values)).mean()), float(low), float(high))


def paired_difference(dpo, adadpo, **kwargs) -> Interval:
    """AdaDPO − DPO, pair by pair within each seed, then `interval`."""
    dpo, adadpo = _per_seed(dpo), _per_seed(adadpo)
    if [v.shape for v in dpo] != [v.shape for v in adadpo]:
        raise ValueError(
            f"DPO and AdaDPO values are not paired: {[v.shape for v in dpo]} vs {[v.shape for v in adadpo]}"
        )
    return interval([a - d for d, a in zip(dpo, adadpo, strict=True)], **kwargs)


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
