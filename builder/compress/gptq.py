"""GPTQ (Frantar et al., 2022) for int4 groups: round each weight column to the grid while spreading its error
over the columns not yet rounded, weighted by the layer's input Hessian from calibration text.

The grid is the one XNNPACK's int4 kernels read: one scale per group of 32 inputs, stored as bf16, so scales
are rounded to bf16 before any weight is rounded against them. Symmetric grids take torchao's HQQ scales;
with zero points, each group also has an offset its integers count from (its min/max range, which recovers
a Q4_1 source's grid exactly), run beside the int4 kernel (builder/backends/zero_point_linear.py). Grids are
fixed from the original weights before rounding ("static groups"), so columns can be visited in order of
importance (act-order) and the result drops into torchao's tensor unchanged. Blocks are quantized in turn,
each calibrated on the outputs of the blocks already quantized before it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


def grid(bits: int) -> tuple[int, int]:
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


@dataclass
class IntWeight:
    """A Linear's weight on an integer grid: `q` int8 within `grid(bits)`, [out, in]; `scale` fp32,
    [out, in / group] (one column per group; a single column is per output channel); `offset`, the zero
    points as the value each group's integers count from, like `scale` or None for a symmetric grid."""

    q: torch.Tensor
    scale: torch.Tensor
    bits: int
    offset: torch.Tensor | None = None

    def dequantize(self) -> torch.Tensor:
        return self.q.float() * _per_column(self.scale, self.q) + _per_column(self.offset, self.q)


def _per_column(per_group: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | float:
    if per_group is None:
        return 0.0
    return per_group.repeat_interleave(like.shape[1] // per_group.shape[1], dim=1)


def hqq_scales(weight: torch.Tensor, group_size: int, bits: int) -> torch.Tensor:
    """torchao's HQQ scale search (scale only, symmetric), the scales a8w4 uses without calibration. Scales of
    groups within a row are rounded to bf16, as XNNPACK stores them; a scale per row stays fp32."""
    from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_scale_only_hqq

    _, scale = _choose_qparams_and_quantize_scale_only_hqq(weight.detach().float(), [1, group_size], *grid(bits))
    if group_size < weight.shape[1]:
        scale = scale.to(torch.bfloat16)
    return scale.float()


def zero_point_grid(weight: torch.Tensor, group_size: int, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale (rounded to bf16, as XNNPACK stores it) and offset per group from its min/max. A weight that was
    dequantized from a min/max grid (a Q4_1 GGUF) lands back on its own integers."""
    groups = weight.detach().float().reshape(weight.shape[0], -1, group_size)
    low, high = groups.amin(-1), groups.amax(-1)
    qmin, qmax = grid(bits)
    scale = ((high - low) / (qmax - qmin)).clamp(min=torch.finfo(torch.bfloat16).tiny).to(torch.bfloat16).float()
    return scale, low - qmin * scale


def choose_grid(weight: torch.Tensor, group_size: int, bits: int, zero_points: bool) -> IntWeight:
    """Round to nearest on the layer's grid: with zero points where it has groups, else HQQ's symmetric one."""
    if zero_points and group_size < weight.shape[1]:
        return round_to_grid(weight, *zero_point_grid(weight, group_size, bits), bits=bits)
    return round_to_grid(weight, hqq_scales(weight, group_size, bits), bits=bits)


def round_to_grid(weight: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None = None, *,
                  bits: int) -> IntWeight:  # fmt: skip
    """Round to nearest on the grid `scale` (and `offset`) sets, what torchao does without GPTQ."""
    shifted = weight.detach().float() - _per_column(offset, weight)
    q = torch.clamp(torch.round(shifted / _per_column(scale, weight)), *grid(bits))
    return IntWeight(q.to(torch.int8), scale, bits, offset)


def gptq(weight: torch.Tensor, hessian: torch.Tensor, nearest: IntWeight, damp: float = 0.01,
         block: int = 128) -> IntWeight:  # fmt: skip
    """GPTQ with act-order over the fixed grid of `nearest` (its scales and offsets). `hessian` is Σ xᵀx over the
    layer's calibration inputs."""
    scale, bits = nearest.scale, nearest.bits
    qmin, qmax = grid(bits)
    # Offsets are constant across a group's columns, so rounding counts from them and errors carry as before.
    w = weight.detach().float() - _per_column(nearest.offset, weight)
    h = hessian.double().clone()
    columns = w.shape[1]
    group = columns // scale.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    order = torch.argsort(torch.diag(h), descending=True)  # the columns that matter most are rounded first
    w, h = w[:, order], h[order][:, order]
    column_scale = scale.repeat_interleave(group, dim=1)[:, order]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(columns, dtype=h.dtype)
    # The upper Cholesky factor of H⁻¹ carries each column's error onto the ones after it.
    h_inv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    q = torch.zeros_like(w)
    for start in range(0, columns, block):
        end = min(start + block, columns)
        w_block = w[:, start:end].clone()
        errors = torch.zeros_like(w_block)
        h_block = h_inv[start:end, start:end]
        for i in range(end - start):
            s = column_scale[:, start + i]
            q_col = torch.clamp(torch.round(w_block[:, i] / s), qmin, qmax)
            q[:, start + i] = q_col
            error = (w_block[:, i] - q_col * s) / h_block[i, i]
            w_block[:, i:] -= error.unsqueeze(1) * h_block[i, i:].unsqueeze(0)
            errors[:, i] = error
        w[:, end:] -= errors @ h_inv[start:end, end:]
    return IntWeight(q[:, torch.argsort(order)].to(torch.int8), scale, bits, nearest.offset)


class _Stop(Exception):
    """Raised by the hook that records the first block's inputs, so the rest of the model never runs."""


# What a block is called with: positional and keyword arguments (hidden states, mask, rotary positions).
BlockInputs = tuple[tuple[Any, ...], dict[str, Any]]


def first_block_inputs(module: nn.Module, first: nn.Module, windows: list[torch.Tensor]) -> list[BlockInputs]:
    """The first block's inputs for each window, recorded without running the rest of the model."""
    captured: list[BlockInputs] = []

    def record(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append((args, kwargs))
        raise _Stop

    handle = first.register_forward_pre_hook(record, with_kwargs=True)
    try:
        for ids in windows:
            with suppress(_Stop):
                module(input_ids=ids, use_cache=False)
    finally:
        handle.remove()
    return captured


def next_block_inputs(block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BlockInputs:
    """The next block's inputs: this block's output as hidden states, the rest (mask, positions) unchanged."""
    output = block(*args, **kwargs)
    hidden = output[0] if isinstance(output, tuple) else output
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def hidden_states(inputs: BlockInputs) -> torch.Tensor:
    args, kwargs = inputs
    return args[0] if args else kwargs["hidden_states"]


@contextmanager
def _hessians(linears: dict[str, nn.Linear]) -> Iterator[dict[str, torch.Tensor]]:
    sums = {name: torch.zeros(m.in_features, m.in_features, dtype=torch.float64) for name, m in linears.items()}

    def hook(name: str) -> Callable[..., None]:
        def accumulate(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[name] += x.T @ x

        return accumulate

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in linears.items()]
    try:
        yield sums
    finally:
        for handle in handles:
            handle.remove()


# Bits and group size (its input width for per channel) of a Linear to quantize, or None to leave it alone.
Layout = Callable[[str, nn.Linear], tuple[int, int] | None]


def _quantize_layers(linears: dict[str, nn.Linear], sums: dict[str, torch.Tensor], layout: Layout,
                     zero_points: bool, result: dict[str, IntWeight]) -> None:  # fmt: skip
    for name, linear in linears.items():
        bits, group = layout(name, linear)  # type: ignore[misc]
        weight = gptq(linear.weight, sums[name], choose_grid(linear.weight, group, bits, zero_points))
        linear.weight.copy_(weight.dequantize())
        result[name] = weight


@torch.no_grad()
def gptq_model(
    module: nn.Module,
    blocks: nn.ModuleList,
    windows: list[torch.Tensor],
    layout: Layout,
    zero_points: bool = False,
    on_block: Callable[[int], None] | None = None,
) -> dict[str, IntWeight]:
    """GPTQ for every Linear that `layout` gives bits (names as in `module.named_modules()`) on the
    calibration `windows`, grouped ones with zero points if `zero_points`: those inside `blocks` block by
    block, then the others (the output projection) on the finished blocks' outputs. `module` is changed: each
    chosen weight ends dequantized, as calibration after it saw it."""
    names = {id(m): name for name, m in module.named_modules()}

    def chosen(modules: Iterator[nn.Module]) -> dict[str, nn.Linear]:
        return {names[id(m)]: m for m in modules if isinstance(m, nn.Linear) and layout(names[id(m)], m)}

    inputs = first_block_inputs(module, blocks[0], windows)
    result: dict[str, IntWeight] = {}
    for index, block in enumerate(blocks):
        linears = chosen(block.modules())
        with _hessians(linears) as sums:
            for args, kwargs in inputs:
                block(*args, **kwargs)
        _quantize_layers(linears, sums, layout, zero_points, result)
        inputs = [next_block_inputs(block, args, kwargs) for args, kwargs in inputs]
        if on_block is not None:
            on_block(index)
    in_blocks = {id(m) for m in blocks.modules()}
    rest = chosen(m for m in module.modules() if id(m) not in in_blocks)
    if rest:
        with _hessians(rest) as sums:
            for ids in windows:
                module(input_ids=ids, use_cache=False)
        _quantize_layers(rest, sums, layout, zero_points, result)
    return result
