"""Describe an ExecuTorch .pte: methods, inputs/outputs, metadata constants, delegated vs other ops."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.errors import UserInputError
from builder.tasks.executorch_ops import load_executorch_llm_ops

# ExecuTorch ScalarType codes (c10 numbering).
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
           7: "float64", 11: "bool", 15: "bfloat16"}  # fmt: skip


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]  # static sizes, or the upper bound of a dynamic dimension


@dataclass
class MethodInfo:
    name: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    value: Any = None  # what a metadata method (no inputs) returns
    delegated_calls: dict[str, int] = field(default_factory=dict)  # backend id -> calls
    operators: dict[str, int] = field(default_factory=dict)  # non-delegated "ns::op.overload" -> calls


@dataclass
class PteInfo:
    path: Path
    bytes: int
    methods: list[MethodInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "methods": [asdict(m) for m in self.methods]}


def _tensors(meta: Any, count: int, getter: str, prefix: str) -> list[TensorInfo]:
    out = []
    for i in range(count):
        t = getattr(meta, getter)(i)
        out.append(TensorInfo(f"{prefix}_{i}", _DTYPES.get(int(t.dtype()), str(t.dtype())), list(t.sizes())))
    return out


def _op_counts(data: bytes) -> dict[str, tuple[Counter[str], Counter[str]]]:
    """Per method: (delegate calls by backend id, kernel calls by operator), read from the flatbuffer."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DelegateCall, KernelCall

    program = deserialize_pte_binary(data).program
    counts = {}
    for plan in program.execution_plan:
        delegates: Counter[str] = Counter()
        kernels: Counter[str] = Counter()
        for chain in plan.chains:
            for instruction in chain.instructions:
                args = instruction.instr_args
                if isinstance(args, DelegateCall):
                    delegates[plan.delegates[args.delegate_index].id] += 1
                elif isinstance(args, KernelCall):
                    op = plan.operators[args.op_index]
                    kernels[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
        counts[plan.name] = (delegates, kernels)
    return counts


def describe_pte(path: Path) -> PteInfo:
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} not found. Fix: pass the path of a .pte file")
    load_executorch_llm_ops()
    data = path.read_bytes()
    try:
        program = Runtime.get().load_program(data)
        counts = _op_counts(data)
    except Exception as exc:
        raise UserInputError(f"{path} is not a valid ExecuTorch program ({type(exc).__name__}).") from None
    methods = []
    for name in sorted(program.method_names):
        meta = program.metadata(name)
        info = MethodInfo(name=name, inputs=_tensors(meta, meta.num_inputs(), "input_tensor_meta", "input"))
        if info.inputs:
            info.outputs = _tensors(meta, meta.num_outputs(), "output_tensor_meta", "output")
        else:
            # Metadata methods return plain values (ints, bools, lists), not tensors.
            value = list(program.load_method(name).execute([]))
            info.value = value[0] if len(value) == 1 and not name.endswith("_ids") else value
        delegates, kernels = counts.get(name, (Counter(), Counter()))
        info.delegated_calls, info.operators = dict(delegates), dict(kernels)
        methods.append(info)
    return PteInfo(path=path, bytes=len(data), methods=methods)


def render_pte_info(info: PteInfo, console: Console) -> None:
    compute = [m for m in info.methods if m.inputs]
    constants = [m for m in info.methods if not m.inputs]
    console.print(f"[bold]{info.path}[/bold]  {info.bytes / 2**20:.2f} MB, {len(info.methods)} methods")
    for m in compute:
        io = Table(title=f"{m.name}: inputs and outputs")
        for column in ("", "name", "dtype", "shape (max)"):
            io.add_column(column)
        for kind, tensors in (("in", m.inputs), ("out", m.outputs)):
            for t in tensors:
                io.add_row(kind, t.name, t.dtype, str(t.shape))
        console.print(io)
        ops = Table(title=f"{m.name}: operators")
        for column in ("runs in", "operator / backend", "calls"):
            ops.add_column(column)
        for backend, calls in sorted(m.delegated_calls.items()):
            ops.add_row("delegate", backend, str(calls))
        for op, calls in sorted(m.operators.items()):
            ops.add_row("runtime kernel", op, str(calls))
        console.print(ops)
    if constants:
        meta = Table(title="metadata methods")
        meta.add_column("method")
        meta.add_column("value")
        for m in constants:
            meta.add_row(m.name, repr(m.value))
        console.print(meta)
