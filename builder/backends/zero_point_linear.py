"""Int4 groups with zero points on kernels that take none (XNNPACK's).

A group's weights are `scale * q + offset`. Over one group of 32 inputs x, Σ (scale·q + offset)·x splits into
the int4 kernel's Σ scale·q·x and offset·Σx = 32·offset·mean(x). The second term is a small matmul: the
offsets, one per output and group, times the input's mean over each group. This is the block-sum term of
llama.cpp's Q4_1 dot product. On XNNPACK the group means are an average pooling and the offsets an int8
fully-connected op with dynamic int8 activations, like the scheme's 8-bit Linears."""

from __future__ import annotations

import torch
from torch import nn

from builder.compress.architecture import set_submodule
from builder.compress.quantization import GROUP_SIZE


class ZeroPointLinear(nn.Module):
    """`linear` (int4 groups, symmetric) plus `offsets`, a Linear from the input's group means whose weight is
    32 times the offset of each output's groups (given as that Linear, or as the offsets to make it from)."""

    def __init__(self, linear: nn.Module, offsets: torch.Tensor | nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        if isinstance(offsets, torch.Tensor):
            made = nn.Linear(offsets.shape[1], offsets.shape[0], bias=False)
            with torch.no_grad():
                made.weight.copy_(offsets * GROUP_SIZE)
            offsets = made
        self.offsets = offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [batch, seq * groups, 32, 1] averaged over its last two dims: the form XNNPACK pools. Shapes name
        # the dynamic sequence length -1, not a symbol: XNNPACK reshapes only those.
        pooled = x.reshape(x.shape[0], -1, GROUP_SIZE, 1).mean((2, 3), keepdim=True)
        means = pooled.reshape(*x.shape[:-2], -1, self.offsets.in_features)
        return self.linear(x) + self.offsets(means)


def with_zero_points(module: nn.Module, offsets: dict[str, torch.Tensor]) -> list[nn.Linear]:
    """Put each Linear named in `offsets` (already int4 on its symmetric part) behind a ZeroPointLinear.
    Returns the offsets' Linears, still in fp32, for the scheme to quantize."""
    made = []
    for name, offset in offsets.items():
        wrapper = ZeroPointLinear(module.get_submodule(name), offset)
        set_submodule(module, name, wrapper)
        made.append(wrapper.offsets)
    return made
