"""Importance scores measured on calibration text: what each MLP channel, attention head and block adds to
the model's output. Structured pruning removes the least important units."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from builder.compress.architecture import Family, submodule


@dataclass
class Importance:
    # [block] -> [channels]: mean squared norm of each channel's contribution to the MLP output
    # (activation² x ‖column of the output projection‖², exact for a single channel).
    mlp: list[torch.Tensor]
    # [block] -> [query heads]: mean squared norm of each head's contribution through the output projection.
    heads: list[torch.Tensor]
    # [block]: mean cosine distance between a block's input and output hidden states (ShortGPT's
    # block influence): a block that barely turns the residual stream matters little.
    blocks: torch.Tensor


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


@contextmanager
def _hooks(module: nn.Module, family: Family, head_dim: int | None, tokens: list[int]) -> Iterator[Importance]:
    blocks = family.block_list(module)
    n = len(blocks)
    result = Importance(mlp=[torch.zeros(0)] * n, heads=[torch.zeros(0)] * n, blocks=torch.zeros(n))
    handles: list[Any] = []

    def on_mlp_output(index: int) -> Callable[..., None]:
        weight_norms = submodule(blocks[index], family.mlp_output).weight.detach().pow(2).sum(0)

        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            score = x.pow(2).sum(0) * weight_norms
            result.mlp[index] = score if result.mlp[index].numel() == 0 else result.mlp[index] + score

        return hook

    def on_attention_output(index: int) -> Callable[..., None]:
        weight = submodule(blocks[index], family.attention.output).weight.detach()
        assert head_dim is not None
        per_head = weight.view(weight.shape[0], -1, head_dim)  # [hidden, heads, head_dim]

        def hook(_: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, per_head.shape[1], head_dim)  # [tokens, heads, head_dim]
            score = torch.einsum("thd,ohd->tho", x, per_head).pow(2).sum(dim=(0, 2))
            result.heads[index] = score if result.heads[index].numel() == 0 else result.heads[index] + score

        return hook

    inputs: dict[int, torch.Tensor] = {}

    def on_block_input(index: int) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            inputs[index] = (args[0] if args else kwargs["hidden_states"]).detach()

        return hook

    def on_block_output(index: int) -> Callable[..., None]:
        def hook(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            before, after = inputs.pop(index), _first_tensor(output).detach()
            distance = 1 - F.cosine_similarity(before.reshape(-1, before.shape[-1]).float(),
                                               after.reshape(-1, after.shape[-1]).float(), dim=-1)  # fmt: skip
            result.blocks[index] += distance.sum()

        return hook

    try:
        for i, block in enumerate(blocks):
            handles.append(submodule(block, family.mlp_output).register_forward_pre_hook(on_mlp_output(i)))
            if head_dim is not None:
                output = submodule(block, family.attention.output)
                handles.append(output.register_forward_pre_hook(on_attention_output(i)))
            handles.append(block.register_forward_pre_hook(on_block_input(i), with_kwargs=True))
            handles.append(block.register_forward_hook(on_block_output(i), with_kwargs=True))
        yield result
    finally:
        for handle in handles:
            handle.remove()
    count = max(sum(tokens), 1)
    result.mlp = [m / count for m in result.mlp]
    result.heads = [h / count for h in result.heads]
    result.blocks /= count


@torch.no_grad()
def measure_importance(
    module: nn.Module, family: Family, windows: list[torch.Tensor], head_dim: int | None
) -> Importance:
    """Run the calibration windows ([1, S] token ids each) through `module` and score its units.
    `head_dim` None skips the head scores (for families whose heads cannot be pruned)."""
    tokens: list[int] = []
    with _hooks(module, family, head_dim, tokens) as result:
        for window in windows:
            module(input_ids=window, attention_mask=torch.ones_like(window))
            tokens.append(window.numel())
    return result
