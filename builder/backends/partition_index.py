"""A compact form of the dependency index torch.fx's partitioner builds while ExecuTorch partitions a program.

torch.fx's `CapabilityBasedPartitioner`, which ExecuTorch's partitioners run, first records for every node
the set of all nodes downstream of it, so that merging two partitions never makes a cycle. In a decoder
nearly every node lies downstream of the early ones, so the sets hold about N²/2 entries: partitioning
SmolLM2's a8w4 program for XNNPACK raised the export's RSS by 1.24 GB within 24 s, the peak of the whole
export. The same index as one bitmask per node takes N²/8 bytes, and answers the partitioner's one question
(which nodes are downstream of this one) with the same nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


class BitmaskDependencyViewer:
    """Drop-in for torch.fx.passes.infra.partitioner._DependencyViewer: node -> nodes downstream of it."""

    def __init__(self, graph_module: torch.fx.GraphModule) -> None:
        self._nodes = list(graph_module.graph.nodes)
        position = {node: i for i, node in enumerate(self._nodes)}
        self._downstream: dict[torch.fx.Node, int] = {}
        for node in reversed(self._nodes):
            mask = 0
            for user in node.users:
                mask |= (1 << position[user]) | self._downstream.get(user, 0)
            self._downstream[node] = mask
        self._bytes = (len(self._nodes) + 7) // 8

    def downstreams_of(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        mask = self._downstream.get(node, 0)
        if not mask:
            return []
        bits = np.unpackbits(np.frombuffer(mask.to_bytes(self._bytes, "little"), dtype=np.uint8), bitorder="little")
        return [self._nodes[i] for i in np.flatnonzero(bits)]


@contextmanager
def compact_partition_index() -> Iterator[None]:
    """Within the block, torch.fx's partitioner indexes dependencies as bitmasks."""
    from torch.fx.passes.infra import partitioner

    stock = partitioner._DependencyViewer
    partitioner._DependencyViewer = BitmaskDependencyViewer  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        partitioner._DependencyViewer = stock  # type: ignore[misc]
