"""Validate one artifact on the host: lowering gate, compression cost, golden data (DESIGN §5)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch

from builder.backends.base import Prepared, Runner
from builder.models.base import Model
from builder.recipe import EvalSection
from builder.tasks.embeddings import ExportableEncoder
from builder.validate import decoder, encoder
from builder.validate.data import sentences, token_windows
from builder.validate.gates import Validation, app_runtime_gates, lowering_gates, recipe_gates
from builder.validate.tasks import TaskData

GOLDEN_TOKENS = 16
GOLDEN_USER_MESSAGE = "Write one sentence about the sea."
ENCODER_SENTENCES = 32


# Texts whose token ids the platform tokenizers must reproduce exactly: accents, CJK, emoji, control
# and odd whitespace, punctuation runs, a word longer than WordPiece's limit, and a text to truncate.
TOKENIZER_SAMPLES = (
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "Café déjà vu: naïve façade, Ångström, İstanbul.",
    "Mixed CASE, digits 12345 and symbols: @#$%^&*()[]{}<>?/\\|~`",
    "  leading and trailing   spaces\tand\ttabs\nand newlines  ",
    "中文字符和日本語のテキスト, 한국어",
    "Emoji 🙂👍🏽 and math ∑∫√∞ «quotes» “curly” ‘single’ — dashes…",
    "zero\u200bwidth, no\u00a0break, soft\u00adhyphen, control\u0007bell",
    "unbelievably-long-hyphenated-compound-words antidisestablishmentarianism",
    "x" * 120,
    " ".join(["To be, or not to be, that is the question."] * 60),
)


@dataclass
class ValidationResult:
    validation: Validation
    golden: dict[str, Any]


def golden_prompt_text(model: Model) -> str:
    """The prompt every golden test replays: a chat turn when the model has a chat template."""
    if not model.spec.chat_template:
        return GOLDEN_USER_MESSAGE
    messages = [{"role": "user", "content": GOLDEN_USER_MESSAGE}]
    return model.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def golden_prompt(model: Model) -> torch.Tensor:
    ids = model.tokenizer(golden_prompt_text(model), add_special_tokens=False)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)


def tokenizer_golden(model: Model, max_length: int) -> list[dict[str, Any]]:
    """Ids the host tokenizer gives each sample: with special tokens and truncation for encoders (as
    the embedding wrappers tokenize), plain for decoders (whose chat template carries the specials)."""
    tok = model.tokenizer
    samples = []
    for text in TOKENIZER_SAMPLES:
        if model.spec.task == "embeddings":
            ids = tok(text, truncation=True, max_length=max_length)["input_ids"]
        else:
            ids = tok(text, add_special_tokens=False)["input_ids"]
        samples.append({"text": text, "ids": list(ids)})
    return samples


def decoder_cost(
    model: Model, runner: Runner, original: Runner, text: str, limits: EvalSection, tasks: TaskData | None,
    v: Validation,
) -> list[int]:  # fmt: skip
    """Compression cost of `runner` against `original` into `v`: perplexity, top-1, KL, greedy match and
    task accuracy; returns the runner's greedy tokens after the golden prompt."""
    prompt = golden_prompt(model)
    windows = token_windows(model.tokenizer, text, limits.windows, limits.window_tokens, limits.stride)
    decoder.measure_compression(runner, original, windows, v)
    tokens = decoder.greedy(runner, prompt, limits.decode_steps)
    v.greedy_match = decoder.common_prefix_fraction(decoder.greedy(original, prompt, limits.decode_steps), tokens)
    if tasks:
        v.tasks = tasks.score_decoder({"original": original, "artifact": runner}, model.tokenizer)
    v.eval = {
        "windows": limits.windows,
        "window_tokens": limits.window_tokens,
        "stride": limits.stride or limits.window_tokens,
        "decode_steps": limits.decode_steps,
    }
    return tokens


def validate_decoder(
    model: Model,
    prepared: Prepared,
    runner: Runner,
    text: str,
    limits: EvalSection,
    scheme: str,
    runtime: str,
    tasks: TaskData | None = None,
    original: torch.nn.Module | None = None,
) -> ValidationResult:
    """`model` is the model the artifact was lowered from; compression cost is measured against `original`
    (the model before pruning, factorization and distillation), by default `model.module` itself."""
    v = Validation(runtime=runtime)
    prompt = golden_prompt(model)
    decoder.measure_lowering(runner, prepared.runner, prompt, limits.decode_steps, v)
    original_runner = decoder.OriginalDecoderRunner(model.module if original is None else original)
    artifact_tokens = decoder_cost(model, runner, original_runner, text, limits, tasks, v)
    app = getattr(runner, "app_runtime", None)
    if app is not None:
        text_in = golden_prompt_text(model)
        v.app_runtime = decoder.check_app_runtime(app, model.tokenizer, text_in, prompt[0].tolist(), artifact_tokens)
    v.gates = lowering_gates(v, scheme) + app_runtime_gates(v) + recipe_gates(v, limits)
    v.decide()
    golden = {
        "prompt_message": GOLDEN_USER_MESSAGE,
        "prompt_text": golden_prompt_text(model),
        "prompt_ids": prompt[0].tolist(),
        "greedy_tokens": artifact_tokens[:GOLDEN_TOKENS],
    }
    return ValidationResult(v, golden)


_COST_FIGURES = {  # figure name -> Validation field
    True: {"perplexity": "perplexity", "perplexity_original": "perplexity_reference",
           "top1_agreement": "top1_agreement", "kl_divergence": "kl_divergence", "greedy_match": "greedy_match"},
    False: {"cosine_similarity": "cosine_similarity", "similarity_rank_correlation": "similarity_rank_correlation"},
}  # fmt: skip


def cost_figures(v: Validation | dict[str, Any], decoder: bool) -> dict[str, Any]:
    """The compression-cost figures that eval rows, compression steps and sweep points record, from a
    Validation or from a manifest's `validation`."""
    read = v.get if isinstance(v, dict) else lambda name: getattr(v, name)
    return {figure: read(field) for figure, field in _COST_FIGURES[decoder].items()}


def encoder_batch(model: Model, text: str, max_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batch = []
    for sentence in sentences(text, ENCODER_SENTENCES):
        enc = model.tokenizer(sentence, truncation=True, max_length=max_len, return_tensors="pt")
        batch.append((enc["input_ids"], enc["attention_mask"]))
    return batch


def original_encoder(model: Model, original: torch.nn.Module | None, max_len: int) -> encoder.OriginalEncoderRunner:
    module = model.module if original is None else original
    return encoder.OriginalEncoderRunner(ExportableEncoder(copy.deepcopy(module), model.spec, max_len))


def encoder_cost(
    model: Model, runner: Runner, original: Runner, text: str, max_len: int, tasks: TaskData | None, v: Validation
) -> None:
    """Compression cost of `runner` against `original` into `v`: cosine similarity and task accuracy."""
    batch = encoder_batch(model, text, max_len)
    encoder.measure_compression(runner, original, batch, v)
    if tasks:

        def embedder(of: Any) -> Any:
            def embed(sentence: str) -> torch.Tensor:
                enc = model.tokenizer(sentence, truncation=True, max_length=max_len, return_tensors="pt")
                return of.embed(enc["input_ids"], enc["attention_mask"])

            return embed

        v.tasks = tasks.score_encoder({"original": embedder(original), "artifact": embedder(runner)})
    v.eval = {"sentences": len(batch)}


def validate_encoder(
    model: Model,
    prepared: Prepared,
    runner: Runner,
    text: str,
    limits: EvalSection,
    scheme: str,
    runtime: str,
    tasks: TaskData | None = None,
    original: torch.nn.Module | None = None,
) -> ValidationResult:
    v = Validation(runtime=runtime)
    assert isinstance(prepared.module, ExportableEncoder)
    max_len = prepared.module.max_context
    batch = encoder_batch(model, text, max_len)
    encoder.measure_lowering(runner, prepared.runner, batch, v)
    encoder_cost(model, runner, original_encoder(model, original, max_len), text, max_len, tasks, v)
    v.gates = lowering_gates(v, scheme) + recipe_gates(v, limits)
    v.decide()
    ids, mask = batch[0]
    golden = {
        "text": sentences(text, 1)[0],
        "input_ids": ids[0].tolist(),
        "embedding": [round(x, 6) for x in runner.embed(ids, mask).tolist()],
    }
    return ValidationResult(v, golden)
