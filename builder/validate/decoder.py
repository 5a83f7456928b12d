"""Decoder measurements: lowering error, compression cost and golden tokens, all through runners."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from builder.backends.base import DecoderRunner
from builder.validate.data import Window
from builder.validate.gates import NEAR_TIE_MARGIN, Validation


class OriginalDecoderRunner:
    """The uncompressed model in plain transformers, recomputing the whole sequence each step.

    Slow but independent of every export trick, which is what a reference should be.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.history = torch.zeros((1, 0), dtype=torch.long)

    def reset(self) -> None:
        self.history = torch.zeros((1, 0), dtype=torch.long)

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        self.history = torch.cat([self.history[:, :start_pos], input_ids], dim=1)
        out = self.module(input_ids=self.history, use_cache=False).logits[0]
        return out[-input_ids.shape[1] :]


def measure_lowering(
    artifact: DecoderRunner, reference: DecoderRunner, prompt: torch.Tensor, steps: int, v: Validation
) -> None:
    """Prefill then `steps` decode steps, both runners fed the reference's greedy tokens."""
    artifact.reset()
    reference.reset()
    ref = reference.logits(prompt, 0)
    art = artifact.logits(prompt, 0)
    pairs = [(ref, art)]
    for step in range(steps):
        token = ref[-1].argmax().view(1, 1)
        pos = prompt.shape[1] + step
        ref = reference.logits(token, pos)
        art = artifact.logits(token, pos)
        pairs.append((ref, art))
    refs = torch.cat([r for r, _ in pairs])
    arts = torch.cat([a for _, a in pairs])
    max_abs = (refs - arts).abs().max().item()
    v.lowering_max_abs_diff = max_abs
    v.lowering_relative_diff = max_abs / max(refs.abs().max().item(), 1e-12)
    top2 = refs.float().topk(2, dim=-1).values
    decisive = (top2[:, 0] - top2[:, 1]) >= NEAR_TIE_MARGIN
    if not decisive.any():  # every position a near-tie: then all of them count
        decisive = torch.ones_like(decisive)
    agree = refs.argmax(-1) == arts.argmax(-1)
    v.lowering_top1_agreement = agree[decisive].float().mean().item()
    v.lowering_near_ties = int((~decisive).sum())
    v.lowering_kl_divergence = _mean_kl(refs, arts)
    v.positions_compared = refs.shape[0]


def _mean_kl(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Mean KL(reference || other) per position, in nats."""
    ref_logp = F.log_softmax(reference.float(), -1)
    return F.kl_div(F.log_softmax(other.float(), -1), ref_logp, log_target=True, reduction="sum").item() / len(
        reference
    )


def measure_compression(artifact: DecoderRunner, original: DecoderRunner, windows: list[Window], v: Validation) -> None:
    """Perplexity over each window's scored tokens (fresh cache per window), and top-1 agreement and
    KL(original || artifact) over the positions that predict them."""
    nll_art = nll_ref = 0.0
    count = 0
    agree = 0.0
    kl_sum = 0.0
    positions = 0
    for window in windows:
        artifact.reset()
        original.reset()
        first = window.scored_from - 1
        art = artifact.logits(window.ids, 0).float()[first:]
        ref = original.logits(window.ids, 0).float()[first:]
        targets = window.ids[0, window.scored_from :]
        nll_art += F.cross_entropy(art[:-1], targets, reduction="sum").item()
        nll_ref += F.cross_entropy(ref[:-1], targets, reduction="sum").item()
        count += targets.numel()
        agree += (art.argmax(-1) == ref.argmax(-1)).float().sum().item()
        kl_sum += _mean_kl(ref, art) * len(ref)
        positions += len(ref)
    v.perplexity = math.exp(nll_art / count)
    v.perplexity_reference = math.exp(nll_ref / count)
    v.top1_agreement = agree / positions
    v.kl_divergence = kl_sum / positions


def greedy(runner: DecoderRunner, prompt: torch.Tensor, steps: int) -> list[int]:
    runner.reset()
    logits = runner.logits(prompt, 0)
    tokens: list[int] = []
    for step in range(steps):
        token = int(logits[-1].argmax())
        tokens.append(token)
        if step + 1 < steps:
            logits = runner.logits(torch.tensor([[token]]), prompt.shape[1] + step)
    return tokens


class AppRuntime(Protocol):
    """A runtime that takes text and returns text (LiteRT-LM), checked end to end beside the runner."""

    runtime: str

    def greedy(self, prompt_text: str, new_tokens: int) -> tuple[list[int], str]: ...


def check_app_runtime(
    app: AppRuntime, tokenizer: PreTrainedTokenizerBase, prompt_text: str, prompt_ids: list[int], tokens: list[int]
) -> dict[str, Any]:
    """Its prompt ids against the host's, and its greedy text against the decoded greedy `tokens`."""
    try:
        ids, text = app.greedy(prompt_text, len(tokens))
    except Exception as exc:  # the runtime's own failure is the finding (e.g. a kernel it lacks)
        return {"runtime": app.runtime, "error": str(exc) or type(exc).__name__}
    expected = tokenizer.decode(tokens)
    return {
        "runtime": app.runtime,
        "prompt_ids_match": ids == prompt_ids,
        "prompt_ids": ids,
        "greedy_text": text,
        "expected_text": expected,
        "greedy_match": common_prefix_fraction(expected, text),
    }


def common_prefix_fraction(a: Sequence[Any], b: Sequence[Any]) -> float:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n / max(len(a), 1)
