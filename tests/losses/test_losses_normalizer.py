"""alpha-DPO's running margin statistics: EMA formula, first-batch init, gather, eval mode, state round-trip."""

import json
import math

import pytest
import torch

from adadpo.losses import AlphaMarginNormalizer, preference_loss


def test_ema_matches_hand_computation_and_starts_from_first_batch():
    norm = AlphaMarginNormalizer(momentum=0.9)
    first = norm.normalize(torch.tensor([1.0, 3.0]))
    # first batch: mean 2, unbiased std sqrt(2) (not 0.1 * those, as a zero-initialized EMA would give)
    assert norm.mean == pytest.approx(2.0) and norm.std == pytest.approx(math.sqrt(2.0))
    torch.testing.assert_close(first, torch.tensor([-1.0, 1.0]) / math.sqrt(2.0))
    second = norm.normalize(torch.tensor([10.0, 14.0]))  # batch mean 12, std sqrt(8)
    mean = 0.9 * 2.0 + 0.1 * 12.0
    std = 0.9 * math.sqrt(2.0) + 0.1 * math.sqrt(8.0)
    assert norm.mean == pytest.approx(mean) and norm.std == pytest.approx(std) and norm.num_updates == 2
    torch.testing.assert_close(second, (torch.tensor([10.0, 14.0]) - mean) / std)
    assert not second.requires_grad


def test_gather_is_used_for_the_statistics_but_output_stays_local():
    seen = []

    def gather(local):
        seen.append(local.clone())
        return torch.cat([local, torch.tensor([100.0, 200.0])])  # the other rank's margins

    norm = AlphaMarginNormalizer()
    out = norm.normalize(torch.tensor([0.0, 4.0]), gather)
    everything = torch.tensor([0.0, 4.0, 100.0, 200.0], dtype=torch.float64)
    assert len(seen) == 1
    assert norm.mean == pytest.approx(everything.mean().item()) and norm.std == pytest.approx(everything.std().item())
    assert out.shape == (2,)


def test_eval_mode_reads_without_updating_and_without_gathering():
    norm = AlphaMarginNormalizer()
    norm.normalize(torch.tensor([1.0, 2.0, 3.0]))
    state = norm.state_dict()

    def gather(_):
        raise AssertionError("gather must not be called when not updating")

    out = norm.normalize(torch.tensor([5.0, 6.0]), gather, update=False)
    assert norm.state_dict() == state
    torch.testing.assert_close(out, (torch.tensor([5.0, 6.0]) - state["mean"]) / state["std"])


def test_attributes_set_by_a_trainer_are_honoured():
    """A trainer may set `normalizer.gather` / `normalizer.update` once per step instead of passing them."""
    norm = AlphaMarginNormalizer()
    calls = []
    norm.gather = lambda t: calls.append(1) or t
    norm.normalize(torch.tensor([1.0, 2.0]))
    assert calls == [1] and norm.num_updates == 1
    norm.update = False
    norm.normalize(torch.tensor([7.0, 9.0]))
    assert norm.num_updates == 1
    norm.normalize(torch.tensor([7.0, 9.0]), update=True)  # explicit argument wins
    assert norm.num_updates == 2


def test_before_any_update_eval_uses_the_batch_statistics_without_storing():
    norm = AlphaMarginNormalizer()
    out = norm.normalize(torch.tensor([2.0, 4.0, 6.0]), update=False)
    torch.testing.assert_close(out, torch.tensor([-1.0, 0.0, 1.0]))
    assert norm.mean is None and norm.num_updates == 0


def test_single_pair_batches_and_non_finite_batches():
    norm = AlphaMarginNormalizer(momentum=0.5)
    out = norm.normalize(torch.tensor([3.0]))  # no std from one value: sigma falls back to 1
    assert norm.mean == 3.0 and norm.std is None and torch.equal(out, torch.tensor([0.0]))
    norm.normalize(torch.tensor([1.0, 3.0]))
    assert norm.mean == pytest.approx(0.5 * 3.0 + 0.5 * 2.0) and norm.std == pytest.approx(math.sqrt(2.0))
    before = norm.state_dict()
    norm.normalize(torch.tensor([1.0, math.nan]))
    assert norm.state_dict() == before  # a NaN batch does not poison the running statistics


def test_sigma_is_floored_at_eps():
    norm = AlphaMarginNormalizer(eps=1e-3)
    out = norm.normalize(torch.tensor([5.0, 5.0, 5.0]))
    assert norm.std == 0.0 and torch.isfinite(out).all()
    probe = torch.tensor([5.001, 5.001], dtype=torch.float64)
    torch.testing.assert_close(norm.normalize(probe, update=False), torch.ones(2, dtype=torch.float64))


def test_state_round_trips_through_json():
    norm = AlphaMarginNormalizer(momentum=0.8)
    for values in ([0.3, -1.2, 2.5], [1.0, 1.5], [-4.0, 0.0, 4.0, 8.0]):
        norm.normalize(torch.tensor(values))
    restored = AlphaMarginNormalizer(momentum=0.8)
    restored.load_state_dict(json.loads(json.dumps(norm.state_dict())))
    assert restored.state_dict() == norm.state_dict()
    probe = torch.tensor([0.5, -0.5, 3.0])
    torch.testing.assert_close(restored.normalize(probe), norm.normalize(probe))  # and the next update agrees
    assert restored.state_dict() == norm.state_dict()


def test_bad_construction_and_state():
    with pytest.raises(ValueError, match="alpha_dpo_momentum"):
        AlphaMarginNormalizer(momentum=1.0)
    with pytest.raises(ValueError, match="eps"):
        AlphaMarginNormalizer(eps=0.0)
    with pytest.raises(ValueError, match="missing"):
        AlphaMarginNormalizer().load_state_dict({"mean": 1.0})


def test_preference_loss_passes_gather_and_eval_flag_through():
    batch = {
        "policy_chosen_logps": torch.tensor([-10.0, -20.0]),
        "policy_rejected_logps": torch.tensor([-12.0, -18.0]),
        "chosen_lengths": torch.tensor([4, 8]),
        "rejected_lengths": torch.tensor([5, 6]),
        "ref_chosen_logps": torch.tensor([-11.0, -19.0]),
        "ref_rejected_logps": torch.tensor([-11.0, -21.0]),
    }
    norm = AlphaMarginNormalizer()
    gathered = []
    preference_loss("alpha_dpo", **batch, margin_normalizer=norm, margin_gather=lambda t: gathered.append(t) or t)
    assert len(gathered) == 1 and norm.num_updates == 1
    preference_loss("alpha_dpo", **batch, margin_normalizer=norm, update_margin_stats=False)
    assert norm.num_updates == 1
    norm.update = False  # trainer-style attribute, with preference_loss's defaults left alone
    preference_loss("alpha_dpo", **batch, margin_normalizer=norm)
    assert norm.num_updates == 1
