"""The one small interface every backend implements, and the runners validation talks to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from builder.bench.host import BenchRequest, BenchResult
from builder.models.base import Model
from builder.targets import Target

if TYPE_CHECKING:
    from builder.compress.weight_plan import WeightPlan


@dataclass(frozen=True)
class LoweringOptions:
    scheme: str
    quantize_embeddings: bool
    max_context: int
    sparsity: float = 0.0  # fraction of each weight tensor pruned to zero (targets with `prune = true`)
    output_layer_int8: bool = True  # a8w4 on XNNPACK: the output projection at 8 bits (compress.output_layer_int8)
    # a8w4 on ExecuTorch: each Linear's bits and GPTQ rounding (builder/compress/weight_plan.py), by digest.
    plan: WeightPlan | None = field(default=None, compare=False)

    def cache_fields(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "quantize_embeddings": self.quantize_embeddings,
            "ctx": self.max_context,
            "sparsity": self.sparsity,
            "output_layer_int8": self.output_layer_int8,
            "plan": self.plan.digest if self.plan is not None else None,
        }


@dataclass
class Artifact:
    """A lowered model file and what a runtime (and the generated wrappers) need to know about it."""

    target: str
    backend: str
    delegate: str | None
    quantization: str
    quantize_embeddings: bool
    path: Path
    signature: dict[str, Any]  # methods with inputs/outputs (dtype, shape); metadata constants
    runtime_version: str
    operators: dict[str, Any] = field(default_factory=dict)  # delegated vs non-delegated op counts
    min_os: str | None = None  # when the artifact needs a newer OS than its target's minimum
    sparsity: float = 0.0  # fraction of each weight tensor pruned to zero
    weight_plan: dict[str, Any] | None = None  # a8w4 on ExecuTorch: each Linear's bits, sensitivity, rounding

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "backend": self.backend,
            "delegate": self.delegate,
            "quantization": self.quantization,
            "quantize_embeddings": self.quantize_embeddings,
            "file": self.path.name,
            "signature": self.signature,
            "runtime_version": self.runtime_version,
            "operators": self.operators,
            "min_os": self.min_os,
            "sparsity": self.sparsity,
            "weight_plan": self.weight_plan,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], folder: Path) -> Artifact:
        fields = {k: v for k, v in data.items() if k != "file"}
        return cls(path=folder / data["file"], **fields)


class DecoderRunner(Protocol):
    """Runs a decoder step by step: `logits(ids [1, S], start_pos) -> [S, vocab]` with a KV cache."""

    def reset(self) -> None: ...

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor: ...


class EncoderRunner(Protocol):
    """Embeds one tokenized text: `embed(ids [1, S], mask [1, S]) -> [dim]`."""

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


Runner = DecoderRunner | EncoderRunner


@dataclass
class Prepared:
    """The compressed eager model, exactly as it will be lowered: the reference for the lowering gate."""

    module: torch.nn.Module  # the exportable wrapper (decoder or encoder), quantized as the artifact is
    runner: Runner  # runs `module` eagerly


class Backend(Protocol):
    name: str
    # Whether `lower` reads only `prepared` (and the model's spec), never the float model's weights: the build
    # then holds the float model on disk while it lowers (builder/spill.py).
    lowers_prepared_only: bool

    def prepare(self, model: Model, options: LoweringOptions) -> Prepared: ...

    def lower(self, prepared: Prepared, model: Model, target: Target, options: LoweringOptions,
              out_dir: Path) -> Artifact: ...  # fmt: skip

    def benchmark_blocker(self, artifact: Artifact) -> str | None:
        """Why the artifact's real runtime cannot be benchmarked on this host, or None when it can."""
        ...

    def benchmark(self, artifact: Artifact, request: BenchRequest) -> BenchResult:
        """DESIGN §8 figures of the artifact in its real runtime; called only where `benchmark_blocker` is None."""
        ...

    def host_runner(self, artifact: Artifact, model: Model) -> Runner | str:
        """A runner over the artifact in its real runtime, or the reason none can run on this OS."""
        ...

    def reference(self, prepared: Prepared, artifact: Artifact) -> Prepared:
        """The eager model the lowering gate compares the artifact with: `prepared`, unless the backend
        compresses while lowering, in which case the eager model must carry the artifact's weights."""
        ...
