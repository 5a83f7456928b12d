"""`slmpack quantize-report`: what the recipe's a8w4 plan chose and why, and what other budgets would cost.

Per Linear: its sensitivity (how far the output moves with only it at 4 bits), what 8 bits would add, and the
bits the plan gave it. Then the compressed model measured in eager PyTorch (torchao, exactly what the
ExecuTorch targets lower) at the recipe's plan, at other bits-per-weight budgets, and with HQQ scales alone
(no calibration), as a size-against-quality table and plot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder import plots
from builder.backends.base import LoweringOptions
from builder.compress.quantization import embeddings_quantized
from builder.compress.weight_plan import WeightPlan, linear_storage_bits, linears_of
from builder.evaluate import EvalRow, cell, measure_options
from builder.pipeline import WeightPlans, compress_stage, load_inputs
from builder.progress import BuildProgress
from builder.recipe import LoadedRecipe


@dataclass
class QuantizePoint:
    label: str
    a8w4: dict[str, Any]  # the compress.a8w4 settings measured
    row: EvalRow
    bits_per_weight: float
    eight_bit: int  # Linears at 8 bits

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "a8w4": self.a8w4, "bits_per_weight": round(self.bits_per_weight, 4),
                "eight_bit_layers": self.eight_bit, **self.row.to_json()}  # fmt: skip


@dataclass
class QuantizeReport:
    source: str
    decoder: bool
    plan: dict[str, Any]  # the recipe's plan (WeightPlan.to_json)
    eight_bit_cost: dict[str, int]  # bytes 8 bits adds to each Linear
    points: list[QuantizePoint]
    eval: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "eval": self.eval, "plan": self.plan, "eight_bit_cost": self.eight_bit_cost,
                "points": [p.to_json() for p in self.points]}  # fmt: skip


def _variants(loaded: LoadedRecipe, budgets: list[float]) -> list[tuple[str, LoadedRecipe]]:
    """The recipe itself, then each budget with the recipe's method, then HQQ scales without calibration."""
    recipe = loaded.recipe
    a8w4 = recipe.compress.a8w4

    def variant(**changes: Any) -> LoadedRecipe:
        settings = a8w4.model_validate({**a8w4.model_dump(), **changes})
        compress = recipe.compress.model_copy(update={"a8w4": settings})
        return loaded.model_copy(update={"recipe": recipe.model_copy(update={"compress": compress})})

    out = [("recipe", loaded)]
    if a8w4.mixed_precision:
        out += [(f"{a8w4.method}, {b} bits/weight", variant(bits_per_weight=b, max_bytes=None)) for b in budgets]
    out.append(("hqq, no mixed precision", variant(method="hqq", mixed_precision=False, bits_per_weight=None,
                                                   max_bytes=None)))  # fmt: skip
    return out


def quantize_report(loaded: LoadedRecipe, budgets: list[float], console: Console) -> QuantizeReport:
    recipe = loaded.recipe
    decoder = recipe.model.task == "text-generation"
    variants = _variants(loaded, budgets)
    with BuildProgress(console, 1 + len(variants)) as progress:
        with progress.stage(f"Loading {recipe.model.source}"):
            model, text, tasks = load_inputs(loaded)
        compressed = compress_stage(model, text, tasks, loaded, progress)
        embeddings = embeddings_quantized("a8w4", recipe.compress.quantize_embeddings)
        points: list[QuantizePoint] = []
        plan: WeightPlan | None = None
        from builder.backends.executorch import ExecuTorchBackend

        for label, variant in variants:
            head8 = variant.recipe.compress.output_layer_int8 is not False
            options = WeightPlans(compressed.model, variant, text, progress).options(
                LoweringOptions("a8w4", embeddings, recipe.model.max_context, output_layer_int8=head8), "executorch"
            )
            assert options.plan is not None
            plan = plan or options.plan
            with progress.stage(f"Measuring a8w4 ({label})"):
                prepared = ExecuTorchBackend().prepare(compressed.model, options)
                row = measure_options(compressed.model, model, text, variant.recipe, tasks, prepared.runner, options,
                                      f"a8w4, {label}")  # fmt: skip
            eight = sum(bits == 8 for bits in options.plan.bits.values())
            a8w4 = variant.recipe.compress.a8w4.model_dump(exclude={"sensitivity_windows"})
            points.append(QuantizePoint(label, a8w4, row, options.plan.bits_per_weight, eight))
    assert plan is not None
    cost = {name: (linear_storage_bits(m, 8) - linear_storage_bits(m, 4, plan.zero_points)) // 8
            for name, m in linears_of(compressed.model.module).items()}  # fmt: skip
    evaluation = recipe.eval.model_dump(include={"text", "windows", "window_tokens", "stride"})
    return QuantizeReport(model.source, decoder, plan.to_json(), cost, points, evaluation)


def _quality(row: EvalRow, decoder: bool) -> list[str]:
    f = row.figures
    if decoder:
        change = f["perplexity"] / f["perplexity_original"] - 1 if f.get("perplexity_original") else None
        return [cell(f.get("perplexity"), ".2f"), cell(change, "+.1%"), cell(f.get("top1_agreement"), ".1%"),
                cell(f.get("kl_divergence"), ".4f")]  # fmt: skip
    return [cell(f.get("cosine_similarity"), ".5f"), cell(f.get("similarity_rank_correlation"), ".4f")]


def print_report(report: QuantizeReport, console: Console, top: int) -> None:
    plan = report.plan
    metric = "KL" if report.decoder else "1 − cosine"
    layers = [layer for layer in plan["layers"] if layer["sensitivity"] is not None]
    title = (f"{report.source}: sensitivity of each Linear ({metric} with only it at 4 bits, on "
             f"{plan['calibration']['text'] if plan['calibration'] else 'calibration text'})")  # fmt: skip
    table = Table(title=title)
    for column in ("rank", "Linear", metric, "8 bits adds", "bits"):
        table.add_column(column)
    for rank, layer in enumerate(layers[:top], start=1):
        table.add_row(str(rank), layer["name"], f"{layer['sensitivity']:.3g}",
                      f"{report.eight_bit_cost[layer['name']] / 1024:,.0f} KB", str(layer["bits"]))  # fmt: skip
    console.print(table)
    if len(layers) > top:
        console.print(f"[dim]{len(layers) - top} less sensitive Linears not shown (--top).[/dim]")
    unmeasured = len(plan["layers"]) - len(layers) - len(plan["forced"])
    if unmeasured:
        console.print(f"[dim]{unmeasured} Linears not measured: 8 bits would round them no closer than 4 "
                      f"({'zero points' if plan['zero_points'] else 'symmetric groups'}).[/dim]")  # fmt: skip
    e = report.eval
    columns = ["setting", "bits/weight", "8-bit Linears", "weights MB"]
    columns += ["perplexity", "Δ", "top-1 vs original", "KL"] if report.decoder else ["cosine", "ρ"]
    points = Table(title=f"a8w4 settings on {e['windows']} x {e['window_tokens']} tokens of {e['text']} (eager)")
    for column in columns:
        points.add_column(column)
    for p in report.points:
        size = "—" if p.row.weight_bytes is None else f"{p.row.weight_bytes / 2**20:,.2f}"
        points.add_row(p.label, f"{p.bits_per_weight:.2f}", str(p.eight_bit), size, *_quality(p.row, report.decoder))
    console.print(points)


def write_html(report: QuantizeReport, path: Path) -> None:
    from builder.report import environment

    metric = "perplexity" if report.decoder else "cosine_similarity"
    dots = [plots.Point(p.label, f"{p.label}: {p.row.weight_bytes / 2**20:.2f} MB, {metric} "
                        f"{p.row.figures[metric]:.4g}", p.row.weight_bytes / 2**20, p.row.figures[metric])
            for p in report.points if p.row.weight_bytes and p.row.figures.get(metric) is not None]  # fmt: skip
    y_label = "perplexity (lower is better)" if report.decoder else "cosine to the original (higher is better)"
    scatter = plots.scatter(dots, "estimated weight MB", y_label) if len(dots) >= 2 else None
    page = (
        environment()
        .get_template("quantize/report.html.j2")
        .render(report=report.to_json(), scatter=scatter, decoder=report.decoder)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(page, encoding="utf-8")
    staging.replace(path)


def write_json(report: QuantizeReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
