"""The recipe: a user's TOML file, parsed and checked with pydantic (DESIGN §3)."""

from __future__ import annotations

import keyword
import tomllib
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from builder.compress.quantization import SCHEMES, SchemeName
from builder.errors import UserInputError
from builder.models.base import Task
from builder.targets import Target, catalogue

# Kotlin hard keywords cannot be package segments; Java's are a superset of the ones that matter.
_KOTLIN_KEYWORDS = {
    "as", "break", "class", "continue", "do", "else", "false", "for", "fun", "if", "in", "interface",
    "is", "null", "object", "package", "return", "super", "this", "throw", "true", "try", "typealias",
    "typeof", "val", "var", "when", "while",
}  # fmt: skip
_SWIFT_RESERVED = {"Self", "Type", "Protocol", "Any", "Foundation", "Swift", "CoreML", "ExecuTorch"}

_FIX_HINTS: dict[str, str] = {
    "package.name": 'use lower-case letters, digits and dashes, starting with a letter, e.g. "smolchat"',
    "package.version": 'use a semantic version such as "0.1.0"',
    "package.android_namespace": 'use a Java package name such as "com.example.smolchat"',
    "package.ios_module": 'use a Swift type name such as "SmolChat" (letters and digits, capitalised)',
    "package.class_name": 'use a type name such as "SmolChat" (letters and digits, capitalised)',
    "model.source": 'use "builtin:<name>", "hf:<folder>" or "gguf:<file>"',
    "model.task": 'use "text-generation" or "embeddings"',
    "compress.sparsity": "use a fraction from 0 (no pruning) up to, not including, 1, e.g. 0.5",
    "targets.sparsity": "use a fraction from 0 (no pruning) up to, not including, 1, e.g. 0.5",
    "compress.prune.sparsity": "use a fraction above 0 and below 1, e.g. 0.3",
    "compress.prune": 'e.g. prune = { method = "structured", sparsity = 0.3, parts = ["mlp", "heads"] }',
    "compress.lowrank": "e.g. lowrank = { ratio = 0.5 } or lowrank = { energy = 0.95 }",
    "compress.distill": 'e.g. distill = { steps = 300, data = "builtin:shakespeare" }',
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PackageSection(_Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$", max_length=64)
    version: str = Field(pattern=r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
    android_namespace: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$", max_length=200)
    ios_module: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)
    class_name: str | None = Field(default=None, pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=64)
    description: str = ""

    @field_validator("android_namespace")
    @classmethod
    def _no_keyword_segments(cls, value: str) -> str:
        bad = [seg for seg in value.split(".") if seg in _KOTLIN_KEYWORDS or keyword.iskeyword(seg)]
        if bad:
            raise ValueError(f"segment {bad[0]!r} is a reserved word in Kotlin/Java")
        return value

    @field_validator("ios_module", "class_name")
    @classmethod
    def _not_reserved(cls, value: str | None) -> str | None:
        if value in _SWIFT_RESERVED:
            raise ValueError(f"{value!r} clashes with a Swift or system module name")
        return value

    @property
    def type_name(self) -> str:
        return self.class_name or self.ios_module


class ModelSection(_Section):
    source: str
    task: Task = "text-generation"
    max_context: int = Field(default=512, ge=32, le=8192)


PrunePart = Literal["mlp", "heads", "layers"]


class PruneSection(_Section):
    """Torch-level pruning for every target (builder/compress/prune.py)."""

    method: Literal["magnitude", "structured"]
    # magnitude: the fraction of block weights set to zero; structured: the fraction of the model's
    # parameters removed (the model becomes a smaller one of the same architecture).
    sparsity: float = Field(gt=0.0, lt=1.0)
    scope: Literal["layer", "global"] | None = None  # magnitude: threshold per weight matrix or over all
    parts: list[PrunePart] | None = None  # structured: what may shrink (default: mlp and heads)
    channel_multiple: int = Field(default=32, ge=1)  # structured: MLP widths stay multiples of this

    @model_validator(mode="after")
    def _options_fit_the_method(self) -> PruneSection:
        if self.method == "magnitude" and self.parts is not None:
            raise ValueError("parts applies to method = 'structured' only; magnitude pruning takes scope")
        if self.method == "structured" and self.scope is not None:
            raise ValueError("scope applies to method = 'magnitude' only; structured pruning takes parts")
        if self.parts is not None and (not self.parts or len(set(self.parts)) != len(self.parts)):
            raise ValueError("parts must list each of 'mlp', 'heads', 'layers' at most once, and at least one")
        return self


class LowRankSection(_Section):
    """Truncated-SVD factorization of block Linears into two thinner ones (builder/compress/lowrank.py)."""

    ratio: float | None = Field(default=None, gt=0.0, lt=1.0)  # rank kept, as a fraction of the full rank
    energy: float | None = Field(default=None, gt=0.0, lt=1.0)  # smallest rank keeping this share of σ²
    modules: list[Literal["mlp", "attention"]] = ["mlp", "attention"]
    # XNNPACK's int4 kernels read inputs in groups of 32: a rank that is not a multiple fails to lower for a8w4.
    rank_multiple: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _one_rule(self) -> LowRankSection:
        if (self.ratio is None) == (self.energy is None):
            raise ValueError("set exactly one of ratio (e.g. 0.5) or energy (e.g. 0.95)")
        return self


class DistillSection(_Section):
    """Knowledge distillation of the compressed student from the original teacher (builder/compress/distill.py)."""

    steps: int = Field(default=300, ge=1, le=100_000)
    data: str | None = None  # text file or built-in corpus; default: the calibration text
    learning_rate: float = Field(default=1e-4, gt=0.0, le=1.0)
    batch_size: int = Field(default=4, ge=1, le=256)
    sequence_length: int = Field(default=128, ge=8, le=8192)
    temperature: float = Field(default=1.0, gt=0.0, le=10.0)
    hidden_weight: float = Field(default=0.0, ge=0.0)  # weight of the last-hidden-state MSE beside the KL
    seed: int = 0


class CalibrationSection(_Section):
    """Text that importance scores read (and distillation, unless it names its own); never the evaluation's."""

    text: str = "builtin:shakespeare"
    # Spread through the text (builder/validate/data.py). GPTQ on SmolLM2 fitted 16 x 128 tokens from the
    # opening of King Lear to that play's register: 32 x 256 from all three plays cut the perplexity added on
    # Hamlet from +8% to +7% and on Python documentation from +25% to +16%.
    windows: int = Field(default=32, ge=1, le=4096)
    window_tokens: int = Field(default=256, ge=8, le=8192)


# The range of compress.a8w4.bits_per_weight (and of quantize-report's --budgets): every Linear at 4 bits
# (int4 groups of 32 with a bf16 scale each) up to every one at 8 bits, with room above it.
MIN_BITS_PER_WEIGHT, MAX_BITS_PER_WEIGHT = 4.5, 9.0


class A8W4Section(_Section):
    """How a8w4 rounds its 4-bit weights and which Linears keep 8 bits, on ExecuTorch targets
    (builder/compress/weight_plan.py). Both read the compress.calibration text."""

    # gptq: rounds each layer against its calibration inputs (Hessian); hqq: round to nearest on the grid (HQQ's
    # scale search for symmetric groups), no calibration.
    method: Literal["gptq", "hqq"] = "gptq"
    # Zero points: each group of 32 int4 weights counts from its own offset (asymmetric, a min/max grid), as a
    # Q4_1 GGUF's do, so such a source keeps its exact weights. XNNPACK's int4 kernels take none, so the
    # offsets run beside them, an int8 matmul on the input's group means (builder/backends/zero_point_linear.py):
    # ~0.3 more bits per weight and a few more ops per Linear. SmolLM2's .pte: perplexity +3.6% on Hamlet, +5.5%
    # on Python docs, +4.6% on GPL-3 (symmetric: +4.7%, +10.3%, +16.3%) in 4% fewer bytes, decoding 3% slower
    # than the symmetric .pte before fused projections (11% unfused). false: symmetric groups on HQQ scales.
    zero_points: bool = True
    # Sensitivity-driven mixed precision: the Linears whose 4-bit rounding moves the output most (KL on the
    # calibration text) stay at 8 bits while the budget allows. One budget: bits_per_weight averages over
    # Linear weights, scales included (all-4-bit groups of 32 = 4.5, all-8-bit ≈ 8.05); max_bytes caps the
    # estimated weight bytes of the whole model, embedding table included.
    mixed_precision: bool = True
    bits_per_weight: float | None = Field(default=None, ge=MIN_BITS_PER_WEIGHT, le=MAX_BITS_PER_WEIGHT)
    max_bytes: int | None = Field(default=None, gt=0)
    sensitivity_windows: int = Field(default=2, ge=1, le=64)  # calibration windows the KL is measured on
    # Decoders: windows of calibration.window_tokens sampled from the model itself (builder/compress/
    # generated.py), alternated with the calibration text's, so GPTQ does not fit the text's register alone.
    generated_windows: int = Field(default=32, ge=0, le=1024)

    @model_validator(mode="after")
    def _one_budget(self) -> A8W4Section:
        if self.bits_per_weight is not None and self.max_bytes is not None:
            raise ValueError("set at most one budget: bits_per_weight (e.g. 5.08) or max_bytes (e.g. 115000000)")
        if not self.mixed_precision and (self.bits_per_weight is not None or self.max_bytes is not None):
            raise ValueError("a budget applies only with mixed_precision = true")
        return self

    @property
    def reads_calibration(self) -> bool:
        """GPTQ and the sensitivity scores read calibration windows; HQQ scales alone do not."""
        return self.method == "gptq" or self.mixed_precision

    def budget(self) -> dict[str, float]:
        """The mixed-precision budget; DEFAULT_BITS_PER_WEIGHT unless one is set."""
        if self.max_bytes is not None:
            return {"max_bytes": self.max_bytes}
        return {"bits_per_weight": self.bits_per_weight or DEFAULT_BITS_PER_WEIGHT}


# Keeps SmolLM2-135M's .pte within 1.1x the bytes of optimum-executorch's all-4-bit 8da4w export (104.8 MB): with
# zero points every Linear at 4 bits takes 4.80 bits per weight (110.1 MB; an 8-bit output layer would not
# fit), symmetric ones leave room for 16% of Linear weights at 8 bits (114.5 MB). bench/quality_4bit.py.
DEFAULT_BITS_PER_WEIGHT = 5.08


class CompressSection(_Section):
    quantize: SchemeName = "fp32"
    # None: the scheme's default (int8 tables for the int8/int4 schemes, as peers do).
    quantize_embeddings: bool | None = None
    # The output projection under a8w4: true keeps it at 8 bits per channel, false puts it at 4 bits; unset,
    # mixed precision decides like for any Linear (and without mixed precision it stays at 8 bits).
    output_layer_int8: bool | None = None
    # Unstructured magnitude pruning stored sparse, on targets whose runtime has a sparse weight format
    # (`prune = true` in their TOML): the fraction of each weight tensor set to zero. 0 prunes nothing.
    sparsity: float = Field(default=0.0, ge=0.0, lt=1.0)
    # Torch-level compression for every target, applied in this order before quantization.
    prune: PruneSection | None = None
    lowrank: LowRankSection | None = None
    distill: DistillSection | None = None
    calibration: CalibrationSection = CalibrationSection()
    a8w4: A8W4Section = A8W4Section()


class GenerationSection(_Section):
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.9, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    max_new_tokens: int = Field(default=256, ge=1)
    # None: the model's own stop strings (its end-of-turn and end-of-text tokens).
    stop_strings: list[str] | None = None


class EvalSection(_Section):
    text: str = "builtin:shakespeare"
    windows: int = Field(default=4, ge=1, le=64)
    window_tokens: int = Field(default=256, ge=16)
    stride: int | None = Field(default=None, ge=1)  # sliding windows: None = window_tokens (no overlap)
    decode_steps: int = Field(default=32, ge=1, le=512)
    # Compression-cost gates: reported always, enforced only when set (DESIGN §11).
    max_perplexity_increase: float | None = Field(default=None, gt=0.0)
    min_top1_agreement: float | None = Field(default=None, ge=0.0, le=1.0)
    min_greedy_match: float | None = Field(default=None, ge=0.0, le=1.0)
    min_cosine_similarity: float | None = Field(default=None, ge=-1.0, le=1.0)
    # Task accuracy, original vs artifact (paths relative to the recipe; formats in builder/validate/tasks.py).
    multiple_choice: str | None = None  # JSONL: question, choices, answer (text generation)
    classification: str | None = None  # JSONL: text, label (embeddings)


class TargetEntry(_Section):
    name: str
    quantize: SchemeName | None = None
    quantize_embeddings: bool | None = None
    sparsity: float | None = Field(default=None, ge=0.0, lt=1.0)


class Recipe(_Section):
    package: PackageSection
    model: ModelSection
    compress: CompressSection = CompressSection()
    generation: GenerationSection = GenerationSection()
    eval: EvalSection = EvalSection()
    targets: list[TargetEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _tasks_fit_the_model(self) -> Recipe:
        decoder = self.model.task == "text-generation"
        if self.eval.multiple_choice and not decoder:
            raise ValueError(
                "eval.multiple_choice scores text-generation models; for embeddings use eval.classification"
            )
        if self.eval.classification and decoder:
            raise ValueError(
                "eval.classification scores embedding models; for text generation use eval.multiple_choice"
            )
        return self

    @model_validator(mode="after")
    def _fits_context(self) -> Recipe:
        if self.model.task != "text-generation":
            return self
        context = self.model.max_context
        if self.eval.stride is not None and self.eval.stride > self.eval.window_tokens:
            raise ValueError(f"eval.stride ({self.eval.stride}) must not exceed eval.window_tokens "
                             f"({self.eval.window_tokens})")  # fmt: skip
        if self.eval.window_tokens >= context:
            raise ValueError(f"eval.window_tokens ({self.eval.window_tokens}) must be smaller than "
                             f"model.max_context ({context})")  # fmt: skip
        if self.generation.max_new_tokens >= context:
            if "max_new_tokens" in self.generation.model_fields_set:
                raise ValueError(f"generation.max_new_tokens ({self.generation.max_new_tokens}) must be smaller "
                                 f"than model.max_context ({context}), which also holds the prompt")  # fmt: skip
            # The default only: a short context gets a proportionally short reply.
            self.generation.max_new_tokens = context // 2
        return self


class ResolvedTarget(BaseModel):
    """A recipe target joined with its catalogue entry and the scheme it will actually use."""

    target: Target
    scheme: SchemeName
    quantize_embeddings: bool | None
    sparsity: float = 0.0


class LoadedRecipe(BaseModel):
    recipe: Recipe
    path: Path
    targets: list[ResolvedTarget]

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def _key(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def _describe(error: dict[str, Any]) -> str:
    key = _key(error["loc"])
    generic = _key(tuple(x for x in error["loc"] if not isinstance(x, int)))
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'. Fix: remove it or check its spelling against the README's recipe reference"
    if error["type"] == "missing":
        return f"missing key '{key}'. Fix: add it (see examples/smolchat.toml)"
    value = error.get("input")
    msg = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return f"{msg}. Fix: change one of the two values"
    if error["type"] == "literal_error":
        fix = f"use one of {msg.split('Input should be ', 1)[-1]}"
    else:
        fix = _FIX_HINTS.get(generic, "see examples/smolchat.toml for a valid recipe")
    return f"'{key}' = {value!r} is invalid ({msg}). Fix: {fix}"


def read_recipe_data(path: Path) -> dict[str, Any]:
    """The recipe file's TOML as data, before validation."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: recipe file not found. Fix: pass the path of a recipe TOML file")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: not valid TOML ({exc}). Fix: correct the syntax at that line") from None


def set_value(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set dotted `key` (e.g. `compress.prune.sparsity`) in recipe data; `where` names the setting in errors."""
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserInputError(f"{where}: {part!r} is not a table in the recipe. Fix: name a key inside one")
        node = child
    node[leaf] = value


def is_recipe_key(key: str) -> bool:
    """Whether dotted `key` names a field of the recipe schema (a table or a value inside one, not inside
    the [[targets]] list), so a misspelt key is refused before anything is built."""
    section: Any = Recipe
    for part in key.split("."):
        if not (isinstance(section, type) and issubclass(section, BaseModel)) or part not in section.model_fields:
            return False
        annotation = section.model_fields[part].annotation
        # `PruneSection | None` descends into PruneSection; `list[TargetEntry]` has no dotted keys.
        options = get_args(annotation) if get_origin(annotation) not in (list, dict) else ()
        section = next((a for a in (annotation, *options) if isinstance(a, type) and issubclass(a, BaseModel)),
                       annotation)  # fmt: skip
    return True


def recipe_from_data(data: dict[str, Any], path: Path, only_targets: list[str] | None = None) -> LoadedRecipe:
    """Validate and resolve recipe data read from `path` (which names it in errors and anchors relative paths)."""
    path = Path(path)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(e) for e in exc.errors()]
        raise UserInputError(f"{path}: " + "; ".join(problems)) from None
    return LoadedRecipe(recipe=recipe, path=path.resolve(), targets=_resolve_targets(recipe, path, only_targets))


def load_recipe(path: Path, only_targets: list[str] | None = None) -> LoadedRecipe:
    """Read, validate and resolve a recipe; every problem is a UserInputError naming file and key."""
    return recipe_from_data(read_recipe_data(path), path, only_targets)


def _reason(target: Target, scheme: str) -> str:
    return f" ({target.refused[scheme]})" if scheme in target.refused else ""


def _resolve_targets(recipe: Recipe, path: Path, only: list[str] | None) -> list[ResolvedTarget]:
    known = catalogue()
    resolved = []
    for i, entry in enumerate(recipe.targets):
        key = f"targets[{i}].name"
        if entry.name not in known:
            raise UserInputError(
                f"{path}: '{key}' = {entry.name!r} is not a known target. "
                f"Fix: use one of {', '.join(sorted(known))} (`slmpack targets` lists them)"
            )
        target = known[entry.name]
        scheme = entry.quantize or recipe.compress.quantize
        if scheme not in target.schemes:
            where = f"targets[{i}].quantize" if entry.quantize else "compress.quantize"
            raise UserInputError(
                f"{path}: '{where}' = {scheme!r} ({SCHEMES[scheme].description}) is not supported by target "
                f"{target.name!r}{_reason(target, scheme)}. Fix: use one of {', '.join(target.schemes)}"
            )
        if recipe.model.task not in target.tasks:
            raise UserInputError(
                f"{path}: target {target.name!r} cannot run task {recipe.model.task!r}. "
                f"Fix: use a target that supports it ({', '.join(target.tasks)})"
            )
        sparsity = recipe.compress.sparsity if entry.sparsity is None else entry.sparsity
        if sparsity and not target.prune:
            where = f"targets[{i}].sparsity" if entry.sparsity is not None else "compress.sparsity"
            pruning = [t.name for t in known.values() if t.prune]
            raise UserInputError(
                f"{path}: '{where}' = {sparsity} asks for pruning, which target {target.name!r} does not store "
                f"(its runtime has no sparse weight format here). Fix: set '{where}' = 0 for it, or use a target "
                f"that prunes ({', '.join(pruning)})"
            )
        if recipe.compress.lowrank and target.backend == "litert" and recipe.model.task == "text-generation":
            raise UserInputError(
                f"{path}: 'compress.lowrank' factorizes Linears into pairs that no Hugging Face config describes, "
                f"and target {target.name!r} exports decoders from a saved Hugging Face folder. Fix: remove "
                "compress.lowrank, or build this target from a separate recipe (structured pruning is fine)"
            )
        emb = entry.quantize_embeddings
        resolved.append(
            ResolvedTarget(
                target=target,
                scheme=scheme,
                quantize_embeddings=recipe.compress.quantize_embeddings if emb is None else emb,
                sparsity=sparsity,
            )
        )
    names = [r.target.name for r in resolved]
    if len(set(names)) != len(names):
        raise UserInputError(f"{path}: a target is listed twice in [[targets]]. Fix: list each target once")
    if only:
        missing = [n for n in only if n not in names]
        if missing:
            raise UserInputError(
                f"{path}: --target {missing[0]!r} is not among the recipe's targets. Fix: use one of {', '.join(names)}"
            )
        resolved = [r for r in resolved if r.target.name in only]
    return resolved
