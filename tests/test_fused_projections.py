"""Linears that read one input fused into one: exact in eager, computed once per input, grouped only where the
input and the layout are shared, and lowered to XNNPACK as one matmul whose slices give each Linear's output."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from builder.backends.fused_projections import FusedProjection, OutputRows, fuse_projections, linear_layers
from builder.backends.xnnpack_graph import last_dim_means_as_pooling, shared_pure_ops
from builder.backends.zero_point_linear import ZeroPointLinear
from builder.inspect_pte import describe_pte


def _quantized(module: nn.Module, bits: int, names: set[str]) -> None:
    """The a8w4 scheme's kernels: int4 groups of 32 (or int8 per row) with dynamic int8 activations."""
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig, quantize_

    config = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4 if bits == 4 else torch.int8,
        weight_granularity=PerGroup(32) if bits == 4 else PerAxis(0),
    )
    quantize_(module, config, lambda m, fqn: fqn in names)


class Block(nn.Module):
    """An attention block's projections and a gated MLP's, at the a8w4 scheme's layouts: q, k and v with
    zero points read the normed input; gate (4-bit) and up (8-bit) read another; down reads their product."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)

        def linear(outputs: int, inputs: int = 64) -> nn.Linear:
            made = nn.Linear(inputs, outputs, bias=False)
            with torch.no_grad():
                made.weight.copy_(torch.randn(outputs, inputs, generator=generator) / 8)
            return made

        self.q, self.k, self.v = linear(64), linear(32), linear(32)
        self.gate, self.up, self.down = linear(96), linear(96), linear(64, 96)
        _quantized(self, 4, {"q", "k", "v", "gate", "down"})
        _quantized(self, 8, {"up"})
        for name in ("q", "k", "v"):
            offsets = torch.randn(getattr(self, name).out_features, 2, generator=generator) / 100
            setattr(self, name, ZeroPointLinear(getattr(self, name), offsets))
            _quantized(self, 8, {f"{name}.offsets"})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        attended = self.q(h) + torch.cat([self.k(h), self.v(h)], -1)
        m = attended * 0.5
        return self.down(torch.nn.functional.silu(self.gate(m)) * self.up(m))


def _fused_block() -> tuple[Block, Block]:
    original = Block().eval()
    fused = Block().eval()
    assert fuse_projections(fused, lambda: fused(torch.randn(1, 2, 64))) == 1
    return original, fused


def test_linears_reading_one_input_with_one_layout_become_one() -> None:
    original, fused = _fused_block()
    # q, k and v are one zero-point Linear with their rows; gate and up differ in bits, so stay apart.
    assert {type(fused.get_submodule(n)) for n in ("q", "k", "v")} == {OutputRows}
    projection = fused.q.projection
    assert fused.k.projection is projection and fused.v.projection is projection
    assert isinstance(fused.gate, nn.Linear) and isinstance(fused.up, nn.Linear) and isinstance(fused.down, nn.Linear)
    for name, rows in (("q", slice(0, 64)), ("k", slice(64, 96)), ("v", slice(96, 128))):
        for part in ("linear", "offsets"):
            mine, theirs = getattr(projection.fused, part).weight, getattr(original.get_submodule(name), part).weight
            assert torch.equal(mine.qdata[rows], theirs.qdata) and torch.equal(mine.scale[rows], theirs.scale)
    # Every original Linear is still counted once, fused or not.
    assert len(linear_layers(fused)) == 6 and len(linear_layers(original)) == 6
    with torch.no_grad():
        x = torch.randn(1, 7, 64)
        torch.testing.assert_close(fused(x), original(x), rtol=0, atol=1e-5)


def test_eager_runs_the_fused_matmul_once_per_input() -> None:
    _, fused = _fused_block()
    projection: FusedProjection = fused.q.projection
    calls = []
    projection.fused.register_forward_hook(lambda *_: calls.append(1))
    h = torch.randn(1, 3, 64)
    with torch.no_grad():
        outputs = [fused.q(h), fused.k(h), fused.v(h)]
        assert len(calls) == 1
        h.mul_(2)  # written in place: the kept result no longer holds
        assert torch.allclose(fused.q(h), outputs[0] * 2, atol=1e-1) and len(calls) == 2
        fused.q(torch.randn(1, 3, 64))
        assert len(calls) == 3


def test_a_linear_called_twice_or_reading_its_own_input_is_left_alone() -> None:
    shared = nn.Linear(32, 32)
    other = nn.Linear(32, 32)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared, self.other = shared, other

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.shared(self.shared(x) + self.other(x))

    module = Twice()
    assert fuse_projections(module, lambda: module(torch.randn(1, 32))) == 0
    assert module.shared is shared and module.other is other


def _lowered(module: nn.Module, path: Path) -> tuple[torch.export.ExportedProgram, int]:
    """The program after the XNNPACK rewrites, lowered to `path`, and how many matmuls it had before them."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    seq = torch.export.Dim("seq", min=1, max=64)
    program = torch.export.export(module, (torch.randn(1, 8, 64),), dynamic_shapes={"x": {1: seq}}, strict=True)
    last_dim_means_as_pooling(program)
    linears = sum(node.target == torch.ops.aten.linear.default for node in program.graph.nodes)
    shared_pure_ops(program)
    config = EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True)
    lowered = to_edge_transform_and_lower({"forward": program}, partitioner=[XnnpackPartitioner()],
                                          compile_config=config)  # fmt: skip
    path.write_bytes(lowered.to_executorch().buffer)
    return program, linears


def test_the_fused_projection_lowers_to_one_xnnpack_matmul(tmp_path: Path) -> None:
    from executorch.runtime import Runtime

    original, fused = _fused_block()
    program, linears_before = _lowered(fused, tmp_path / "fused.pte")
    # Each of q, k and v called the fused int4 and offsets matmuls; merged, they run once. Gate, up, down.
    assert linears_before == 3 * 2 + 3
    assert sum(node.target == torch.ops.aten.linear.default for node in program.graph.nodes) == 2 + 3
    x = torch.randn(1, 5, 64)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), fused(x), rtol=0, atol=1e-5)
    # All but the slices run in XNNPACK, which takes no slice of a tensor with a dynamic dimension.
    assert next(m for m in describe_pte(tmp_path / "fused.pte").methods if m.name == "forward").operators == {
        "aten::slice_copy.Tensor_out": 3
    }
    _lowered(original, tmp_path / "original.pte")
    (got,), (unfused,) = (
        Runtime.get().load_program(tmp_path / f"{name}.pte").load_method("forward").execute([x])
        for name in ("fused", "original")
    )
    # The runtime's dynamic quantization rounds a little apart from torchao's eager one (both .pte files
    # alike); fused or not, the runtime computes the same numbers.
    torch.testing.assert_close(got, unfused, rtol=0, atol=1e-5)
