"""Pruning in torch, before any backend sees the model.

- magnitude: zero the smallest weights of the blocks' Linears, per matrix or by one global threshold. The
  shapes stay; the zeros cost quality everywhere and save bytes only where a runtime stores them sparse.
- structured: remove whole MLP channels, attention heads (grouped-query aware) and blocks, the least
  important first by scores measured on calibration text. The result is a smaller model of the same
  architecture with a consistent config (it saves and reloads with transformers), so every backend lowers
  it unchanged. One shrink ratio applies to every part asked for, solved so the parameter count lands as
  close as the parts' granularity allows to the requested sparsity.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from builder.compress.architecture import Family, family_of, submodule
from builder.compress.importance import Importance, measure_importance
from builder.errors import UserInputError
from builder.recipe import PrunePart, PruneSection

DEFAULT_PARTS: tuple[PrunePart, ...] = ("mlp", "heads")


def block_linears(module: nn.Module, family: Family) -> list[nn.Linear]:
    blocks = family.block_list(module)
    paths = (*family.mlp_linears(), *family.attention_linears())
    return [submodule(block, path) for block in blocks for path in paths]


@torch.no_grad()
def magnitude_prune(module: nn.Module, family: Family, sparsity: float, scope: str) -> dict[str, Any]:
    """Zero the smallest-magnitude `sparsity` of the block Linears' weights in place."""
    linears = block_linears(module, family)
    if scope == "global":
        magnitudes = torch.cat([linear.weight.abs().flatten() for linear in linears])
        k = int(sparsity * magnitudes.numel())
        threshold = torch.kthvalue(magnitudes, k).values if k else torch.tensor(-1.0)
        for linear in linears:
            linear.weight.masked_fill_(linear.weight.abs() <= threshold, 0.0)
    else:
        for linear in linears:
            k = int(sparsity * linear.weight.numel())
            if k:
                threshold = torch.kthvalue(linear.weight.abs().flatten(), k).values
                linear.weight.masked_fill_(linear.weight.abs() <= threshold, 0.0)
    zeros = sum(int((linear.weight == 0).sum()) for linear in linears)
    total = sum(linear.weight.numel() for linear in linears)
    return {"method": "magnitude", "scope": scope, "sparsity": sparsity, "block_weight_sparsity": zeros / total,
            "zeroed_weights": zeros}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """The sizes structured pruning may change."""

    blocks: int
    mlp_width: int
    kv_heads: int
    heads_per_group: int  # query heads per key/value head


def _config_of(module: nn.Module) -> Any:
    return module.config


def _current_shape(config: Any, family: Family) -> Shape:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", 1)
    kv = getattr(config, "num_key_value_heads", None) or heads
    return Shape(getattr(config, family.block_count_key), getattr(config, family.mlp_width_key), kv, heads // kv)


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _shrunk(shape: Shape, ratio: float, parts: tuple[PrunePart, ...], channel_multiple: int) -> Shape:
    blocks, width, kv, per_group = shape.blocks, shape.mlp_width, shape.kv_heads, shape.heads_per_group
    if "layers" in parts:
        blocks = max(1, round(shape.blocks * (1 - ratio)))
    if "mlp" in parts:
        multiple = channel_multiple if shape.mlp_width >= 2 * channel_multiple else 1
        width = max(multiple, round(shape.mlp_width * (1 - ratio) / multiple) * multiple)
    if "heads" in parts:
        # Fewer query heads per group keeps the KV cache; a group of one shrinks the key/value heads.
        if shape.heads_per_group > 1:
            per_group = max(1, round(shape.heads_per_group * (1 - ratio)))
        else:
            kv = max(1, round(shape.kv_heads * (1 - ratio)))
    return Shape(blocks, width, kv, per_group)


def _new_config(config: Any, family: Family, shape: Shape, kept_blocks: list[int]) -> Any:
    new = copy.deepcopy(config)
    setattr(new, family.block_count_key, shape.blocks)
    setattr(new, family.mlp_width_key, shape.mlp_width)
    if family.heads_refusal is None:
        new.head_dim = _head_dim(config)  # explicit: no longer hidden_size / heads
        new.num_attention_heads = shape.kv_heads * shape.heads_per_group
        new.num_key_value_heads = shape.kv_heads
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == getattr(config, family.block_count_key):
        new.layer_types = [layer_types[i] for i in kept_blocks]
    return new


def construct_like(module: nn.Module, config: Any) -> nn.Module:
    """A freshly initialised module of the same class (and heads) as `module`, shaped by `config`."""
    kwargs = {"add_pooling_layer": module.pooler is not None} if hasattr(module, "pooler") else {}
    return type(module)(config, **kwargs)


def _parameter_count(module: nn.Module, config: Any) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in construct_like(module, config).parameters())


def _solve_shape(module: nn.Module, family: Family, parts: tuple[PrunePart, ...], sparsity: float,
                 channel_multiple: int) -> tuple[Shape, int]:  # fmt: skip
    """The shrink ratio whose shape's parameter count is closest to (1 - sparsity) x the original."""
    config = _config_of(module)
    original = _current_shape(config, family)
    total = sum(p.numel() for p in module.parameters())
    goal = (1 - sparsity) * total

    def count(ratio: float) -> tuple[Shape, int]:
        shape = _shrunk(original, ratio, parts, channel_multiple)
        return shape, _parameter_count(module, _new_config(config, family, shape, list(range(shape.blocks))))

    low, high = 0.0, 1.0
    smallest = count(high)
    if smallest[1] > goal:
        raise UserInputError(
            f"compress.prune: removing {', '.join(parts)} can take {1 - smallest[1] / total:.0%} of the "
            f"{total:,} parameters at most, short of sparsity = {sparsity}. Fix: lower compress.prune.sparsity "
            "or add parts (mlp, heads, layers)"
        )
    for _ in range(30):  # counts fall in steps as the ratio grows: bisect to the first at or under the goal
        mid = (low + high) / 2
        if count(mid)[1] > goal:
            low = mid
        else:
            high = mid
    above, below = count(low), count(high)
    return min((above, below), key=lambda shape_count: abs(shape_count[1] - goal))


def _kept_heads(scores: torch.Tensor, original: Shape, shape: Shape) -> tuple[list[int], list[int]]:
    """Query heads and key/value heads to keep, in their original order, groups kept whole or evenly thinned."""
    groups = scores.view(original.kv_heads, original.heads_per_group)
    kv = sorted(groups.sum(1).topk(shape.kv_heads).indices.tolist())
    query = []
    for g in kv:
        within = sorted(groups[g].topk(shape.heads_per_group).indices.tolist())
        query += [g * original.heads_per_group + h for h in within]
    return query, kv


def _rows(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads])


@dataclass
class Selection:
    """What structured pruning keeps, in original indices: blocks, and per kept block its MLP channels,
    query heads and key/value heads (None where that part keeps everything)."""

    blocks: list[int]
    channels: dict[int, torch.Tensor]
    query_heads: dict[int, list[int]]
    kv_heads: dict[int, list[int]]


def _select(importance: Importance, original: Shape, shape: Shape) -> Selection:
    ranked = importance.blocks.argsort(descending=True)
    selection = Selection(sorted(ranked[: shape.blocks].tolist()), {}, {}, {})
    for old in selection.blocks:
        if shape.mlp_width != original.mlp_width:
            selection.channels[old] = importance.mlp[old].topk(shape.mlp_width).indices.sort().values
        if (shape.kv_heads, shape.heads_per_group) != (original.kv_heads, original.heads_per_group):
            selection.query_heads[old], selection.kv_heads[old] = _kept_heads(importance.heads[old], original, shape)
    return selection


def _cuts(
    family: Family, original: Shape, head_dim: int, selection: Selection, old: int
) -> dict[str, tuple[int, torch.Tensor]]:
    """Parameter suffix (inside block `old`) -> (dimension, indices to keep)."""
    cut: dict[str, tuple[int, torch.Tensor]] = {}
    if old in selection.channels:
        channels = selection.channels[old]
        rows = torch.cat([channels, channels + original.mlp_width]) if family.fused_gate_up else channels
        for path in family.mlp_inputs:
            cut[path + ".weight"] = cut[path + ".bias"] = (0, rows)
        cut[family.mlp_output + ".weight"] = (1, channels)
    if old in selection.query_heads:
        q_rows = _rows(selection.query_heads[old], head_dim)
        kv_rows = _rows(selection.kv_heads[old], head_dim)
        a = family.attention
        if a.fused_qkv:
            q_size = original.kv_heads * original.heads_per_group * head_dim
            kv_size = original.kv_heads * head_dim
            fused = torch.cat([q_rows, kv_rows + q_size, kv_rows + q_size + kv_size])
            cut[a.query + ".weight"] = cut[a.query + ".bias"] = (0, fused)
        else:
            for path, rows in ((a.query, q_rows), (a.key, kv_rows), (a.value, kv_rows)):
                cut[path + ".weight"] = cut[path + ".bias"] = (0, rows)
        cut[a.output + ".weight"] = (1, q_rows)
    return cut


def _sliced_state(module: nn.Module, family: Family, original: Shape, selection: Selection) -> dict[str, torch.Tensor]:
    """The original state dict cut down to the selection, blocks renumbered."""
    head_dim = _head_dim(_config_of(module)) if selection.query_heads else 0
    prefix = family.blocks + "."
    block_key = re.compile(re.escape(prefix) + r"(\d+)\.(.+)")
    cuts = {old: _cuts(family, original, head_dim, selection, old) for old in selection.blocks}
    renumber = {old: new for new, old in enumerate(selection.blocks)}
    sliced: dict[str, torch.Tensor] = {}
    for key, value in module.state_dict().items():
        match = block_key.fullmatch(key)
        if match is None:
            sliced[key] = value
            continue
        old, suffix = int(match.group(1)), match.group(2)
        if old not in renumber:
            continue
        if suffix in cuts[old]:
            dim, index = cuts[old][suffix]
            value = value.index_select(dim, index)
        sliced[f"{prefix}{renumber[old]}.{suffix}"] = value.clone()
    return sliced


def structured_prune(
    module: nn.Module, settings: PruneSection, calibration: list[torch.Tensor]
) -> tuple[nn.Module, dict[str, Any], Selection]:
    """A new, smaller module of the same class, a record of what was removed, and what was kept."""
    config = _config_of(module)
    family = family_of(config.model_type, "compress.prune (structured)")
    parts = tuple(settings.parts or DEFAULT_PARTS)
    if "heads" in parts and family.heads_refusal:
        raise UserInputError(
            f"compress.prune.parts = {list(parts)}: heads cannot be removed from a {config.model_type} model "
            f"while its config stays consistent ({family.heads_refusal}). Fix: use parts = ['mlp', 'layers']"
        )
    original = _current_shape(config, family)
    shape, _ = _solve_shape(module, family, parts, settings.sparsity, settings.channel_multiple)
    head_dim = _head_dim(config) if "heads" in parts else None
    importance = measure_importance(module, family, calibration, head_dim)
    selection = _select(importance, original, shape)
    pruned = construct_like(module, _new_config(config, family, shape, selection.blocks))
    pruned.load_state_dict(_sliced_state(module, family, original, selection), strict=True)
    pruned.eval()
    before = sum(p.numel() for p in module.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    removed_blocks = sorted(set(range(original.blocks)) - set(selection.blocks))
    record = {
        "method": "structured",
        "parts": list(parts),
        "sparsity": settings.sparsity,
        "achieved_sparsity": 1 - after / before,
        "blocks": [original.blocks, shape.blocks],
        "removed_blocks": removed_blocks,
        "mlp_width": [original.mlp_width, shape.mlp_width],
        "attention_heads": [original.kv_heads * original.heads_per_group, shape.kv_heads * shape.heads_per_group],
        "kv_heads": [original.kv_heads, shape.kv_heads],
        "block_influence": [round(float(x), 6) for x in importance.blocks],
    }
    return pruned, record, selection
