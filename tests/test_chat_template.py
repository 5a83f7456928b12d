"""Chat templates reduced to fixed strings for the phone wrappers, proved against the Jinja renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from builder.chat_template import SAMPLE_CONVERSATIONS, reduce_chat_template, sample_renders
from builder.errors import UserInputError
from builder.models.tiny import tiny_model_folder
from tests.conftest import build_cli, recipe_text

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
REVERSED = "{% for message in messages | reverse %}{{ message['role'] + ': ' + message['content'] }}{% endfor %}"
NUMBERED = "{% for message in messages %}{{ loop.index ~ '. ' + message['content'] + '\\n' }}{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_folder("tiny-llama"))


def _with_template(tokenizer: PreTrainedTokenizerBase, template: str) -> PreTrainedTokenizerBase:
    tokenizer.chat_template = template
    return tokenizer


@pytest.mark.parametrize("template", [None, SMOLLM2, LLAMA3, GEMMA], ids=["chatml", "smollm2", "llama3", "gemma"])
def test_reduction_reproduces_the_template(tokenizer: PreTrainedTokenizerBase, template: str | None) -> None:
    original = tokenizer.chat_template
    if template:
        _with_template(tokenizer, template)
    try:
        chat = reduce_chat_template(tokenizer, "builtin:test")
        samples = sample_renders(tokenizer, chat)
        assert len(samples) >= 4
        for sample in samples:
            messages = [(m["role"], m["content"]) for m in sample["messages"]]
            assert chat.render(messages, sample["add_generation_prompt"]) == sample["text"]
    finally:
        tokenizer.chat_template = original


def test_reduced_strings(tokenizer: PreTrainedTokenizerBase) -> None:
    original = tokenizer.chat_template
    try:
        smol = reduce_chat_template(_with_template(tokenizer, SMOLLM2), "smol")
        assert smol.preamble.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        assert smol.prefixes == {"user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"}
        assert smol.first_system_prefix == "<|im_start|>system\n"
        assert smol.generation_prompt == "<|im_start|>assistant\n"
        llama = reduce_chat_template(_with_template(tokenizer, LLAMA3), "llama")
        assert llama.trim_content and llama.preamble == tokenizer.bos_token
        gemma = reduce_chat_template(_with_template(tokenizer, GEMMA), "gemma")
        assert not gemma.supports_system and gemma.prefixes["assistant"] == "<start_of_turn>model\n"
        skipped = sum(any(r == "system" for r, _ in c) for c in SAMPLE_CONVERSATIONS)
        assert len(sample_renders(tokenizer, gemma)) == 2 * (len(SAMPLE_CONVERSATIONS) - skipped)
        with pytest.raises(ValueError, match="system"):
            gemma.render([("system", "x")], True)
    finally:
        tokenizer.chat_template = original


@pytest.mark.parametrize("template", [REVERSED, NUMBERED], ids=["reorders", "position-dependent"])
def test_irreducible_templates_are_refused_by_name(tokenizer: PreTrainedTokenizerBase, template: str) -> None:
    original = tokenizer.chat_template
    try:
        with pytest.raises(UserInputError, match=r"model source 'hf:odd'.*cannot be reduced.*Fix:"):
            reduce_chat_template(_with_template(tokenizer, template), "hf:odd")
    finally:
        tokenizer.chat_template = original


def test_build_refuses_an_irreducible_template_before_exporting(tmp_path: Path) -> None:
    folder = tmp_path / "odd-model"
    for file in tiny_model_folder("tiny-llama").iterdir():
        (folder / file.name).parent.mkdir(exist_ok=True)
        (folder / file.name).write_bytes(file.read_bytes())
    (folder / "chat_template.jinja").write_text(REVERSED)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(source="hf:odd-model"))
    code, output = build_cli(recipe, tmp_path / "dist", "--no-bench")
    assert code == 2, output
    assert "chat template cannot be reduced" in output and "Lowering" not in output
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
