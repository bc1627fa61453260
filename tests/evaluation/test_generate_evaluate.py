"""`scripts/generate_preferences.py` and `scripts/evaluate.py`, run in-process through `main(argv)` on tiny random
models saved to a temp dir (offline, CPU)."""

import json
import logging

import datasets
import pytest
from trl.data_utils import is_conversational

from adadpo.cli import evaluate, generate_preferences
from adadpo.evaluation.generation import SamplingConfig, generate, generate_transformers, load_causal_lm, vllm_usable
from adadpo.evaluation.stats import pairwise_win_rate, win_loss_tie
from adadpo.testing import build_tiny_tokenizer, save_tiny_model
from tests.evaluation.test_scoring import tiny_classifier
from tests.helpers.runs import REPO_ROOT


# IFEval instructions on which a tiny random model's samples differ (length, commas, a keyword), so pairs are not
# all ties; rows in IFEval's own format (instruction_id_list + kwargs), checked by lm-eval's checkers.
INSTRUCTIONS = [
    (["length_constraints:number_words"], [{"relation": "less than", "num_words": 9}]),
    (["punctuation:no_comma", "keywords:existence"], [{}, {"keywords": ["the"]}]),
    (["length_constraints:number_words", "punctuation:no_comma"], [{"relation": "at least", "num_words": 8}, {}]),
    (
        ["length_constraints:number_words", "keywords:existence"],
        [{"relation": "less than", "num_words": 8}, {"keywords": ["a"]}],
    ),
]
TASKS = ["Say hi.", "Name a colour.", "Explain rain.", "Write about dogs.", "List fruit.", "Describe a tree."]
IFEVAL_FILE = REPO_ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"


def ifeval_rows() -> list[dict]:
    return [
        {"key": i, "prompt": task, "instruction_id_list": INSTRUCTIONS[i % 4][0], "kwargs": INSTRUCTIONS[i % 4][1]}
        for i, task in enumerate(TASKS)
    ]


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return str(tiny_model_dir)


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    pytest.importorskip("lm_eval", reason='IFEval needs the optional extra: pip install -e ".[eval]"')
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ifeval_rows()))
    return str(path)


def gen_argv(model, prompts, output, *extra):
    return [
        f"--model_name_or_path={model}",
        f"--prompts={prompts}",
        f"--output_path={output}",
        "--num_samples=4",
        "--temperature=1.0",
        "--top_p=1.0",
        "--max_new_tokens=24",
        "--batch_size=4",
        "--seed=7",
        "--backend=transformers",
        *extra,
    ]


def test_batched_left_padded_greedy_generation_matches_one_by_one(tiny_model):
    model, tokenizer = load_causal_lm(tiny_model)
    greedy = SamplingConfig(max_new_tokens=12)
    batched = generate_transformers(model, tokenizer, TASKS, greedy, batch_size=6, progress=False)
    single = generate_transformers(model, tokenizer, TASKS, greedy, batch_size=1, progress=False)
    assert batched.texts == single.texts and batched.num_tokens == single.num_tokens
    assert all(1 <= n[0] <= 12 for n in batched.num_tokens)


@pytest.mark.skipif(vllm_usable(), reason="this machine can run vLLM, so asking for it is not an error here")
def test_backend_choice_is_validated(tiny_model):
    with pytest.raises(ValueError, match="needs the `vllm` package and a CUDA GPU"):
        generate(tiny_model, TASKS, SamplingConfig(), backend="vllm")
    with pytest.raises(ValueError, match="Unknown generation backend 'tgi'"):
        generate(tiny_model, TASKS, SamplingConfig(), backend="tgi")
    auto = generate(tiny_model, TASKS[:2], SamplingConfig(max_new_tokens=4), backend="auto", progress=False)
    assert len(auto.texts) == 2 and all(len(t) == 1 for t in auto.texts)


def test_sampling_ignores_the_model_generation_config_defaults(tiny_model):
    model, tokenizer = load_causal_lm(tiny_model)
    sampling = SamplingConfig(n=2, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=3)
    plain = generate_transformers(model, tokenizer, TASKS[:3], sampling, batch_size=3, progress=False)
    again = generate_transformers(model, tokenizer, TASKS[:3], sampling, batch_size=3, progress=False)
    assert plain.texts == again.texts  # same seed, same samples
    model.generation_config.top_k = 1  # what a Hub model's generation_config.json may carry
    model.generation_config.repetition_penalty = 10.0
    assert (
        generate_transformers(model, tokenizer, TASKS[:3], sampling, batch_size=3, progress=False).texts == plain.texts
    )
    reseed = SamplingConfig(n=2, temperature=1.0, top_p=0.9, max_new_tokens=12, seed=4)
    reseeded = generate_transformers(model, tokenizer, TASKS[:3], reseed, batch_size=3, progress=False)
    assert reseeded.texts != plain.texts


def test_generate_preferences_writes_a_trl_preference_dataset(tiny_model, prompt_file, tmp_path, caplog):
    output = tmp_path / "prefs.jsonl"
    with caplog.at_level(logging.INFO, logger="generate_preferences"):
        summary = generate_preferences.main(gen_argv(tiny_model, prompt_file, output))
    assert f"dropped {summary['num_ties']} of {len(TASKS)} prompts" in caplog.text
    data = datasets.load_dataset("json", data_files=str(output), split="train")
    assert len(data) == summary["num_pairs"] >= 1
    assert summary["num_pairs"] + summary["num_ties"] == len(TASKS)
    expected_columns = {"prompt_id", "prompt", "chosen", "rejected", "score_chosen", "score_rejected", "reward_margin"}
    assert set(data.column_names) == expected_columns
    from adadpo.evaluation.ifeval import prompt_scores, score_ifeval

    rows = {str(r["key"]): r for r in ifeval_rows()}

    def checked(prompt_id, text):  # what lm-eval's checkers make of the stored text
        return prompt_scores(score_ifeval([rows[prompt_id]], [text])["per_prompt"])[0]

    for row in data:
        assert is_conversational(row)
        assert [m["role"] for m in row["prompt"]] == ["user"]
        assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert chosen != rejected
        assert row["score_chosen"] > row["score_rejected"]
        assert row["reward_margin"] == pytest.approx(row["score_chosen"] - row["score_rejected"])
        # the stored scores are IFEval's scores of the stored texts
        assert row["score_chosen"] == checked(row["prompt_id"], chosen)
        assert row["score_rejected"] == checked(row["prompt_id"], rejected)


def test_generate_preferences_same_seed_same_pairs(tiny_model, prompt_file, tmp_path):
    first, second, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.parquet"
    generate_preferences.main(gen_argv(tiny_model, prompt_file, first))
    generate_preferences.main(gen_argv(tiny_model, prompt_file, second))
    assert first.read_bytes() == second.read_bytes()
    generate_preferences.main(gen_argv(tiny_model, prompt_file, other, "--seed=8"))
    reseeded = datasets.load_dataset("parquet", data_files=str(other), split="train")
    assert reseeded.to_list() != datasets.load_dataset("json", data_files=str(first), split="train").to_list()
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves no temp files behind


def test_generate_preferences_with_a_reward_model_and_hub_push(tiny_model, prompt_file, tmp_path, monkeypatch):
    tokenizer = build_tiny_tokenizer()
    tiny_classifier(tokenizer).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    pushed = {}
    monkeypatch.setattr(
        datasets.Dataset,
        "push_to_hub",
        lambda self, repo_id, private: pushed.update(rows=self.to_list(), repo=repo_id),
    )
    output = tmp_path / "rm-prefs.jsonl"
    argv = gen_argv(tiny_model, prompt_file, output, "--max_prompts=3", "--scorer=reward_model")
    argv += [f"--reward_model_name_or_path={tmp_path / 'rm'}", "--push_to_hub", "--hub_dataset_id=me/prefs"]
    summary = generate_preferences.main(argv)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert summary["num_pairs"] == len(rows) == 3  # continuous rewards: no ties
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    assert pushed == {"rows": rows, "repo": "me/prefs"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--output_path=out.csv"], "must end in one of"),
        (["--scorer=reward_model"], "needs `reward_model_name_or_path`"),
        (["--num_samples=1"], "must be >= 2"),
        (["--temperature=0"], "set temperature > 0"),
        (["--top_p=1.5"], r"\(0, 1\]"),
        (["--push_to_hub"], "needs `hub_dataset_id`"),
        (["--scorer=judge"], "Unknown scorer"),
    ],
)
def test_generate_preferences_rejects_bad_recipes_before_writing(tiny_model, prompt_file, tmp_path, extra, message):
    output = tmp_path / "never.jsonl"
    with pytest.raises(ValueError, match=message):
        generate_preferences.main(gen_argv(tiny_model, prompt_file, output) + extra)
    assert not any(tmp_path.iterdir())


def test_generate_preferences_needs_ifeval_instructions_for_the_ifeval_scorer(tiny_model, prompt_file, tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    with pytest.raises(ValueError, match="the ifeval scorer needs them"):
        generate_preferences.main(gen_argv(tiny_model, plain, tmp_path / "out" / "p.jsonl"))
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason=f"{IFEVAL_FILE} not present")
def test_generate_preferences_samples_only_prompts_it_can_score(tiny_model, prompt_file, tmp_path, caplog):
    """IFEval's train half; without NLTK's punkt the prompts needing it are dropped before sampling, and said so."""
    from adadpo.evaluation.ifeval import load_ifeval, unscorable

    train = load_ifeval(IFEVAL_FILE, "train")[:16]
    skip = unscorable(train)
    output = tmp_path / "prefs.jsonl"
    argv = gen_argv(tiny_model, "ifeval:train", output, "--max_prompts=16", f"--ifeval_data={IFEVAL_FILE}")
    with caplog.at_level(logging.INFO, logger="generate_preferences"):
        try:
            summary = generate_preferences.main(argv)
        except RuntimeError as error:  # a random tiny model may tie on every IFEval prompt: still counted right
            assert f"All {16 - len(skip)} prompts tied" in str(error)
            summary = None
    assert f"Sampling 4 responses for each of {16 - len(skip)} prompts" in caplog.text
    if summary is not None:
        assert summary["num_pairs"] + summary["num_ties"] == 16 - len(skip)
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert not {r["prompt_id"] for r in rows} & {str(k) for k in skip}
    if skip:
        assert f"{len(skip)} prompts not scored" in caplog.text and "punkt" in caplog.text


def test_generation_recipe_parses(tmp_path):
    recipe = REPO_ROOT / "recipes/smollm2-135m-instruct/generate/config_cpu.yaml"
    from trl import TrlParser

    (args,) = TrlParser([generate_preferences.GeneratePreferencesArguments]).parse_args_and_config(
        ["--config", str(recipe)]
    )
    assert args.prompts == "ifeval:train" and args.scorer == "ifeval" and args.num_samples == 4
    assert isinstance(args.temperature, float) and isinstance(args.top_p, float)


@pytest.mark.skipif(not IFEVAL_FILE.is_file(), reason=f"{IFEVAL_FILE} not present")
def test_evaluate_writes_table_json_and_benchmark_answer_files(tiny_model, tmp_path, capsys):
    pytest.importorskip("lm_eval", reason='IFEval needs the optional extra: pip install -e ".[eval]"')
    from lm_eval.tasks.ifeval.utils import process_results

    from adadpo.evaluation.ifeval import load_ifeval, seed_checkers, unscorable

    other = str(save_tiny_model(tmp_path / "other", seed=1))
    out = tmp_path / "eval"
    argv = ["--model_name_or_paths", tiny_model, other, "--model_names", "base", "trained"]
    argv += ["--prompts=ifeval:heldout", f"--ifeval_data={IFEVAL_FILE}", "--max_prompts=12", "--max_new_tokens=16"]
    argv += [f"--output_dir={out}"]
    summary = evaluate.main(argv)
    printed = capsys.readouterr().out
    header = (  # the order of METRICS and of lm-eval's results: prompt / instruction strict, then loose
        "| model | prompt-level strict | instruction-level strict | prompt-level loose | instruction-level loose |"
    )
    assert header + " win rate vs base | W / L / T (sign-test p) | mean length (tokens) |" in printed
    assert (out / "results.md").read_text() in printed
    assert json.loads((out / "results.json").read_text()) == summary

    prompts = load_ifeval(IFEVAL_FILE, "heldout")[:12]
    skip = unscorable(prompts)
    assert summary["num_scored"] == 12 - len(skip) and summary["num_unscored"] == len(skip)
    if skip:  # no NLTK punkt here: the table says how many prompts were left out and why
        assert f"{12 - len(skip)} of 12 prompts scored" in printed and "punkt" in summary["unscored_reason"]
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["id"] for a in answers] == [str(p["key"]) for p in prompts]
    by_name = {m["name"]: m for m in summary["models"]}
    for name in ("base", "trained"):
        responses = [a["responses"][name] for a in answers]
        # the four numbers are lm-eval's own process_results on these responses, aggregated as its task does
        reference = []
        for prompt, response in zip(prompts, responses):
            if prompt["key"] not in skip:
                seed_checkers(prompt["key"])
                reference.append(process_results(prompt, [response]))
        ifeval = by_name[name]["ifeval"]
        assert ifeval["prompt_level_loose_acc"] == sum(r["prompt_level_loose_acc"] for r in reference) / len(reference)
        flat = [x for r in reference for x in r["inst_level_strict_acc"]]
        assert ifeval["inst_level_strict_acc"] == sum(flat) / len(flat)
        strict = iter(reference)
        expected = [
            None if p["key"] in skip else (lambda r: sum(r) / len(r))(next(strict)["inst_level_strict_acc"])
            for p in prompts
        ]
        assert [a["scores"][name] for a in answers] == expected

        alpaca = json.loads((out / "alpaca_eval" / name / "model_outputs.json").read_text())
        assert [set(r) for r in alpaca] == [{"instruction", "output", "generator"}] * len(prompts)
        assert [r["instruction"] for r in alpaca] == [p["prompt"] for p in prompts]
        assert [r["output"] for r in alpaca] == responses and {r["generator"] for r in alpaca} == {name}

        arena = [json.loads(x) for x in (out / "arena-hard/model_answer" / f"{name}.jsonl").read_text().splitlines()]
        assert [set(r) for r in arena] == [{"question_id", "answer_id", "model_id", "choices", "tstamp"}] * len(
            prompts
        )
        assert [r["choices"][0]["turns"][0]["content"] for r in arena] == responses
        token_lens = [r["choices"][0]["turns"][0]["token_len"] for r in arena]
        assert by_name[name]["mean_response_tokens"] == pytest.approx(sum(token_lens) / len(prompts))
    assert by_name["base"]["win_rate_vs_base"] == 0.5
    base_scores = [a["scores"]["base"] for a in answers if a["scores"]["base"] is not None]
    trained_scores = [a["scores"]["trained"] for a in answers if a["scores"]["trained"] is not None]
    assert by_name["trained"]["win_rate_vs_base"] == pairwise_win_rate(trained_scores, base_scores)
    record = win_loss_tie(trained_scores, base_scores)
    assert {key: by_name["trained"][f"{key}_vs_base"] for key in record} == record
    assert by_name["base"]["ties_vs_base"] == summary["num_scored"] and by_name["base"]["sign_test_p_vs_base"] == 1.0
    row = f"{record['wins']} / {record['losses']} / {record['ties']} ({record['sign_test_p']:.2f})"
    table = (out / "results.md").read_text()
    assert f"| {row} |" in table
    # each IFEval column holds the metric its header names
    header, _, *lines = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.splitlines()[:4]]
    labels = {"prompt-level strict": "prompt_level_strict_acc", "instruction-level strict": "inst_level_strict_acc"}
    labels |= {"prompt-level loose": "prompt_level_loose_acc", "instruction-level loose": "inst_level_loose_acc"}
    for line in lines:
        for label, metric in labels.items():
            assert line[header.index(label)] == f"{100 * by_name[line[0]]['ifeval'][metric]:.1f}%"

    # greedy decoding: a second run gives the same answers
    evaluate.main(argv[:-1] + [f"--output_dir={tmp_path / 'again'}"])
    assert (tmp_path / "again" / "answers.jsonl").read_text() == (out / "answers.jsonl").read_text()


def test_evaluate_on_a_user_prompt_file_without_instructions(tiny_model, tmp_path):
    alpaca_prompts = tmp_path / "alpaca_eval.json"
    alpaca_prompts.write_text(
        json.dumps([{"instruction": f"Question {i}?", "dataset": "helpful_base"} for i in range(3)])
    )
    out = tmp_path / "eval"
    summary = evaluate.main(
        [
            f"--model_name_or_paths={tiny_model}",
            "--model_names=sft",
            f"--prompts={alpaca_prompts}",
            "--max_new_tokens=8",
            f"--output_dir={out}",
        ]
    )
    assert set(summary["models"][0]) == {"name", "model_name_or_path", "mean_response_tokens"}
    alpaca = json.loads((out / "alpaca_eval/sft/model_outputs.json").read_text())
    assert [(r["instruction"], r["dataset"], r["generator"]) for r in alpaca] == [
        (f"Question {i}?", "helpful_base", "sft") for i in range(3)
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Set `model_name_or_paths`"),
        (["--model_name_or_paths", "a", "b", "--model_names", "x", "x"], "must be unique"),
        (["--model_name_or_paths", "a", "--model_names", "x", "y"], "one name per model"),
        (["--model_name_or_paths", "a", "--base_model", "z"], "is not one of the model names"),
        (["--model_name_or_paths", "a", "--model_names", "a/b"], "used as file names"),
    ],
)
def test_evaluate_rejects_bad_arguments(argv, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        evaluate.main(argv + [f"--output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()
