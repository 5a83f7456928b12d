"""Task accuracy from data files: loading with errors that name the line and key, scoring through runners."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from builder.errors import UserInputError
from builder.validate.encoder import measure_compression
from builder.validate.gates import Validation
from builder.validate.tasks import (
    ChoiceItem,
    classification_accuracy,
    load_labelled,
    load_multiple_choice,
    multiple_choice_accuracy,
)
from tests.conftest import build_cli, recipe_text


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_multiple_choice_files_load_with_answers_by_index_or_text(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "mc.jsonl", [
        {"question": "The sky is", "choices": ["blue", "green"], "answer": 0},
        {"question": "Grass is", "choices": ["blue", "green"], "answer": "green"},
    ])  # fmt: skip
    assert load_multiple_choice(path) == [
        ChoiceItem("The sky is", ("blue", "green"), 0), ChoiceItem("Grass is", ("blue", "green"), 1),
    ]  # fmt: skip


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"mc.jsonl:2: not JSON"),
    ('{"question": "q", "choices": ["a"], "answer": 0}', r"mc.jsonl:2: key 'choices' must list two or more"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 2}', r"mc.jsonl:2: key 'answer' must be a choice's index"),
    ('{"choices": ["a", "b"], "answer": 0}', r"mc.jsonl:2: key 'question' must be a non-empty string"),
])  # fmt: skip
def test_bad_multiple_choice_lines_name_the_line_and_key(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n' + line + "\n")
    with pytest.raises(UserInputError, match=message):
        load_multiple_choice(path)


def test_labelled_texts_need_two_labels_with_two_texts_each(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "l.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"},
                                         {"text": "c", "label": "y"}])  # fmt: skip
    with pytest.raises(UserInputError, match="two or more labels with two or more texts"):
        load_labelled(path)


class _FavouriteTokenRunner:
    """A decoder that always predicts token 7 with high probability: it prefers any choice made of 7s."""

    def reset(self) -> None:
        pass

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        logits = torch.zeros(input_ids.shape[1], 16)
        logits[:, 7] = 5.0
        return logits


class _Tokenizer:
    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [7 if c == "*" else 3 for c in text]}


def test_multiple_choice_picks_the_most_likely_choice_and_normalises_by_bytes() -> None:
    items = [
        ChoiceItem("q", ("**", "ab"), 0),  # the favoured tokens win
        ChoiceItem("q", ("ab", "**"), 0),  # so the answer here is wrong
        ChoiceItem("q", ("*", "******"), 1),  # a longer run of favoured tokens loses on the sum, wins per byte
    ]
    scores = multiple_choice_accuracy(_FavouriteTokenRunner(), _Tokenizer(), items, max_tokens=64)  # type: ignore[arg-type]
    assert scores == {"acc": pytest.approx(1 / 3), "acc_norm": pytest.approx(2 / 3), "items": 3}
    with pytest.raises(UserInputError, match=r"more than model\.max_context"):
        multiple_choice_accuracy(_FavouriteTokenRunner(), _Tokenizer(), items, max_tokens=4)  # type: ignore[arg-type]


def test_classification_accuracy_separates_clusters_and_not_noise() -> None:
    torch.manual_seed(0)
    centres = torch.eye(3, 16) * 10
    vectors = torch.cat([centres[i] + torch.randn(6, 16) for i in range(3)])
    labels = [name for name in "abc" for _ in range(6)]
    assert classification_accuracy(vectors, labels) == {"nearest_centroid": 1.0, "knn": 1.0, "texts": 18, "k": 5}
    shuffled = [labels[i] for i in torch.randperm(18).tolist()]
    assert classification_accuracy(vectors, shuffled)["nearest_centroid"] < 0.8


def test_similarity_rank_correlation_sees_reordered_neighbours_not_rescaling() -> None:
    torch.manual_seed(0)
    vectors = torch.randn(12, 16)
    batch = [(torch.tensor([[i]]), torch.ones(1, 1)) for i in range(12)]

    class Table:
        def __init__(self, table: torch.Tensor) -> None:
            self.table = table

        def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.table[int(input_ids)]

    def correlation(table: torch.Tensor) -> float:
        v = Validation(runtime="test")
        measure_compression(Table(table), Table(vectors), batch, v)
        assert v.similarity_rank_correlation is not None
        return v.similarity_rank_correlation

    assert correlation(vectors * 3.0) == pytest.approx(1.0)
    assert 0.5 < correlation(vectors + 0.3 * torch.randn(12, 16)) < 1.0
    assert abs(correlation(vectors[torch.randperm(12)])) < 0.3


def test_a_build_scores_the_original_and_every_artifact(tmp_path: Path) -> None:
    _jsonl(tmp_path / "mc.jsonl", [
        {"question": "To be, or not to be, that is the", "choices": ["question", "banana"], "answer": 0},
        {"question": "The quick brown fox jumps over the lazy", "choices": ["dog", "sea"], "answer": "dog"},
    ])  # fmt: skip
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(extra='multiple_choice = "mc.jsonl"\n'))
    code, output = build_cli(recipe, tmp_path / "dist", "--no-bench")
    assert code == 0, output
    (artifact,) = json.loads((tmp_path / "dist/tinychat-0.1.0/manifest.json").read_text())["artifacts"]
    scores = artifact["validation"]["tasks"]["multiple_choice"]
    assert set(scores) == {"original", "artifact"}
    assert all(s["items"] == 2 and 0 <= s["acc"] <= 1 for s in scores.values())
    report = (tmp_path / "dist/tinychat-0.1.0/report.html").read_text()
    shown = f"{scores['original']['acc']:.1%} → {scores['artifact']['acc']:.1%}"
    assert "multiple choice acc" in report and shown in report


def test_a_task_file_for_the_other_kind_of_model_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(extra='classification = "labels.jsonl"\n'))
    code, output = build_cli(recipe, tmp_path / "dist")
    assert code == 2 and "eval.classification scores embedding models" in output


def test_an_embedding_build_scores_classification_for_the_original_and_the_artifact(tmp_path: Path) -> None:
    rows = [{"text": f"{word} {i} on the shore", "label": "sea"} for i, word in enumerate(["Waves", "Tides", "Salt"])]
    rows += [{"text": f"{word} {i} in the wood", "label": "forest"} for i, word in enumerate(["Oaks", "Moss", "Ferns"])]
    _jsonl(tmp_path / "labels.jsonl", rows)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(source="builtin:tiny-bert", task="embeddings", quantize="a8w8", name="tinysearch",
                                  extra='classification = "labels.jsonl"\n'))  # fmt: skip
    code, output = build_cli(recipe, tmp_path / "dist", "--no-bench")
    assert code == 0, output
    (artifact,) = json.loads((tmp_path / "dist/tinysearch-0.1.0/manifest.json").read_text())["artifacts"]
    scores = artifact["validation"]["tasks"]["classification"]
    assert set(scores) == {"original", "artifact"}
    assert all(s["texts"] == 6 and 0 <= s["nearest_centroid"] <= 1 and 0 <= s["knn"] <= 1 for s in scores.values())
