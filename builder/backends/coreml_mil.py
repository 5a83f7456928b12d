"""A saved Core ML package without a Core ML runtime: its spec described, and a NumPy reference executor.
Core ML cannot predict off Apple platforms, so on Linux the artifact's own program (ops, weights,
compression, state) is replayed op by op to measure parity.

The program is reloaded from the .mlpackage (not taken from the converter), so what is checked is what
ships. Compressed weights (`constexpr_*` ops) are materialised with coremltools' own value inference.
Arithmetic follows each op's dtype: fp16 programs compute in fp16, as the device does on its CPU path.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from builder.quiet import quiet

_DTYPES = {
    "fp16": np.float16, "fp32": np.float32, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
    "uint16": np.uint16, "int32": np.int32, "int64": np.int64, "bool": np.bool_,
}  # fmt: skip

Args = dict[str, Any]


class UnsupportedMilOp(Exception):
    """The program uses an op this executor has no NumPy implementation for."""


def _axes(args: Args, key: str = "axes") -> tuple[int, ...]:
    return tuple(int(a) for a in np.atleast_1d(args[key]))


def _matmul(a: Args) -> np.ndarray:
    x, y = a["x"], a["y"]
    if bool(a.get("transpose_x", False)):
        x = np.swapaxes(x, -1, -2)
    if bool(a.get("transpose_y", False)):
        y = np.swapaxes(y, -1, -2)
    return _accumulate(np.matmul, x, y)


def _accumulate(fn: Callable[..., np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """fp16 products accumulated in fp32, as Apple's GPU and Neural Engine do (and NumPy's fp16 matmul,
    which has no BLAS, would be orders of magnitude slower)."""
    if x.dtype == np.float16 or y.dtype == np.float16:
        return fn(x.astype(np.float32), y.astype(np.float32)).astype(np.float16)
    return fn(x, y)


def _layer_norm(a: Args) -> np.ndarray:
    x, axes = a["x"], _axes(a)
    mean = x.mean(axes, keepdims=True)
    variance = ((x - mean) ** 2).mean(axes, keepdims=True)
    out = (x - mean) / np.sqrt(variance + np.asarray(a.get("epsilon", 1e-5), x.dtype))
    return out * a.get("gamma", 1) + a.get("beta", 0)


def _softmax(a: Args) -> np.ndarray:
    x, axis = a["x"], int(a.get("axis", -1))
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


_ERF = np.vectorize(math.erf, otypes=[np.float64])


def _gelu(a: Args) -> np.ndarray:
    x = a["x"]
    mode = str(a.get("mode", "EXACT"))
    if mode == "EXACT":
        return (0.5 * x * (1 + _ERF(x.astype(np.float64) / math.sqrt(2)))).astype(x.dtype)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return x / (1 + np.exp(-1.702 * x))  # SIGMOID_APPROXIMATION


def _index(a: Args) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """slice_by_index / slice_update arguments as NumPy slices, and the axes to squeeze."""
    begin, end = a["begin"], a["end"]
    rank = len(begin)
    stride = a.get("stride", np.ones(rank, np.int32))
    begin_mask = a.get("begin_mask", np.zeros(rank, bool))
    end_mask = a.get("end_mask", np.zeros(rank, bool))
    squeeze = a.get("squeeze_mask", np.zeros(rank, bool))
    slices = []
    for i in range(rank):
        start = None if begin_mask[i] else int(begin[i])
        if squeeze[i]:  # a single index: `end` is not used
            slices.append(slice(start or 0, (start or 0) + 1 if start != -1 else None))
        else:
            slices.append(slice(start, None if end_mask[i] else int(end[i]), int(stride[i])))
    return tuple(slices), tuple(i for i in range(rank) if squeeze[i])


def _slice_by_index(a: Args) -> np.ndarray:
    index, squeezed = _index(a)
    out = a["x"][index]
    return out.squeeze(squeezed) if squeezed else out


def _slice_update(a: Args) -> np.ndarray:
    index, _ = _index(a)
    out = a["x"].copy()
    out[index] = np.reshape(a["update"], out[index].shape)
    return out


def _expand_dims(a: Args) -> np.ndarray:
    out = a["x"]
    for axis in sorted(_axes(a)):
        out = np.expand_dims(out, axis)
    return out


def _reduce(fn: Callable[..., np.ndarray]) -> Callable[[Args], np.ndarray]:
    def run(a: Args) -> np.ndarray:
        axes = _axes(a) if a.get("axes") is not None else None
        return fn(a["x"], axis=axes, keepdims=bool(a.get("keep_dims", False)))

    return run


def _gather_nd(a: Args) -> np.ndarray:
    """x gathered at the index tuples in the last axis of `indices`; the first `batch_dims` axes pair up."""
    x, indices = a["x"], a["indices"].astype(np.int64)
    batch_dims = int(a.get("batch_dims", 0))
    if batch_dims == 0:
        return x[tuple(np.moveaxis(indices, -1, 0))]
    batch = x.shape[:batch_dims]
    flat_x = x.reshape((-1, *x.shape[batch_dims:]))
    flat_i = indices.reshape((-1, *indices.shape[batch_dims:]))
    out = np.stack([xi[tuple(np.moveaxis(ii, -1, 0))] for xi, ii in zip(flat_x, flat_i, strict=True)])
    return out.reshape((*batch, *out.shape[1:]))


def _l2_norm(x: np.ndarray, axis: tuple[int, ...] | None, keepdims: bool) -> np.ndarray:
    return np.sqrt((x.astype(np.float32) ** 2).sum(axis=axis, keepdims=keepdims)).astype(x.dtype)


def _split(a: Args) -> list[np.ndarray]:
    sizes = a.get("split_sizes")
    cuts = np.cumsum([int(s) for s in sizes])[:-1] if sizes is not None else int(a["num_splits"])
    return np.split(a["x"], cuts, axis=int(a["axis"]))


# Ops with several outputs return one array per output.
OPS: dict[str, Callable[[Args], np.ndarray | list[np.ndarray]]] = {
    "linear": lambda a: _accumulate(np.matmul, a["x"], a["weight"].T) + a.get("bias", 0),
    "matmul": _matmul,
    "add": lambda a: a["x"] + a["y"],
    "sub": lambda a: a["x"] - a["y"],
    "mul": lambda a: a["x"] * a["y"],
    "real_div": lambda a: a["x"] / a["y"],
    "maximum": lambda a: np.maximum(a["x"], a["y"]),
    "minimum": lambda a: np.minimum(a["x"], a["y"]),
    "pow": lambda a: np.power(a["x"], a["y"]),
    "sqrt": lambda a: np.sqrt(a["x"]),
    "rsqrt": lambda a: 1 / np.sqrt(a["x"] + a.get("epsilon", 0)),
    "inverse": lambda a: 1 / (a["x"] + a.get("epsilon", np.asarray(1e-4, a["x"].dtype))),
    "exp": lambda a: np.exp(a["x"]),
    "tanh": lambda a: np.tanh(a["x"]),
    "sigmoid": lambda a: 1 / (1 + np.exp(-a["x"])),
    "silu": lambda a: a["x"] / (1 + np.exp(-a["x"])),
    "relu": lambda a: np.maximum(a["x"], 0),
    "gelu": _gelu,
    "softmax": _softmax,
    "layer_norm": _layer_norm,
    "clip": lambda a: np.clip(a["x"], a["alpha"], a["beta"]),
    "cast": lambda a: a["x"].astype(_DTYPES[str(a["dtype"])]),
    "reshape": lambda a: a["x"].reshape([int(s) for s in a["shape"]]),
    "transpose": lambda a: np.transpose(a["x"], [int(p) for p in a["perm"]]),
    "expand_dims": _expand_dims,
    "squeeze": lambda a: np.squeeze(a["x"], _axes(a)) if a.get("axes") is not None else np.squeeze(a["x"]),
    "gather": lambda a: np.take(a["x"], a["indices"].astype(np.int64), axis=int(a.get("axis", 0))),
    "concat": lambda a: np.concatenate([np.atleast_1d(v) for v in a["values"]], axis=int(a["axis"])),
    "stack": lambda a: np.stack(a["values"], axis=int(a["axis"])),
    "gather_nd": _gather_nd,
    "tile": lambda a: np.tile(a["x"], [int(r) for r in a["reps"]]),
    "shape": lambda a: np.array(a["x"].shape, dtype=np.int32),
    "slice_by_index": _slice_by_index,
    "reduce_sum": _reduce(np.sum),
    "reduce_mean": _reduce(np.mean),
    "reduce_max": _reduce(np.max),
    "reduce_l2_norm": _reduce(_l2_norm),
    "identity": lambda a: a["x"],
    "slice_update": _slice_update,
    "range_1d": lambda a: np.arange(a["start"], a["end"], a["step"]),
    "cos": lambda a: np.cos(a["x"]),
    "sin": lambda a: np.sin(a["x"]),
    "abs": lambda a: np.abs(a["x"]),
    "floor": lambda a: np.floor(a["x"]),
    "square": lambda a: a["x"] * a["x"],
    "equal": lambda a: a["x"] == a["y"],
    "not_equal": lambda a: a["x"] != a["y"],
    "greater": lambda a: a["x"] > a["y"],
    "greater_equal": lambda a: a["x"] >= a["y"],
    "less": lambda a: a["x"] < a["y"],
    "less_equal": lambda a: a["x"] <= a["y"],
    "logical_and": lambda a: np.logical_and(a["x"], a["y"]),
    "logical_or": lambda a: np.logical_or(a["x"], a["y"]),
    "logical_not": lambda a: np.logical_not(a["x"]),
    "select": lambda a: np.where(a["cond"], a["a"], a["b"]),
    "split": _split,
}


def coremltools_quietly() -> Any:
    """coremltools, imported without the version warnings it prints about torch and scikit-learn."""
    with quiet():
        import coremltools

    return coremltools


def _feature(description: Any) -> dict[str, Any]:
    """One input/output of the model spec: name, dtype and shape, with flexible dimensions as [lo, hi]."""
    array = description.type.multiArrayType
    dtypes = {65568: "float32", 65552: "float16", 131104: "int32"}
    shape: list[Any] = list(array.shape)
    ranges = array.shapeRange.sizeRanges
    if ranges:
        shape = [d.lowerBound if d.lowerBound == d.upperBound else [d.lowerBound, d.upperBound] for d in ranges]
    return {"name": description.name, "dtype": dtypes.get(array.dataType, str(array.dataType)), "shape": shape}


def _load_package(path: Path) -> tuple[Any, Any]:
    """The spec and the ML Program (as MIL) of a saved .mlpackage, with no Core ML runtime."""
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = coremltools_quietly().models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    program = milproto_load(
        model_spec=spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir
    )
    return spec, program


def describe_mlpackage(path: Path) -> dict[str, Any]:
    """What can be checked without a Core ML runtime: spec version, inputs/outputs, op histogram, compression."""
    spec, program = _load_package(path)
    histogram = Counter(op.op_type for op in program.functions["main"].operations)
    return {
        "specification_version": spec.specificationVersion,
        "inputs": [_feature(d) for d in spec.description.input],
        "outputs": [_feature(d) for d in spec.description.output],
        "states": [s.name for s in spec.description.state],
        "operators": dict(sorted(histogram.items())),
        "compressed_weights": sum(n for t, n in histogram.items() if t.startswith("constexpr_")),
    }


# Ops the executor handles itself: constants, and reads/writes of the model's state (its KV cache).
_SPECIAL = {"const", "read_state", "coreml_update_state"}


class MilExecutor:
    """Runs a program's `main` function on NumPy inputs; unsupported ops are named up front."""

    def __init__(self, path: Path) -> None:
        self.function = _load_package(path)[1].functions["main"]
        ops = {op.op_type for op in self.function.operations}
        missing = sorted(t for t in ops if t not in OPS and t not in _SPECIAL and not t.startswith("constexpr_"))
        if missing:
            raise UnsupportedMilOp(f"no reference implementation for MIL op(s) {', '.join(missing)}")
        # Weights, compressed ones decompressed exactly as Core ML does, once.
        self.constants: dict[str, np.ndarray] = {}
        for op in self.function.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                value = op.outputs[0].val if op.op_type == "const" else op.materialized_val_inference()
                # Joint compression splits a weight over ops with two outputs (a sparse mask, its values).
                values = value if len(op.outputs) > 1 else (value,)
                for output, part in zip(op.outputs, values, strict=True):
                    self.constants[output.name] = np.asarray(part)

    @property
    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The program's states (e.g. keyCache, valueCache) and their shapes."""
        from coremltools.converters.mil.mil import types

        return {
            name: tuple(var.sym_type.wrapped_type().get_shape())
            for name, var in self.function.inputs.items()
            if types.is_state(var.sym_type)
        }

    def run(self, feeds: dict[str, np.ndarray], states: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run `main`; `states` (name -> array) is read and updated in place, as Core ML's MLState is."""
        states = {} if states is None else states
        with np.errstate(over="ignore", under="ignore"):  # fp16 overflows as the device does; gates judge it
            return self._run(feeds, states)

    def _run(self, feeds: dict[str, np.ndarray], states: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env: dict[str, np.ndarray] = {**self.constants, **{k: np.asarray(v) for k, v in feeds.items()}}
        for op in self.function.operations:
            if op.outputs[0].name in self.constants:
                continue
            if op.op_type == "read_state":
                env[op.outputs[0].name] = states[op.inputs["input"].name]
                continue
            args = {name: _value(env, var) for name, var in op.inputs.items() if name != "state"}
            if op.op_type == "coreml_update_state":
                states[op.inputs["state"].name] = result = np.asarray(args["value"])
            else:
                result = OPS[op.op_type](args)
            results = result if isinstance(result, list) else [result]
            for out, value in zip(op.outputs, results, strict=True):
                value = np.asarray(value)
                dtype = getattr(out.dtype, "__name__", "")
                env[out.name] = value.astype(_DTYPES[dtype]) if dtype in ("fp16", "fp32") else value
        return {var.name: env[var.name] for var in self.function.outputs}


def _value(env: dict[str, np.ndarray], var: Any) -> Any:
    if isinstance(var, list | tuple):
        return [_value(env, v) for v in var]
    if var.name in env:
        return env[var.name]
    if var.val is not None:
        return np.asarray(var.val)
    raise KeyError(f"MIL value {var.name} is used before it is computed")
