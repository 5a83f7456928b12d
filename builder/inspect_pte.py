"""Describe an ExecuTorch .pte: methods, inputs/outputs, metadata constants, delegated vs other ops."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.errors import UserInputError
from builder.quiet import quiet
from builder.tasks.executorch_ops import load_executorch_llm_ops

# ExecuTorch ScalarType codes (c10 numbering, executorch/exir/scalar_type.py), spelled as torch dtypes.
_DTYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32",
           7: "float64", 8: "complex32", 9: "complex64", 10: "complex128", 11: "bool", 12: "qint8",
           13: "quint8", 14: "qint32", 15: "bfloat16", 16: "quint4x2", 17: "quint2x4", 22: "bits16",
           23: "float8_e5m2", 24: "float8_e4m3fn", 25: "float8_e5m2fnuz", 26: "float8_e4m3fnuz",
           27: "uint16", 28: "uint32", 29: "uint64"}  # fmt: skip

_FIX = "Fix: pass a .pte file written by ExecuTorch (to_executorch().buffer)"


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
    value: Any = None  # what a metadata method (no inputs) returns, e.g. 512 or [2]
    delegated_calls: dict[str, int] = field(default_factory=dict)  # backend id -> delegate calls
    operators: dict[str, int] = field(default_factory=dict)  # non-delegated "ns::op.overload" -> kernel calls


@dataclass
class PteInfo:
    path: Path
    bytes: int
    methods: list[MethodInfo]

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "methods": [asdict(m) for m in self.methods]}


@dataclass
class _Plan:
    """What the flatbuffer tells about one method beyond the runtime's MethodMeta."""

    delegates: Counter[str]
    kernels: Counter[str]
    input_spec: str  # pytree spec of (args, kwargs), "" for constant methods
    output_spec: str  # pytree spec of the return value


def _dtype(code: Any) -> str:
    return _DTYPES.get(int(code), f"scalar_type_{int(code)}")


def _tensors(meta: Any, count: int, getter: str, names: list[str]) -> list[TensorInfo]:
    out = []
    for i in range(count):
        t = getattr(meta, getter)(i)
        out.append(TensorInfo(names[i], _dtype(t.dtype()), [int(s) for s in t.sizes()]))
    return out


def _input_names(spec: str, count: int) -> list[str]:
    """Keyword inputs keep their keyword; positional ones (the runtime stores no names) become input_<i>."""
    generic = [f"input_{i}" for i in range(count)]
    if not spec:
        return generic
    try:
        from torch.utils._pytree import MappingKey, SequenceKey, tree_flatten_with_path, tree_unflatten, treespec_loads

        tree = treespec_loads(spec)
        if tree.num_leaves != count:
            return generic
        names = []
        for keys, _ in tree_flatten_with_path(tree_unflatten(list(range(count)), tree))[0]:
            if len(keys) >= 2 and keys[0] == SequenceKey(1) and isinstance(keys[1], MappingKey):
                names.append(".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in keys[1:]))
            else:
                names.append(f"input_{len(names)}")
        return names if len(set(names)) == count else generic
    except Exception:  # an unfamiliar spec only costs the names
        return generic


def _plain(value: Any) -> Any:
    """Tensors and tuples as JSON-friendly lists and scalars."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _constant(outputs: list[Any], spec: str) -> Any:
    """Rebuild what the exporter stored (2 vs [2]) from the method's output pytree spec."""
    try:
        from torch.utils._pytree import tree_unflatten, treespec_loads

        tree = treespec_loads(spec)
        if tree.num_leaves == len(outputs):
            return _plain(tree_unflatten(outputs, tree))
    except Exception:
        pass
    return _plain(outputs[0] if len(outputs) == 1 else outputs)


def _program_table(path: Path) -> Any:
    """The program's flatbuffer table (methods, operators, delegates), read without the constant and
    delegate segments that follow it: those are most of the file (the weights) and are not needed here."""
    with path.open("rb") as file:
        head = file.read(64)
        # Check the identifier first: the runtime logs a bad one byte for byte and that log can abort the process.
        if len(head) < 8 or head[4:6] != b"ET" or not head[6:8].isdigit():
            raise UserInputError(f"{path} is not an ExecuTorch program: it lacks the .pte file identifier. {_FIX}")
        with quiet():  # importing exir loads torchao, which reports its optional CUDA libraries on stderr
            from executorch.exir._serialize._flatbuffer_program import _flatbuffer_to_program
            from executorch.exir._serialize._program import _get_extended_header

        header = _get_extended_header(head)  # None for a program without segments: the whole file is the table
        table = head + file.read(max(header.program_size - len(head), 0) if header else -1)
    corrupt = f"{path} is not a valid ExecuTorch program: it is truncated or corrupt"
    try:
        program = _flatbuffer_to_program(table)
    except Exception:
        raise UserInputError(f"{corrupt} (its flatbuffer cannot be parsed). {_FIX}") from None
    if header:
        end = max((s.offset + s.size for s in program.segments), default=0) + header.segment_base_offset
        if path.stat().st_size < end:
            raise UserInputError(f"{corrupt} (its data segments end at byte {end:,}, the file sooner). {_FIX}")
    return program


def _read_plans(path: Path) -> dict[str, _Plan]:
    """Per method: delegate calls by backend id and kernel calls by operator, read from the flatbuffer."""
    program = _program_table(path)
    with quiet():
        from executorch.exir.schema import DelegateCall, KernelCall

    plans = {}
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
        container = plan.container_meta_type
        plans[plan.name] = _Plan(delegates, kernels, container.encoded_inp_str, container.encoded_out_str)
    return plans


def describe_pte(path: Path) -> PteInfo:
    """Methods, their inputs/outputs (max shapes), metadata constants and op counts of a .pte file."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path} not found. Fix: pass the path of a .pte file")
    plans = _read_plans(path)
    with quiet():
        load_executorch_llm_ops()  # programs using custom SDPA/KV-cache or quantized embedding ops need them
        from executorch.runtime import Runtime

        try:
            program = Runtime.get().load_program(path)  # memory-mapped, not read into memory
        except Exception as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserInputError(f"{path} could not be loaded by the ExecuTorch runtime: {reason}. {_FIX}") from None
    methods = []
    for name in sorted(program.method_names):
        meta = program.metadata(name)
        plan = plans.get(name, _Plan(Counter(), Counter(), "", ""))
        n_in = meta.num_inputs()
        info = MethodInfo(
            name=name, inputs=_tensors(meta, n_in, "input_tensor_meta", _input_names(plan.input_spec, n_in))
        )
        if info.inputs:
            n_out = meta.num_outputs()
            info.outputs = _tensors(meta, n_out, "output_tensor_meta", [f"output_{i}" for i in range(n_out)])
        else:
            # A method without inputs is a constant the exporter stored (get_max_seq_len, get_eos_ids, ...).
            with quiet():
                outputs = list(program.load_method(name).execute([]))
            info.value = _constant(outputs, plan.output_spec)
        info.delegated_calls, info.operators = dict(plan.delegates), dict(plan.kernels)
        methods.append(info)
    return PteInfo(path=path, bytes=path.stat().st_size, methods=methods)


def _size(n: int) -> str:
    return f"{n / 2**20:.2f} MiB ({n:,} bytes)" if n >= 2**20 else f"{n / 2**10:.1f} KiB ({n:,} bytes)"


def render_pte_info(info: PteInfo, console: Console) -> None:
    """Summary, per compute method an inputs/outputs and an operators table, then the metadata constants."""
    compute = [m for m in info.methods if m.inputs]
    constants = [m for m in info.methods if not m.inputs]

    summary = Table(title=str(info.path), show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("size", _size(info.bytes))
    summary.add_row("compute methods", ", ".join(m.name for m in compute) or "-")
    summary.add_row("metadata methods", str(len(constants)))
    for m in compute:
        delegated, kernels = sum(m.delegated_calls.values()), sum(m.operators.values())
        summary.add_row(f"{m.name} calls", f"{delegated} delegated, {kernels} not delegated")
    console.print(summary)

    for m in compute:
        io = Table(title=f"{m.name}: inputs and outputs", title_justify="left")
        for column in ("", "name", "dtype", "shape (max)"):
            io.add_column(column)
        for kind, tensors in (("in", m.inputs), ("out", m.outputs)):
            for t in tensors:
                io.add_row(kind, t.name, t.dtype, str(t.shape))
        console.print(io)

        ops = Table(title=f"{m.name}: operators", title_justify="left")
        ops.add_column("runs in")
        ops.add_column("backend / operator")
        ops.add_column("calls", justify="right")
        for backend, calls in sorted(m.delegated_calls.items()):
            ops.add_row("delegate", backend, str(calls))
        for op, calls in sorted(m.operators.items()):
            ops.add_row("not delegated", op, str(calls))
        if not m.delegated_calls and not m.operators:
            ops.add_row("-", "no calls", "0")
        console.print(ops)

    if constants:
        meta = Table(title="metadata methods", title_justify="left")
        meta.add_column("method")
        meta.add_column("value")
        for m in constants:
            meta.add_row(m.name, repr(m.value))
        console.print(meta)
