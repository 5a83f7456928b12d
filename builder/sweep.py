"""`slmpack sweep`: a grid of compression settings, each point measured as `slmpack eval` measures (eager, no
lowering), drawn as size against quality. Size is the estimated weight bytes at the point's scheme; decoding
on a phone is memory-bound, so it is also the proxy for decode latency until `slmpack build` benchmarks it."""

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
from builder.evaluate import EvalReport, evaluate
from builder.plots import Point, Scatter
from builder.recipe import read_recipe_data, recipe_from_data

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


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserInputError(f"--grid {key}: {part!r} is not a table in the recipe. Fix: name a key inside one")
        node = child
    node[leaf] = value


@dataclass
class SweepPoint:
    settings: dict[str, Any]
    parameters: int
    weight_bytes: int
    scheme: str
    figures: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"settings": self.settings, "parameters": self.parameters, "estimated_weight_bytes": self.weight_bytes,
                "scheme": self.scheme, **self.figures}  # fmt: skip


def _point(report: EvalReport, settings: dict[str, Any]) -> SweepPoint:
    """The point's final model: the first target's scheme where eval measured it, else the compressed fp32."""
    final = report.rows[-1]
    assert final.scheme is not None and final.weight_bytes is not None
    return SweepPoint(settings, final.parameters, final.weight_bytes, final.scheme, final.figures)


def sweep(path: Path, grid: Grid, target: str | None, console: Console) -> list[SweepPoint]:
    base = read_recipe_data(path)
    points = []
    combinations = list(itertools.product(*(values for _, values in grid)))
    for index, values in enumerate(combinations, 1):
        settings = {key: value for (key, _), value in zip(grid, values, strict=True)}
        data = copy.deepcopy(base)
        for key, value in settings.items():
            _set(data, key, value)
        loaded = recipe_from_data(data, path, [target] if target else None)
        loaded.targets = loaded.targets[:1]
        console.rule(
            f"[bold]sweep point {index}/{len(combinations)}: " + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
        report = evaluate(loaded, console)
        points.append(_point(report, settings))
    return points


def print_points(points: list[SweepPoint], console: Console) -> None:
    decoder = "perplexity" in points[0].figures
    table = Table(title="Compression sweep (eager PyTorch; size = estimated weight bytes)")
    for column in ("settings", "scheme", "parameters", "weights MB",
                   *(("perplexity", "Δ", "top-1", "KL") if decoder else ("cosine",))):  # fmt: skip
        table.add_column(column)
    for p in points:
        f = p.figures
        quality = ([f"{f['perplexity']:.2f}", f"{f['perplexity'] / f['perplexity_original'] - 1:+.1%}",
                    f"{f['top1_agreement']:.1%}", f"{f['kl_divergence']:.4f}"] if decoder
                   else [f"{f['cosine_similarity']:.5f}"])  # fmt: skip
        settings = ", ".join(f"{k}={v}" for k, v in p.settings.items())
        table.add_row(settings, p.scheme, f"{p.parameters:,}", f"{p.weight_bytes / 2**20:,.2f}", *quality)
    console.print(table)


def write_outputs(points: list[SweepPoint], out: Path) -> tuple[Path, Path]:
    from builder.report import environment

    out.mkdir(parents=True, exist_ok=True)
    data = [p.to_json() for p in points]
    json_path, html_path = out / "sweep.json", out / "sweep.html"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    html_path.write_text(environment().get_template("sweep/sweep.html.j2").render(plot=scatter(points), points=data),
                         encoding="utf-8")  # fmt: skip
    return json_path, html_path


def scatter(points: list[SweepPoint]) -> Scatter:
    """Size (x) against quality (y): perplexity for decoders (lower is better), cosine to the original for
    encoders (higher is better)."""
    decoder = "perplexity" in points[0].figures
    metric = "perplexity" if decoder else "cosine_similarity"
    dots = []
    for p in points:
        x, y = p.weight_bytes / 2**20, p.figures[metric]
        settings = ", ".join(f"{k}={v}" for k, v in p.settings.items())
        label = ", ".join(str(v) for v in p.settings.values())
        dots.append(Point(label, f"{settings}: {x:.2f} MB, {metric} {y:.4g}", x, y))
    y_label = "perplexity (lower is better)" if decoder else "cosine to the original (higher is better)"
    return plots.scatter(dots, "estimated weight MB", y_label)
