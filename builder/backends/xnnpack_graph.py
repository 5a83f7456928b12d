"""Rewrites of an exported program that let XNNPACK take ops it would otherwise leave to ExecuTorch's portable
kernels, where each op left out also splits the delegated graph in two.

XNNPACK lowers `mean.dim` only as global average pooling: a 4-D tensor averaged over dims [2, 3] with
keepdim. RMSNorm (Llama, Qwen, SmolLM, Gemma) averages a [batch, seq, hidden] tensor over its last dim, so
each norm ran outside the delegate: a tiny 2-layer Llama lowered to 13 XNNPACK partitions and 8 with the
rewrite, and no `aten::mean.out` left to the portable kernels. The rewrite is exact: the same mean over the
same values, through views. Repeated views and means of one value are merged, so each input is pooled once,
and so are the repeated calls of a fused projection (builder/backends/fused_projections.py)."""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from builder.backends.fused_projections import FusedProjection

_MEAN = torch.ops.aten.mean.dim
_VIEW = torch.ops.aten.view.default
# Pure ops whose repeats are merged: the group means zero-point Linears take of one input (q/k/v, gate/up).
_SHAREABLE = {_MEAN, _VIEW, torch.ops.aten.reshape.default, torch.ops.aten.sym_size.int}
_FUSED_PROJECTION = f"{FusedProjection.__module__}.{FusedProjection.__qualname__}"


def last_dim_means_as_pooling(program: ExportedProgram) -> int:
    """Rewrites in place each mean over the last dim of a contiguous [batch, seq, hidden] tensor (static batch
    and hidden, any seq) as view [batch, seq, hidden, 1] -> mean over dims [2, 3] -> view back. Returns how
    many it rewrote."""
    graph = program.graph_module.graph
    rewritten = 0
    for node in list(graph.nodes):
        if not (node.op == "call_function" and node.target == _MEAN and not node.kwargs.get("dtype")):
            continue
        source, dims = node.args[0], node.args[1]
        keepdim = bool(node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False))
        value = source.meta.get("val")
        if not isinstance(value, torch.Tensor) or value.dim() != 3 or list(dims) not in ([2], [-1]):
            continue
        batch, _, hidden = value.shape
        if not (isinstance(batch, int) and isinstance(hidden, int) and value.is_contiguous()):
            continue
        pooled_shape = [batch, -1, 1] if keepdim else [batch, -1]
        with graph.inserting_before(node):
            wide = _call(graph, node, _VIEW, (source, [batch, -1, hidden, 1]), value.view(batch, -1, hidden, 1))
            pooled_value = wide.meta["val"].mean([2, 3], keepdim=True)
            pooled = _call(graph, node, _MEAN, (wide, [2, 3], True), pooled_value)
            result = _call(graph, node, _VIEW, (pooled, pooled_shape), pooled_value.view(pooled_shape))
        _replace(node, result)
        rewritten += 1
    return _recompiled(program, rewritten)


def _call(
    graph: torch.fx.Graph, replaced: torch.fx.Node, target: object, args: tuple, value: torch.Tensor
) -> torch.fx.Node:
    """A new node carrying the replaced node's metadata (source location, module stack) and its own value."""
    node = graph.call_function(target, args)
    node.meta.update({key: item for key, item in replaced.meta.items() if key != "val"})
    node.meta["val"] = value
    return node


def shared_pure_ops(program: ExportedProgram) -> int:
    """Merges repeats of the same op on the same values, in place, where the op is known to be pure:
    - a view, reshape or mean: each zero-point Linear (builder/backends/zero_point_linear.py) averages its
      input per group, and the Linears that read one input (q, k and v; gate and up) would each pool it again;
    - any op traced inside a fused projection, whose every output slice calls it again on the same input.
    Returns how many nodes it removed."""
    graph = program.graph_module.graph
    seen: dict[tuple, torch.fx.Node] = {}
    removed = 0
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        # A fused projection holds only quantization ops, matmuls, views and adds, and reads weights (never
        # mutated) and its computed input.
        if not _in_fused_projection(node):
            if node.target not in _SHAREABLE:
                continue
            if any(isinstance(arg, torch.fx.Node) and arg.op == "placeholder" for arg in node.args):
                continue  # a buffer (the KV cache) may change between two reads: only computed values merge
        key = (node.target, _hashable(node.args), _hashable(node.kwargs))
        first = seen.setdefault(key, node)
        if first is not node:
            _replace(node, first)
            removed += 1
    return _recompiled(program, removed)


def _in_fused_projection(node: torch.fx.Node) -> bool:
    """Whether torch.export traced `node` inside a FusedProjection (its module stack names the class)."""
    return any(str(kind).endswith(_FUSED_PROJECTION) for _, kind in node.meta.get("nn_module_stack", {}).values())


def _replace(node: torch.fx.Node, by: torch.fx.Node) -> None:
    node.replace_all_uses_with(by)
    node.graph.erase_node(node)


def _recompiled(program: ExportedProgram, changes: int) -> int:
    if changes:
        program.graph_module.graph.lint()
        program.graph_module.recompile()
    return changes


def _hashable(value: object) -> object:
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value
