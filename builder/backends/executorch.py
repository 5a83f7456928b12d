"""ExecuTorch backend: torchao quantization, torch.export, XNNPACK delegation, .pte, host runtime."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from builder.backends.base import Artifact, LoweringOptions, Prepared
from builder.backends.executorch_runners import (
    EagerDecoderRunner,
    EagerEncoderRunner,
    PteDecoderRunner,
    PteEncoderRunner,
)
from builder.errors import UserInputError
from builder.inspect_pte import PteInfo, describe_pte
from builder.models.base import Model
from builder.quiet import quiet
from builder.targets import Target
from builder.tasks.causal_lm import ExportableDecoder, export_decoder
from builder.tasks.embeddings import ExportableEncoder, export_encoder

GROUP_SIZE = 32


def _quantize(module: nn.Module, scheme: str, quantize_embeddings: bool) -> None:
    """Apply the scheme in place with torchao, the way XNNPACK's kernels consume it (DESIGN §4)."""
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
    if scheme == "fp32":
        return
    weight_dtype = {"a8w8": torch.int8, "a8w4": torch.int4}[scheme]

    def config(granularity: Any) -> Any:
        # Symmetric weights: XNNPACK's int4 group kernels take no zero points (DESIGN §11).
        return Int8DynamicActivationIntxWeightConfig(
            weight_dtype=weight_dtype,
            weight_granularity=granularity,
            intx_choose_qparams_algorithm="hqq_scale_only",
        )

    def grouped(m: nn.Module) -> bool:
        return scheme == "a8w4" and m.in_features % GROUP_SIZE == 0

    quantize_(module, config(PerGroup(GROUP_SIZE)), lambda m, fqn: isinstance(m, nn.Linear) and grouped(m))
    # Per channel for a8w8, and for a8w4 layers whose width is not a multiple of the group size.
    quantize_(module, config(PerAxis(0)), lambda m, fqn: isinstance(m, nn.Linear) and not grouped(m))


def _metadata(model: Model, options: LoweringOptions) -> dict[str, Any]:
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
        "use_sdpa_with_kv_cache": True,
        "enable_dynamic_shape": True,
        "get_bos_id": spec.bos_id if spec.bos_id is not None else -1,
        "get_eos_ids": list(spec.eos_ids),
    }


def _check_runtime_ops(info: PteInfo, target: Target) -> dict[str, Any]:
    """Every op XNNPACK did not take must have a kernel in the runtime, else name it and the target."""
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


class ExecuTorchBackend:
    name = "executorch"
    host_benchmark = True

    def prepare(self, model: Model, options: LoweringOptions) -> Prepared:
        module = copy.deepcopy(model.module).eval()
        with quiet():
            _quantize(module, options.scheme, options.quantize_embeddings)
        if model.spec.task == "embeddings":
            encoder = ExportableEncoder(module, model.spec, options.max_context).eval()
            return Prepared(module=encoder, runner=EagerEncoderRunner(encoder))
        decoder = ExportableDecoder(module, options.max_context).eval()
        return Prepared(module=decoder, runner=EagerDecoderRunner(decoder))

    def lower(
        self, prepared: Prepared, model: Model, target: Target, options: LoweringOptions, out_dir: Path
    ) -> Artifact:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
        from executorch.exir.passes import MemoryPlanningPass

        if target.delegate != "xnnpack":
            raise UserInputError(f"target {target.name!r}: delegate {target.delegate!r} is not supported yet")
        with quiet():
            try:
                if isinstance(prepared.module, ExportableDecoder):
                    prepared.module.reset_cache()
                    program = export_decoder(prepared.module)
                else:
                    program = export_encoder(prepared.module)
            except Exception as exc:  # torch.export reports unsupported constructs in many exception types
                first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserInputError(
                    f"{model.spec.architecture} cannot be exported for target {target.name!r}: {first_line}"
                ) from exc
            edge = to_edge_transform_and_lower(
                {"forward": program},
                partitioner=[XnnpackPartitioner()],
                compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
                constant_methods=_metadata(model, options),
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
        path.write_bytes(executorch_program.buffer)
        info = describe_pte(path)
        return Artifact(
            target=target.name,
            backend=self.name,
            delegate=target.delegate,
            quantization=options.scheme,
            quantize_embeddings=options.quantize_embeddings,
            path=path,
            signature=_signature(info),
            runtime_version=target.runtime.version,
            operators=_check_runtime_ops(info, target),
        )

    def reference(self, prepared: Prepared, artifact: Artifact) -> Prepared:
        return prepared  # torchao quantized the eager model before export: it already is the artifact's model

    def host_runner(self, artifact: Artifact, model: Model) -> PteDecoderRunner | PteEncoderRunner | str:
        if model.spec.task == "embeddings":
            return PteEncoderRunner(artifact.path)
        return PteDecoderRunner(artifact.path)


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
