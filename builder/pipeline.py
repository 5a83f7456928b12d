"""`slmpack build`: recipe → model → artifacts → validation → bundle, one way, with progress."""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from builder.backends import get_backend
from builder.backends.base import Artifact, Backend, LoweringOptions, Prepared
from builder.backends.support import refuse_unsupported
from builder.bench.host import BenchRequest
from builder.bundle import BuiltArtifact, manifest, write_bundle
from builder.cache import artifact_key, cached_artifact
from builder.chat_template import ChatFormat, reduce_chat_template
from builder.checksums import size_of
from builder.compress.generated import SAMPLING, generated_windows, interleaved
from builder.compress.pipeline import Compressed, calibration_set, compress, ids_digest, wanted
from builder.compress.quantization import embeddings_quantized
from builder.compress.weight_plan import (
    WeightPlan,
    cached_plan,
    cached_scores,
    cached_windows,
    eight_bit_candidates,
    generated_key,
    make_plan,
    plan_key,
    plan_steps,
    sensitivity_key,
    store_scores,
    store_windows,
)
from builder.errors import GateFailedError
from builder.models import load_model
from builder.models.base import Model
from builder.progress import BuildProgress
from builder.recipe import LoadedRecipe, ResolvedTarget
from builder.render.tokenizer_settings import bpe_settings, wordpiece_settings
from builder.report import task_headlines
from builder.spill import spilled
from builder.targets import Target
from builder.validate import ValidationResult, validate_decoder, validate_encoder
from builder.validate.data import load_eval_text
from builder.validate.gates import Validation
from builder.validate.tasks import TaskData

BENCH_PROMPT_TOKENS = 64
BENCH_NEW_TOKENS = 128


@dataclass
class BuildSettings:
    out_dir: Path
    benchmark: bool = True
    bench_iterations: int = 3


def load_inputs(loaded: LoadedRecipe) -> tuple[Model, str, TaskData]:
    """The recipe's model, evaluation text and task data: what build, eval and quantize-report start from."""
    recipe = loaded.recipe
    model = load_model(recipe.model.source, recipe.model.task, loaded.base_dir, recipe.model.max_context)
    text = load_eval_text(recipe.eval.text, loaded.base_dir)
    tasks = TaskData.load(recipe.eval.multiple_choice, recipe.eval.classification, loaded.base_dir,
                          recipe.model.max_context)  # fmt: skip
    return model, text, tasks


def build(loaded: LoadedRecipe, settings: BuildSettings, console: Console) -> Path:
    recipe = loaded.recipe
    stages = 2 + len(loaded.targets) * (3 + int(settings.benchmark))
    with BuildProgress(console, stages) as progress:
        with progress.stage(f"Loading {recipe.model.source}"):
            model, text, tasks = load_inputs(loaded)
        refuse_unsupported([r.target for r in loaded.targets], model.module.config, recipe.model.task,
                           recipe.model.max_context)  # fmt: skip
        check_wrapper_tokenizer(model, {resolved.target.platform for resolved in loaded.targets})
        chat = chat_format(model)
        compressed = compress_stage(model, text, tasks, loaded, progress)
        if model.source_quantization:
            progress.note(f"source weights were already quantized ({model.source_quantization}); "
                          "quality figures compare against their fp32 dequantization")  # fmt: skip
        plans = WeightPlans(compressed.model, loaded, text, progress)
        built = [_build_target(compressed.model, model, text, tasks, loaded, resolved, settings, progress, plans)
                 for resolved in loaded.targets]  # fmt: skip
        data = manifest(recipe, compressed.model, model.parameters, built, chat, compressed.to_json())
        _print_summary(console, model, built)
        failed = [b for b in built if b.result.validation.status == "failed"]
        if failed:
            reasons = "; ".join(f"{b.target.name}: {b.result.validation.reason}" for b in failed)
            raise GateFailedError(f"validation gate failed, no bundle written: {reasons}")
        final = settings.out_dir / f"{recipe.package.name}-{recipe.package.version}"
        with progress.stage(f"Writing bundle {final}"):
            write_bundle(final, data, model, built)
    return final


def compress_stage(
    model: Model, text: str, tasks: TaskData, loaded: LoadedRecipe, progress: BuildProgress
) -> Compressed:
    """Prune, factorize and distill once for every target (quantization follows per backend)."""
    settings = loaded.recipe.compress
    if not wanted(settings):
        return Compressed(model)
    stages = 1 + sum(x is not None for x in (settings.prune, settings.lowrank)) + 2 * bool(settings.distill)
    progress.add_stages(stages)
    compressed = compress(model, settings, text, loaded.recipe.eval, loaded.base_dir, progress.stage,
                          lambda total: progress.steps("Distilling from the original model", total), tasks)  # fmt: skip
    if compressed.cached:
        progress.add_stages(-stages)
        progress.note("unchanged model, compression settings and calibration text: reused the compressed model")
    for step in compressed.steps[1:]:
        progress.note(f"{step['step']}: {step['parameters']:,} parameters, " + _step_quality(step))
    return compressed


class WeightPlans:
    """The a8w4 weight plan (mixed precision, GPTQ) of the compressed model, made when a target first needs
    it and cached on disk by its inputs; ExecuTorch targets apply it (builder/compress/weight_plan.py)."""

    def __init__(self, model: Model, loaded: LoadedRecipe, text: str, progress: BuildProgress) -> None:
        self.model, self.loaded, self.text, self.progress = model, loaded, text, progress
        self.made: dict[bool, WeightPlan] = {}

    def options(self, options: LoweringOptions, backend: str) -> LoweringOptions:
        """`options` with the plan its target applies (ExecuTorch a8w4), else unchanged."""
        if backend != "executorch" or options.scheme != "a8w4":
            return options
        return dataclasses.replace(options, plan=self.plan(options.quantize_embeddings))

    def plan(self, quantize_embeddings: bool) -> WeightPlan:
        if quantize_embeddings in self.made:
            return self.made[quantize_embeddings]
        recipe = self.loaded.recipe
        settings = recipe.compress
        windows, record = calibration_set(self.model, settings.calibration, self.text, recipe.eval,
                                          self.loaded.base_dir)  # fmt: skip
        a8w4, spec = settings.a8w4, self.model.spec
        generated = a8w4.generated_windows if a8w4.reads_calibration and spec.task == "text-generation" else 0
        if generated:
            record["generated"] = {"windows": generated, "window_tokens": record["window_tokens"], **SAMPLING}
        key = plan_key(self.model.weights_digest, settings, record, quantize_embeddings)
        method = "GPTQ" if a8w4.method == "gptq" else "HQQ"
        what = f"Planning a8w4 ({method}" + (", sensitivity-driven mixed precision)" if
                                             a8w4.mixed_precision else ")")  # fmt: skip
        self.progress.add_stages(1)
        scores_key = sensitivity_key(self.model.weights_digest, settings, record)
        scores = cached_scores(scores_key)

        def compute() -> WeightPlan:
            plan_windows, calibration = windows, record
            if generated:
                own = self._generated(record["generated"])
                plan_windows = interleaved(windows, own)
                calibration = {**record, "generated": {**record["generated"], "sha256": ids_digest(own)}}
            module = self.model.module
            # Which Linears 8 bits could help is found once, for the progress count and the plan.
            candidates = eight_bit_candidates(module, settings) if scores is None and a8w4.mixed_precision else []
            with self.progress.count(what, plan_steps(module, settings, len(candidates))) as advance:
                made = make_plan(module, settings, plan_windows, calibration, quantize_embeddings, advance, scores,
                                 candidates)  # fmt: skip
            if scores is None and made.sensitivity:
                store_scores(scores_key, made.sensitivity)
            return made

        plan, hit = cached_plan(key, compute)
        if hit:
            self.progress.add_stages(-1)
            self.progress.note("unchanged model, a8w4 settings and calibration text: reused the a8w4 weight plan")
        eight = sum(bits == 8 for bits in plan.bits.values())
        size = _mb(plan.estimated_weight_bytes)
        self.progress.note(f"a8w4 plan: {eight} of {len(plan.bits)} Linears at 8 bits, "
                           f"{plan.bits_per_weight:.2f} bits per weight, ~{size} of weights")  # fmt: skip
        self.made[quantize_embeddings] = plan
        return plan

    def _generated(self, sampler: dict[str, Any]) -> list[torch.Tensor]:
        """The windows the model samples for calibration, cached by weights and sampler: another budget or
        rounding method (quantize-report's points) reuses them."""
        key = generated_key(self.model.weights_digest, sampler)
        own = cached_windows(key)
        if own is None:
            spec = self.model.spec
            self.progress.add_stages(1)
            with self.progress.stage(f"Sampling {sampler['windows']} calibration windows from the model"):
                start = spec.bos_id if spec.bos_id is not None else spec.eos_ids[0]
                own = generated_windows(self.model.module, start, sampler["windows"], sampler["window_tokens"])
            store_windows(key, own)
        return own


def _step_quality(step: dict[str, Any]) -> str:
    if "perplexity" in step:
        quality = f"perplexity {step['perplexity_original']:.2f} → {step['perplexity']:.2f}"
    else:
        quality = (f"cosine to the original {step['cosine_similarity']:.5f}, similarity rank correlation "
                   f"{_fmt(step.get('similarity_rank_correlation'), '.4f')}")  # fmt: skip
    return ", ".join([quality, *task_headlines(step.get("tasks") or {})])


def chat_format(model: Model) -> ChatFormat | None:
    """The chat template as the phone wrappers will apply it; checked before any slow work (§11)."""
    if model.spec.task != "text-generation" or not model.spec.chat_template:
        return None
    return reduce_chat_template(model.tokenizer, model.source)


def check_wrapper_tokenizer(model: Model, platforms: set[str]) -> None:
    """The wrappers' own tokenizers (WordPiece in Kotlin and Swift, byte-level BPE in Swift) must reproduce
    the model's exactly: one they would not is refused before any slow work, naming what they lack."""
    tokenizer_json = next((f for f in model.tokenizer_files if f.name == "tokenizer.json"), None)
    if tokenizer_json is None:
        return
    if model.spec.task == "embeddings":
        wordpiece_settings(tokenizer_json)
    elif "ios" in platforms:
        bpe_settings(tokenizer_json)


def _build_target(
    model: Model, original: Model, text: str, tasks: TaskData, loaded: LoadedRecipe, resolved: ResolvedTarget,
    settings: BuildSettings, progress: BuildProgress, plans: WeightPlans,
) -> BuiltArtifact:  # fmt: skip
    """Lower, validate and benchmark `model` (the compressed one) for one target; compression cost is
    measured against `original`."""
    recipe = loaded.recipe
    target = resolved.target
    backend = get_backend(target.backend)
    options = plans.options(LoweringOptions(
        scheme=resolved.scheme,
        quantize_embeddings=embeddings_quantized(resolved.scheme, resolved.quantize_embeddings),
        max_context=recipe.model.max_context,
        sparsity=resolved.sparsity,
        output_layer_int8=recipe.compress.output_layer_int8 is not False,
    ), target.backend)  # fmt: skip
    label = f"{target.name} ({options.scheme})"
    with progress.stage(f"Compressing for {label}"):
        prepared = backend.prepare(model, options)
    key = artifact_key(model.weights_digest, target.name, options.cache_fields())
    with progress.stage(f"Lowering {label}"):
        artifact, hit = cached_artifact(
            key, lambda out: lower_artifact(backend, prepared, [model, original], target, options, out)
        )
    if hit:
        progress.note(f"{target.name}: unchanged model and options, reused the cached artifact")
    with progress.stage(f"Validating {label} on the host"):
        runner = backend.host_runner(artifact, model)
        runtime = getattr(runner, "runtime", f"{target.backend} {artifact.runtime_version}")
        if isinstance(runner, str):
            result = ValidationResult(Validation(runtime=runtime, status="not-run", reason=runner), golden={})
        else:
            validate = validate_decoder if model.spec.task == "text-generation" else validate_encoder
            reference = backend.reference(prepared, artifact)
            result = validate(model, reference, runner, text, recipe.eval, options.scheme, runtime, tasks,
                              original=original.module)  # fmt: skip
    bench = None
    blocker = backend.benchmark_blocker(artifact) if settings.benchmark else "skipped by this build (--no-bench)"
    if blocker is None:
        with progress.stage(f"Benchmarking {label} on the host"):
            bench = backend.benchmark(artifact, bench_request(model, text, settings.bench_iterations))
    elif settings.benchmark:
        progress.note(f"{target.name}: no host benchmark: {blocker}")
    return BuiltArtifact(target=target, artifact=artifact, result=result, benchmark=bench, benchmark_note=blocker)


def lower_artifact(backend: Backend, prepared: Prepared, floats: list[Model], target: Target,
                   options: LoweringOptions, out_dir: Path) -> Artifact:  # fmt: skip
    """`backend.lower` of `prepared`, made from `floats[0]`. Where the backend lowers `prepared` alone, the float
    models wait on disk meanwhile (builder/spill.py): the lowering's peak memory then holds none of them."""
    held = spilled([m.module for m in floats], keep=prepared.module) if backend.lowers_prepared_only else nullcontext()
    with held:
        return backend.lower(prepared, floats[0], target, options, out_dir)


def bench_request(model: Model, text: str, iterations: int) -> BenchRequest:
    """The same prompt for every runtime: the first tokens of the evaluation text (only its head is tokenized:
    a whole play exceeds the tokenizer's maximum length, which it warns about)."""
    ids = model.tokenizer(text[: BENCH_PROMPT_TOKENS * 32], add_special_tokens=False)["input_ids"]
    encoder_ids = ids[: min(BENCH_PROMPT_TOKENS, model.spec.max_position_embeddings)]
    return BenchRequest(
        decoder=model.spec.task == "text-generation",
        prompt_text=model.tokenizer.decode(ids[:BENCH_PROMPT_TOKENS]),
        prompt_ids=encoder_ids,
        tokenizer_json=model.tokenizer_dir / "tokenizer.json",
        new_tokens=BENCH_NEW_TOKENS,
        iterations=iterations,
    )


def _mb(n: float) -> str:
    return f"{n / 2**20:,.1f} MB"


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


def _print_summary(console: Console, model: Model, built: list[BuiltArtifact]) -> None:
    decoder = model.spec.task == "text-generation"
    table = Table(title=f"{model.source}: {model.spec.architecture}, {model.parameters:,} parameters")
    for column in ("target", "scheme", "size before → after", "lowering error (rel / top-1)",
                   "perplexity before → after" if decoder else "cosine to original",
                   "decode tok/s" if decoder else "embed ms", "status"):  # fmt: skip
        table.add_column(column)
    before = sum(p.numel() * p.element_size() for p in model.module.parameters())
    for b in built:
        v = b.result.validation
        quality = (f"{_fmt(v.perplexity_reference, '.2f')} → {_fmt(v.perplexity, '.2f')}" if decoder
                   else _fmt(v.cosine_similarity, '.5f'))  # fmt: skip
        lowering = f"{_fmt(v.lowering_relative_diff, '.2e')} / " + (
            _fmt(v.lowering_top1_agreement, ".1%") if decoder else _fmt(v.lowering_min_cosine, ".6f")
        )
        speed = None
        if b.benchmark:
            speed = b.benchmark.decode_tok_s if decoder else b.benchmark.ttft_ms
        status = "[green]passed[/green]" if v.status == "passed" else f"[red]{v.status}[/red]"
        table.add_row(
            b.target.name, b.artifact.quantization,
            f"{_mb(before)} → {_mb(size_of(b.artifact.path))}",
            lowering, quality, _fmt(speed, ".1f"), status,
        )  # fmt: skip
    console.print(table)
