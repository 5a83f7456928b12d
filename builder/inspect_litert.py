"""`slmpack inspect` for LiteRT files: a .tflite's signatures and operators, and a .litertlm's sections
with the signatures of the model inside, read from the files alone."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.quiet import quiet


def tflite_signature(model: bytes | Path) -> dict[str, Any]:
    """Every signature with its inputs and outputs (name, dtype, shape), as the interpreter reports them."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet():
        if isinstance(model, Path):
            interpreter = Interpreter(model_path=str(model))
        else:
            interpreter = Interpreter(model_content=model)
    methods = []
    for name in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(name)

        def tensors(details: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"name": key, "dtype": value["dtype"].__name__, "shape": [int(d) for d in value["shape"]]}
                    for key, value in sorted(details.items())]  # fmt: skip

        inputs, outputs = tensors(runner.get_input_details()), tensors(runner.get_output_details())
        methods.append({"name": name, "inputs": inputs, "outputs": outputs})
    return {"methods": methods}


def named_operators(root: Any, subgraph: Any) -> Iterator[tuple[Any, str]]:
    """Each operator of a subgraph of a parsed .tflite with its name (`FULLY_CONNECTED`, `CUSTOM:<code>`)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    for o in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(o)
        code = root.OperatorCodes(op.OpcodeIndex())
        name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        yield op, f"CUSTOM:{(code.CustomCode() or b'').decode()}" if name == "CUSTOM" else name


def tflite_operators(model: bytes) -> dict[str, int]:
    """Op histogram over all subgraphs: what the runtime must have kernels for."""
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAs(model, 0)
    counts: dict[str, int] = {}
    for s in range(root.SubgraphsLength()):
        for _, name in named_operators(root, root.Subgraphs(s)):
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _litertlm_sections(path: Path) -> list[dict[str, Any]]:
    from litert_lm_builder import litertlm_core, litertlm_peek

    header = litertlm_peek.read_litertlm_header(str(path), io.StringIO())
    sections = header.SectionMetadata()
    found = []
    for i in range(sections.ObjectsLength() if sections else 0):
        section = sections.Objects(i)
        kind = litertlm_core.any_section_data_type_to_string(section.DataType())
        begin, end = section.BeginOffset(), section.EndOffset()
        found.append({"type": kind, "offset": begin, "bytes": end - begin})
    return found


def describe(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    if path.suffix == ".litertlm":
        info["sections"] = _litertlm_sections(path)
        model = next((s for s in info["sections"] if s["type"] == "TFLiteModel"), None)
        if model is None:
            return info
        with path.open("rb") as fh:
            fh.seek(model["offset"])
            data = fh.read(model["bytes"])
    else:
        data = path.read_bytes()
    info["signature"] = tflite_signature(data)
    info["operators"] = tflite_operators(data)
    return info


def render(info: dict[str, Any], console: Console) -> None:
    summary = Table(title=info["path"], show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("size", f"{info['bytes'] / 2**20:,.1f} MB")
    for section in info.get("sections", []):
        summary.add_row(f"section {section['type']}", f"{section['bytes']:,} bytes")
    console.print(summary)
    for method in info.get("signature", {}).get("methods", []):
        io_table = Table(title=f"signature {method['name']}", title_justify="left")
        for column in ("", "name", "dtype", "shape"):
            io_table.add_column(column)
        for kind, tensors in (("in", method["inputs"]), ("out", method["outputs"])):
            for tensor in tensors:
                io_table.add_row(kind, tensor["name"], tensor["dtype"], str(tensor["shape"]))
        console.print(io_table)
    if info.get("operators"):
        ops = Table(title="operators (all subgraphs)", title_justify="left")
        ops.add_column("operator")
        ops.add_column("count", justify="right")
        for name, count in sorted(info["operators"].items(), key=lambda kv: -kv[1]):
            ops.add_row(name, str(count))
        console.print(ops)
