"""Comparing two models prompt by prompt: the win rate against a baseline (a tie counts one half) and the
wins / losses / ties with an exact two-sided sign test. The scores are per-prompt numbers where higher is better
(`scripts/evaluate.py` uses the share of a prompt's IFEval instructions followed)."""

import math
from typing import Any


def pairwise_win_rate(scores: list[float], baseline_scores: list[float]) -> float:
    """Share of prompts where `scores` beats the baseline, a tie counting one half:

        win_rate = (1 / N) * sum_i [ 1(s_i > b_i) + 0.5 * 1(s_i == b_i) ]

    so a model compared with itself scores exactly 0.5.
    """
    record = win_loss_tie(scores, baseline_scores)
    if not scores:
        raise ValueError("pairwise_win_rate needs at least one prompt.")
    return (record["wins"] + 0.5 * record["ties"]) / len(scores)


def win_loss_tie(scores: list[float], baseline_scores: list[float]) -> dict[str, Any]:
    """Per-prompt wins, losses and ties against the baseline, and the exact two-sided sign test on the decided
    prompts (ties dropped): p = min(1, 2 * P[Binomial(W + L, 1/2) <= min(W, L)]), 1.0 when nothing is decided.

    With many ties a win rate near 50% hides how few prompts decide it; p says whether the split of the decided
    ones could be chance (it ignores by how much a prompt was won).
    """
    if len(scores) != len(baseline_scores):
        raise ValueError(f"Got {len(scores)} scores but {len(baseline_scores)} baseline scores.")
    wins = sum(s > b for s, b in zip(scores, baseline_scores, strict=True))
    losses = sum(s < b for s, b in zip(scores, baseline_scores, strict=True))
    decided = wins + losses
    tail = sum(math.comb(decided, k) for k in range(min(wins, losses) + 1)) / 2**decided
    return {"wins": wins, "losses": losses, "ties": len(scores) - decided, "sign_test_p": min(1.0, 2 * tail)}
