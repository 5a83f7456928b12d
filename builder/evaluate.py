"""`slmpack eval`: what a recipe's compression costs, measured in eager PyTorch without lowering anything.

Rows: the original model, each compression step (prune, low-rank, distill), and the compressed model under
each quantization scheme the recipe's ExecuTorch targets apply in torch (torchao, exactly what they lower).
Core ML and LiteRT quantize while lowering, so their cost is measured by `slmpack build` on the artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.backends.base import LoweringOptions
from builder.compress.quantization import embeddings_quantized, estimated_weight_bytes
from builder.models.base import Model
from builder.pipeline import WeightPlans, compress_stage, load_inputs
from builder.progress import BuildProgress
from builder.recipe import LoadedRecipe, Recipe
from builder.validate import cost_figures, decoder_cost, encoder_cost, original_encoder
from builder.validate.decoder import OriginalDecoderRunner
from builder.validate.gates import Validation
from builder.validate.tasks import TaskData


@dataclass
class EvalRow:
    name: str
    parameters: int
    figures: dict[str, Any]  # perplexity, perplexity_original, top1_agreement, kl_divergence, greedy_match
    tasks: dict[str, Any] = field(default_factory=dict)
    scheme: str | None = None  # the quantization measured; None for the steps before it
    weight_bytes: int | None = None  # estimated at `scheme` (builder.compress.quantization)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "parameters": self.parameters, "scheme": self.scheme,
                "estimated_weight_bytes": self.weight_bytes, **self.figures, "tasks": self.tasks}  # fmt: skip


@dataclass
class EvalReport:
    source: str
    decoder: bool
    rows: list[EvalRow]
    not_measured: list[str]  # targets whose quantization happens while lowering
    eval: dict[str, Any]
    calibration: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "task": "text-generation" if self.decoder else "embeddings",
                "eval": self.eval, "calibration": self.calibration, "rows": [r.to_json() for r in self.rows],
                "not_measured": self.not_measured}  # fmt: skip


def _step_row(step: dict[str, Any]) -> EvalRow:
    skip = ("step", "parameters", "nonzero_parameters", "seconds", "details", "tasks")
    figures = {k: v for k, v in step.items() if k not in skip}
    return EvalRow(f"{step['step']} (eager)", step["parameters"], figures, step.get("tasks") or {})


def measure_options(model: Model, original_model: Model, text: str, recipe: Recipe, tasks: TaskData, runner: Any,
                    options: LoweringOptions, name: str, original: Any = None) -> EvalRow:  # fmt: skip
    """`runner` (the compressed `model` quantized as `options` say) against the original model's figures on
    the evaluation text, and the weight bytes `options` would store. `original` reuses an original's runner."""
    decoder = recipe.model.task == "text-generation"
    max_len = min(recipe.model.max_context, model.spec.max_position_embeddings)
    if original is None:
        original = (OriginalDecoderRunner(original_model.module) if decoder
                    else original_encoder(original_model, None, max_len))  # fmt: skip
    v = Validation(runtime="eager")
    if decoder:
        decoder_cost(model, runner, original, text, recipe.eval, tasks, v)
    else:
        encoder_cost(model, runner, original, text, max_len, tasks, v)
    plan = options.plan
    size = estimated_weight_bytes(model.module, options.scheme, options.quantize_embeddings, options.output_layer_int8,
                                  plan.bits if plan else None, plan is not None and plan.zero_points)  # fmt: skip
    return EvalRow(name, model.parameters, cost_figures(v, decoder), v.tasks, options.scheme, size)


def evaluate(loaded: LoadedRecipe, console: Console) -> EvalReport:
    recipe = loaded.recipe
    decoder = recipe.model.task == "text-generation"
    with BuildProgress(console, 1) as progress:
        with progress.stage(f"Loading {recipe.model.source}"):
            model, text, tasks = load_inputs(loaded)
        compressed = compress_stage(model, text, tasks, loaded, progress)
        schemes = {(r.scheme, embeddings_quantized(r.scheme, r.quantize_embeddings)): r for r in loaded.targets
                   if r.target.backend == "executorch"}  # fmt: skip
        progress.add_stages(1 + len(schemes))
        max_len = min(recipe.model.max_context, model.spec.max_position_embeddings)
        original = OriginalDecoderRunner(model.module) if decoder else original_encoder(model, None, max_len)

        plans = WeightPlans(compressed.model, loaded, text, progress)

        def measure(name: str, runner: Any, options: LoweringOptions) -> EvalRow:
            return measure_options(compressed.model, model, text, recipe, tasks, runner, options, name, original)

        rows = [_step_row(step) for step in compressed.steps]
        with progress.stage("Measuring the compressed model in fp32"):
            runner = (OriginalDecoderRunner(compressed.model.module) if decoder
                      else original_encoder(compressed.model, compressed.model.module, max_len))  # fmt: skip
            fp32 = LoweringOptions("fp32", False, recipe.model.max_context)
            rows.append(measure("compressed, fp32" if compressed.steps else "original, fp32", runner, fp32))
        from builder.backends.executorch import ExecuTorchBackend

        for (scheme, embeddings), resolved in schemes.items():
            if scheme == "fp32" and not embeddings:
                progress.add_stages(-1)
                continue
            head8 = recipe.compress.output_layer_int8 is not False
            options = plans.options(LoweringOptions(scheme, embeddings, recipe.model.max_context,
                                                    output_layer_int8=head8), "executorch")  # fmt: skip
            with progress.stage(f"Measuring {scheme} as {resolved.target.name} quantizes it"):
                prepared = ExecuTorchBackend().prepare(compressed.model, options)
                label = f"{scheme}" + (", int8 embeddings" if embeddings else "")
                rows.append(measure(f"compressed + {label} (torchao)", prepared.runner, options))
    others = [r.target.name for r in loaded.targets if r.target.backend != "executorch"]
    evaluation = recipe.eval.model_dump(include={"text", "windows", "window_tokens", "stride", "decode_steps"})
    return EvalReport(model.source, decoder, rows, others, evaluation, compressed.calibration)


def cell(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _tasks_cell(tasks: dict[str, Any]) -> str:
    """`multiple_choice acc 0.62 / 0.65` per task kind: this model's headline metric, then the original's."""
    parts = []
    for kind, scores in tasks.items():
        mine, original = scores["artifact"], scores["original"]
        metric = "acc" if "acc" in mine else "knn"
        parts.append(f"{kind} {metric} {mine[metric]:.3f} / {original[metric]:.3f}")
    return "; ".join(parts) or "—"


def print_report(report: EvalReport, console: Console) -> None:
    e = report.eval
    if report.decoder:
        title = (f"{report.source}: {e['windows']} windows x {e['window_tokens']} tokens (stride "
                 f"{e['stride'] or e['window_tokens']}) of {e['text']}")  # fmt: skip
        columns = ("model", "parameters", "weights MB", "perplexity", "Δ", "top-1 vs original", "KL", "greedy match")
    else:
        title = f"{report.source}: sentences of {e['text']}"
        columns = ("model", "parameters", "weights MB", "cosine to original", "similarity rank ρ")
    table = Table(title=title)
    with_tasks = any(row.tasks for row in report.rows)
    for column in (*columns, *(["tasks (this model / original)"] if with_tasks else [])):
        table.add_column(column)
    for row in report.rows:
        f = row.figures
        if report.decoder:
            change = (f["perplexity"] / f["perplexity_original"] - 1) if f.get("perplexity_original") else None
            cells = [cell(f.get("perplexity"), ".2f"), cell(change, "+.1%"), cell(f.get("top1_agreement"), ".1%"),
                     cell(f.get("kl_divergence"), ".4f"), cell(f.get("greedy_match"), ".0%")]  # fmt: skip
        else:
            cells = [cell(f.get("cosine_similarity"), ".5f"), cell(f.get("similarity_rank_correlation"), ".4f")]
        tasks = [_tasks_cell(row.tasks)] if with_tasks else []
        size = "—" if row.weight_bytes is None else f"{row.weight_bytes / 2**20:,.2f}"
        table.add_row(row.name, f"{row.parameters:,}", size, *cells, *tasks)
    console.print(table)
    if report.not_measured:
        console.print(f"[dim]Not measured here: {', '.join(report.not_measured)} quantize while lowering; "
                      "slmpack build measures their artifacts.[/dim]")  # fmt: skip
