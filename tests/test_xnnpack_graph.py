"""The graph rewrites for XNNPACK: RMSNorm's mean handed to XNNPACK (exact in eager, and the lowered .pte runs
no portable mean kernel and gives the same numbers in the ExecuTorch runtime), and the group means that
zero-point Linears reading one input share."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from builder.backends.xnnpack_graph import last_dim_means_as_pooling, shared_pure_ops
from builder.backends.zero_point_linear import ZeroPointLinear
from builder.inspect_pte import describe_pte


class RMSNorm(nn.Module):
    def __init__(self, hidden: int, dim: int = -1, keepdim: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, hidden))
        self.dim, self.keepdim = dim, keepdim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.pow(2).mean(self.dim, keepdim=self.keepdim)
        if not self.keepdim:
            mean = mean.unsqueeze(self.dim)
        return self.weight * x * torch.rsqrt(mean + 1e-6)


def exported(module: nn.Module) -> torch.export.ExportedProgram:
    seq = torch.export.Dim("seq", min=1, max=64)
    return torch.export.export(module, (torch.randn(1, 8, 16),), dynamic_shapes={"x": {1: seq}})


def means_in(program: torch.export.ExportedProgram) -> list[list[int]]:
    return [
        list(node.args[0].meta["val"].shape[2:])
        for node in program.graph.nodes
        if node.op == "call_function" and node.target == torch.ops.aten.mean.dim
    ]


@pytest.mark.parametrize("keepdim", [True, False])
def test_a_last_dim_mean_becomes_pooling_with_the_same_values(keepdim: bool) -> None:
    module = RMSNorm(16, keepdim=keepdim).eval()
    program = exported(module)
    assert last_dim_means_as_pooling(program) == 1
    assert means_in(program) == [[16, 1]]  # averaged as a [batch, seq, 16, 1] tensor over its last two dims
    for length in (1, 7, 64):  # the sequence length stays dynamic
        x = torch.randn(1, length, 16)
        torch.testing.assert_close(program.module()(x), module(x), rtol=0, atol=0)


def test_other_means_are_left_alone() -> None:
    program = exported(RMSNorm(16, dim=1))
    assert last_dim_means_as_pooling(program) == 0
    assert means_in(program) == [[16]]


def test_the_lowered_norm_runs_inside_xnnpack(tmp_path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    module = RMSNorm(16).eval()
    operators = {}
    for rewrite in (False, True):
        program = exported(module)
        if rewrite:
            last_dim_means_as_pooling(program)
        path = tmp_path / f"{rewrite}.pte"
        path.write_bytes(
            to_edge_transform_and_lower({"forward": program}, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
        )
        operators[rewrite] = next(m for m in describe_pte(path).methods if m.name == "forward").operators
        x = torch.randn(1, 5, 16)
        (got,) = Runtime.get().load_program(path).load_method("forward").execute([x])
        torch.testing.assert_close(got, module(x), rtol=1e-5, atol=1e-5)
    assert "aten::mean.out" in operators[False]  # without the rewrite the portable kernel runs it
    assert not operators[True]  # with it the whole norm is one XNNPACK call


class TwoZeroPointLinears(nn.Module):
    """q and k of an attention block: two zero-point Linears reading one normed input."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.norm = RMSNorm(64)
        self.q = ZeroPointLinear(nn.Linear(64, 64, bias=False), torch.randn(64, 2, generator=generator))
        self.k = ZeroPointLinear(nn.Linear(64, 32, bias=False), torch.randn(32, 2, generator=generator))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm(x)
        return self.q(h), self.k(h)


def test_linears_reading_one_input_pool_it_once_inside_xnnpack(tmp_path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    module = TwoZeroPointLinears().eval()
    seq = torch.export.Dim("seq", min=1, max=64)
    program = torch.export.export(module, (torch.randn(1, 8, 64),), dynamic_shapes={"x": {1: seq}})
    last_dim_means_as_pooling(program)
    assert len(means_in(program)) == 3  # the norm's, and the group means of q and of k
    assert shared_pure_ops(program) == 3  # k's reshape, mean and reshape back
    assert means_in(program) == [[64, 1], [32, 1]]
    x = torch.randn(1, 5, 64)
    for got, expected in zip(program.module()(x), module(x), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
    path = tmp_path / "zero_points.pte"
    path.write_bytes(
        to_edge_transform_and_lower({"forward": program}, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    )
    assert not next(m for m in describe_pte(path).methods if m.name == "forward").operators
    outputs = Runtime.get().load_program(path).load_method("forward").execute([x])
    for got, expected in zip(outputs, module(x), strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
