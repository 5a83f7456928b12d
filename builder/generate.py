"""Host text generation over any DecoderRunner: sampling, stop strings, UTF-8-safe streaming."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from builder.backends.base import DecoderRunner


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    seed: int = 0


def sample(logits: torch.Tensor, settings: SamplerSettings, generator: torch.Generator) -> int:
    if settings.temperature <= 0:
        return int(logits.argmax())
    logits = logits.float() / settings.temperature
    if settings.top_k > 0:
        kth = torch.topk(logits, min(settings.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if settings.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(0) - sorted_probs < settings.top_p  # always keeps the top token
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def stream(
    runner: DecoderRunner,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: list[int],
    settings: SamplerSettings,
    eos_ids: set[int],
    stop_strings: list[str],
    max_context: int,
) -> Iterator[str]:
    """Yield text pieces as they become complete characters; stop at EOS, a stop string or the context."""
    generator = torch.Generator().manual_seed(settings.seed)
    runner.reset()
    logits = runner.logits(torch.tensor([prompt_ids], dtype=torch.long), 0)[-1]
    position = len(prompt_ids)
    generated: list[int] = []
    emitted = ""
    for _ in range(settings.max_new_tokens):
        token = sample(logits, settings, generator)
        if token in eos_ids:
            break
        generated.append(token)
        text = tokenizer.decode(generated, skip_special_tokens=False)
        cut = min((text.find(s) for s in stop_strings if s and s in text), default=-1)
        if cut >= 0:
            yield text[len(emitted) : cut]
            return
        # A token that ends mid-character decodes to U+FFFD: wait for the rest of the bytes.
        if not text.endswith("\ufffd"):
            # Hold back a tail that could still grow into a stop string.
            hold = max((len(s) - 1 for s in stop_strings if s), default=0)
            safe = len(text) - hold if hold else len(text)
            if safe > len(emitted):
                yield text[len(emitted) : safe]
                emitted = text[:safe]
        if position + 1 >= max_context:
            break
        logits = runner.logits(torch.tensor([[token]], dtype=torch.long), position)[-1]
        position += 1
    text = tokenizer.decode(generated, skip_special_tokens=False)
    if len(text) > len(emitted):
        yield text[len(emitted) :]
