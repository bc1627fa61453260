"""An out-of-memory error in a micro-batch's forward: the micro-batch is split, its parts accumulate to the same
optimizer step, and the run equals the run without the error (weights and every logged number, 1e-6 in fp32).

The error is the real `torch.OutOfMemoryError`, raised by a forward pre-hook when the policy's `input_ids` hold more
than N entries (`tests/helpers/runs.py::OutOfMemoryAbove`); N is chosen so that whole micro-batches fail and their
halves (or quarters) fit. Losses whose value couples the pairs of a micro-batch (CPO's mean length, alpha-DPO's
margin statistics) are included: the loss is computed once on the whole micro-batch.
"""

import pytest

from adadpo.cli import run_adadpo
from adadpo.training.oom import OutOfMemoryStop
from tests.helpers.distributed_harness import assert_every_logged_number_close, assert_weights_close
from tests.helpers.runs import OutOfMemoryAbove, extra_callbacks, tiny_run_args, train


def assert_same_run(split_trainer, whole_trainer, tol=1e-6):
    assert_every_logged_number_close(split_trainer.state.log_history, whole_trainer.state.log_history, rel=tol)


# (name, overrides, tokens above which the forward fails, tolerance): padded micro-batches of 4 pairs are 8 rows of
# up to 64 tokens; packed, one row of all 8 sequences. alpha-DPO divides margins of ~1e-3 between log-probs of ~-80
# by their batch std: the fp32 rounding of a forward without a graph (another attention kernel) grows to ~1e-5 in
# its loss by step 3 (steps 1 and 2 are bit-equal)
CASES = [
    ("adadpo-padded", {"loss_type": "adadpo"}, 200, 1e-6),
    ("adadpo-packed", {"loss_type": "adadpo", "padding_free": True, "attn_implementation": "sdpa"}, 150, 1e-6),
    ("cpo-padded", {"loss_type": "cpo"}, 120, 1e-6),
    ("alpha_dpo-packed", {"loss_type": "alpha_dpo", "padding_free": True, "attn_implementation": "sdpa"}, 150, 1e-4),
]


@pytest.mark.parametrize("name, overrides, limit, tol", CASES, ids=[c[0] for c in CASES])
def test_an_out_of_memory_forward_is_split_and_trains_as_if_it_fit(name, overrides, limit, tol, tiny_model_dir,
                                                                   pref_jsonl, tmp_path):  # fmt: skip
    # SGD: the weights move by the gradient itself (Adam would amplify fp32 rounding of near-zero gradients)
    common = {
        "per_device_train_batch_size": 4,
        "global_batch_size": 8,
        "optim": "sgd",
        "learning_rate": 0.1,
        **overrides,
    }
    whole = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "whole", **common))
    oom = OutOfMemoryAbove(limit)
    with extra_callbacks(oom):
        split = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "split", **common))
    assert oom.raised >= 1 and split.oom_splitter.splits >= 1  # the injected error did happen, and was split away
    assert whole.oom_splitter.splits == 0
    assert_same_run(split, whole, tol)
    assert_weights_close(tmp_path / "split", tmp_path / "whole", rtol=tol)


def test_later_micro_batches_of_that_size_are_split_at_once(tiny_model_dir, pref_jsonl, tmp_path):
    """After one failure, a micro-batch at least as long is split before its forward: fewer errors than splits."""
    oom = OutOfMemoryAbove(200)
    with extra_callbacks(oom):
        trainer = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "run",
                                                  per_device_train_batch_size=4, global_batch_size=8))  # fmt: skip
    assert trainer.oom_splitter.failed_tokens is not None
    assert trainer.oom_splitter.splits > oom.raised >= 1


def test_a_micro_batch_of_three_pairs_is_split_down_to_one_pair_each(tiny_model_dir, pref_jsonl, tmp_path):
    """3 pairs: halves of 2 + 1 pairs, then 3 parts of one pair, the size at which every pair fits (not a stop after
    two parts because 2 x 2 > 3)."""
    common = {"per_device_train_batch_size": 3, "global_batch_size": 3, "optim": "sgd", "learning_rate": 0.1}
    whole = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "whole", **common))
    limit = 2 * 64  # one pair (2 rows of at most max_length 64) always fits; two pairs mostly do not
    with extra_callbacks(OutOfMemoryAbove(limit)):
        split = train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "split", **common))
    assert split.oom_splitter.splits >= 1
    assert_same_run(split, whole)


def test_an_out_of_memory_error_at_one_pair_stops_with_its_size_and_the_fixes(tiny_model_dir, pref_jsonl, tmp_path):
    with extra_callbacks(OutOfMemoryAbove(8)), pytest.raises(OutOfMemoryStop) as stopped:
        train(run_adadpo, tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "run", per_device_train_batch_size=4))
    message = str(stopped.value)
    assert "micro-batch of 1 pair(s)" in message and "tokens (padded)" in message
    assert "max_length" in message and "gradient_checkpointing" in message and "sequence parallelism" in message


def test_without_oom_resplit_the_error_stops_the_run(tiny_model_dir, pref_jsonl, tmp_path):
    argv = tiny_run_args(tiny_model_dir, pref_jsonl, tmp_path / "run", per_device_train_batch_size=4,
                         oom_resplit=False)  # fmt: skip
    with extra_callbacks(OutOfMemoryAbove(200)), pytest.raises(OutOfMemoryStop, match="micro-batch of 4 pair"):
        train(run_adadpo, argv)
