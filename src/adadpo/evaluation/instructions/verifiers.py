"""Verifier functions: one pure `str -> bool` check per constraint type, in the spirit of IFEval
(Zhou et al., 2023, "Instruction-Following Evaluation for Large Language Models", arXiv:2311.07911).

Conventions shared by every verifier (documented in docs/evaluation.md):
- An empty or whitespace-only response fails every constraint, including "negative" ones such as
  `no_commas` or `word_count_max`: a non-answer follows no instruction, and otherwise an empty reply
  would be the cheapest way to collect score.
- Words are maximal runs of letters/digits, with inner apostrophes or hyphens kept (``don't``, ``well-known``).
- Word and phrase matching is case-insensitive; `required_words`/`forbidden_words` match whole words only.
"""

import json
import re


WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
PARAGRAPH_BREAK_RE = re.compile(r"\n\s*\n")
BULLET_RE = re.compile(r"^\s*[*\-•]\s+\S", re.MULTILINE)
TITLE_RE = re.compile(r"<<[^<>\n]*[^\s<>][^<>\n]*>>")
JSON_FENCE_RE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


def split_words(text: str) -> list[str]:
    return WORD_RE.findall(text)


def sentences(text: str) -> list[str]:
    """Split after `.`, `!` or `?` followed by whitespace; a trailing fragment without end punctuation counts too."""
    return [s for s in SENTENCE_END_RE.split(text.strip()) if split_words(s)]


def paragraphs(text: str) -> list[str]:
    """Blocks of text separated by at least one blank line."""
    return [p for p in PARAGRAPH_BREAK_RE.split(text.strip()) if p.strip()]


def bullet_points(text: str) -> list[str]:
    """Lines that start with a markdown bullet (`* `, `- ` or `• `)."""
    return BULLET_RE.findall(text)


def count_word(text: str, word: str) -> int:
    return len(re.findall(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text, flags=re.IGNORECASE))


def _answered(text: str) -> bool:
    return bool(text.strip())


def word_count_min(text: str, min_words: int) -> bool:
    return _answered(text) and len(split_words(text)) >= min_words


def word_count_max(text: str, max_words: int) -> bool:
    return _answered(text) and len(split_words(text)) <= max_words


def sentence_count_max(text: str, max_sentences: int) -> bool:
    return _answered(text) and 1 <= len(sentences(text)) <= max_sentences


def paragraph_count(text: str, num_paragraphs: int) -> bool:
    return _answered(text) and len(paragraphs(text)) == num_paragraphs


def required_words(text: str, words: list[str]) -> bool:
    return _answered(text) and all(count_word(text, w) > 0 for w in words)


def forbidden_words(text: str, words: list[str]) -> bool:
    return _answered(text) and not any(count_word(text, w) > 0 for w in words)


def keyword_frequency(text: str, word: str, min_count: int) -> bool:
    return _answered(text) and count_word(text, word) >= min_count


def all_lowercase(text: str) -> bool:
    return _answered(text) and any(c.isalpha() for c in text) and text == text.lower()


def all_uppercase(text: str) -> bool:
    return _answered(text) and any(c.isalpha() for c in text) and text == text.upper()


def bullet_count(text: str, num_bullets: int) -> bool:
    return _answered(text) and len(bullet_points(text)) == num_bullets


def json_output(text: str) -> bool:
    """The whole response is one JSON object or array (a ```json fence around it is allowed).

    Bare scalars (`1`, `"ok"`) are valid JSON but would make the constraint trivial, so they fail.
    """
    body = text.strip()
    fenced = JSON_FENCE_RE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return isinstance(json.loads(body), dict | list)
    except ValueError:
        return False


def ends_with(text: str, phrase: str) -> bool:
    """Nothing may follow the phrase except whitespace; case-insensitive."""
    return _answered(text) and text.strip().lower().endswith(phrase.strip().lower())


def starts_with(text: str, phrase: str) -> bool:
    return _answered(text) and text.strip().lower().startswith(phrase.strip().lower())


def title(text: str) -> bool:
    """A non-blank title wrapped in double angle brackets, e.g. `<<a day at sea>>`."""
    return _answered(text) and TITLE_RE.search(text) is not None


def no_commas(text: str) -> bool:
    return _answered(text) and "," not in text and "，" not in text


def postscript(text: str, marker: str) -> bool:
    """A line that starts with the marker (e.g. `P.S.`) and carries some text after it."""
    pattern = rf"^\s*{re.escape(marker)}\s*\S"
    return _answered(text) and re.search(pattern, text, flags=re.IGNORECASE | re.MULTILINE) is not None


def wrapped_in_quotes(text: str) -> bool:
    body = text.strip()
    return len(body) > 2 and body[0] == '"' and body[-1] == '"' and bool(split_words(body))
