"""Scorers behind one interface: the IFEval scorer (lm-eval's checkers), and the reward-model scorer on tiny random classifiers built
from a config (a plain single-logit model and an ArmoRM-style gated multi-objective head); best-vs-worst selection."""

from dataclasses import dataclass

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification
from transformers.utils import ModelOutput

from adadpo.evaluation.scoring import IFEvalScorer, RewardModelScorer, build_scorer, scorable_prompts, select_pair
from adadpo.testing import build_tiny_tokenizer


PROMPTS = [{"prompt": "Say hi."}, {"prompt": "Name a colour."}, {"prompt": "Why is the sky blue?"}]
RESPONSES = ["hi", "red, or maybe a deep blue", "Because air scatters blue light more than red light."]


def tiny_classifier(tokenizer, num_labels=1, pad=True, cls=LlamaForSequenceClassification, seed=0):
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id if pad else None,
    )
    torch.manual_seed(seed)
    return cls(config).eval()


def unpadded_output(model, tokenizer, prompt, response):
    """The reference: one conversation, no padding, straight through the model."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}], tokenize=False
    )
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(input_ids=ids)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_ifeval_scorer_is_fraction_of_instructions_followed():
    pytest.importorskip("lm_eval", reason='IFEval needs the optional extra: pip install -e ".[eval]"')
    ids, kwargs = ["change_case:english_lowercase", "punctuation:no_comma"], [{}, {}]
    prompts = [
        {"id": "1", "prompt": "a", "ifeval": {"key": 1, "prompt": "a", "instruction_id_list": ids, "kwargs": kwargs}},
        {
            "id": "2",
            "prompt": "b",
            "ifeval": {
                "key": 2,
                "prompt": "b",
                "instruction_id_list": ["length_constraints:number_words"],
                "kwargs": [{"relation": "less than", "num_words": 3}],
            },
        },
        {
            "id": "3",
            "prompt": "c",
            "ifeval": {"key": 3, "prompt": "c", "instruction_id_list": ids[:1], "kwargs": [{}]},
        },
    ]
    responses = [
        "this is written in lowercase english, with a comma.",
        "three words here",
        "A Title In Capitals\nthen only lowercase words.",  # followed loosely (first line dropped), not strictly
    ]
    assert IFEvalScorer().score(prompts, responses) == [0.5, 0.0, 0.0]  # strict, as the ranking needs
    assert scorable_prompts(prompts) == (prompts, None)  # neither needs NLTK's punkt
    with pytest.raises(ValueError, match="needs them"):
        IFEvalScorer().score([{"prompt": "x"}], ["y"])
    with pytest.raises(ValueError, match="one prompt per response"):
        IFEvalScorer().score(prompts, ["only one"])


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_reward_model_scores_equal_unpadded_logit_0(tokenizer, batch_size):
    model = tiny_classifier(tokenizer)
    scores = RewardModelScorer(model, tokenizer, batch_size=batch_size).score(PROMPTS, RESPONSES)
    expected = [
        unpadded_output(model, tokenizer, p["prompt"], r).logits[0, 0].item() for p, r in zip(PROMPTS, RESPONSES)
    ]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) == len(scores)  # the response changes the reward


def test_reward_model_without_pad_token_scores_one_at_a_time(tokenizer):
    model = tiny_classifier(tokenizer, pad=False)
    no_pad = build_tiny_tokenizer()
    no_pad.pad_token = None
    scorer = RewardModelScorer(model, no_pad, batch_size=8)
    assert scorer.batch_size == 1
    expected = [unpadded_output(model, no_pad, p["prompt"], r).logits[0, 0].item() for p, r in zip(PROMPTS, RESPONSES)]
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(expected, abs=1e-5)


@dataclass
class GatedRewardOutput(ModelOutput):
    """Shaped like ArmoRM's custom output: per-objective rewards, the gated preference `score`, logits = score."""

    rewards: torch.FloatTensor | None = None
    score: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None


class TinyGatedRewardModel(LlamaForSequenceClassification):
    """ArmoRM-style head on a tiny Llama: 3 objective rewards mixed by fixed gating weights into one score."""

    gating = torch.tensor([0.2, 0.3, 0.5])

    def forward(self, input_ids=None, attention_mask=None, **kwargs):
        rewards = super().forward(input_ids=input_ids, attention_mask=attention_mask).logits
        score = (rewards * self.gating).sum(-1)
        return GatedRewardOutput(rewards=rewards, score=score, logits=score)


def test_armorm_style_model_is_read_from_its_score_field(tokenizer):
    model = tiny_classifier(tokenizer, num_labels=3, cls=TinyGatedRewardModel)
    scores = RewardModelScorer(model, tokenizer, batch_size=2).score(PROMPTS, RESPONSES)
    rewards = [unpadded_output(model, tokenizer, p["prompt"], r).rewards[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert rewards[0].shape == (3,)
    assert scores == pytest.approx([(r * TinyGatedRewardModel.gating).sum().item() for r in rewards], abs=1e-5)
    assert scores != pytest.approx([r[0].item() for r in rewards], abs=1e-5)


def test_multi_logit_model_without_score_field_is_an_error(tokenizer):
    scorer = RewardModelScorer(tiny_classifier(tokenizer, num_labels=2), tokenizer)
    with pytest.raises(ValueError, match="2 output logits and no `.score` field"):
        scorer.score(PROMPTS, RESPONSES)


def test_reward_model_tokenizer_needs_a_chat_template(tokenizer):
    plain = build_tiny_tokenizer()
    plain.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        RewardModelScorer(tiny_classifier(tokenizer), plain)


def test_reward_model_scorer_from_pretrained_folder(tokenizer, tmp_path):
    model = tiny_classifier(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = build_scorer("reward_model", str(tmp_path), batch_size=2)
    assert isinstance(loaded, RewardModelScorer)
    direct = RewardModelScorer(model, tokenizer).score(PROMPTS, RESPONSES)
    assert loaded.score(PROMPTS, RESPONSES) == pytest.approx(direct, abs=1e-5)


def test_build_scorer_errors():
    assert isinstance(build_scorer("ifeval"), IFEvalScorer)
    with pytest.raises(ValueError, match="needs `reward_model_name_or_path`"):
        build_scorer("reward_model")
    with pytest.raises(ValueError, match="Unknown scorer 'judge'"):
        build_scorer("judge")


def test_select_pair_best_vs_worst_with_length_tie_breaks():
    # best score 1.0 twice: the shorter (index 2) is chosen; worst 0.0 twice: the longer (index 3) is rejected
    assert select_pair([1.0, 0.5, 1.0, 0.0, 0.0], [30, 10, 20, 50, 40]) == (2, 3)
    assert select_pair([0.2, 0.9], [5, 5]) == (1, 0)
    assert select_pair([0.5, 0.5, 0.5], [1, 2, 3]) is None  # all tie: no preference signal, dropped
    with pytest.raises(ValueError, match=">= 2 samples"):
        select_pair([1.0], [3])
