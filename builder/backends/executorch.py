"""ExecuTorch backend: torchao quantization, torch.export, delegation (XNNPACK or Core ML), .pte, host runtime.

The target's delegate picks the partitioner (builder.backends.executorch_delegates). A .pte whose delegate
the host runtime lacks (Core ML on Linux) is validated by replaying its delegated Core ML program
(builder.backends.executorch_coreml); the manifest's validation.runtime says which one ran."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from builder.backends.base import Artifact, LoweringOptions, Prepared, Runner
from builder.backends.executorch_delegates import DELEGATES, Delegate, delegate_of, min_ios, partitioner
from builder.backends.executorch_runners import (
    EagerDecoderRunner,
    EagerEncoderRunner,
    PteDecoderRunner,
    PteEncoderRunner,
)
from builder.backends.fused_projections import FusedProjection, fuse_projections, linear_layers
from builder.backends.partition_index import compact_partition_index
from builder.backends.xnnpack_graph import last_dim_means_as_pooling, shared_pure_ops
from builder.backends.zero_point_linear import ZeroPointLinear, with_zero_points
from builder.bench.host import BenchRequest, BenchResult, benchmark_pte
from builder.compress.quantization import GROUP_SIZE, eight_bit_output_layer
from builder.compress.weight_plan import WeightPlan
from builder.errors import UserInputError
from builder.inspect_pte import PteInfo, describe_pte
from builder.models.base import Model
from builder.quiet import quiet
from builder.targets import Target
from builder.tasks.causal_lm import ExportableDecoder, export_decoder
from builder.tasks.embeddings import ExportableEncoder, export_encoder
from builder.tasks.static_cache_decoder import StaticCacheDecoder


def _grouped(m: nn.Module, scheme: str) -> bool:
    """Whether a Linear gets int4 groups: 4-bit schemes, where its width is a multiple of the group size."""
    return scheme in ("a8w4", "w4") and m.in_features % GROUP_SIZE == 0


def _quantize(module: nn.Module, scheme: str, quantize_embeddings: bool, output_layer_int8: bool = True,
              plan: WeightPlan | None = None) -> None:  # fmt: skip
    """Apply the scheme in place with torchao, the way the delegates consume it (DESIGN §4): dynamic-activation
    schemes for XNNPACK's kernels, weight-only ones for Core ML's (each target lists the schemes it takes).
    An a8w4 `plan` sets each Linear's bits and, with GPTQ, its rounded weights."""
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import (
        Int8DynamicActivationIntxWeightConfig,
        IntxWeightOnlyConfig,
        quantize_,
    )

    if quantize_embeddings:
        for embedding in (m for m in module.modules() if isinstance(m, nn.Embedding)):
            # padding_idx only shapes gradients, and its form of the op defeats ExecuTorch's
            # quantized-embedding fusion (leaving an unlowerable torchao dequantize).
            embedding.padding_idx = None
        # Runs on ExecuTorch's quantized embedding kernel; done before the linears so a tied
        # lm_head keeps its own float weight for the linear config below.
        quantize_(
            module,
            IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
            lambda m, fqn: isinstance(m, nn.Embedding),
        )
    if scheme in ("fp32", "fp16"):
        return  # fp16 is the delegate's compute precision (Core ML), not a weight format
    if scheme == "palette4":
        from torchao.prototype.quantization.codebook_coreml import CodebookWeightOnlyConfig

        # One 16-entry k-means palette per weight tensor: Core ML's constexpr_lut_to_dense (iOS 18).
        quantize_(module, CodebookWeightOnlyConfig(dtype=torch.uint4, block_size=[-1, -1]),
                  lambda m, fqn: isinstance(m, nn.Linear))  # fmt: skip
        return
    weight_dtype = {"a8w8": torch.int8, "a8w4": torch.int4, "w8": torch.int8, "w4": torch.int4}[scheme]
    weight_only = scheme in ("w8", "w4")
    head = eight_bit_output_layer(module, scheme) if output_layer_int8 else None
    if plan is not None:
        _check_plan(module, plan)
    names = {id(m): name for name, m in module.named_modules()}

    def eight_bit(m: nn.Module) -> bool:
        return plan.bits[names[id(m)]] == 8 if plan is not None else m is head

    def config(granularity: Any, dtype: torch.dtype = weight_dtype) -> Any:
        if weight_only:  # dequantize_affine, which the Core ML delegate turns into compressed constants
            return IntxWeightOnlyConfig(weight_dtype=dtype, granularity=granularity)
        # Symmetric weights: XNNPACK's int4 group kernels take no zero points (DESIGN §11).
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=dtype,
            weight_granularity=granularity,
            intx_choose_qparams_algorithm="hqq_scale_only",
        )

    four_bit = weight_dtype == torch.int4

    def narrow(m: nn.Module, grouped: bool) -> bool:  # a Linear at the scheme's bits, grouped or per channel
        return isinstance(m, nn.Linear) and not (four_bit and eight_bit(m)) and _grouped(m, scheme) == grouped

    if four_bit:
        quantize_(module, config(PerAxis(0), torch.int8), lambda m, fqn: isinstance(m, nn.Linear) and eight_bit(m))
    quantize_(module, config(PerGroup(GROUP_SIZE)), lambda m, fqn: narrow(m, grouped=True))
    # Per channel for 8-bit schemes, and for 4-bit layers whose width is not a multiple of the group size.
    quantize_(module, config(PerAxis(0)), lambda m, fqn: narrow(m, grouped=False))
    if plan is not None:
        offsets = {id(m) for m in _apply_rounding(module, plan)}
        # Zero points' offsets: int8 per row on the group means, the scheme's 8-bit Linears' kernel.
        quantize_(module, config(PerAxis(0), torch.int8), lambda m, fqn: id(m) in offsets)


def _copy_for_quantization(module: nn.Module, scheme: str, quantize_embeddings: bool) -> nn.Module:
    """A copy of `module` to quantize in place. The float weights that quantization replaces are shared with
    the original instead of copied, unless a module left as it is (a float embedding tied to the head) holds
    them too: torchao swaps in new tensors and never writes to the old ones, so preparing holds no second
    float copy of them (513 MB on SmolLM2)."""
    kinds = (nn.Linear,) if scheme not in ("fp32", "fp16") else ()
    kinds += (nn.Embedding,) if quantize_embeddings else ()
    kept = {id(p) for m in module.modules() if not isinstance(m, kinds) for p in m.parameters(recurse=False)}
    replaced = [m.weight for m in module.modules() if isinstance(m, kinds) and id(m.weight) not in kept]
    return copy.deepcopy(module, memo={id(weight): weight for weight in replaced})


def _check_plan(module: nn.Module, plan: WeightPlan) -> None:
    linears = {name for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    if linears != set(plan.bits):
        raise RuntimeError(f"weight plan {plan.digest} was made for another model: its Linears differ from these")


@torch.no_grad()
def _apply_rounding(module: nn.Module, plan: WeightPlan) -> list[nn.Linear]:
    """The plan's integers and scales in place of torchao's round-to-nearest ones: same grid, same tensor type.
    A Linear with zero points then runs its offsets beside the int4 kernel: returns their (float) Linears."""
    for name, rounded in plan.weights.items():
        weight = module.get_submodule(name).weight
        if weight.qdata.shape != rounded.q.shape or weight.scale.shape != rounded.scale.shape:
            raise RuntimeError(f"weight plan {plan.digest}: {name} has another grid than torchao gave it")
        weight.qdata.copy_(rounded.q)
        weight.scale.copy_(rounded.scale.to(weight.scale.dtype))
    return with_zero_points(module, {name: w.offset for name, w in plan.weights.items() if w.offset is not None})


def weight_layout(module: nn.Module, options: LoweringOptions) -> dict[str, Any]:
    """How each kind of weight is stored, read from the quantized `module` (for the manifest's
    `operators.weight_layout`): Linear layouts with how many layers take each, the output layer's, the
    embedding table's, and how 4-bit weights were rounded."""
    from torchao.quantization import IntxUnpackedToInt8Tensor

    def describe(layer: nn.Module) -> str:
        m = layer.linear if isinstance(layer, ZeroPointLinear) else layer
        w = m.weight
        if not isinstance(w, IntxUnpackedToInt8Tensor):
            return "fp32" + (" (the delegate computes in fp16)" if options.scheme == "fp16" else "")
        bits = 4 if w.target_dtype == torch.int4 else 8
        per = f"groups of {w.block_size[1]}" if w.block_size[1] < m.in_features else "per output channel"
        grid = "with zero points (int8 offsets on the group means)" if m is not layer else "symmetric"
        return f"int{bits} {grid}, {per}"

    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    body = Counter(describe(m) for m in linear_layers(module) if m is not head)
    if options.scheme == "palette4":
        body = Counter({"4-bit k-means palette": sum(body.values())})
    layout: dict[str, Any] = {"linear": "; ".join(f"{kind} ({count} layers)" for kind, count in body.items())}
    if isinstance(head, nn.Linear | ZeroPointLinear):
        layout["output_layer"] = "4-bit k-means palette" if options.scheme == "palette4" else describe(head)
    if options.scheme in ("a8w8", "a8w4"):
        plan = options.plan
        grid = "min/max zero points" if plan is not None and plan.zero_points else "HQQ scales"
        layout["rounding"] = f"GPTQ (act-order) on {grid}" if plan is not None and plan.method == "gptq" else grid
    elif options.scheme in ("w8", "w4"):
        layout["rounding"] = "min/max scales"
    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    layout["embeddings"] = "int8, per row" if options.quantize_embeddings and embedding is not None else "fp32"
    return layout


def _metadata(model: Model, options: LoweringOptions, delegate: Delegate) -> dict[str, Any]:
    """Constant methods ExecuTorch's LLM runners (TextLLMRunner, Android LlmModule) read from the .pte."""
    spec = model.spec
    if spec.task == "embeddings":
        return {
            "get_max_seq_len": min(options.max_context, spec.max_position_embeddings),
            "get_vocab_size": spec.vocab_size,
            "get_embedding_dim": spec.hidden_size,
            "get_normalized": spec.normalize,
        }
    return {
        "get_max_seq_len": options.max_context,
        "get_max_context_len": options.max_context,
        "get_vocab_size": spec.vocab_size,
        "get_n_layers": spec.num_layers,
        "use_kv_cache": True,
        "use_sdpa_with_kv_cache": delegate.custom_llm_ops,
        "enable_dynamic_shape": True,
        "get_bos_id": spec.bos_id if spec.bos_id is not None else -1,
        "get_eos_ids": list(spec.eos_ids),
    }


def _check_runtime_ops(info: PteInfo, target: Target) -> dict[str, Any]:
    """Every op the delegate did not take must have a kernel in the runtime, else name it and the target."""
    from executorch.runtime import Runtime

    forward = next(m for m in info.methods if m.name == "forward")
    available = Runtime.get().operator_registry.operator_names
    missing = sorted(op for op in forward.operators if op not in available)
    if missing:
        raise UserInputError(
            f"operator {missing[0]!r} is not supported by target {target.name!r}: the {target.delegate} delegate "
            f"did not take it and the ExecuTorch runtime has no kernel for it"
            + (f" (also unsupported: {', '.join(missing[1:])})" if len(missing) > 1 else "")
        )
    return {"delegated": forward.delegated_calls, "non_delegated": forward.operators}


def runtime_has_delegate(backend_id: str) -> bool:
    """Whether this host's ExecuTorch runtime has the delegate's backend (XNNPACK yes; Core ML only on Apple)."""
    from executorch.runtime import Runtime

    return bool(Runtime.get().backend_registry.is_available(backend_id))


def _bind(prepared: Prepared, delegate: Delegate) -> Prepared:
    """The prepared model in the form the delegate takes, done in place, once:
    - for XNNPACK, Linears that read one input fused into one (builder/backends/fused_projections.py);
    - for a decoder without ExecuTorch's custom LLM ops (Core ML), the same compressed model re-wrapped with a
      standard-op static cache. Wrapping switches the model's attention, so the custom-op wrapper must not be
      used afterwards."""
    if delegate.name == "xnnpack" and not any(isinstance(m, FusedProjection) for m in prepared.module.modules()):
        fuse_projections(prepared.module, lambda: _example_forward(prepared.runner))
    if not delegate.custom_llm_ops and isinstance(prepared.module, ExportableDecoder):
        wrapper = StaticCacheDecoder(prepared.module.model, prepared.module.max_context).eval()
        prepared.module, prepared.runner = wrapper, EagerDecoderRunner(wrapper)  # type: ignore[arg-type]
    return prepared


def _example_forward(runner: Runner) -> None:
    """Two tokens through the eager model, leaving its KV cache as it was (empty)."""
    tokens = torch.tensor([[1, 2]])
    if isinstance(runner, EagerDecoderRunner):
        runner.logits(tokens, 0)
        runner.reset()
    else:
        runner.embed(tokens, torch.ones_like(tokens))


class ExecuTorchBackend:
    name = "executorch"
    lowers_prepared_only = True

    def benchmark_blocker(self, artifact: Artifact) -> str | None:
        # A Core ML delegate does not run in the ExecuTorch runtime off Apple platforms.
        delegate = delegate_of_artifact(artifact)
        if runtime_has_delegate(delegate.backend_id):
            return None
        return f"the ExecuTorch runtime on this host has no {delegate.backend_id} (Core ML runs only on Apple)"

    def benchmark(self, artifact: Artifact, request: BenchRequest) -> BenchResult:
        return benchmark_pte(artifact.path, request)

    def prepare(self, model: Model, options: LoweringOptions) -> Prepared:
        module = _copy_for_quantization(model.module, options.scheme, options.quantize_embeddings).eval()
        with quiet():
            _quantize(module, options.scheme, options.quantize_embeddings, options.output_layer_int8, options.plan)
        if model.spec.task == "embeddings":
            encoder = ExportableEncoder(module, model.spec, options.max_context).eval()
            return Prepared(module=encoder, runner=EagerEncoderRunner(encoder))
        decoder = ExportableDecoder(module, options.max_context).eval()
        return Prepared(module=decoder, runner=EagerDecoderRunner(decoder))

    def lower(
        self, prepared: Prepared, model: Model, target: Target, options: LoweringOptions, out_dir: Path
    ) -> Artifact:
        from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass

        delegate = delegate_of(target)
        prepared = _bind(prepared, delegate)
        with quiet():
            try:
                if isinstance(prepared.module, ExportableDecoder | StaticCacheDecoder):
                    prepared.module.reset_cache()
                    program = export_decoder(prepared.module)
                else:
                    program = export_encoder(prepared.module)
            except Exception as exc:  # torch.export reports unsupported constructs in many exception types
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserInputError(
                    f"{model.spec.architecture} cannot be exported for target {target.name!r}: {first_line}"
                ) from exc
            if delegate.name == "xnnpack":
                last_dim_means_as_pooling(program)
                shared_pure_ops(program)
            declared_ranges = {str(symbol): bounds for symbol, bounds in program.range_constraints.items()}
            with compact_partition_index():
                edge = to_edge_transform_and_lower(
                    {"forward": program},
                    partitioner=[partitioner(target, options, declared_ranges)],
                    compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
                    constant_methods=_metadata(model, options, delegate),
                )
            executorch_program = edge.to_executorch(
                ExecutorchBackendConfig(
                    extract_delegate_segments=True,
                    do_quant_fusion_and_const_prop=True,
                    memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
                )
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.pte"
        with path.open("wb") as file:  # streamed: `.buffer` would hold a second copy of the program
            executorch_program.write_to_file(file)
        del executorch_program, edge, program  # before the .pte is read back for its description
        info = describe_pte(path)
        operators = _check_runtime_ops(info, target)
        operators["weight_layout"] = weight_layout(prepared.module.model, options)
        if delegate.name == "coreml":
            from builder.backends.executorch_coreml import describe_coreml_delegates

            operators["coreml_programs"] = describe_coreml_delegates(path)
        return Artifact(
            target=target.name,
            backend=self.name,
            delegate=target.delegate,
            quantization=options.scheme,
            quantize_embeddings=options.quantize_embeddings,
            path=path,
            signature=_signature(info),
            runtime_version=target.runtime.version,
            operators=operators,
            min_os=min_ios(target, options.scheme),
            weight_plan=options.plan.to_json() if options.plan is not None else None,
        )

    def reference(self, prepared: Prepared, artifact: Artifact) -> Prepared:
        # torchao quantized the eager model before export: it already is the artifact's model, in the
        # wrapper the artifact's delegate took.
        return _bind(prepared, delegate_of_artifact(artifact))

    def host_runner(self, artifact: Artifact, model: Model) -> Runner | str:
        delegate = delegate_of_artifact(artifact)
        decoder = model.spec.task == "text-generation"
        if runtime_has_delegate(delegate.backend_id):
            return PteDecoderRunner(artifact.path) if decoder else PteEncoderRunner(artifact.path)
        if delegate.name != "coreml":
            return f"the ExecuTorch runtime on this host has no {delegate.backend_id}, and no replay of it exists"
        from builder.backends.executorch_coreml import ReplayDecoderRunner, ReplayEncoderRunner, UnreplayableProgram

        try:
            return ReplayDecoderRunner(artifact.path) if decoder else ReplayEncoderRunner(artifact.path)
        except UnreplayableProgram as exc:
            return (
                "the ExecuTorch runtime on this host has no CoreMLBackend (Core ML runs only on Apple platforms), "
                f"and the delegated program cannot be replayed in NumPy: {exc}"
            )


def delegate_of_artifact(artifact: Artifact) -> Delegate:
    if artifact.delegate not in DELEGATES:
        raise UserInputError(f"{artifact.path}: delegate {artifact.delegate!r} is unknown to this version of slmpack")
    return DELEGATES[artifact.delegate]


def _signature(info: PteInfo) -> dict[str, Any]:
    methods = [m for m in info.methods if m.inputs]
    return {
        "methods": [
            {
                "name": m.name,
                "inputs": [t.__dict__ for t in m.inputs],
                "outputs": [t.__dict__ for t in m.outputs],
            }
            for m in methods
        ],
        "metadata": {m.name: m.value for m in info.methods if not m.inputs},
    }
