"""The ExecuTorch delegates a target can name: the partitioner that hands work to each, and the few
facts that differ between them (the decoder wrapper it can take, the iOS a scheme needs).

- xnnpack: CPU kernels, ExecuTorch's custom SDPA and KV-cache ops stay outside the delegate.
- coreml: the Core ML delegate (CPU, GPU, Neural Engine). It takes standard ops only, so decoders use the
  static-cache wrapper (builder.tasks.static_cache_decoder), and the KV cache stays an ExecuTorch buffer
  (`take_over_mutable_buffer=False`: taking it over as Core ML state fails on int64 buffers and needs
  iOS 18, DESIGN §9).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from builder.backends.base import LoweringOptions
from builder.errors import UserInputError
from builder.targets import Target

# Schemes whose Core ML weight formats exist only from iOS 18 on: per-block int4 (and per-channel int4)
# and palettes (constexpr_blockwise_shift_scale, constexpr_lut_to_dense). int8 per channel runs on iOS 16+.
COREML_NEEDS_IOS18 = frozenset({"w4", "palette4"})


@dataclass(frozen=True)
class Delegate:
    name: str
    backend_id: str  # the id the delegate has in a .pte (and in ExecuTorch's backend registry)
    custom_llm_ops: bool  # whether decoders use ExecuTorch's custom SDPA / KV-cache ops


DELEGATES = {
    "xnnpack": Delegate("xnnpack", "XnnpackBackend", custom_llm_ops=True),
    "coreml": Delegate("coreml", "CoreMLBackend", custom_llm_ops=False),
}


def delegate_of(target: Target) -> Delegate:
    if target.delegate not in DELEGATES:
        raise UserInputError(
            f"target {target.name!r}: delegate {target.delegate!r} is not supported. "
            f"Fix: use one of {', '.join(DELEGATES)} in targets/{target.name}.toml"
        )
    return DELEGATES[target.delegate]


def min_ios(target: Target, scheme: str) -> str | None:
    """The iOS an artifact needs beyond its target's minimum, or None."""
    return "18.0" if target.delegate == "coreml" and scheme in COREML_NEEDS_IOS18 else None


def partitioner(target: Target, options: LoweringOptions, declared_ranges: dict[str, Any]) -> Any:
    """The partitioner for the target's delegate. `declared_ranges` are the dynamic-dimension ranges of the
    exported program (torch.export's range_constraints), which the Core ML delegate needs restored."""
    delegate = delegate_of(target)
    if delegate.name == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    return _coreml_partitioner(target, options, declared_ranges)


def _coreml_partitioner(target: Target, options: LoweringOptions, declared_ranges: dict[str, Any]) -> Any:
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    class DeclaredRangesCoreMLPartitioner(CoreMLPartitioner):
        """to_edge recomputes dynamic-dimension ranges from its shape environment, which narrows a length
        declared [1, N] to [2, N] (torch's 0/1 specialisation). coremltools turns those ranges into the
        Core ML model's input shapes, so a one-token decode step would be refused on the device. The
        ranges torch.export declared are restored before the partitions are converted."""

        def partition(self, exported_program: Any) -> Any:
            result = super().partition(exported_program)
            program = result.tagged_exported_program
            program._range_constraints = {
                symbol: declared_ranges.get(str(symbol), bounds) for symbol, bounds in program.range_constraints.items()
            }
            return result

    ios18 = min_ios(target, options.scheme) is not None
    specs = CoreMLBackend.generate_compile_specs(
        minimum_deployment_target=ct.target.iOS18 if ios18 else ct.target.iOS17,
        # fp32 computes in fp32; every other scheme computes in fp16 (its weights are fp16 or compressed).
        compute_precision=ct.precision.FLOAT32 if options.scheme == "fp32" else ct.precision.FLOAT16,
    )
    return DeclaredRangesCoreMLPartitioner(compile_specs=specs, take_over_mutable_buffer=False)
