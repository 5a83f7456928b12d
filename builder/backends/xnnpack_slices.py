"""XNNPACK slices of tensors with a dynamic dimension, which ExecuTorch's XNNPACK partitioner leaves to the
portable kernels.

A decoder's tensors are [batch, seq, ...] with a dynamic seq, and it slices them along a static dim: RoPE's
rotate_half halves q and k (4 slices a layer), and a fused projection's output is split back into q, k, v and
gate, up (builder/backends/fused_projections.py, 5 a layer). ExecuTorch's `SliceCopyConfig` refuses any slice
whose input or output has a dynamic dim, because its serializer writes the output's upper-bound shape as the
slice's sizes. So each of these slices ran as a portable `slice_copy` and split the delegated graph there.

XNNPACK's static slice reads a size of 0 as "the input's whole dim", resolved on each reshape. So a slice
along a static dim, whose dynamic dims it takes whole (a slice always does), lowers exactly when those dims'
sizes are written as 0. `xnnpack_partitioner` accepts such slices and registers the serializer that writes
the 0s; it changes nothing for static shapes. Whether the XNNPACK a runtime links reads 0 that way is
checked, not assumed: the lowering gate runs each decoder .pte at its prompt's length and at one token against
eager, and tests/test_xnnpack_slices.py runs such slices at several lengths.
"""

from __future__ import annotations

from typing import Any

import torch

_SLICE = "aten.slice_copy.Tensor"


def xnnpack_partitioner() -> Any:
    """ExecuTorch's XNNPACK partitioner, which also takes slices of tensors with a dynamic dimension."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import SliceCopyConfig
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    _register_serializer()
    configs = [_dynamic_slice_config(SliceCopyConfig) if c is SliceCopyConfig else c for c in ALL_PARTITIONER_CONFIGS]
    return XnnpackPartitioner(configs=configs)


def slices_whole_dynamic_dims(node: torch.fx.Node) -> bool:
    """Whether `node` slices a static dim (stride 1, nothing empty) of a tensor with a dynamic dim."""
    source, value = node.args[0].meta.get("val"), node.meta.get("val")  # type: ignore[union-attr]
    if not (isinstance(source, torch.Tensor) and isinstance(value, torch.Tensor)):
        return False
    dims = [*source.shape, *value.shape]
    if all(isinstance(d, int) for d in dims):
        return False  # the stock config decides
    dim = int(node.args[1]) % source.dim()  # type: ignore[arg-type]
    stride = node.args[4] if len(node.args) > 4 else 1
    static_nonempty = all(d > 0 for d in dims if isinstance(d, int))
    return stride == 1 and isinstance(source.shape[dim], int) and static_nonempty


def _dynamic_slice_config(stock: type) -> type:
    from executorch.backends.xnnpack.utils.quant_utils import is_dequant

    class DynamicSliceCopyConfig(stock):  # type: ignore[misc, valid-type]
        def check_constraints(self, node: torch.fx.Node, ep: torch.export.ExportedProgram) -> bool:
            if not slices_whole_dynamic_dims(node):
                return super().check_constraints(node, ep)
            # A quantized slice (dq -> slice -> q) keeps to the stock rules.
            return self.check_common_constraints(node, ep) and not is_dequant(node.args[0])

    return DynamicSliceCopyConfig


def _register_serializer() -> None:
    from executorch.backends.xnnpack.operators import node_visitor
    from executorch.backends.xnnpack.utils.utils import PERM_NCHW_TO_NHWC

    # register_node_visitor returns None, so the stock visitor class is only found in the registry.
    stock = node_visitor._node_visitor_dict[_SLICE]
    if getattr(stock, "writes_dynamic_dims_as_zero", False):
        return

    class DynamicSliceVisitor(stock):  # type: ignore[misc, valid-type]
        writes_dynamic_dims_as_zero = True

        def define_node(self, node: torch.fx.Node, xnn_graph: Any, vals_to_ids: dict, debug_handle: int) -> None:
            super().define_node(node, xnn_graph, vals_to_ids, debug_handle)
            dynamic = [not isinstance(d, int) for d in node.meta["val"].shape]
            if "XNN_NHWC_NODE" in node.meta:
                dynamic = [dynamic[i] for i in PERM_NCHW_TO_NHWC]
            serialized = xnn_graph.xnodes[-1].xnode_union
            serialized.sizes = [0 if d else size for d, size in zip(dynamic, serialized.sizes, strict=True)]

    node_visitor.register_node_visitor(DynamicSliceVisitor)
