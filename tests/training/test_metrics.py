"""`pair_metrics`: TRL-style reward/logp summaries and AdaDPO's diagnostics, against hand computations."""

import math

import pytest
import torch

from adadpo.training.metrics import pair_metrics


def test_pair_metrics_against_hand_computation():
    pairs = {
        "chosen_rewards": torch.tensor([1.0, -1.0, 2.0]),
        "rejected_rewards": torch.tensor([0.0, 0.5, 1.0]),
        "chosen_logps": torch.tensor([-10.0, -20.0, -6.0]),
        "rejected_logps": torch.tensor([-12.0, -18.0, -9.0]),
        "chosen_lengths": torch.tensor([5.0, 10.0, 3.0]),
        "rejected_lengths": torch.tensor([4.0, 6.0, 3.0]),
        "ref_chosen_logps": torch.tensor([-11.0, -19.0, -6.0]),
        "ref_rejected_logps": torch.tensor([-11.0, -19.0, -8.0]),
        "beta_w": torch.tensor([0.1, 0.2, 0.05]),
        "clipped": torch.tensor([False, True, False]),
        "grad_balance": torch.tensor([1.0, 3.0, float("inf")]),
        "log_grad_balance": torch.tensor([0.0, math.log(3.0), 80.0]),
    }
    m = pair_metrics(pairs, beta=0.1)
    assert m["batch/pairs"] == 3
    assert m["rewards/margins"] == pytest.approx((1 - 1.5 + 1) / 3)
    assert m["rewards/accuracies"] == pytest.approx(2 / 3)
    assert m["logps/chosen_per_token"] == pytest.approx((-2 - 2 - 2) / 3)
    assert m["adadpo/beta_w_max"] == pytest.approx(0.2) and m["adadpo/clip_fraction"] == pytest.approx(1 / 3)
    # log10 of the per-sequence ratios 1, 3, e^80 (saturated but exact in the log)
    log10 = [0.0, math.log10(3.0), 80 / math.log(10.0)]
    assert m["adadpo/log10_grad_balance_mean"] == pytest.approx(sum(log10) / 3)
    assert m["adadpo/log10_grad_balance_median"] == pytest.approx(math.log10(3.0))
    assert "adadpo/grad_balance_mean" not in m  # the raw ratio's mean is dominated by one pair: not logged
    # beta * [(lw - rw) - (ll - rl)] = 0.1 * [1 - (-1), -1 - 1, 0 - (-1)] = 0.1 * [2, -2, 1] -> mean 0.1 / 3
    assert m["kl/beta_margin"] == pytest.approx(0.1 * (2 - 2 + 1) / 3)
    # per token: chosen (1/5, -1/10, 0/3), rejected (-1/4, 1/6, -1/3)
    assert m["logratio/chosen_per_token"] == pytest.approx((0.2 - 0.1 + 0.0) / 3)
    assert m["logratio/rejected_per_token"] == pytest.approx((-0.25 + 1 / 6 - 1 / 3) / 3)


def test_reference_free_pairs_have_no_kl_margin():
    pairs = {
        k: torch.ones(2)
        for k in (
            "chosen_rewards",
            "rejected_rewards",
            "chosen_logps",
            "rejected_logps",
            "chosen_lengths",
            "rejected_lengths",
        )
    }
    assert not {"kl/beta_margin", "logratio/chosen_per_token"} & set(pair_metrics(pairs, beta=1.0))
