"""Neutral quantization schemes (DESIGN §4). Each backend maps a scheme onto its own kernels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
        Scheme("a8w4", "dynamic int8 activations, int4 weights per group of 32", 4, True, True),
        Scheme("palette4", "4-bit k-means palettized weights", 4, False, False),
    )
}


def embeddings_quantized(scheme: str, override: bool | None) -> bool:
    return SCHEMES[scheme].quantizes_embeddings_by_default if override is None else override
