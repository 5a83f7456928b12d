"""Calibration text a decoder writes itself: seeded samples from the unquantized model.

GPTQ fits each layer to the inputs it sees, so calibrating on one register (Shakespeare) fits that register
and costs more on others. The model's own samples cover what it learned to write, with no corpus at hand,
as data-free quantization methods do (LLM-QAT, Liu et al., 2023). On SmolLM2-135M a8w4 (eager, 4 x 256
tokens, same 8-bit Linears), 32 sampled windows beside 32 windows of the plays cut the perplexity added on
Python documentation from +16.4% to +11.4% and on the GPL from +19.8% to +12.7%, Hamlet staying at +6.6%."""

from __future__ import annotations

import torch
from torch import nn

# The sampler, recorded with the windows: unchanged settings give the same tokens on the same machine.
SAMPLING = {"temperature": 1.0, "top_p": 0.95, "top_k": 50, "seed": 0}


@torch.no_grad()
def generated_windows(module: nn.Module, start_id: int, count: int, length: int) -> list[torch.Tensor]:
    """`count` windows of `length` tokens ([1, length] each) sampled from `module` after `start_id` alone,
    in one batch, never stopping early."""
    start = torch.full((count, 1), start_id, dtype=torch.long)
    with torch.random.fork_rng():
        torch.manual_seed(SAMPLING["seed"])
        out = module.eval().generate(
            start,
            attention_mask=torch.ones_like(start),
            do_sample=True,
            temperature=SAMPLING["temperature"],
            top_p=SAMPLING["top_p"],
            top_k=SAMPLING["top_k"],
            max_new_tokens=length,
            min_new_tokens=length,
            pad_token_id=start_id,
        )
    return [out[i : i + 1, 1 : length + 1].clone() for i in range(count)]


def interleaved(first: list[torch.Tensor], second: list[torch.Tensor]) -> list[torch.Tensor]:
    """Alternating windows, so any leading share of them (the sensitivity windows) reads both sources."""
    merged = [w for pair in zip(first, second, strict=False) for w in pair]
    shorter = min(len(first), len(second))
    return merged + first[shorter:] + second[shorter:]
