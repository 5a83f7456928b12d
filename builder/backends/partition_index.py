"""A compact form of the dependency index torch.fx's partitioners build while ExecuTorch partitions a program.

Before merging nodes into partitions, torch.fx's `CapabilityBasedPartitioner` records for every node the set
of all nodes downstream of it, so that no merge makes a cycle; ExecuTorch's `GroupBasedPartitioner` (which
its XNNPACK partitioner runs) builds that index again, with every node's upstream set beside it. In a decoder
nearly every node lies downstream of the early ones, so each index holds about N²/2 entries: partitioning
SmolLM2's a8w4 program for XNNPACK raised the export's RSS by 1.24 GB within 24 s, the peak of the whole
export. The same index as one bitmask per node takes N²/8 bytes and gives the partitioners the same nodes:
on SmolLM2's 3,506-node program, partitioning took 10.7 s and 1 MiB more peak RSS, against 11.6 s and 519 MiB
with the stock index, for the same 122 partitions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cached_property

import numpy as np
import torch


class BitmaskDependencyViewer:
    """Drop-in for the partitioners' `_DependencyViewer`: the nodes downstream (or upstream) of a node."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        self._nodes = list(graph_module.graph.nodes)
        self._position = {node: i for i, node in enumerate(self._nodes)}
        self._downstream = _closure(reversed(self._nodes), lambda node: node.users, self._position)
        self._bytes = (len(self._nodes) + 7) // 8
        self._downstream_nodes: dict[torch.fx.Node, list[torch.fx.Node]] = {}

    def downstreams_of(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        # Kept once read: the partitioners read the same nodes' downstreams again and again, whole (a cycle is
        # rare), and a list of N/2 references on average still takes a quarter of a set's memory.
        if node not in self._downstream_nodes:
            self._downstream_nodes[node] = self._members(self._downstream.get(node, 0))
        return self._downstream_nodes[node]

    def upstreams_of(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        return self._members(self._upstream.get(node, 0))

    @cached_property
    def _upstream(self) -> dict[torch.fx.Node, int]:
        # Built on first use only: ExecuTorch's GroupBasedPartitioner builds its upstream index but never reads it.
        return _closure(self._nodes, lambda node: node.all_input_nodes, self._position)

    def _members(self, mask: int) -> list[torch.fx.Node]:
        bits = np.unpackbits(np.frombuffer(mask.to_bytes(self._bytes, "little"), dtype=np.uint8), bitorder="little")
        return [self._nodes[i] for i in np.flatnonzero(bits).tolist()]


def _closure(
    order: Iterable[torch.fx.Node],
    neighbours: Callable[[torch.fx.Node], Iterable[torch.fx.Node]],
    position: dict[torch.fx.Node, int],
) -> dict[torch.fx.Node, int]:
    """Each node's neighbours and theirs, transitively, as a bitmask; `order` visits neighbours first."""
    masks: dict[torch.fx.Node, int] = {}
    for node in order:
        mask = 0
        for neighbour in neighbours(node):
            mask |= (1 << position[neighbour]) | masks.get(neighbour, 0)
        masks[node] = mask
    return masks


@contextmanager
def compact_partition_index() -> Iterator[None]:
    """Within the block, torch.fx's and ExecuTorch's partitioners index dependencies as bitmasks."""
    from executorch.exir.backend.canonical_partitioners import group_partitioner
    from torch.fx.passes.infra import partitioner

    modules = (partitioner, group_partitioner)
    stock = [module._DependencyViewer for module in modules]
    for module in modules:
        module._DependencyViewer = BitmaskDependencyViewer  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        for module, viewer in zip(modules, stock, strict=True):
            module._DependencyViewer = viewer  # type: ignore[misc]
