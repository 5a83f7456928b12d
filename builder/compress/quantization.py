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


GROUP_SIZE = 32  # XNNPACK's int4 kernels read weights in groups of 32 inputs
GROUP_SCALE_BITS = 16  # XNNPACK packs int4 group scales as bf16 (Core ML's block scales are fp16)


def linear_storage_bits(linear: nn.Linear, bits: int, zero_points: bool = False) -> int:
    """Bits a Linear's weight takes at `bits`, its scales included: 4-bit in groups of 32 inputs with a 16-bit
    scale each (per row, fp32 scale, when the width is no multiple of 32) and with zero points an int8 offset
    each plus an fp32 scale per row; 8-bit per row with an fp32 scale; 16 and over is an unquantized float."""
    out_features, in_features = linear.weight.shape
    if bits >= 16:
        return linear.weight.numel() * bits
    if bits == 4 and in_features % GROUP_SIZE == 0:
        groups = out_features * (in_features // GROUP_SIZE)
        offsets = groups * 8 + out_features * 32 if zero_points else 0
        return linear.weight.numel() * bits + groups * GROUP_SCALE_BITS + offsets
    return linear.weight.numel() * bits + out_features * 32


def estimated_weight_bytes(module: nn.Module, scheme: str, quantize_embeddings: bool,
                           output_layer_int8: bool = True, bits: dict[str, int] | None = None,
                           zero_points: bool = False) -> int:  # fmt: skip
    """What the weights take once quantized: Linear weights at the scheme's bits (or `bits` by name, a mixed
    precision plan's) with their scales (and offsets with `zero_points`), embedding tables at 8 bits with a
    scale per row when quantized, every other parameter in fp32. A tied output projection counts twice, as
    exporters store it once per use."""
    head = eight_bit_output_layer(module, scheme) if output_layer_int8 else None
    total = 0
    counted: set[int] = set()
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            layer_bits = 8 if m is head else SCHEMES[scheme].weight_bits
            layer_bits = bits.get(name, layer_bits) if bits else layer_bits
            total += linear_storage_bits(m, layer_bits, zero_points) // 8
            counted.add(id(m.weight))
        elif isinstance(m, nn.Embedding):
            total += m.weight.numel() + m.weight.shape[0] * 4 if quantize_embeddings else m.weight.numel() * 4
            counted.add(id(m.weight))
    others = {id(p): p for p in module.parameters() if id(p) not in counted}
    return total + sum(p.numel() * 4 for p in others.values())
