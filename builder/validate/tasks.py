"""Task accuracy from data files people can write, measured through the same runners as every other figure,
so an artifact is scored in its real runtime and the original model beside it:

- multiple choice (JSONL: `question`, `choices`, `answer` as an index or the choice's text), scored by the
  log-likelihood of each choice after the question, as lm-evaluation-harness does (`acc`, and `acc_norm`
  with the log-likelihood divided by the choice's length in bytes);
- labelled texts for embedding models (JSONL: `text`, `label`): leave-one-out nearest-centroid and k-NN
  accuracy by cosine similarity.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from builder.backends.base import DecoderRunner
from builder.errors import UserInputError

NEIGHBOURS = 5


@dataclass(frozen=True)
class ChoiceItem:
    question: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class LabelledText:
    text: str
    label: str


def _records(path: Path, key: str) -> list[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise UserInputError(f"{key} = {str(path)!r}: no such file. Fix: point it at a JSONL file")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserInputError(f"{path}:{number}: not JSON ({exc.msg}). Fix: one JSON object per line") from exc
        if not isinstance(record, dict):
            raise UserInputError(f"{path}:{number}: not a JSON object. Fix: one JSON object per line")
        records.append((number, record))
    if not records:
        raise UserInputError(f"{key} = {str(path)!r} holds no records. Fix: add one JSON object per line")
    return records


def _text(path: Path, number: int, record: dict[str, Any], field: str) -> str:
    value = record.get(field)
    if not isinstance(value, str) or not value.strip():
        raise UserInputError(f"{path}:{number}: key {field!r} must be a non-empty string, got {value!r}")
    return value


def load_multiple_choice(path: Path, key: str = "eval.multiple_choice") -> list[ChoiceItem]:
    items = []
    for number, record in _records(path, key):
        question = _text(path, number, record, "question")
        choices = record.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
            raise UserInputError(f"{path}:{number}: key 'choices' must list two or more strings, got {choices!r}")
        answer = record.get("answer")
        if isinstance(answer, str) and answer in choices:
            answer = choices.index(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise UserInputError(
                f"{path}:{number}: key 'answer' must be a choice's index (0 to {len(choices) - 1}) or its text, "
                f"got {record.get('answer')!r}"
            )
        items.append(ChoiceItem(question, tuple(choices), answer))
    return items


def load_labelled(path: Path, key: str = "eval.classification") -> list[LabelledText]:
    texts = [LabelledText(_text(path, n, r, "text"), _text(path, n, r, "label")) for n, r in _records(path, key)]
    counts: dict[str, int] = {}
    for item in texts:
        counts[item.label] = counts.get(item.label, 0) + 1
    if len(counts) < 2 or min(counts.values()) < 2:
        raise UserInputError(
            f"{key} = {str(path)!r}: needs two or more labels with two or more texts each (leave-one-out), got {counts}"
        )
    return texts


def _continuation_logprob(runner: DecoderRunner, context: list[int], continuation: list[int]) -> float:
    runner.reset()
    ids = torch.tensor([context + continuation])
    logprobs = F.log_softmax(runner.logits(ids, 0).float()[:-1], dim=-1)
    positions = range(len(context) - 1, len(context) + len(continuation) - 1)
    return float(sum(logprobs[p, ids[0, p + 1]] for p in positions))


def multiple_choice_accuracy(
    runner: DecoderRunner, tokenizer: PreTrainedTokenizerBase, items: list[ChoiceItem], max_tokens: int
) -> dict[str, float]:
    """`acc` (highest log-likelihood) and `acc_norm` (per byte of the choice) over the items."""
    correct = correct_norm = 0
    for item in items:
        context = tokenizer(item.question, add_special_tokens=False)["input_ids"]
        scores, normalised = [], []
        for choice in item.choices:
            continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            if len(context) + len(continuation) > max_tokens:
                raise UserInputError(
                    f"a multiple-choice question and its choice {choice!r} take {len(context) + len(continuation)} "
                    f"tokens, more than model.max_context ({max_tokens}). Fix: shorten it or raise max_context"
                )
            score = _continuation_logprob(runner, context, continuation)
            scores.append(score)
            normalised.append(score / len((" " + choice).encode("utf-8")))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == item.answer)
        correct_norm += int(max(range(len(normalised)), key=normalised.__getitem__) == item.answer)
    return {"acc": correct / len(items), "acc_norm": correct_norm / len(items), "items": len(items)}


def classification_accuracy(vectors: torch.Tensor, labels: list[str]) -> dict[str, float]:
    """Leave-one-out accuracy of nearest centroid and of a k-NN majority vote, both by cosine similarity."""
    unit = F.normalize(vectors.float(), dim=-1)
    names = sorted(set(labels))
    index = torch.tensor([names.index(label) for label in labels])
    sums = torch.zeros(len(names), unit.shape[1]).index_add_(0, index, unit)
    counts = torch.bincount(index, minlength=len(names)).float()
    similarity = unit @ unit.T
    similarity.fill_diagonal_(-float("inf"))
    centroid_hits = knn_hits = 0
    for i in range(len(labels)):
        own = index[i]
        centroids = sums.clone()
        centroids[own] -= unit[i]
        centroid_counts = counts.clone()
        centroid_counts[own] -= 1
        means = F.normalize(centroids / centroid_counts.clamp(min=1).unsqueeze(1), dim=-1)
        centroid_hits += int(int((means @ unit[i]).argmax()) == int(own))
        nearest = similarity[i].topk(min(NEIGHBOURS, len(labels) - 1)).indices
        votes = torch.bincount(index[nearest], minlength=len(names))
        knn_hits += int(int(votes.argmax()) == int(own))
    return {"nearest_centroid": centroid_hits / len(labels), "knn": knn_hits / len(labels), "texts": len(labels),
            "k": NEIGHBOURS}  # fmt: skip


@dataclass(frozen=True)
class TaskData:
    """The recipe's task files, loaded once per build and scored for every artifact and the original."""

    max_tokens: int
    multiple_choice: list[ChoiceItem] | None = None
    classification: list[LabelledText] | None = None

    @classmethod
    def load(cls, multiple_choice: str | None, classification: str | None, base_dir: Path, max_tokens: int) -> TaskData:
        return cls(
            max_tokens=max_tokens,
            multiple_choice=load_multiple_choice(base_dir / multiple_choice) if multiple_choice else None,
            classification=load_labelled(base_dir / classification) if classification else None,
        )

    def score_decoder(self, runners: dict[str, DecoderRunner], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
        if not self.multiple_choice:
            return {}
        items = self.multiple_choice
        scores = {name: multiple_choice_accuracy(runner, tokenizer, items, self.max_tokens)
                  for name, runner in runners.items()}  # fmt: skip
        return {"multiple_choice": scores}

    def score_encoder(self, embedders: dict[str, Callable[[str], torch.Tensor]]) -> dict[str, Any]:
        if not self.classification:
            return {}
        labels = [item.label for item in self.classification]
        scores = {}
        for name, embed in embedders.items():
            vectors = torch.stack([embed(item.text) for item in self.classification])
            scores[name] = classification_accuracy(vectors, labels)
        return {"classification": scores}
