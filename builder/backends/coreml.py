"""Core ML backend: coremltools conversion to an ML Program (.mlpackage), compression with
coremltools.optimize, and host validation by replaying the saved program (DESIGN §4, §5, §9).

Core ML predicts only on Apple platforms. On macOS the real model runs; elsewhere the program is
replayed op by op in NumPy (builder.backends.coreml_mil), and the manifest says which one ran.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from builder.backends.base import Artifact, LoweringOptions, Prepared, Runner
from builder.backends.coreml_mil import MilExecutor, UnsupportedMilOp, coremltools_quietly, describe_mlpackage
from builder.backends.executorch_runners import EagerEncoderRunner
from builder.backends.weights import adopt_artifact_weights
from builder.bench.host import BenchRequest, BenchResult
from builder.errors import SlmpackError, UserInputError
from builder.models.base import Model
from builder.quiet import quiet
from builder.targets import Target
from builder.tasks.coreml_decoder import CoreMLDecoder, causal_mask
from builder.tasks.embeddings import CoreMLEncoder

BLOCK_SIZE = 32
# Per-block int4 weights and state tensors (a decoder's KV cache) exist from iOS 18 on; embedding models
# in the other schemes run on the target's minimum (17).
NEEDS_IOS18 = {"w4"}
PRUNE_MIN_WEIGHTS = 2048
_EXAMPLE_TOKENS = 8


def _scoped(op_config: Any, quantize_embeddings: bool) -> Any:
    """A config for every weight, or for every weight but the embedding tables (gather)."""
    from coremltools.optimize.coreml import OptimizationConfig

    return OptimizationConfig(global_config=op_config, op_type_configs={} if quantize_embeddings else {"gather": None})


def _optimization_config(scheme: str, quantize_embeddings: bool) -> Any:
    """The coremltools.optimize config for a neutral scheme (DESIGN §4); None for fp32/fp16."""
    from coremltools.optimize.coreml import OpLinearQuantizerConfig, OpPalettizerConfig

    if scheme in ("fp32", "fp16"):
        return None
    if scheme == "w8":
        op_config: Any = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    elif scheme == "w4":
        op_config = OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=BLOCK_SIZE
        )
    elif scheme == "palette4":
        op_config = OpPalettizerConfig(mode="kmeans", nbits=4, granularity="per_tensor")
    else:
        raise UserInputError(f"scheme {scheme!r} has no Core ML mapping. Fix: use fp16, w8, w4 or palette4")
    return _scoped(op_config, quantize_embeddings)


def _compress(mlmodel: Any, scheme: str, quantize_embeddings: bool, sparsity: float) -> Any:
    """Prune (magnitude, unstructured) when asked, then quantize or palettize the weights; after pruning the
    two are joint, so a pruned weight stays zero and only its non-zero values are quantized."""
    from coremltools.optimize.coreml import (
        OpMagnitudePrunerConfig,
        linear_quantize_weights,
        palettize_weights,
        prune_weights,
    )

    if sparsity:
        # The threshold keeps norms and biases (a few hundred values) dense, as pruning them saves nothing.
        pruner = OpMagnitudePrunerConfig(target_sparsity=sparsity, weight_threshold=PRUNE_MIN_WEIGHTS)
        mlmodel = prune_weights(mlmodel, _scoped(pruner, quantize_embeddings))
    config = _optimization_config(scheme, quantize_embeddings)
    if config is None:
        return mlmodel
    compress = palettize_weights if scheme == "palette4" else linear_quantize_weights
    return compress(mlmodel, config, joint_compression=bool(sparsity))


def _encoder_feeds(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, np.ndarray]:
    return {"input_ids": input_ids.numpy().astype(np.int32), "attention_mask": attention_mask.numpy().astype(np.int32)}


class MilEncoderRunner:
    """The saved ML Program replayed in NumPy (Linux, Windows): what validation uses off macOS."""

    runtime = "coreml: NumPy replay of the saved ML Program (Core ML predicts only on Apple platforms)"

    def __init__(self, path: Path, executor: MilExecutor | None = None) -> None:
        self.executor = executor or MilExecutor(path)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        (output,) = self.executor.run(_encoder_feeds(input_ids, attention_mask)).values()
        return torch.from_numpy(output.astype(np.float32))[0]


class CoreMLPredictEncoderRunner:
    """The real Core ML runtime, on macOS."""

    runtime = "coreml: Core ML on macOS"

    def __init__(self, path: Path) -> None:
        self.model = coremltools_quietly().models.MLModel(str(path))

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.model.predict(_encoder_feeds(input_ids, attention_mask))["embedding"]
        return torch.from_numpy(np.asarray(output, dtype=np.float32))[0]


class EagerCoreMLDecoderRunner:
    """The Core ML decoder wrapper in eager PyTorch, fed the causal mask the device would build."""

    def __init__(self, wrapper: CoreMLDecoder) -> None:
        self.wrapper = wrapper

    def reset(self) -> None:
        self.wrapper.reset_cache()

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self.wrapper(input_ids, causal_mask(start_pos, input_ids.shape[1]))[0].float()


def _decoder_feeds(input_ids: torch.Tensor, start_pos: int) -> dict[str, np.ndarray]:
    mask = causal_mask(start_pos, input_ids.shape[1], torch.float16).numpy()
    return {"input_ids": input_ids.numpy().astype(np.int32), "causal_mask": mask}


class MilDecoderRunner:
    """The saved stateful ML Program replayed in NumPy, its KV-cache states carried between calls."""

    runtime = MilEncoderRunner.runtime

    def __init__(self, path: Path, executor: MilExecutor | None = None) -> None:
        self.executor = executor or MilExecutor(path)
        self.reset()

    def reset(self) -> None:
        self.states = {name: np.zeros(shape, np.float16) for name, shape in self.executor.state_shapes.items()}

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        (output,) = self.executor.run(_decoder_feeds(input_ids, start_pos), self.states).values()
        return torch.from_numpy(output.astype(np.float32))[0]


class CoreMLPredictDecoderRunner:
    """The real Core ML runtime with an MLState for the KV cache, on macOS."""

    runtime = CoreMLPredictEncoderRunner.runtime

    def __init__(self, path: Path) -> None:
        self.model = coremltools_quietly().models.MLModel(str(path))
        self.reset()

    def reset(self) -> None:
        self.state = self.model.make_state()

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        output = self.model.predict(_decoder_feeds(input_ids, start_pos), state=self.state)["logits"]
        return torch.from_numpy(np.asarray(output, dtype=np.float32))[0]


# Normalisation statistics stay in fp32: SmolLM2's residual stream reaches 2.3e4, so its mean square
# (5e8) overflows fp16 and RMSNorm zeroes the layer. The rest of the network is fine in fp16.
FP32_OPS = frozenset({"pow", "reduce_mean", "rsqrt", "sqrt"})


def _keeps_fp16(op: Any) -> bool:
    """False for the statistics ops and for any op fed by one (the `variance + eps` add)."""
    if op.op_type in FP32_OPS:
        return False
    producers = (getattr(var, "op", None) for var in op.inputs.values() if not isinstance(var, list | tuple))
    return not any(p is not None and p.op_type in FP32_OPS for p in producers)


def _compute_precision(ct: Any, scheme: str) -> Any:
    if scheme == "fp32":
        return ct.precision.FLOAT32
    return ct.transform.FP16ComputePrecision(op_selector=_keeps_fp16)


def _encoder_interface(ct: Any, encoder: CoreMLEncoder) -> dict[str, Any]:
    example = torch.ones((1, _EXAMPLE_TOKENS), dtype=torch.long)
    length = ct.RangeDim(lower_bound=2, upper_bound=encoder.max_context, default=_EXAMPLE_TOKENS)
    return {
        "example": (example, example),
        "inputs": [ct.TensorType(name, shape=(1, length), dtype=np.int32) for name in ("input_ids", "attention_mask")],
        "outputs": [ct.TensorType("embedding")],
    }


def _decoder_interface(ct: Any, decoder: CoreMLDecoder) -> dict[str, Any]:
    """Flexible query and cache lengths, so one function serves prefill and decode; the cache is state."""
    example = (torch.ones((1, _EXAMPLE_TOKENS), dtype=torch.long), causal_mask(0, _EXAMPLE_TOKENS))
    query = ct.RangeDim(lower_bound=1, upper_bound=decoder.max_context, default=1)
    end = ct.RangeDim(lower_bound=1, upper_bound=decoder.max_context, default=1)
    states = [
        ct.StateType(wrapped_type=ct.TensorType(shape=tuple(buffer.shape), dtype=np.float16), name=name)
        for name, buffer in (("keyCache", decoder.keyCache), ("valueCache", decoder.valueCache))
    ]
    return {
        "example": example,
        "inputs": [
            ct.TensorType("input_ids", shape=(1, query), dtype=np.int32),
            ct.TensorType("causal_mask", shape=(1, 1, query, end), dtype=np.float16),
        ],
        "outputs": [ct.TensorType("logits", dtype=np.float16)],
        "states": states,
    }


class CoreMLBackend:
    name = "coreml"
    lowers_prepared_only = True

    def __init__(self) -> None:
        # One replay per artifact: the runner and the reference share its decompressed weights.
        self._executors: dict[Path, MilExecutor] = {}

    def _executor(self, path: Path) -> MilExecutor:
        if path not in self._executors:
            self._executors[path] = MilExecutor(path)
        return self._executors[path]

    def prepare(self, model: Model, options: LoweringOptions) -> Prepared:
        if model.spec.task == "text-generation":
            decoder = CoreMLDecoder(copy.deepcopy(model.module), options.max_context).eval()
            return Prepared(module=decoder, runner=EagerCoreMLDecoderRunner(decoder))
        encoder = CoreMLEncoder(copy.deepcopy(model.module), model.spec, options.max_context).eval()
        return Prepared(module=encoder, runner=EagerEncoderRunner(encoder))

    def lower(
        self, prepared: Prepared, model: Model, target: Target, options: LoweringOptions, out_dir: Path
    ) -> Artifact:
        ct = coremltools_quietly()
        wrapper = prepared.module
        decoder = isinstance(wrapper, CoreMLDecoder)
        # Sparse weights jointly quantized or palettized are iOS 18 formats; sparse fp16 alone is iOS 17.
        joint = options.sparsity > 0 and options.scheme not in ("fp16", "fp32")
        ios18 = decoder or options.scheme in NEEDS_IOS18 or joint
        interface = _decoder_interface(ct, wrapper) if decoder else _encoder_interface(ct, wrapper)
        with quiet(), torch.no_grad():
            if decoder:
                wrapper.reset_cache()
            traced = torch.jit.trace(wrapper, interface.pop("example"))
            if decoder:
                wrapper.reset_cache()
            try:
                mlmodel = ct.convert(
                    traced,
                    convert_to="mlprogram",
                    minimum_deployment_target=ct.target.iOS18 if ios18 else ct.target.iOS17,
                    compute_precision=_compute_precision(ct, options.scheme),
                    **interface,
                )
            except NotImplementedError as exc:  # coremltools names the torch op it cannot convert
                raise UserInputError(
                    f"{model.spec.architecture} cannot be converted for {target.name!r}: {exc}"
                ) from exc
            # A table tied to the output projection is one tensor in the program: it is compressed with it.
            tied = decoder and wrapper.model.lm_head.weight is wrapper.model.model.embed_tokens.weight
            quantize_embeddings = options.quantize_embeddings or tied
            mlmodel = _compress(mlmodel, options.scheme, quantize_embeddings, options.sparsity)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "model.mlpackage"
        mlmodel.save(str(path))
        info = describe_mlpackage(path)
        signature = {
            "methods": [
                {"name": "main", "inputs": info["inputs"], "outputs": info["outputs"], "states": info["states"]}
            ],
            "metadata": {"specification_version": info["specification_version"], "max_length": wrapper.max_context},
        }
        return Artifact(
            target=target.name,
            backend=self.name,
            delegate=target.delegate,
            quantization=options.scheme,
            quantize_embeddings=quantize_embeddings,
            path=path,
            signature=signature,
            runtime_version=target.runtime.version,
            operators={"mil": info["operators"], "compressed_weights": info["compressed_weights"]},
            min_os="18.0" if ios18 else None,
            sparsity=options.sparsity,
        )

    def reference(self, prepared: Prepared, artifact: Artifact) -> Prepared:
        # Compression happens inside coremltools, so the eager reference takes the artifact's own weights:
        # the lowering gate then measures conversion and fp16 compute, and nothing of compression.
        wrapper = copy.deepcopy(prepared.module)
        adopt_artifact_weights(wrapper.parameters(), self._executor(artifact.path).constants.values())
        if isinstance(wrapper, CoreMLDecoder):
            return Prepared(module=wrapper, runner=EagerCoreMLDecoderRunner(wrapper))
        return Prepared(module=wrapper, runner=EagerEncoderRunner(wrapper))  # type: ignore[arg-type]

    def benchmark_blocker(self, artifact: Artifact) -> str | None:
        # On macOS the runner predicts with Core ML, but no host benchmark of it is written yet.
        return "Core ML runs only on Apple platforms, and slmpack has no macOS benchmark of it yet"

    def benchmark(self, artifact: Artifact, request: BenchRequest) -> BenchResult:
        raise SlmpackError("slmpack has no host benchmark for Core ML yet; the Swift package's BenchmarkTests "
                           "measure it on Apple devices")  # fmt: skip

    def host_runner(self, artifact: Artifact, model: Model) -> Runner | str:
        decoder = model.spec.task == "text-generation"
        if sys.platform == "darwin":
            return CoreMLPredictDecoderRunner(artifact.path) if decoder else CoreMLPredictEncoderRunner(artifact.path)
        try:
            executor = self._executor(artifact.path)
        except UnsupportedMilOp as exc:
            return f"Core ML predicts only on Apple platforms, and the NumPy replay cannot run this program: {exc}"
        runner = MilDecoderRunner if decoder else MilEncoderRunner
        return runner(artifact.path, executor)
