"""`slmpack matrix`: a build matrix (models x compression settings x targets), each cell an independent,
cached, atomic `slmpack build`, run one after another here or side by side on Ray (builder/executors.py).

A matrix file names a base recipe and the axes to vary:

    recipe = "tinychat.toml"                 # relative to the matrix file
    [axes]
    "model.source" = ["builtin:tiny-llama", "builtin:tiny-qwen2"]   # any dotted recipe key, as sweep --grid
    "compress.quantize" = ["a8w8", "a8w4"]
    targets = ["android-xnnpack"]            # the one target each cell builds (default: all the recipe's)

The cells are the cartesian product of the axes. A cell's id is a digest of its recipe (and the build
settings and slmpack version); it is built into `OUT/cells/<id>/`, and its `cell.json`, written last,
marks it finished, so a later run reports it `cached` instead of building it again (the id covers the
recipe's text, not the files it names: `--force` rebuilds). A cell that fails is reported with its error
and does not stop the others; it is built again on the next run.

On a Ray cluster every worker needs slmpack installed, and OUT, the recipe and the files it names must be
on a filesystem all nodes share: paths are made absolute before the cells are submitted.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import time
import tomllib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder import __version__
from builder.errors import UserInputError
from builder.evaluate import cell
from builder.paths import published_file
from builder.recipe import is_recipe_key, read_recipe_data, recipe_from_data, set_value
from builder.targets import catalogue

TARGETS_AXIS = "targets"
CELL_RECORD = "cell.json"  # written last: its presence means the cell's bundle is whole
EXAMPLE = "see examples/matrix.toml"

Status = Literal["built", "cached", "failed"]


@dataclass(frozen=True)
class CellSpec:
    """One cell as plain data, so it pickles to a Ray worker: everything its build needs."""

    id: str
    label: str  # "model.source=builtin:tiny-llama, compress.quantize=a8w8, target=android-xnnpack"
    settings: dict[str, Any]  # axis key -> this cell's value
    recipe: dict[str, Any]  # the base recipe's data with the settings applied
    recipe_path: str  # absolute: anchors the recipe's relative paths and names it in errors
    folder: str  # absolute: OUT/cells/<id>
    benchmark: bool


@dataclass
class CellResult:
    id: str
    label: str
    settings: dict[str, Any]
    status: Status
    error: str | None = None  # "ExceptionType: message", on one line
    bundle: str | None = None
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # artifact_figures()
    seconds: float = 0.0  # the build's wall time (for a cached cell, the build that made it)
    log: str | None = None  # the build's output, where it was not printed (Ray workers)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def failed(spec: CellSpec, error: BaseException | str, seconds: float = 0.0, log: str | None = None) -> CellResult:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return CellResult(spec.id, spec.label, spec.settings, "failed", " ".join(message.split()), seconds=seconds,
                      log=log)  # fmt: skip


@dataclass
class Matrix:
    path: Path
    recipe: Path
    axes: dict[str, list[Any]]
    cells: list[CellSpec]


class Executor(Protocol):
    """Runs cells: `local` one after another in this process, `ray` as Ray tasks (builder/executors.py)."""

    name: str

    def run(self, cells: list[CellSpec], done: Callable[[CellResult], None]) -> list[CellResult]:
        """Build every cell, calling `done` as each finishes; one result per cell, in the order of `cells`.
        A cell's failure is its result, never an exception."""
        ...


def read_matrix(path: Path, out: Path, benchmark: bool) -> Matrix:
    """Read and check a matrix file and expand its cells; every problem with the file itself is a
    UserInputError naming the file, the key and the fix. Problems of one cell's recipe (a scheme its target
    refuses, say) are that cell's failure, found when it runs."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: matrix file not found. Fix: pass the path of a matrix TOML file ({EXAMPLE})")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc}). Fix: correct the syntax at that line") from None
    unknown = [key for key in data if key not in ("recipe", "axes")]
    if unknown:
        raise UserInputError(f"{path}: unknown key {unknown[0]!r}. Fix: a matrix file holds `recipe` and an "
                             f"[axes] table only ({EXAMPLE})")  # fmt: skip
    name = data.get("recipe")
    if not isinstance(name, str) or not name:
        raise UserInputError(f"{path}: 'recipe' is missing or not a string. Fix: add recipe = \"base.toml\", "
                             "the base recipe's path relative to the matrix file")  # fmt: skip
    recipe = (path.parent / name).resolve()
    if not recipe.is_file():
        raise UserInputError(f"{path}: 'recipe' = {name!r}: no such file {recipe}. Fix: give the base recipe's "
                             "path relative to the matrix file")  # fmt: skip
    axes = _axes(path, data.get("axes"))
    cells = expand(path, recipe, read_recipe_data(recipe), axes, out.resolve(), benchmark)
    return Matrix(path, recipe, axes, cells)


def _axes(path: Path, axes: Any) -> dict[str, list[Any]]:
    if not isinstance(axes, dict) or not axes:
        raise UserInputError(f"{path}: no [axes] table, or an empty one. Fix: add one, e.g. [axes] "
                             f'"compress.quantize" = ["a8w8", "a8w4"] ({EXAMPLE})')  # fmt: skip
    for key, values in axes.items():
        where = f"{path}: [axes] {key!r}"
        if isinstance(values, dict):
            raise UserInputError(f"{where} is a table, not a list of values. Fix: quote a dotted key, e.g. "
                                 f'"{key}.{next(iter(values), "key")}" = [...]')  # fmt: skip
        if not isinstance(values, list) or not values:
            raise UserInputError(f"{where} = {values!r} is not a non-empty list. Fix: list the values, e.g. "
                                 f'"{key}" = [value1, value2]')  # fmt: skip
        if len({_canonical(v) for v in values}) != len(values):
            raise UserInputError(f"{where} lists a value twice, which would build the same cell twice. "
                                 "Fix: list each value once")  # fmt: skip
        if key == TARGETS_AXIS:
            known = catalogue()
            for value in values:
                if not isinstance(value, str) or value not in known:
                    raise UserInputError(f"{where}: {value!r} is not a known target. Fix: use one of "
                                         f"{', '.join(sorted(known))} (`slmpack targets` lists them)")  # fmt: skip
        elif not is_recipe_key(key):
            raise UserInputError(f"{where} is not a recipe key. Fix: use a dotted key of the recipe, e.g. "
                                 '"compress.quantize" or "model.source" (the README\'s recipe reference lists '
                                 "them); pick targets with the `targets` axis, and put per-target overrides in "
                                 "the base recipe's [[targets]]")  # fmt: skip
    return axes


def expand(path: Path, recipe: Path, base: dict[str, Any], axes: dict[str, list[Any]], out: Path,
           benchmark: bool) -> list[CellSpec]:  # fmt: skip
    """The cartesian product of the axes, in the file's order (the last axis varies fastest)."""
    cells: list[CellSpec] = []
    seen: dict[str, str] = {}
    for values in itertools.product(*axes.values()):
        settings = dict(zip(axes, values, strict=True))
        data = copy.deepcopy(base)
        for key, value in settings.items():
            if key == TARGETS_AXIS:
                data["targets"] = [_target_entry(base, value)]
            else:
                set_value(data, key, value, f"{path}: [axes] {key!r}")
        label = ", ".join(f"{'target' if k == TARGETS_AXIS else k}={_show(v)}" for k, v in settings.items())
        cell_id = _cell_id(data, recipe, benchmark)
        if cell_id in seen:
            raise UserInputError(f"{path}: cells {seen[cell_id]!r} and {label!r} build the same recipe. Fix: "
                                 "remove the value that repeats the other")  # fmt: skip
        seen[cell_id] = label
        cells.append(CellSpec(cell_id, label, settings, data, str(recipe), str(out / "cells" / cell_id), benchmark))
    return cells


def _target_entry(base: dict[str, Any], name: str) -> dict[str, Any]:
    """The base recipe's [[targets]] entry of that name, keeping its overrides, or a bare one."""
    entries = base.get("targets")
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return copy.deepcopy(entry)
    return {"name": name}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _show(value: Any) -> str:
    return value if isinstance(value, str) else _canonical(value)


def _cell_id(data: dict[str, Any], recipe: Path, benchmark: bool) -> str:
    # The recipe's relative paths resolve against its folder and the benchmark adds figures to the bundle,
    # so both are part of what a cell builds, as is the slmpack version that builds it.
    payload = {"recipe": data, "recipe_dir": str(recipe.parent), "benchmark": benchmark, "slmpack": __version__}
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()[:12]


def run_cell(spec: CellSpec, console: Console | None = None) -> CellResult:
    """Build one cell into its folder. Any failure becomes the cell's `failed` result instead of an exception,
    so the other cells go on. Without `console` (a Ray worker) the build's output goes to the cell's build.log.
    A plain module-level function of plain data, so Ray workers import it rather than unpickle code."""
    folder = Path(spec.folder)
    folder.mkdir(parents=True, exist_ok=True)
    # A record from an earlier run (--force) must not outlive a build that now fails.
    (folder / CELL_RECORD).unlink(missing_ok=True)
    start = time.perf_counter()
    log = None
    with ExitStack() as stack:
        if console is None:
            log = folder / "build.log"
            console = Console(file=stack.enter_context(log.open("w", encoding="utf-8")), width=140)
        try:
            bundle = _build(spec, console)
            artifacts = artifact_figures(json.loads((bundle / "manifest.json").read_text(encoding="utf-8")))
        except Exception as exc:
            return failed(spec, exc, time.perf_counter() - start, str(log) if log else None)
    result = CellResult(spec.id, spec.label, spec.settings, "built", bundle=str(bundle), artifacts=artifacts,
                        seconds=time.perf_counter() - start, log=str(log) if log else None)  # fmt: skip
    record = {**result.to_json(), "bundle": bundle.name}  # relative, so OUT can move
    published_file(folder / CELL_RECORD, json.dumps(record, indent=2) + "\n")
    return result


def _build(spec: CellSpec, console: Console) -> Path:
    from builder.pipeline import BuildSettings, build

    loaded = recipe_from_data(spec.recipe, Path(spec.recipe_path))
    return build(loaded, BuildSettings(out_dir=Path(spec.folder), benchmark=spec.benchmark), console)


def cached_result(spec: CellSpec) -> CellResult | None:
    """The cell's finished result from an earlier run, if its record and bundle are both still there."""
    folder = Path(spec.folder)
    try:
        record = json.loads((folder / CELL_RECORD).read_text(encoding="utf-8"))
        bundle = folder / record["bundle"]
        result = CellResult(spec.id, spec.label, spec.settings, "cached", bundle=str(bundle),
                            artifacts=record["artifacts"], seconds=record["seconds"],
                            log=record.get("log"))  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result if (bundle / "manifest.json").is_file() else None


def artifact_figures(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """What the comparison table shows of each artifact in a bundle: size, compression cost measured in its
    host runtime (builder.validate.cost_figures) and host benchmark."""
    from builder.validate import cost_figures

    model = manifest["model"]
    decoder = model["task"] == "text-generation"
    rows = []
    for artifact in manifest["artifacts"]:
        bench = artifact.get("benchmark") or {}
        rows.append({
            "target": artifact["target"], "scheme": artifact["quantization"], "task": model["task"],
            "bytes": artifact["bytes"], "parameters_compressed": model["parameters_compressed"],
            "validation": artifact["validation"]["status"], **cost_figures(artifact["validation"], decoder),
            "decode_tok_s": bench.get("decode_tok_s"), "ttft_ms": bench.get("ttft_ms"),
            "benchmark_note": artifact.get("benchmark_note"),
        })  # fmt: skip
    return rows


def run_matrix(matrix: Matrix, executor: Executor, console: Console, force: bool = False) -> list[CellResult]:
    """Every cell's result, in the matrix's order: finished cells from earlier runs as `cached` (unless
    `force`), the rest built by `executor`, with one line per cell as it finishes."""
    results: dict[str, CellResult] = {}
    total = len(matrix.cells)

    def done(result: CellResult) -> None:
        results[result.id] = result
        console.print(f"[{len(results)}/{total}] {status_line(result)}", highlight=False)

    todo = []
    for spec in matrix.cells:
        hit = None if force else cached_result(spec)
        if hit is None:
            todo.append(spec)
        else:
            done(hit)
    if todo:
        executor.run(todo, done)
    return [results[spec.id] for spec in matrix.cells]


def status_line(result: CellResult) -> str:
    mark = {"built": "[green]✓ built[/green]", "cached": "[green]✓ cached[/green]", "failed": "[red]✗ failed[/red]"}
    line = f"{mark[result.status]} {result.id} {escape(result.label)} [dim]({result.seconds:.1f}s)[/dim]"
    if result.error:
        # The whole message follows the table: here, as cells finish, its start is enough.
        error = result.error if len(result.error) <= 100 else result.error[:99] + "…"
        line += f": {escape(error)}"
    return line


def print_results(matrix: Matrix, results: list[CellResult], console: Console) -> None:
    """One comparison table, a row per artifact of each cell; a failed cell gets one row, its error below."""
    columns = _columns([a for r in results for a in r.artifacts])
    names = " x ".join("target" if key == TARGETS_AXIS else key for key in matrix.axes)
    # Without vertical rules, so a dozen figure columns fit a 140-column log.
    table = Table(title=f"Build matrix {matrix.path.name}: {names} (quality measured in each artifact's host runtime)",
                  box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)  # fmt: skip
    values = {r.id: ", ".join(_show(v) for k, v in r.settings.items() if k != TARGETS_AXIS) for r in results}
    table.add_column(", ".join(key for key in matrix.axes if key != TARGETS_AXIS) or "settings", overflow="fold")
    table.add_column("status", no_wrap=True)
    for header, _ in columns:
        table.add_column(header)
    table.add_column("build s")
    status = {"built": "[green]built[/green]", "cached": "[green]cached[/green]", "failed": "[red]failed[/red]"}
    for result in results:
        settings = escape(values[result.id])
        for artifact in result.artifacts:
            figures = [show(artifact) for _, show in columns]
            table.add_row(settings, status[result.status], *figures, f"{result.seconds:.1f}")
        if not result.artifacts:
            figures = [str(result.settings.get(TARGETS_AXIS, "—")), *["—"] * (len(columns) - 1)]
            table.add_row(settings, status[result.status], *figures, f"{result.seconds:.1f}")
    console.print(table)
    for result in results:
        if result.status == "failed":
            where = f" (log: {result.log})" if result.log else ""
            console.print(f"[red]✗[/red] {result.id} {escape(result.label)}: {escape(result.error or '')}{where}",
                          highlight=False)  # fmt: skip


Column = tuple[str, Callable[[dict[str, Any]], str]]


def _columns(artifacts: list[dict[str, Any]]) -> list[Column]:
    """The table's figure columns: quality for each kind of model present, latency where a benchmark ran."""

    def only(task: str, show: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        return lambda a: show(a) if a["task"] == task else "—"

    def change(a: dict[str, Any]) -> str:
        ppl, original = a.get("perplexity"), a.get("perplexity_original")
        return cell(ppl / original - 1 if ppl is not None and original else None, "+.1%")

    decoders = any(a["task"] == "text-generation" for a in artifacts)
    encoders = any(a["task"] == "embeddings" for a in artifacts)
    benched = any(a.get("ttft_ms") is not None for a in artifacts)
    dec, enc = functools.partial(only, "text-generation"), functools.partial(only, "embeddings")
    columns: list[Column] = [
        ("target", lambda a: a["target"]), ("scheme", lambda a: a["scheme"]),
        ("params", lambda a: f"{a['parameters_compressed']:,}"), ("file MB", lambda a: f"{a['bytes'] / 2**20:,.2f}"),
    ]  # fmt: skip
    if decoders:
        columns += [("perplexity", dec(lambda a: cell(a.get("perplexity"), ".2f"))), ("Δ", dec(change)),
                    ("top-1", dec(lambda a: cell(a.get("top1_agreement"), ".1%"))),
                    ("KL", dec(lambda a: cell(a.get("kl_divergence"), ".4f")))]  # fmt: skip
    if encoders:
        columns += [("cosine", enc(lambda a: cell(a.get("cosine_similarity"), ".5f"))),
                    ("similarity ρ", enc(lambda a: cell(a.get("similarity_rank_correlation"), ".4f")))]  # fmt: skip
    if benched and decoders:
        columns += [("decode tok/s", dec(lambda a: cell(a.get("decode_tok_s"), ".1f"))),
                    ("TTFT ms", dec(lambda a: cell(a.get("ttft_ms"), ".1f")))]  # fmt: skip
    if benched and encoders:
        columns += [("embed ms", enc(lambda a: cell(a.get("ttft_ms"), ".2f")))]
    return columns


def write_results(matrix: Matrix, results: list[CellResult], executor: str, out: Path) -> Path:
    """OUT/matrix.json: every cell (id, label, settings, status, error, bundle, figures, seconds), whole or
    not at all."""
    data = {"schema": "slmpack.matrix/1", "matrix": str(matrix.path.resolve()), "recipe": str(matrix.recipe),
            "axes": matrix.axes, "executor": executor, "slmpack": __version__,
            "cells": [r.to_json() for r in results]}  # fmt: skip
    path = out / "matrix.json"
    published_file(path, json.dumps(data, indent=2, default=str) + "\n")
    return path
