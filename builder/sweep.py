"""`slmpack sweep`: a grid of compression settings drawn as size (and latency) against quality.

By default each point is measured as `slmpack eval` measures (eager, no lowering): size is the estimated
weight bytes at the point's scheme, which, decoding on a phone being memory-bound, also stands in for decode
latency. With `--build` each point is built for the target as `slmpack build` builds it: size is the
artifact's file, quality comes from its host runtime and latency from its host benchmark."""

from __future__ import annotations

import copy
import itertools
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder import plots
from builder.errors import UserInputError
from builder.evaluate import EvalReport, cell, evaluate
from builder.pipeline import BuildSettings, build
from builder.plots import Point, Scatter
from builder.recipe import read_recipe_data, recipe_from_data, set_value
from builder.validate import cost_figures

Grid = list[tuple[str, list[Any]]]


def parse_grid(specs: list[str]) -> Grid:
    """`compress.prune.sparsity=0.1,0.2` -> ("compress.prune.sparsity", [0.1, 0.2]); values are TOML values
    (numbers, booleans, quoted strings) or bare words."""
    grid: Grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise UserInputError(
                f"--grid {spec!r} is not KEY=V1,V2,... Fix: e.g. --grid compress.prune.sparsity=0.1,0.3"
            )
        grid.append((key.strip(), [_value(v.strip()) for v in values.split(",")]))
    keys = [key for key, _ in grid]
    if len(set(keys)) != len(keys):
        raise UserInputError("--grid names a key twice. Fix: list all of a key's values in one --grid")
    return grid


def _value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


LATENCY = ("ttft_ms", "prefill_tok_s", "decode_tok_s", "peak_rss_mb")


@dataclass
class SweepPoint:
    settings: dict[str, Any]
    parameters: int
    weight_bytes: int  # estimated at `scheme`, or the artifact's file where `bundle` is set
    scheme: str
    figures: dict[str, Any]
    bundle: str | None = None  # the point's bundle (--build)
    latency: dict[str, Any] | None = None  # its host benchmark (--build), or None with `latency_note`
    latency_note: str | None = None

    def to_json(self) -> dict[str, Any]:
        size = "artifact_bytes" if self.bundle else "estimated_weight_bytes"
        return {"settings": self.settings, "parameters": self.parameters, size: self.weight_bytes,
                "scheme": self.scheme, **self.figures, "bundle": self.bundle, "latency": self.latency,
                "latency_note": self.latency_note}  # fmt: skip


def _point(report: EvalReport, settings: dict[str, Any]) -> SweepPoint:
    """The point's final model: the first target's scheme where eval measured it, else the compressed fp32."""
    final = report.rows[-1]
    assert final.scheme is not None and final.weight_bytes is not None
    return SweepPoint(settings, final.parameters, final.weight_bytes, final.scheme, final.figures)


def _built_point(bundle: Path, settings: dict[str, Any]) -> SweepPoint:
    manifest = json.loads((bundle / "manifest.json").read_text())
    artifact = manifest["artifacts"][0]
    decoder = manifest["model"]["task"] == "text-generation"
    bench = artifact.get("benchmark")
    return SweepPoint(settings, manifest["model"]["parameters_compressed"], artifact["bytes"],
                      artifact["quantization"], cost_figures(artifact["validation"], decoder), str(bundle),
                      {k: bench[k] for k in LATENCY} if bench else None, artifact.get("benchmark_note"))  # fmt: skip


def sweep(path: Path, grid: Grid, target: str | None, console: Console,
          build_dir: Path | None = None) -> list[SweepPoint]:  # fmt: skip
    """Each point's recipe is the base recipe with the grid's values set, and its first (or `target`) target;
    with `build_dir` each point is built into a bundle there."""
    base = read_recipe_data(path)
    points = []
    combinations = list(itertools.product(*(values for _, values in grid)))
    for index, values in enumerate(combinations, 1):
        settings = {key: value for (key, _), value in zip(grid, values, strict=True)}
        data = copy.deepcopy(base)
        for key, value in settings.items():
            set_value(data, key, value, f"--grid {key}")
        loaded = recipe_from_data(data, path, [target] if target else None)
        loaded.targets = loaded.targets[:1]
        console.rule(
            f"[bold]sweep point {index}/{len(combinations)}: " + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
        if build_dir is None:
            points.append(_point(evaluate(loaded, console), settings))
        else:
            bundle = build(loaded, BuildSettings(out_dir=build_dir / f"point-{index}"), console)
            points.append(_built_point(bundle, settings))
    return points


def _latency_figure(decoder: bool) -> tuple[str, str]:
    """The benchmark figure a sweep plots and prints: decode speed, or the time of one embedding."""
    return ("decode_tok_s", "decode tok/s (host)") if decoder else ("ttft_ms", "embedding ms (host)")


def print_points(points: list[SweepPoint], console: Console) -> None:
    decoder = "perplexity" in points[0].figures
    built = points[0].bundle is not None
    latency_key, latency_label = _latency_figure(decoder)
    title = ("Compression sweep (built; size = artifact file, quality from its host runtime)" if built
             else "Compression sweep (eager PyTorch; size = estimated weight bytes)")  # fmt: skip
    table = Table(title=title)
    for column in ("settings", "scheme", "parameters", "file MB" if built else "weights MB",
                   *(("perplexity", "Δ", "top-1", "KL") if decoder else ("cosine", "similarity ρ")),
                   *((latency_label,) if built else ())):  # fmt: skip
        table.add_column(column)
    for p in points:
        f = p.figures
        if decoder:
            ppl, original = f.get("perplexity"), f.get("perplexity_original")
            change = ppl / original - 1 if ppl is not None and original else None
            quality = [cell(ppl, ".2f"), cell(change, "+.1%"), cell(f.get("top1_agreement"), ".1%"),
                       cell(f.get("kl_divergence"), ".4f")]  # fmt: skip
        else:
            quality = [cell(f.get("cosine_similarity"), ".5f"), cell(f.get("similarity_rank_correlation"), ".4f")]
        latency = []
        if built:
            latency = [cell(p.latency[latency_key], ".1f") if p.latency else f"— ({p.latency_note})"]
        settings = ", ".join(f"{k}={v}" for k, v in p.settings.items())
        table.add_row(settings, p.scheme, f"{p.parameters:,}", f"{p.weight_bytes / 2**20:,.2f}", *quality, *latency)
    console.print(table)


def write_outputs(points: list[SweepPoint], out: Path) -> tuple[Path, Path]:
    from builder.report import environment

    out.mkdir(parents=True, exist_ok=True)
    data = [p.to_json() for p in points]
    json_path, html_path = out / "sweep.json", out / "sweep.html"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    page = (
        environment()
        .get_template("sweep/sweep.html.j2")
        .render(plots=scatters(points), points=data, built=points[0].bundle is not None)
    )
    html_path.write_text(page, encoding="utf-8")
    return json_path, html_path


def scatters(points: list[SweepPoint]) -> list[tuple[str, Scatter]]:
    """(caption, plot) pairs: size against quality, and with --build the host latency against quality.
    Quality is perplexity for decoders (lower is better), cosine to the original for encoders (higher)."""
    decoder = "perplexity" in points[0].figures
    metric = "perplexity" if decoder else "cosine_similarity"
    y_label = "perplexity (lower is better)" if decoder else "cosine to the original (higher is better)"
    built = points[0].bundle is not None
    latency_key, latency_label = _latency_figure(decoder)
    axes = [("artifact file MB" if built else "estimated weight MB", lambda p: p.weight_bytes / 2**20)]
    if built:
        axes.append((latency_label, lambda p: p.latency[latency_key] if p.latency else None))
    out = []
    for x_label, x_of in axes:
        dots = []
        for p in points:
            x, y = x_of(p), p.figures.get(metric)
            if x is None or y is None:
                continue
            settings = ", ".join(f"{k}={v}" for k, v in p.settings.items())
            label = ", ".join(str(v) for v in p.settings.values())
            dots.append(Point(label, f"{settings}: {x_label} {x:.4g}, {metric} {y:.4g}", x, y))
        if dots:
            out.append((f"{x_label} against quality", plots.scatter(dots, x_label, y_label)))
    return out
