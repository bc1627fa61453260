"""Check 1, template and tokens, on a sample of real rows.

TRL 1.16 tokenizes the prompt alone and prompt+completion, then silently starts the completion where the two diverge
(it only warns once), so a template that renders the prompt differently trains on a context the model never sees at
inference. This check tokenizes the raw rows itself, as TRL does, and counts what TRL would paper over; it reads the
trainer's own tokenized rows for what is actually trained (BOS, EOS, truncation).
"""

import math

from trl.data_utils import is_conversational

from adadpo.preflight.report import FAIL, PASS, WARN, Report


GROUP = "1 tokens"
WARN_FRACTION = 0.05  # truncated completions / dropped prompts above this share are worth a recipe change


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


def raw_token_ids(tokenizer, row: dict) -> tuple[list[int], list[int], list[int]]:
    """(prompt, prompt+chosen, prompt+rejected) ids as TRL 1.16 builds them: a chat template rendered without adding
    special tokens for conversational rows; the tokenizer's own special tokens and an EOS-terminated completion for
    text rows."""
    if is_conversational(row):
        render = tokenizer.apply_chat_template
        prompt = render(row["prompt"], tokenize=False, add_generation_prompt=True)
        full = [render(row["prompt"] + row[k], tokenize=False) for k in ("chosen", "rejected")]
        return _ids(tokenizer, prompt, False), *(_ids(tokenizer, f, False) for f in full)
    eos = tokenizer.eos_token or ""
    full = [row["prompt"] + (row[k] if row[k].endswith(eos) else row[k] + eos) for k in ("chosen", "rejected")]
    return _ids(tokenizer, row["prompt"], True), *(_ids(tokenizer, f, True) for f in full)


def _leading(ids: list[int], token_id) -> int:
    count = 0
    while count < len(ids) and ids[count] == token_id:
        count += 1
    return count


def _ends_with_eos(ids: list[int], eos_ids: set[int], tokenizer) -> bool:
    """The last EOS is followed by whitespace only (ChatML-style templates put a newline after `<|im_end|>`)."""
    last = max((i for i, t in enumerate(ids) if t in eos_ids), default=None)
    return last is not None and not tokenizer.decode(ids[last + 1 :]).strip()


def percentiles(values: list[int]) -> dict[str, int]:
    ordered = sorted(values) or [0]

    def at(q):
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


def suggested_max_length(totals: list[int]) -> int:
    """The 99th-percentile sequence length, rounded up to a multiple of 64."""
    return 64 * math.ceil(percentiles(totals)["p99"] / 64)


def check_tokens(report: Report, raw_train, tokenized_train, tokenizer, args, eos_ids: set[int], sample: int):
    raw = raw_train.select(range(min(sample, len(raw_train))))
    not_prefix, first_divergence, doubled = 0, None, 0
    for row in raw:
        prompt, *fulls = raw_token_ids(tokenizer, row)
        for full in fulls:
            if full[: len(prompt)] != prompt and first_divergence is None:
                at = next((i for i, (a, b) in enumerate(zip(prompt, full, strict=False)) if a != b), len(full))
                first_divergence = (tokenizer.decode(prompt[at : at + 8]), tokenizer.decode(full[at : at + 8]))
        not_prefix += any(full[: len(prompt)] != prompt for full in fulls)
        doubled += tokenizer.bos_token_id is not None and _leading(fulls[0], tokenizer.bos_token_id) > 1
    n = len(raw)
    if not_prefix:
        alone, inside = first_divergence
        report.add(
            GROUP,
            "prompt is a prefix of prompt+completion",
            FAIL,
            f"{not_prefix}/{n} rows differ",
            "fix `chat_template` (or the tokenizer): the prompt rendered with add_generation_prompt must be "
            f"the start of prompt+reply; it renders {alone!r} alone but {inside!r} inside the pair",
        )
    else:
        report.add(GROUP, "prompt is a prefix of prompt+completion", PASS, f"{n}/{n} rows")
    if doubled:
        report.add(
            GROUP,
            "at most one BOS",
            FAIL,
            f"{doubled}/{n} rows start with 2+ BOS",
            "the chat template emits BOS twice (or adds one the tokenizer adds too): remove the extra "
            "`{{ bos_token }}` from `chat_template`",
        )
    else:
        report.add(GROUP, "at most one BOS", PASS, f"0/{n} rows with a double BOS")

    rows = tokenized_train.select(range(min(sample, len(tokenized_train))))
    max_length = args.max_length or math.inf
    prompt_lens, completion_lens, totals, truncated, no_eos, checked = [], [], [], 0, 0, 0
    for row in rows:
        p = len(row["prompt_ids"])
        prompt_lens.append(p)
        cut = False
        for key in ("chosen_ids", "rejected_ids"):
            ids = row[key]
            completion_lens.append(len(ids))
            totals.append(p + len(ids))
            if p + len(ids) > max_length:
                cut = True
            else:
                checked += 1
                no_eos += not _ends_with_eos(ids, eos_ids, tokenizer)
        truncated += cut
    suggestion = suggested_max_length(totals)
    if no_eos:
        report.add(
            GROUP,
            "completions end with EOS",
            FAIL,
            f"{no_eos}/{checked} untruncated completions without EOS",
            "end every assistant turn with the EOS token: fix `chat_template`, or the data's completions",
        )
    else:
        report.add(GROUP, "completions end with EOS", PASS, f"{checked}/{checked} untruncated completions")
    share = truncated / max(1, len(rows))
    status = WARN if share > WARN_FRACTION else PASS
    report.add(
        GROUP,
        "pairs cut by max_length",
        status,
        f"{share:.1%} ({truncated}/{len(rows)})",
        f"`max_length: {suggestion}` (the 99th percentile of prompt+completion)",
    )
    dropped = len(raw_train) - len(tokenized_train)
    share = dropped / max(1, len(raw_train))
    status = WARN if share > WARN_FRACTION else PASS
    report.add(
        GROUP,
        "prompts dropped (prompt >= max_length)",
        status,
        f"{share:.1%} ({dropped}/{len(raw_train)})",
        f"`max_length: {suggestion}`, or shorter prompts",
    )
    report.add(GROUP, "prompt length (tokens)", PASS, _pct(percentiles(prompt_lens)))
    report.add(GROUP, "completion length (tokens)", PASS, _pct(percentiles(completion_lens)))
    return {"sequence_lengths": percentiles(totals), "suggested_max_length": suggestion}


def _pct(p: dict) -> str:
    return " ".join(f"{k} {v}" for k, v in p.items())
