"""The bitmask dependency index answers as torch.fx's own, and partitioning with it lowers the same program."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from builder.backends.partition_index import BitmaskDependencyViewer, compact_partition_index


class Branchy(nn.Module):
    """Branches that rejoin, a portable op (a slice of the dynamic dim) between XNNPACK ops, and a node that
    nothing reads after it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        left, right = self.b(h), torch.sigmoid(self.c(h))
        joined = (left * right)[:, 1:]
        return self.c(joined) + h[:, 1:]


def _program() -> torch.export.ExportedProgram:
    torch.manual_seed(0)
    seq = torch.export.Dim("seq", min=3, max=32)
    return torch.export.export(Branchy().eval(), (torch.randn(1, 6, 16),), dynamic_shapes={"x": {1: seq}})


@pytest.mark.parametrize("owner", ["torch", "executorch"])
def test_every_node_has_the_nodes_the_stock_index_finds(owner: str) -> None:
    if owner == "torch":
        from torch.fx.passes.infra.partitioner import _DependencyViewer
    else:
        from executorch.exir.backend.canonical_partitioners.group_partitioner import _DependencyViewer

    graph_module = _program().graph_module
    stock, compact = _DependencyViewer(graph_module), BitmaskDependencyViewer(graph_module)
    nodes = list(graph_module.graph.nodes)
    assert any(len(stock.downstreams_of(node)) > 3 for node in nodes)
    for node in nodes:
        mine = compact.downstreams_of(node)
        assert len(mine) == len(set(mine)) and set(mine) == stock.downstreams_of(node), node.name
        if hasattr(stock, "upstreams_of"):
            assert set(compact.upstreams_of(node)) == stock.upstreams_of(node), node.name


def test_partitioning_with_it_lowers_byte_for_byte_the_same_pte(tmp_path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.backend.canonical_partitioners import group_partitioner
    from torch.fx.passes.infra import partitioner

    def lowered() -> bytes:
        return to_edge_transform_and_lower(_program(), partitioner=[XnnpackPartitioner()]).to_executorch().buffer

    stock = lowered()
    stock_viewers = partitioner._DependencyViewer, group_partitioner._DependencyViewer
    with compact_partition_index():
        assert partitioner._DependencyViewer is group_partitioner._DependencyViewer is BitmaskDependencyViewer
        compact = lowered()
    assert (partitioner._DependencyViewer, group_partitioner._DependencyViewer) == stock_viewers  # restored
    assert compact == stock
