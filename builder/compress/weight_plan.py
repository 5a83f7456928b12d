"""The a8w4 weight plan: which Linears keep 8 bits and how each is rounded, decided once per model.

1. Sensitivity: each Linear alone is rounded to 4 bits (with zero points, or on HQQ's symmetric scales) and
   the model's output on calibration text is compared with the unrounded model's (KL of next-token
   distributions for decoders, 1 − cosine of the last hidden states for encoders).
2. Mixed precision: the Linears that move the output most per extra byte go to 8 bits (per channel) while
   the recipe's budget allows, where 8 bits round the weight closer than 4 do at all (a weight already on
   a 4-bit grid, as a Q4_1 GGUF's, is exact at 4 bits with zero points and is not measured).
3. Rounding: GPTQ on every Linear at its chosen bits (or round to nearest with method = "hqq").

The ExecuTorch backend applies the plan on top of torchao's tensors (builder/backends/executorch.py), and
the manifest records it. Computing it costs minutes on a 135M model, so it is cached by its inputs."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from builder.compress.architecture import Family, family_of, submodule
from builder.compress.gptq import (
    BlockInputs,
    IntWeight,
    choose_grid,
    first_block_inputs,
    gptq_model,
    hidden_states,
    next_block_inputs,
)
from builder.compress.quantization import GROUP_SIZE, estimated_weight_bytes, linear_storage_bits
from builder.errors import UserInputError
from builder.paths import cache_dir, published_folder
from builder.recipe import CompressSection
from builder.tools import tool_versions

CACHE_VERSION = "2"  # 2: zero points (offsets stored beside the integers and scales)
_SOURCES = ("gptq.py", "weight_plan.py", "quantization.py", "generated.py")


@dataclass
class WeightPlan:
    method: str  # "gptq" or "hqq"
    bits: dict[str, int]  # every Linear by name: 4 or 8
    # Each Linear's integers, scales and offsets: GPTQ's, or round to nearest with zero points (empty for hqq
    # without them: torchao's own rounding).
    weights: dict[str, IntWeight] = field(default_factory=dict)
    sensitivity: dict[str, float] = field(default_factory=dict)  # output change with only this Linear at 4 bits
    budget: dict[str, float] = field(default_factory=dict)
    forced: dict[str, int] = field(default_factory=dict)  # bits the recipe fixed (compress.output_layer_int8)
    calibration: dict[str, Any] | None = None
    estimated_weight_bytes: int = 0
    bits_per_weight: float = 0.0
    zero_points: bool = False
    digest: str = ""

    def to_json(self) -> dict[str, Any]:
        ranked = sorted(self.sensitivity, key=lambda name: -self.sensitivity[name])
        order = ranked + sorted(set(self.bits) - set(ranked))
        layers = [{"name": n, "bits": self.bits[n], "sensitivity": self.sensitivity.get(n)} for n in order]
        return {
            "method": self.method,
            "zero_points": self.zero_points,
            "budget": self.budget,
            "forced": self.forced,
            "calibration": self.calibration,
            "estimated_weight_bytes": self.estimated_weight_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "eight_bit": sorted(name for name, bits in self.bits.items() if bits == 8),
            "layers": layers,
            "digest": self.digest,
        }


def linears_of(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in module.named_modules() if isinstance(m, nn.Linear)}


def group_of(linear: nn.Linear, bits: int) -> int:
    """Group size on XNNPACK's grid: 32 inputs for 4 bits, the whole row for 8 bits or a width no multiple of 32."""
    return GROUP_SIZE if bits == 4 and linear.in_features % GROUP_SIZE == 0 else linear.in_features


def rounded(linear: nn.Linear, bits: int, zero_points: bool) -> torch.Tensor:
    """The weight rounded to nearest on its grid, dequantized."""
    return choose_grid(linear.weight, group_of(linear, bits), bits, zero_points).dequantize()


@torch.no_grad()
def eight_bits_help(linear: nn.Linear, zero_points: bool) -> bool:
    """Whether 8 bits round the weight closer than 4 do: not for one already on a 4-bit grid."""
    weight = linear.weight.float()
    error = {bits: float((rounded(linear, bits, zero_points) - weight).square().sum()) for bits in (4, 8)}
    return error[8] < error[4]


def _output_head(module: nn.Module) -> str | None:
    head = module.get_output_embeddings() if hasattr(module, "get_output_embeddings") else None
    return next((name for name, m in module.named_modules() if m is head), None) if head is not None else None


class _Output:
    """The model's output from the last block's hidden states, and how far one output is from another."""

    def __init__(self, module: nn.Module, family: Family) -> None:
        self.norm = submodule(module, family.final_norm) if family.final_norm else None
        self.head = module.get_output_embeddings() if self.norm is not None else None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.norm is None or self.head is None:
            return hidden
        return torch.log_softmax(self.head(self.norm(hidden)).float(), dim=-1)

    def distance(self, reference: torch.Tensor, output: torch.Tensor) -> float:
        if self.norm is None:
            return float((1 - torch.cosine_similarity(reference, output, dim=-1)).mean())
        # KL(reference ‖ output) per token, the figure the lowering gate and evaluation report.
        return float((reference.exp() * (reference - output)).sum(-1).mean())


@torch.no_grad()
def sensitivity(module: nn.Module, family: Family, windows: list[torch.Tensor], names: list[str],
                zero_points: bool, on_layer: Callable[[], None] | None = None) -> dict[str, float]:  # fmt: skip
    """How much the output moves when only the Linear `name` is rounded to 4 bits, for each of `names`.
    A Linear inside block i reruns blocks i.. from that block's recorded inputs, not the whole model."""
    module = module.eval()
    blocks = family.block_list(module)
    output = _Output(module, family)
    inputs: list[list[BlockInputs]] = [first_block_inputs(module, blocks[0], windows)]
    for block in blocks:
        inputs.append([next_block_inputs(block, *i) for i in inputs[-1]])
    reference = [output(hidden_states(i)) for i in inputs[-1]]
    block_of = {id(m): index for index, block in enumerate(blocks) for m in block.modules()}
    linears = linears_of(module)
    scores: dict[str, float] = {}
    for name in names:
        linear = linears[name]
        start = block_of.get(id(linear), len(blocks))  # outside the blocks: the output projection
        original = linear.weight.detach().clone()
        linear.weight.copy_(rounded(linear, 4, zero_points))
        distances = []
        for window, ref in zip(inputs[start], reference, strict=True):
            for block in blocks[start:]:
                window = next_block_inputs(block, *window)
            distances.append(output.distance(ref, output(hidden_states(window))))
        linear.weight.copy_(original)
        scores[name] = sum(distances) / len(distances)
        if on_layer is not None:
            on_layer()
    return scores


def choose_bits(linears: dict[str, nn.Linear], scores: dict[str, float], forced: dict[str, int],
                budget_bits: int, zero_points: bool = False) -> dict[str, int]:  # fmt: skip
    """Every Linear at 4 bits but the `forced` ones, then the ones (of those `scores` has) whose 8 bits buy the
    most output per extra byte, greedily, while the storage (scales included) stays within `budget_bits`."""
    bits = {name: forced.get(name, 4) for name in linears}
    spent = sum(linear_storage_bits(linears[n], b, zero_points) for n, b in bits.items())
    if spent > budget_bits:
        raise ValueError(spent)

    def extra(name: str) -> int:
        return linear_storage_bits(linears[name], 8) - linear_storage_bits(linears[name], 4, zero_points)

    for name in sorted(scores, key=lambda n: (-scores[n] / max(extra(n), 1), n)):
        if name not in forced and spent + extra(name) <= budget_bits:
            bits[name] = 8
            spent += extra(name)
    return bits


def _budget_bits(module: nn.Module, linears: dict[str, nn.Linear], budget: dict[str, float],
                 quantize_embeddings: bool) -> int:  # fmt: skip
    """The budget as bits for Linear weights: bits_per_weight over their weights, or max_bytes less what the
    rest of the model (embedding table, norms) takes."""
    if "bits_per_weight" in budget:
        return int(budget["bits_per_weight"] * sum(m.weight.numel() for m in linears.values()))
    four = {name: 4 for name in linears}
    linear_bytes = sum(linear_storage_bits(m, 4) for m in linears.values()) // 8
    rest = estimated_weight_bytes(module, "a8w4", quantize_embeddings, bits=four) - linear_bytes
    return int((budget["max_bytes"] - rest) * 8)


def _summary(module: nn.Module, linears: dict[str, nn.Linear], bits: dict[str, int], quantize_embeddings: bool,
             zero_points: bool) -> tuple[int, float]:  # fmt: skip
    storage = sum(linear_storage_bits(m, bits[n], zero_points) for n, m in linears.items())
    numel = sum(m.weight.numel() for m in linears.values())
    total = estimated_weight_bytes(module, "a8w4", quantize_embeddings, bits=bits, zero_points=zero_points)
    return total, storage / max(numel, 1)


def forced_bits(module: nn.Module, settings: CompressSection) -> dict[str, int]:
    """Bits the recipe fixes: the output projection's (compress.output_layer_int8), 8 when mixed precision
    is off and it is unset."""
    head = _output_head(module)
    choice = settings.output_layer_int8
    if choice is None and not settings.a8w4.mixed_precision:
        choice = True
    return {head: 8 if choice else 4} if head is not None and choice is not None else {}


def eight_bit_candidates(module: nn.Module, settings: CompressSection) -> list[str]:
    """The Linears mixed precision measures: those the recipe does not fix, where 8 bits would help at all."""
    forced = forced_bits(module, settings)
    zero_points = settings.a8w4.zero_points
    return [name for name, m in linears_of(module).items() if name not in forced and eight_bits_help(m, zero_points)]


def plan_steps(module: nn.Module, settings: CompressSection, measured: int) -> int:
    """How many times `make_plan` reports progress: once per Linear `measured`, once per block GPTQ rounds."""
    blocks = len(family_of(module.config.model_type, "compress.a8w4").block_list(module))
    return measured + (blocks if settings.a8w4.method == "gptq" else 0)


def _key(payload: dict[str, Any]) -> str:
    code = hashlib.sha256()
    for source in _SOURCES:
        code.update((Path(__file__).parent / source).read_bytes())
    full = {**payload, "version": CACHE_VERSION, "code": code.hexdigest(), "tools": tool_versions()}
    return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:32]


def plan_key(weights_digest: str, settings: CompressSection, calibration: dict[str, Any] | None,
             quantize_embeddings: bool) -> str:  # fmt: skip
    head = settings.output_layer_int8
    return _key({"weights": weights_digest, "a8w4": settings.a8w4.model_dump(), "calibration": calibration,
                 "output_layer_int8": head, "quantize_embeddings": quantize_embeddings})  # fmt: skip


def sensitivity_key(weights_digest: str, settings: CompressSection, calibration: dict[str, Any] | None) -> str:
    """What the sensitivity scores depend on: not the budget or rounding method, so trying budgets reuses them."""
    return _key({"weights": weights_digest, "windows": settings.a8w4.sensitivity_windows,
                 "zero_points": settings.a8w4.zero_points, "calibration": calibration,
                 "output_layer_int8": settings.output_layer_int8})  # fmt: skip


def cached_scores(key: str) -> dict[str, float] | None:
    path = cache_dir() / "weight-plans" / f"sensitivity-{key}.json"
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return None


def _store(name: str, write: Callable[[Path], None]) -> None:
    """Write the cache file `name` through a staging file, so a reader never sees half of it."""
    folder = cache_dir() / "weight-plans"
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".{name}.{os.getpid()}"
    write(staging)
    staging.replace(folder / name)


def store_scores(key: str, scores: dict[str, float]) -> None:
    _store(f"sensitivity-{key}.json", lambda path: path.write_text(json.dumps(scores)))


def make_plan(
    module: nn.Module,
    settings: CompressSection,
    windows: list[torch.Tensor],
    calibration: dict[str, Any] | None,
    quantize_embeddings: bool,
    on_progress: Callable[[], None] | None = None,
    scores: dict[str, float] | None = None,
    candidates: list[str] | None = None,
) -> WeightPlan:
    """The plan for `module` (not changed). `windows` are the calibration windows `calibration` describes;
    `scores`, sensitivities measured before with the same settings, are not measured again; `candidates`,
    the Linears to measure when the caller has them (eight_bit_candidates), are not chosen again."""
    a8w4 = settings.a8w4
    calibrated = a8w4.reads_calibration
    family = None
    if calibrated:
        family = family_of(module.config.model_type, "compress.a8w4 (GPTQ and mixed precision)")
    linears = linears_of(module)
    forced = {name: bits for name, bits in forced_bits(module, settings).items() if name in linears}
    budget = a8w4.budget() if a8w4.mixed_precision else {}
    if budget:
        assert family is not None
        budget_bits = _budget_bits(module, linears, budget, quantize_embeddings)
        smallest = sum(linear_storage_bits(m, forced.get(n, 4), a8w4.zero_points) for n, m in linears.items())
        if a8w4.bits_per_weight is None and a8w4.max_bytes is None and smallest > budget_bits:
            # The default budget never refuses a model: one whose every Linear at 4 bits takes more (narrow
            # layers' per-row scales, zero points) gets that smallest layout, and the plan records it.
            budget_bits = smallest
            budget = {"bits_per_weight": round(smallest / sum(m.weight.numel() for m in linears.values()), 4)}
        if scores is None:
            if candidates is None:
                candidates = eight_bit_candidates(module, settings)
            scores = sensitivity(copy.deepcopy(module), family, windows[: a8w4.sensitivity_windows], candidates,
                                 a8w4.zero_points, on_progress)  # fmt: skip
        try:
            bits = choose_bits(linears, scores, forced, budget_bits, a8w4.zero_points)
        except ValueError as exc:
            smallest = int(exc.args[0])
            key, value = next(iter(budget.items()))
            raise UserInputError(
                f"compress.a8w4.{key} = {value} is below the smallest a8w4 layout of this model ({smallest / 8:,.0f} "
                f"bytes of Linear weights with every Linear at 4 bits). Fix: raise it, or set mixed_precision = false"
            ) from None
    else:
        bits = {name: forced.get(name, 4) for name in linears}
        scores = {}
    weights: dict[str, IntWeight] = {}
    if a8w4.method == "gptq":
        assert family is not None
        work = copy.deepcopy(module).eval()
        report_block = (lambda _: on_progress()) if on_progress else None
        weights = gptq_model(work, family.block_list(work), windows,
                             lambda name, m: (bits[name], group_of(m, bits[name])), a8w4.zero_points,
                             report_block)  # fmt: skip
    elif a8w4.zero_points:  # torchao rounds only to symmetric grids: the plan carries the integers
        weights = {name: choose_grid(m.weight, group_of(m, bits[name]), bits[name], True)
                   for name, m in linears.items()}  # fmt: skip
    total, per_weight = _summary(module, linears, bits, quantize_embeddings, a8w4.zero_points)
    return WeightPlan(a8w4.method, bits, weights, scores, budget, forced, calibration if calibrated else None,
                      total, per_weight, a8w4.zero_points)  # fmt: skip


def generated_key(weights_digest: str, generated: dict[str, Any]) -> str:
    """What the windows a decoder samples for calibration depend on: the weights and the sampler's settings."""
    return _key({"weights": weights_digest, "generated": generated})


def cached_windows(key: str) -> list[torch.Tensor] | None:
    path = cache_dir() / "weight-plans" / f"generated-{key}.safetensors"
    try:
        tensors = load_file(str(path))
        return [tensors[str(i)] for i in range(len(tensors))]
    except Exception:  # missing or damaged: sampled again, never trusted
        return None


def store_windows(key: str, windows: list[torch.Tensor]) -> None:
    tensors = {str(i): w.contiguous() for i, w in enumerate(windows)}
    _store(f"generated-{key}.safetensors", lambda path: save_file(tensors, str(path)))


def cached_plan(key: str, compute: Callable[[], WeightPlan]) -> tuple[WeightPlan, bool]:
    """The plan stored under `key`, or `compute()`'s, stored there first. An unreadable entry is recomputed."""
    folder = cache_dir() / "weight-plans" / key
    if (folder / "plan.json").is_file():
        try:
            return _load(folder, key), True
        except Exception:  # a damaged entry is rebuilt, never trusted
            shutil.rmtree(folder, ignore_errors=True)
    plan = compute()
    plan.digest = key
    with published_folder(folder) as staging:
        tensors = {f"{name}.{part}": getattr(w, part).contiguous() for name, w in plan.weights.items()
                   for part in ("q", "scale", "offset") if getattr(w, part) is not None}  # fmt: skip
        save_file(tensors, str(staging / "weights.safetensors"))
        record = {k: v for k, v in plan.__dict__.items() if k != "weights"}
        record["weight_bits"] = {name: w.bits for name, w in plan.weights.items()}
        (staging / "plan.json").write_text(json.dumps(record, indent=1))
    return plan, False


def _load(folder: Path, key: str) -> WeightPlan:
    record = json.loads((folder / "plan.json").read_text())
    tensors = load_file(str(folder / "weights.safetensors"))
    weight_bits = record.pop("weight_bits")
    weights = {name: IntWeight(tensors[f"{name}.q"], tensors[f"{name}.scale"], bits, tensors.get(f"{name}.offset"))
               for name, bits in weight_bits.items()}  # fmt: skip
    plan = WeightPlan(weights=weights, **record)
    if plan.digest != key:
        raise ValueError("plan digest does not match its folder")
    return plan
