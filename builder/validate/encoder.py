"""Encoder measurements: embedding parity with the reference and similarity to the original model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from builder.backends.base import EncoderRunner
from builder.validate.gates import Validation

Batch = list[tuple[torch.Tensor, torch.Tensor]]  # (input_ids [1, S], attention_mask [1, S]) per text


class OriginalEncoderRunner:
    """The uncompressed encoder, pooled exactly as the exported wrapper pools."""

    def __init__(self, wrapper: nn.Module) -> None:
        self.wrapper = wrapper

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.wrapper(input_ids, attention_mask)[0]


def _embed_all(runner: EncoderRunner, batch: Batch) -> torch.Tensor:
    return torch.stack([runner.embed(ids, mask).float() for ids, mask in batch])


def measure_lowering(artifact: EncoderRunner, reference: EncoderRunner, batch: Batch, v: Validation) -> None:
    art, ref = _embed_all(artifact, batch), _embed_all(reference, batch)
    max_abs = (art - ref).abs().max().item()
    v.lowering_max_abs_diff = max_abs
    v.lowering_relative_diff = max_abs / max(ref.abs().max().item(), 1e-12)
    v.lowering_min_cosine = F.cosine_similarity(art, ref, dim=-1).min().item()
    v.positions_compared = len(batch)


def measure_compression(artifact: EncoderRunner, original: EncoderRunner, batch: Batch, v: Validation) -> None:
    art, ref = _embed_all(artifact, batch), _embed_all(original, batch)
    v.cosine_similarity = F.cosine_similarity(art, ref, dim=-1).mean().item()
    if len(batch) > 2:
        v.similarity_rank_correlation = spearman(_pair_similarities(art), _pair_similarities(ref))


def _pair_similarities(embeddings: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(embeddings, dim=-1)
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)
    return (unit @ unit.T)[rows, cols]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.double().numpy(), b.double().numpy()).statistic)
