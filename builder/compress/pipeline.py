"""The compression stage: prune → low-rank → distill, on the model every target then lowers (quantization
follows per backend). Each step is measured against the original on the evaluation text, so the report
shows what each one cost and what distillation won back. The compressed model is cached by its inputs."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from builder.compress.architecture import family_of
from builder.compress.distill import StepCallback, distill
from builder.compress.lowrank import apply_ranks, lowrank_factorize, lowrank_ranks
from builder.compress.prune import construct_like, magnitude_prune, structured_prune
from builder.models.base import Model, ModelSpec
from builder.paths import cache_dir, published_folder
from builder.recipe import CalibrationSection, CompressSection, EvalSection
from builder.tasks.embeddings import ExportableEncoder
from builder.tools import tool_versions
from builder.validate import cost_figures, decoder_cost, encoder_cost, original_encoder
from builder.validate import decoder as decoder_metrics
from builder.validate import encoder as encoder_metrics
from builder.validate.data import calibration_note, calibration_windows, covered_chars, load_calibration_text
from builder.validate.gates import Validation
from builder.validate.tasks import TaskData

CACHE_VERSION = "1"
# Settings the backends apply after this stage: changing them must not re-run compression.
QUANTIZATION_SETTINGS = {"quantize", "quantize_embeddings", "sparsity", "a8w4", "output_layer_int8"}
_CODE = Path(__file__).resolve().parent

# A stage runs inside `stage(description)` (a progress spinner in a build); distillation also reports
# each step through `distill_progress(total)` -> callback.
StageContext = Callable[[str], AbstractContextManager[None]]
DistillProgress = Callable[[int], AbstractContextManager[StepCallback]]


@dataclass
class Compressed:
    model: Model  # the model every target lowers (the original when nothing is asked)
    steps: list[dict[str, Any]] = field(default_factory=list)  # what each step did and cost, original first
    calibration: dict[str, Any] | None = None
    cached: bool = False  # reused from the cache: nothing was pruned or distilled this time

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "calibration": self.calibration}


def wanted(settings: CompressSection) -> bool:
    return any((settings.prune, settings.lowrank, settings.distill))


def _code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(_CODE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ids_digest(windows: list[torch.Tensor]) -> str:
    return hashlib.sha256(b"".join(w.numpy().tobytes() for w in windows)).hexdigest()


def _spec_after(module: nn.Module, spec: ModelSpec) -> ModelSpec:
    config = module.config
    family = family_of(config.model_type, "compression")
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_heads", spec.num_heads)
    head_dim = getattr(config, "head_dim", None) or spec.attention_head_dim
    return dataclasses.replace(
        spec,
        num_layers=getattr(config, family.block_count_key),
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
    )


class _Measure:
    """Eager quality of a compressed module against the original, on the evaluation text."""

    def __init__(self, model: Model, eval_text: str, limits: EvalSection, tasks: TaskData | None) -> None:
        self.model, self.text, self.limits, self.tasks = model, eval_text, limits, tasks
        self.decoder = model.spec.task == "text-generation"
        self.max_len = min(limits.window_tokens, model.spec.max_position_embeddings)
        if self.decoder:
            self.original: Any = decoder_metrics.OriginalDecoderRunner(model.module)
        else:
            self.original = original_encoder(model, None, self.max_len)

    def __call__(self, module: nn.Module, spec: ModelSpec) -> dict[str, Any]:
        v = Validation(runtime="eager")
        if self.decoder:
            runner = decoder_metrics.OriginalDecoderRunner(module)
            decoder_cost(self.model, runner, self.original, self.text, self.limits, self.tasks, v)
        else:
            student = ExportableEncoder(copy.deepcopy(module), spec, self.max_len)
            encoder_cost(self.model, encoder_metrics.OriginalEncoderRunner(student), self.original, self.text,
                         self.max_len, self.tasks, v)  # fmt: skip
        return cost_figures(v, self.decoder) | ({"tasks": v.tasks} if v.tasks else {})


def _nonzero(module: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p)) for p in module.parameters())


def _eval_chars(model: Model, eval_text: str, limits: EvalSection) -> int:
    eval_tokens = limits.window_tokens + (limits.windows - 1) * (limits.stride or limits.window_tokens)
    return covered_chars(model.tokenizer, eval_text, eval_tokens)


def calibration_set(model: Model, calibration: CalibrationSection, eval_text: str, limits: EvalSection,
                    base_dir: Path) -> tuple[list[torch.Tensor], dict[str, Any]]:  # fmt: skip
    """The calibration windows (never what evaluation reads) and their record for the manifest."""
    eval_chars = _eval_chars(model, eval_text, limits)
    length = min(calibration.window_tokens, model.spec.max_position_embeddings)
    text = load_calibration_text(calibration.text, base_dir, "compress.calibration.text", limits.text, eval_chars)
    windows = calibration_windows(model.tokenizer, text, calibration.windows, length)
    return windows, {
        "text": calibration.text,
        "windows": calibration.windows,
        "window_tokens": length,
        "sha256": ids_digest(windows),
        "held_out": calibration_note(calibration.text, base_dir, limits.text, eval_chars),
    }


def compress(
    model: Model,
    settings: CompressSection,
    eval_text: str,
    limits: EvalSection,
    base_dir: Path,
    stage: StageContext,
    distill_progress: DistillProgress,
    tasks: TaskData | None = None,
) -> Compressed:
    """`tasks` (the recipe's task files) are scored after every step, beside the evaluation text's figures."""
    if not wanted(settings):
        return Compressed(model)
    eval_chars = _eval_chars(model, eval_text, limits)

    def text_of(source: str, key: str) -> str:
        return load_calibration_text(source, base_dir, key, limits.text, eval_chars)

    windows, record = calibration_set(model, settings.calibration, eval_text, limits, base_dir)
    record.update({"distill_text": None, "distill_held_out": None})
    distill_windows: list[torch.Tensor] = []
    if settings.distill:
        d = settings.distill
        source = d.data or settings.calibration.text
        seq = min(d.sequence_length, model.spec.max_position_embeddings)
        distill_windows = calibration_windows(model.tokenizer, text_of(source, "compress.distill.data"),
                                              d.steps * d.batch_size, seq, d.batch_size)  # fmt: skip
        record.update({"distill_text": source, "distill_windows": len(distill_windows),
                       "distill_sha256": ids_digest(distill_windows),
                       "distill_held_out": calibration_note(source, base_dir, limits.text, eval_chars)})  # fmt: skip
    key_payload = {
        "version": CACHE_VERSION, "weights": model.weights_digest, "code": _code_digest(), "tools": tool_versions(),
        "settings": settings.model_dump(exclude=QUANTIZATION_SETTINGS),
        "calibration": record, "eval": limits.model_dump(include={"text", "windows", "window_tokens", "stride"}),
        "tasks": dataclasses.asdict(tasks) if tasks else None,
    }  # fmt: skip
    key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()[:32]
    folder = cache_dir() / "compressed" / key
    cached = _load(folder, model) if (folder / "record.json").is_file() else None
    if cached is not None:
        module, steps = cached
    else:
        measure = _Measure(model, eval_text, limits, tasks)
        module, steps = _run(model, settings, measure, windows, distill_windows, stage, distill_progress)
        _save(folder, module, steps)
    spec = _spec_after(module, model.spec)
    compressed = dataclasses.replace(model, module=module, spec=spec, weights_digest=f"compressed-{key}")
    return Compressed(compressed, steps, record, cached is not None)


def _run(
    model: Model, settings: CompressSection, measure: _Measure, windows: list[torch.Tensor],
    distill_windows: list[torch.Tensor], stage: StageContext, distill_progress: DistillProgress,
) -> tuple[nn.Module, list[dict[str, Any]]]:  # fmt: skip
    module = copy.deepcopy(model.module).eval()
    steps: list[dict[str, Any]] = []

    def record(name: str, started: float, details: dict[str, Any]) -> None:
        steps.append({"step": name, "parameters": sum(p.numel() for p in module.parameters()),
                      "nonzero_parameters": _nonzero(module), "seconds": round(time.perf_counter() - started, 1),
                      **measure(module, _spec_after(module, model.spec)), "details": details})  # fmt: skip

    with stage("Measuring the original model"):
        record("original", time.perf_counter(), {})
    if settings.prune:
        prune = settings.prune
        with stage(f"Pruning ({prune.method}, sparsity {prune.sparsity})"):
            started = time.perf_counter()
            if prune.method == "magnitude":
                family = family_of(module.config.model_type, "compress.prune (magnitude)")
                details = magnitude_prune(module, family, prune.sparsity, prune.scope or "layer")
            else:
                module, details, _ = structured_prune(module, prune, windows)
            record("prune", started, details)
    if settings.lowrank:
        with stage("Low-rank factorization"):
            started = time.perf_counter()
            record("lowrank", started, lowrank_factorize(module, settings.lowrank))
    if settings.distill:
        teacher = model.module
        masks = _zero_masks(module) if settings.prune and settings.prune.method == "magnitude" else {}
        with distill_progress(settings.distill.steps) as on_step:
            started = time.perf_counter()
            details = distill(module, teacher, distill_windows, settings.distill, measure.decoder, on_step)
            _reapply_zeros(module, masks)
        with stage("Measuring the distilled model"):
            record("distill", started, details)
    return module, steps


def _zero_masks(module: nn.Module) -> dict[str, torch.Tensor]:
    """Where magnitude pruning left zeros: distillation must not grow them back."""
    return {name: p == 0 for name, p in module.named_parameters() if p.dim() == 2 and bool((p == 0).any())}


@torch.no_grad()
def _reapply_zeros(module: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    parameters = dict(module.named_parameters())
    for name, mask in masks.items():
        parameters[name].masked_fill_(mask, 0.0)


def _save(folder: Path, module: nn.Module, steps: list[dict[str, Any]]) -> None:
    with published_folder(folder) as staging:
        save_model(module, str(staging / "model.safetensors"))
        record = {"config": module.config.to_dict(), "lowrank": lowrank_ranks(module), "steps": steps}
        (staging / "record.json").write_text(json.dumps(record, indent=1))


def _load(folder: Path, model: Model) -> tuple[nn.Module, list[dict[str, Any]]] | None:
    try:
        record = json.loads((folder / "record.json").read_text())
        config = type(model.module.config).from_dict(record["config"])
        module = construct_like(model.module, config)
        apply_ranks(module, record["lowrank"])
        load_model(module, str(folder / "model.safetensors"), strict=True)
    except Exception:  # an unreadable cache entry is rebuilt, never trusted
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return module.eval(), record["steps"]
