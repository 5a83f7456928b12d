"""Neutral quantization schemes (DESIGN §4). Each backend maps a scheme onto its own kernels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

SchemeName = Literal["fp32", "fp16", "w8", "w4", "a8w8", "a8w4", "palette4"]


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    weight_bits: int
    dynamic_activations: bool
    # Small models spend much of their bytes in the embedding table; int8 schemes quantize it by default.
    quantizes_embeddings_by_default: bool


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("fp32", "no quantization", 32, False, False),
        Scheme("fp16", "half-precision weights and compute", 16, False, False),
        Scheme("w8", "int8 weights, per channel (weight-only)", 8, False, True),
        Scheme("w4", "int4 weights, per block of 32 (weight-only)", 4, False, True),
        Scheme("a8w8", "dynamic int8 activations, int8 weights per channel", 8, True, True),
        Scheme("a8w4", "dynamic int8 activations, int4 weights per group of 32 (output layer int8)", 4, True, True),
        Scheme("palette4", "4-bit k-means palettized weights", 4, False, False),
    )
}


def embeddings_quantized(scheme: str, override: bool | None) -> bool:
    return SCHEMES[scheme].quantizes_embeddings_by_default if override is None else override


def eight_bit_output_layer(module: nn.Module, scheme: str) -> nn.Module | None:
    """The output projection a8w4 keeps at 8 bits per channel, or None. It turns every hidden state into
    logits, and 4 bits there alone cost SmolLM2-135M 15% of perplexity (eager, Hamlet: 40.3 with it at 4 bits,
    34.6 at 8, fp32 26.6) for 11% more bytes; llama.cpp's Q4_K_M keeps its output tensor at 6 bits too."""
    if scheme != "a8w4" or not hasattr(module, "get_output_embeddings"):
        return None
    head = module.get_output_embeddings()
    return head if isinstance(head, nn.Linear) else None


def estimated_weight_bytes(module: nn.Module, scheme: str, quantize_embeddings: bool,
                           output_layer_int8: bool = True) -> int:  # fmt: skip
    """What the weights take once quantized: Linear weights at the scheme's bits with one fp32 scale per group
    of 32 (4-bit) or per row (8-bit), embedding tables at 8 bits with a scale per row when quantized, every
    other parameter in fp32. A tied output projection counts twice, as exporters store it once per use."""
    head = eight_bit_output_layer(module, scheme) if output_layer_int8 else None
    total = 0
    counted: set[int] = set()
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bits = 8 if m is head else SCHEMES[scheme].weight_bits
            out_features, in_features = m.weight.shape
            scales = 0 if bits >= 16 else out_features * (-(-in_features // 32) if bits == 4 else 1)
            total += m.weight.numel() * bits // 8 + scales * 4
            counted.add(id(m.weight))
        elif isinstance(m, nn.Embedding):
            total += m.weight.numel() + m.weight.shape[0] * 4 if quantize_embeddings else m.weight.numel() * 4
            counted.add(id(m.weight))
    others = {id(p): p for p in module.parameters() if id(p) not in counted}
    return total + sum(p.numel() * 4 for p in others.values())
