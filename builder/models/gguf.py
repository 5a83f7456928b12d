"""A GGUF file: dequantized once through transformers, then cached as a plain HF folder."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console

from builder.errors import UserInputError
from builder.models.base import Model, Task
from builder.models.hf import load_hf_folder
from builder.paths import cache_dir, published_folder


def describe_gguf(path: Path) -> dict[str, Any]:
    """Name, licence and weight format (e.g. 'GGUF Q4_1') from the file's own metadata."""
    from gguf import GGMLQuantizationType, GGUFReader

    reader = GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    # The most common type among 2-D tensors is the format of the weights (norms stay f32).
    types = Counter(GGMLQuantizationType(t.tensor_type).name for t in reader.tensors if len(t.shape) > 1)
    main = types.most_common(1)[0][0] if types else "unknown"
    return {"name": field("general.name"), "license": field("general.license"), "quantization": f"GGUF {main}"}


def _convert(path: Path, out: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _require_file(path: Path, source: str) -> None:
    if not path.is_file():
        raise UserInputError(f"model source {source!r}: file {path} not found. Fix: point gguf: at a .gguf file")


def gguf_config(path: Path, source: str) -> Any:
    """The Hugging Face config transformers reads from the file's metadata (no tensors are read)."""
    from transformers import AutoConfig

    _require_file(path, source)
    return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)


def load_gguf(path: Path, task: Task, source: str, **details: Any) -> Model:
    _require_file(path, source)
    if task != "text-generation":
        raise UserInputError(
            f'model source {source!r}: GGUF models are decoders. Fix: set model.task = "text-generation"'
        )
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:24]
    folder = cache_dir() / "converted" / key
    if not (folder / "config.json").is_file():
        status = Console(stderr=True).status(f"Converting {path.name} to fp32 safetensors (once; cached)")
        with status, published_folder(folder) as staging:
            _convert(path, staging)
    info = describe_gguf(path)
    return load_hf_folder(
        folder,
        task,
        source,
        license=details.get("license") or info["license"],
        attribution=details.get("attribution") or f"{info['name'] or path.stem} (from {path.name})",
        source_quantization=info["quantization"],
        license_text=details.get("license_text"),
    )
