"""Slices of tensors with a dynamic dimension run inside XNNPACK, with the numbers of eager at every length."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from builder.backends.xnnpack_slices import xnnpack_partitioner
from builder.inspect_pte import describe_pte


class Split(nn.Module):
    """A fused projection's split and a rotate_half: slices along the static last dim of [1, seq, 24]."""

    def __init__(self) -> None:
        super().__init__()
        self.fused = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fused(x)
        a, b, c = y[..., 0:8], y[..., 8:16], y[..., 16:]
        rotated = torch.cat([-c[..., 4:], c[..., :4]], dim=-1)
        return torch.nn.functional.silu(a) * b + rotated


class AlongSeq(nn.Module):
    """A slice of the dynamic dim itself, which XNNPACK cannot size: it stays a portable slice."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 2)[:, 1:] + 1


def _lower(module: nn.Module, path: Path, dynamic: bool, partitioner: object, shortest: int = 1) -> dict[str, int]:
    from executorch.exir import to_edge_transform_and_lower

    shapes = {"x": {1: torch.export.Dim("seq", min=shortest, max=64)}} if dynamic else None
    program = torch.export.export(module, (torch.randn(1, 6, 8),), dynamic_shapes=shapes, strict=True)
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[partitioner]).to_executorch().buffer)
    return next(m for m in describe_pte(path).methods if m.name == "forward").operators


def _run(path: Path, x: torch.Tensor) -> torch.Tensor:
    from executorch.runtime import Runtime

    return Runtime.get().load_program(path).load_method("forward").execute([x])[0]


def test_slices_along_a_static_dim_lower_to_xnnpack_and_match_eager_at_every_length(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = Split().eval()
    pte = tmp_path / "split.pte"
    # Everything, slices included, is one XNNPACK call: no portable op is left.
    assert _lower(module, pte, dynamic=True, partitioner=xnnpack_partitioner()) == {}
    for length in (1, 7, 3, 64, 2):  # decode's 1 too; shrinking as well as growing: each run resizes
        x = torch.randn(1, length, 8)
        with torch.no_grad():
            torch.testing.assert_close(_run(pte, x), module(x), rtol=0, atol=1e-5)


def test_a_slice_of_the_dynamic_dim_stays_portable_and_correct(tmp_path: Path) -> None:
    pte = tmp_path / "seq.pte"
    operators = _lower(AlongSeq(), pte, dynamic=True, partitioner=xnnpack_partitioner(), shortest=3)
    assert operators.get("aten::slice_copy.Tensor_out") == 1
    x = torch.randn(1, 5, 8)
    torch.testing.assert_close(_run(pte, x), AlongSeq()(x))


def test_static_shapes_lower_byte_for_byte_as_the_stock_partitioner(tmp_path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    torch.manual_seed(0)
    module = Split().eval()
    ours, stock = tmp_path / "ours.pte", tmp_path / "stock.pte"
    _lower(module, ours, dynamic=False, partitioner=xnnpack_partitioner())
    _lower(module, stock, dynamic=False, partitioner=XnnpackPartitioner())
    assert ours.read_bytes() == stock.read_bytes()


def test_the_stock_partitioner_leaves_these_slices_out(tmp_path: Path) -> None:
    """What the module changes: without it, the same program keeps its 5 slices as portable copies."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    operators = _lower(Split().eval(), tmp_path / "stock.pte", dynamic=True, partitioner=XnnpackPartitioner())
    assert operators.get("aten::slice_copy.Tensor_out") == 5
