"""`slmpack inspect` for Core ML packages: what the spec and the ML Program say, no Core ML runtime needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.checksums import size_of
from builder.errors import UserInputError


def describe(path: Path) -> dict[str, Any]:
    from builder.backends.coreml_mil import describe_mlpackage

    if not (path / "Manifest.json").is_file():
        raise UserInputError(f"{path} is not a Core ML package (no Manifest.json). Fix: pass a .mlpackage folder")
    return {"path": str(path), "bytes": size_of(path), **describe_mlpackage(path)}


def render(info: dict[str, Any], console: Console) -> None:
    summary = Table(title=info["path"], show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("size", f"{info['bytes'] / 2**20:,.1f} MB")
    summary.add_row("specification version", str(info["specification_version"]))
    summary.add_row("states", ", ".join(info["states"]) or "-")
    summary.add_row("compressed weight tensors", str(info["compressed_weights"]))
    console.print(summary)
    io = Table(title="main: inputs and outputs (flexible dimensions as [min, max])", title_justify="left")
    for column in ("", "name", "dtype", "shape"):
        io.add_column(column)
    for kind, features in (("in", info["inputs"]), ("out", info["outputs"])):
        for feature in features:
            io.add_row(kind, feature["name"], feature["dtype"], str(feature["shape"]))
    console.print(io)
    ops = Table(title="main: ML Program operations", title_justify="left")
    ops.add_column("operation")
    ops.add_column("count", justify="right")
    for name, count in sorted(info["operators"].items(), key=lambda kv: -kv[1]):
        ops.add_row(name, str(count))
    console.print(ops)
