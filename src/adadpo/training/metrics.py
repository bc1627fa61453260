"""Per-step training metrics from per-pair tensors already gathered over processes (pure, no accelerate)."""

import math

import torch


def _finite(values: torch.Tensor) -> torch.Tensor:
    return values[torch.isfinite(values)]


def pair_metrics(pairs: dict[str, torch.Tensor], beta: float) -> dict[str, float]:
    """TRL-style `rewards/*` and `logps/*`, lengths, and AdaDPO's diagnostics.

    `rewards/*` use the coefficient the loss actually applied (beta_w for Ada- losses). `kl/beta_margin` is
    beta * [(lw - rw) - (ll - rl)] with the plain beta, comparable across losses (reference-based losses only);
    `logratio/*_per_token` the per-token (lw - rw) / |y_w| and (ll - rl) / |y_l| (the same losses).
    `adadpo/token_grad_balance_*` summarise the per-token |dL/dq_w| / |dL/dq_l| (1 = balanced; Stable AdaDPO holds
    it there, DPO's falls below 1); `adadpo/log10_grad_balance_*` the per-sequence log10 |dL/dP_w| / |dL/dP_l|.
    """
    chosen_rewards, rejected_rewards = pairs["chosen_rewards"], pairs["rejected_rewards"]
    chosen_len, rejected_len = pairs["chosen_lengths"].clamp(min=1), pairs["rejected_lengths"].clamp(min=1)
    out = {
        "batch/pairs": float(chosen_rewards.numel()),  # pairs summarised, over all processes
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean().item(),
        "logps/chosen": pairs["chosen_logps"].mean().item(),
        "logps/rejected": pairs["rejected_logps"].mean().item(),
        "logps/chosen_per_token": (pairs["chosen_logps"] / chosen_len).mean().item(),
        "logps/rejected_per_token": (pairs["rejected_logps"] / rejected_len).mean().item(),
        "lengths/chosen": pairs["chosen_lengths"].mean().item(),
        "lengths/rejected": pairs["rejected_lengths"].mean().item(),
    }
    if "beta_w" in pairs:
        beta_w = pairs["beta_w"]
        out.update(
            {
                "adadpo/beta_w_mean": beta_w.mean().item(),
                "adadpo/beta_w_min": beta_w.min().item(),
                "adadpo/beta_w_max": beta_w.max().item(),
            }
        )
    if "clipped" in pairs:
        out["adadpo/clip_fraction"] = pairs["clipped"].float().mean().item()
    if "token_grad_balance" in pairs:  # per token: Stable AdaDPO holds it at 1 unless clipped
        token_balance = _finite(pairs["token_grad_balance"])
        if token_balance.numel():
            out["adadpo/token_grad_balance_mean"] = token_balance.mean().item()
            out["adadpo/token_grad_balance_median"] = token_balance.median().item()
    if "log_grad_balance" in pairs:
        # Per sequence the ratio swings by tens of orders of magnitude with the length difference of a pair (the
        # loss saturates it at e^80), so it is logged as log10: 0 is balanced, -3 means the rejected side gets 1000x.
        log10_balance = _finite(pairs["log_grad_balance"]) / math.log(10.0)
        if log10_balance.numel():
            out["adadpo/log10_grad_balance_mean"] = log10_balance.mean().item()
            out["adadpo/log10_grad_balance_median"] = log10_balance.median().item()
    if "ref_chosen_logps" in pairs:
        chosen_ratio = pairs["chosen_logps"] - pairs["ref_chosen_logps"]
        rejected_ratio = pairs["rejected_logps"] - pairs["ref_rejected_logps"]
        out["kl/beta_margin"] = (beta * (chosen_ratio - rejected_ratio)).mean().item()
        # The mechanism AdaDPO's paper argues about: how far each side moved from the reference, per token (DPO
        # pushes the rejected side down faster than it pulls the chosen side up)
        out["logratio/chosen_per_token"] = (chosen_ratio / chosen_len).mean().item()
        out["logratio/rejected_per_token"] = (rejected_ratio / rejected_len).mean().item()
    return out
