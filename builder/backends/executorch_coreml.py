"""Host validation of an ExecuTorch program delegated to Core ML, where no Core ML runtime exists.

The ExecuTorch runtime on Linux has no CoreMLBackend, so such a .pte cannot run here. But a Core ML
delegate's payload is the Core ML model itself: the backend saves an .mlpackage (plus metadata.json with
its input and output names) and flattens the folder into the program (executorch.backends.apple.coreml,
`preprocess_model`). This module restores those models from the .pte and replays the method's plan
instruction by instruction: each delegate call through the NumPy replay of ML Programs
(builder.backends.coreml_mil.MilExecutor), and the kernels left outside the delegate (the KV-cache
write-backs, `aten::copy_`) in NumPy. An instruction it cannot replay is named, never skipped.

Kept apart from lowering so that editing the replay never invalidates cached artifacts.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from builder.backends.coreml_mil import MilExecutor, UnsupportedMilOp, describe_mlpackage
from builder.errors import SlmpackError
from builder.quiet import quiet

BACKEND_ID = "CoreMLBackend"
RUNTIME = (
    "executorch + Core ML delegate: NumPy replay of the delegated Core ML program "
    "(Core ML runs only on Apple platforms)"
)
# Kernels of the plan outside the delegate that the replay runs itself.
REPLAYED_KERNELS = frozenset({"aten::copy_"})
# ExecuTorch ScalarType codes (executorch/exir/scalar_type.py) as NumPy dtypes.
_NP_DTYPES = {0: np.uint8, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.int64, 5: np.float16, 6: np.float32,
              7: np.float64, 11: np.bool_}  # fmt: skip
_CORE_ML_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32}


class UnreplayableProgram(Exception):
    """The program holds something the replay cannot run: the message names it."""


class CoreMLInputRefused(SlmpackError):
    """An input the delegated Core ML model would refuse on a device (its shape is outside the model's)."""


@dataclass
class CoreMLPayload:
    """One delegate's Core ML model, restored from the .pte."""

    delegate_index: int
    package: Path  # the restored .mlpackage
    input_names: list[str]
    output_names: list[str]
    payload_bytes: int


def _program(pte: Path) -> Any:
    with quiet():  # importing exir loads torchao, which reports its optional CUDA libraries on stderr
        from executorch.exir._serialize._program import deserialize_pte_binary

    return deserialize_pte_binary(pte.read_bytes()).program


def restore_coreml_payloads(pte: Path, out_dir: Path, method: str = "forward") -> list[CoreMLPayload]:
    """Write each Core ML delegate payload of `method` back out as a folder (model.mlpackage and
    metadata.json) under `out_dir/delegate_<i>/`."""
    with quiet():
        from executorch.backends.apple.coreml import executorchcoreml
        from executorch.exir.schema import DataLocation

    program = _program(pte)
    plan = next(p for p in program.execution_plan if p.name == method)
    payloads = []
    for index, delegate in enumerate(plan.delegates):
        if delegate.id != BACKEND_ID:
            continue
        if delegate.processed.location != DataLocation.INLINE:
            raise UnreplayableProgram(f"delegate {index} keeps its payload outside the program")
        data = bytes(program.backend_delegate_data[delegate.processed.index].data)
        if data.startswith(b"CMJR"):  # a reference into named data (multi-method weight sharing)
            raise UnreplayableProgram(f"delegate {index} is a reference to a shared multi-method Core ML model")
        folder = out_dir / f"delegate_{index}"
        folder.mkdir(parents=True)
        if not executorchcoreml.unflatten_directory_contents(data, str(folder)):
            raise UnreplayableProgram(f"the payload of delegate {index} is not a flattened Core ML model folder")
        # The backend flattens a folder holding `model.mlpackage` (or a compiled `model.mlmodelc`) and
        # `metadata.json`; restored, they sit one level down.
        metadata = next(folder.rglob("metadata.json"), None)
        package = next(folder.rglob("model.mlpackage"), None)
        if metadata is None or package is None:
            raise UnreplayableProgram(f"delegate {index} holds no .mlpackage (a compiled model cannot be replayed)")
        names = json.loads(metadata.read_text())
        payloads.append(CoreMLPayload(index, package, names["inputNames"], names["outputNames"], len(data)))
    return payloads


def describe_coreml_delegates(pte: Path) -> list[dict[str, Any]]:
    """What can be checked of each delegated Core ML model without a runtime: spec version, inputs and
    outputs (with flexible ranges), MIL op histogram and compressed weights."""
    with tempfile.TemporaryDirectory(prefix="slmpack-coreml-") as tmp:
        described = []
        for payload in restore_coreml_payloads(pte, Path(tmp)):
            info = describe_mlpackage(payload.package)
            described.append(
                {
                    "delegate": payload.delegate_index,
                    "payload_bytes": payload.payload_bytes,
                    "specification_version": info["specification_version"],
                    "inputs": info["inputs"],
                    "outputs": info["outputs"],
                    "states": info["states"],
                    "mil": info["operators"],
                    "compressed_weights": info["compressed_weights"],
                }
            )
        return described


def _fits(shape: list[Any], actual: tuple[int, ...]) -> bool:
    """Whether a shape fits a Core ML input's: fixed sizes, or [lo, hi] ranges (hi -1: unbounded)."""
    if len(shape) != len(actual):
        return False
    for want, size in zip(shape, actual, strict=True):
        lo, hi = want if isinstance(want, list) else (want, want)
        if size < lo or (hi != -1 and size > hi):
            return False
    return True


class _Delegate:
    """A restored Core ML model and the ExecuTorch-side conversions the delegate makes around it."""

    def __init__(self, payload: CoreMLPayload) -> None:
        self.payload = payload
        self.executor = MilExecutor(payload.package)
        self.inputs = {f["name"]: f for f in describe_mlpackage(payload.package)["inputs"]}

    def feeds(self, values: list[np.ndarray]) -> dict[str, np.ndarray]:
        """ExecuTorch tensors as the Core ML inputs (int64 -> int32 as the delegate converts them), each
        shape checked against the model's ranges, which Core ML enforces on the device."""
        feeds = {}
        for name, value in zip(self.payload.input_names, values, strict=True):
            feature = self.inputs[name]
            shape = feature["shape"]
            if not _fits(shape, value.shape):
                raise CoreMLInputRefused(
                    f"the delegated Core ML model would refuse input {name!r} of shape {list(value.shape)}: it "
                    f"accepts {shape} (a [lo, hi] entry is a flexible dimension). The artifact cannot run this call "
                    "on a device"
                )
            feeds[name] = value.astype(_CORE_ML_DTYPES.get(feature["dtype"], value.dtype))
        return feeds


class PlanReplay:
    """One method of a Core ML-delegated .pte, replayed on NumPy values. Memory-planned tensors (the KV
    cache buffers among them) keep their contents between calls, as in ExecuTorch's runtime."""

    def __init__(self, pte: Path, method: str = "forward") -> None:
        with quiet():
            from executorch.exir.schema import DelegateCall, FreeCall, KernelCall, MoveCall, Tensor

        self._tmp = tempfile.TemporaryDirectory(prefix="slmpack-coreml-")  # the restored models live here
        program = _program(pte)
        plans = {p.name: p for p in program.execution_plan}
        if method not in plans:
            raise UnreplayableProgram(f"the program has no method {method!r}")
        self.plan = plan = plans[method]
        others = sorted({d.id for d in plan.delegates if d.id != BACKEND_ID})
        if others:
            raise UnreplayableProgram(f"it also delegates to {', '.join(others)}, which has no replay here")
        try:
            payloads = restore_coreml_payloads(pte, Path(self._tmp.name), method)
            self.delegates = {p.delegate_index: _Delegate(p) for p in payloads}
        except UnsupportedMilOp as exc:
            raise UnreplayableProgram(str(exc)) from None
        self.instructions = [i.instr_args for chain in plan.chains for i in chain.instructions]
        kernels = set()
        for args in self.instructions:
            if isinstance(args, KernelCall):
                op = plan.operators[args.op_index]
                kernels.add(f"{op.name}.{op.overload}" if op.overload else op.name)
            elif not isinstance(args, DelegateCall | MoveCall | FreeCall):
                kernels.add(type(args).__name__)
        unsupported = sorted(k for k in kernels if k not in REPLAYED_KERNELS)
        if unsupported:
            raise UnreplayableProgram(f"operators outside the delegate have no replay: {', '.join(unsupported)}")
        self.values: dict[int, Any] = {}
        for index, value in enumerate(plan.values):
            val = value.val
            if isinstance(val, Tensor):
                dtype = _NP_DTYPES.get(int(val.scalar_type))
                if dtype is None:
                    raise UnreplayableProgram(f"value {index} has ExecuTorch dtype {val.scalar_type!r}")
                if val.data_buffer_idx > 0:
                    raise UnreplayableProgram(f"value {index} is a constant outside the delegate")
                # A memory-planned tensor starts zeroed, as the runtime's freshly allocated arenas are.
                self.values[index] = np.zeros(val.sizes, dtype)
            else:
                self.values[index] = getattr(val, "val", None)

    def _dtype(self, index: int) -> Any:
        return self.values[index].dtype

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from executorch.exir.schema import DelegateCall, KernelCall, MoveCall

        for index, value in zip(self.plan.inputs, inputs, strict=True):
            self.values[index] = np.asarray(value).astype(self._dtype(index))
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            for args in self.instructions:
                if isinstance(args, DelegateCall):
                    self._delegate_call(args.delegate_index, list(args.args))
                elif isinstance(args, KernelCall):  # aten::copy_(self, src, non_blocking, *, out)
                    target, source, _, out = args.args
                    copied = np.broadcast_to(self.values[source], self.values[target].shape).astype(self._dtype(target))
                    self.values[target] = copied
                    self.values[out] = copied
                elif isinstance(args, MoveCall):
                    self.values[args.move_to] = self.values[args.move_from]
        return [self.values[i] for i in self.plan.outputs]

    def _delegate_call(self, index: int, args: list[int]) -> None:
        delegate = self.delegates[index]
        names = delegate.payload
        if len(args) != len(names.input_names) + len(names.output_names):
            raise UnreplayableProgram(
                f"delegate {index} is called with {len(args)} values for {len(names.input_names)} inputs and "
                f"{len(names.output_names)} outputs"
            )
        count = len(names.input_names)
        outputs = delegate.executor.run(delegate.feeds([self.values[a] for a in args[:count]]))
        for value_index, name in zip(args[count:], names.output_names, strict=True):
            self.values[value_index] = np.asarray(outputs[name]).astype(self._dtype(value_index))


class ReplayDecoderRunner:
    """A Core ML-delegated decoder .pte, replayed. As with the real runtime, the KV cache is positional:
    a new sequence from position 0 overwrites it, so reset() has nothing to do."""

    runtime = RUNTIME

    def __init__(self, pte: Path) -> None:
        self.replay = PlanReplay(pte)

    def reset(self) -> None:
        pass

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        positions = np.arange(start_pos, start_pos + input_ids.shape[1], dtype=np.int64)
        (logits,) = self.replay.run([input_ids.numpy(), positions])
        return torch.from_numpy(np.array(logits, dtype=np.float32))[0]


class ReplayEncoderRunner:
    runtime = RUNTIME

    def __init__(self, pte: Path) -> None:
        self.replay = PlanReplay(pte)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        (embedding,) = self.replay.run([input_ids.numpy(), attention_mask.numpy()])
        return torch.from_numpy(np.array(embedding, dtype=np.float32))[0]
