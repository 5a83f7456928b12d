"""The bundle: manifest.json, artifacts, tokenizer, licences, README — published atomically."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.backends.base import Artifact
from builder.bench.host import BenchResult
from builder.chat_template import ChatFormat, sample_renders
from builder.checksums import sha256_of, size_of
from builder.models.base import Model
from builder.recipe import Recipe
from builder.render import render
from builder.render.android import render_android
from builder.render.ios import render_ios
from builder.report import render_report
from builder.targets import Target
from builder.tools import tool_versions
from builder.validate import ValidationResult, tokenizer_golden

SCHEMA = "slmpack.manifest/1"


@dataclass
class BuiltArtifact:
    target: Target
    artifact: Artifact
    result: ValidationResult
    benchmark: BenchResult | None
    benchmark_note: str | None = None  # why there is no benchmark


def _tokenizer_kind(model: Model) -> str:
    tokenizer_json = model.tokenizer_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        kind = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("model", {}).get("type")
        return {"BPE": "bpe", "WordPiece": "wordpiece", "Unigram": "unigram"}.get(kind, str(kind).lower())
    return "unknown"


def _memory_estimate(
    model: Model, recipe: Recipe, artifact: Artifact, bytes_: int, bench: BenchResult | None
) -> dict[str, Any]:
    spec = model.spec
    kv = 0
    if spec.task == "text-generation":
        head_dim = spec.attention_head_dim
        value_bytes = 2 if artifact.backend == "coreml" else 4  # Core ML keeps the cache in fp16 state tensors
        kv = 2 * spec.num_layers * recipe.model.max_context * spec.num_kv_heads * head_dim * value_bytes
    return {
        "weights_mb": round(bytes_ / 2**20, 2),
        "kv_cache_mb": round(kv / 2**20, 2),
        "max_context": recipe.model.max_context,
        "host_peak_rss_mb": round(bench.peak_rss_mb, 1) if bench else None,
    }


def _chat(model: Model, chat: ChatFormat | None) -> dict[str, Any] | None:
    if chat is None:
        return None
    return {**chat.to_json(), "samples": sample_renders(model.tokenizer, chat)}


def manifest(
    recipe: Recipe,
    model: Model,
    original_parameters: int,
    built: list[BuiltArtifact],
    chat: ChatFormat | None,
    compression: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`model` is the model the artifacts were lowered from (after pruning, factorization and distillation);
    `compression` records those steps and their cost (builder.compress.pipeline)."""
    spec = model.spec
    pkg = recipe.package
    stop_strings = recipe.generation.stop_strings
    artifacts = []
    for b in built:
        rel = Path("artifacts") / b.target.name / b.artifact.path.name
        size = size_of(b.artifact.path)
        artifacts.append(
            {
                "target": b.target.name,
                "platform": b.target.platform,
                "backend": b.artifact.backend,
                "delegate": b.artifact.delegate,
                "quantization": b.artifact.quantization,
                "quantize_embeddings": b.artifact.quantize_embeddings,
                "sparsity": b.artifact.sparsity,
                "path": rel.as_posix(),
                "bytes": size,
                "sha256": sha256_of(b.artifact.path),
                "signature": b.artifact.signature,
                "operators": b.artifact.operators,
                "weight_plan": b.artifact.weight_plan,
                "runtime_version": b.artifact.runtime_version,
                "runtime_library": b.target.runtime.for_task(spec.task).library,
                "runtime_kernels": list(b.target.runtime.kernels),
                "min_os": b.artifact.min_os or b.target.min_os,
                "abis": list(b.target.abis),
                "golden": b.result.golden,
                "validation": b.result.validation.to_json(),
                "benchmark": b.benchmark.to_json() if b.benchmark else None,
                "benchmark_note": b.benchmark_note,
                "memory_estimate": _memory_estimate(model, recipe, b.artifact, size, b.benchmark),
            }
        )
    return {
        "schema": SCHEMA,
        "package": {
            "name": pkg.name,
            "version": pkg.version,
            "android_namespace": pkg.android_namespace,
            "ios_module": pkg.ios_module,
            "class_name": pkg.type_name,
            "description": pkg.description,
        },
        "model": {
            "source": model.source,
            "architecture": spec.architecture,
            "model_type": spec.model_type,
            "parameters": original_parameters,
            "parameters_compressed": model.parameters,
            "task": spec.task,
            "max_context": recipe.model.max_context,
            "vocab_size": spec.vocab_size,
            "hidden_size": spec.hidden_size,
            "num_layers": spec.num_layers,
            "num_heads": spec.num_heads,
            "num_kv_heads": spec.num_kv_heads,
            "head_dim": spec.attention_head_dim,
            "bos_id": spec.bos_id,
            "eos_ids": list(spec.eos_ids),
            "pad_id": spec.pad_id,
            "chat_template": spec.chat_template,
            "chat": _chat(model, chat),
            "pooling": spec.pooling,
            "normalize": spec.normalize,
            "source_quantization": model.source_quantization,
            "compression": compression or {"steps": [], "calibration": None},
            "license": model.license,
            "attribution": model.attribution,
        },
        "generation": {
            "temperature": recipe.generation.temperature,
            "top_p": recipe.generation.top_p,
            "top_k": recipe.generation.top_k,
            "max_new_tokens": recipe.generation.max_new_tokens,
            "stop_strings": list(spec.stop_strings) if stop_strings is None else stop_strings,
        },
        "tokenizer": {
            "kind": _tokenizer_kind(model),
            "files": [f"tokenizer/{p.name}" for p in model.tokenizer_files],
            "golden": tokenizer_golden(model, min(recipe.model.max_context, spec.max_position_embeddings)),
        },
        "eval": {"text": recipe.eval.text},
        "tool_versions": tool_versions(),
        "artifacts": artifacts,
    }


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final`, on any failure it vanishes.

    An earlier good bundle at `final` survives every failure before the swap.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        retired.rmdir()
        final.rename(retired)
    staging.rename(final)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)


def _write_licenses(folder: Path, model: Model) -> None:
    folder.mkdir()
    lines = [
        f"Model: {model.source}",
        f"Licence: {model.license or 'unknown: check the model source before you ship it'}",
    ]
    if model.attribution:
        lines.append(f"Attribution: {model.attribution}")
    text = "\n".join(lines) + "\n"
    if model.license_text:
        text += "\n" + model.license_text.strip() + "\n"
    (folder / "MODEL_LICENSE.txt").write_text(text, encoding="utf-8")


def write_bundle(final: Path, data: dict[str, Any], model: Model, built: list[BuiltArtifact]) -> Path:
    with atomic_directory(final) as staging:
        for b in built:
            dest = staging / "artifacts" / b.target.name
            dest.mkdir(parents=True)
            src = b.artifact.path
            if src.is_dir():
                shutil.copytree(src, dest / src.name)
            else:
                shutil.copy2(src, dest / src.name)
        tokenizer = staging / "tokenizer"
        tokenizer.mkdir()
        for file in model.tokenizer_files:
            shutil.copy2(file, tokenizer / file.name)
        _write_licenses(staging / "LICENSES", model)
        (staging / "manifest.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (staging / "README.md").write_text(render("bundle/README.md.j2", data), encoding="utf-8")
        (staging / "report.html").write_text(render_report(data), encoding="utf-8")
        render_android(data, staging)
        render_ios(data, staging)
    return final
