"""Low-rank factorization: a block Linear W [out, in] becomes two thinner ones, `up(down(x))`, from its
truncated SVD. The rank comes from a ratio of the full rank or from the share of σ² it must keep; a layer
where the two factors would not hold fewer values than W keeps W."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from builder.compress.architecture import Family, family_of, set_submodule, submodule
from builder.recipe import LowRankSection


class LowRankLinear(nn.Module):
    """`up(down(x))`: both are plain Linears, so every backend's Linear quantization and kernels apply."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))


def chosen_rank(singular_values: torch.Tensor, settings: LowRankSection) -> int:
    full = singular_values.numel()
    if settings.ratio is not None:
        rank = math.ceil(settings.ratio * full)
    else:
        energy = singular_values.double().pow(2).cumsum(0)
        rank = int(torch.searchsorted(energy / energy[-1], torch.tensor(settings.energy, dtype=torch.float64))) + 1
    multiple = settings.rank_multiple
    return min(full, math.ceil(rank / multiple) * multiple)


@torch.no_grad()
def factorize(linear: nn.Linear, rank: int) -> LowRankLinear:
    u, s, vh = torch.linalg.svd(linear.weight.double(), full_matrices=False)
    root = s[:rank].sqrt()
    low = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None)
    low.down.weight.copy_((root[:, None] * vh[:rank]).float())
    low.up.weight.copy_((u[:, :rank] * root[None, :]).float())
    if linear.bias is not None:
        low.up.bias.copy_(linear.bias)
    return low


def _paths(family: Family, modules: list[str]) -> list[str]:
    return [*(family.mlp_linears() if "mlp" in modules else ()),
            *(family.attention_linears() if "attention" in modules else ())]  # fmt: skip


def lowrank_factorize(module: nn.Module, settings: LowRankSection) -> dict[str, Any]:
    """Replace the chosen block Linears in place; returns what was replaced, kept, and the parameter change."""
    family = family_of(module.config.model_type, "compress.lowrank")
    before = sum(p.numel() for p in module.parameters())
    replaced: list[dict[str, Any]] = []
    kept = 0
    for index, block in enumerate(family.block_list(module)):
        for path in _paths(family, settings.modules):
            linear = submodule(block, path)
            if not isinstance(linear, nn.Linear):
                continue
            singular_values = torch.linalg.svdvals(linear.weight.detach().double())
            rank = chosen_rank(singular_values, settings)
            if rank * (linear.in_features + linear.out_features) >= linear.in_features * linear.out_features:
                kept += 1  # no saving at this rank
                continue
            energy = singular_values[:rank].pow(2).sum() / singular_values.pow(2).sum()
            set_submodule(block, path, factorize(linear, rank))
            replaced.append({"layer": f"{family.blocks}.{index}.{path}", "shape": [linear.out_features,
                             linear.in_features], "rank": rank, "energy": round(float(energy), 6)})  # fmt: skip
    after = sum(p.numel() for p in module.parameters())
    return {
        "ratio": settings.ratio,
        "energy": settings.energy,
        "modules": list(settings.modules),
        "replaced": len(replaced),
        "kept_full_rank": kept,
        "parameters_removed": before - after,
        "layers": replaced,
    }


def lowrank_ranks(module: nn.Module) -> dict[str, int]:
    """Where a module holds factorized Linears, and their ranks (to rebuild it from a saved state dict)."""
    return {name: m.rank for name, m in module.named_modules() if isinstance(m, LowRankLinear)}


def apply_ranks(module: nn.Module, ranks: dict[str, int]) -> None:
    """Give a freshly built module the factorized Linears `lowrank_ranks` recorded (weights loaded after)."""
    for name, rank in ranks.items():
        linear = module.get_submodule(name)
        low = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None)
        set_submodule(module, name, low)
