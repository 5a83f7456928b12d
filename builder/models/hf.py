"""A local Hugging Face model folder (also the cached form of every other source)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from builder.errors import UserInputError
from builder.models.base import Model, ModelSpec, Task
from builder.paths import cache_dir, published_file, published_folder

_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# Markers of end-of-turn in common chat templates; stop strings when the tokenizer has them.
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def weights_digest(folder: Path) -> str:
    """sha256 over the weight files, remembered by (path, size, mtime) so big models hash once."""
    files = sorted(p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern))
    stamp = json.dumps([(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    memo = cache_dir() / "digests" / (hashlib.sha256(stamp.encode()).hexdigest() + ".txt")
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    # Builds in parallel (slmpack matrix) read the memo while another writes it: never let them see half.
    published_file(memo, digest.hexdigest())
    return digest.hexdigest()


def _readme_license(folder: Path) -> str | None:
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    match = re.search(r"^license:\s*(\S+)\s*$", readme.read_text(encoding="utf-8", errors="replace"), re.M)
    return match.group(1) if match else None


def _pooling(folder: Path) -> tuple[str, bool]:
    """sentence-transformers pooling and normalization; mean + normalize when the folder says nothing."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = json.loads(modules_file.read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    pooling = "mean"
    for m in modules:
        if m.get("type", "").endswith("Pooling"):
            config = json.loads((folder / m.get("path", "") / "config.json").read_text())
            pooling = "cls" if config.get("pooling_mode_cls_token") else "mean"
    return pooling, normalize


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list | tuple) else [int(value)]


def spec_from(config: Any, tokenizer: Any, task: Task, folder: Path) -> ModelSpec:
    text = config.get_text_config(decoder=True) if task == "text-generation" else config
    eos = _ids(getattr(text, "eos_token_id", None))
    generation_file = folder / "generation_config.json"
    if generation_file.is_file():
        eos += _ids(json.loads(generation_file.read_text()).get("eos_token_id"))
    if tokenizer.eos_token_id is not None:
        eos.append(tokenizer.eos_token_id)
    eos_ids = tuple(dict.fromkeys(eos))
    template = getattr(tokenizer, "chat_template", None)
    stops = [tokenizer.convert_ids_to_tokens(i) for i in eos_ids] if task == "text-generation" else []
    vocab = tokenizer.get_vocab()
    stops += [m for m in _END_OF_TURN if m in vocab and template and m in template]
    pooling, normalize = _pooling(folder) if task == "embeddings" else (None, False)
    heads = text.num_attention_heads
    return ModelSpec(
        architecture=(config.architectures or [type(config).__name__])[0],
        model_type=config.model_type,
        task=task,
        vocab_size=text.vocab_size,
        num_layers=text.num_hidden_layers,
        num_heads=heads,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        hidden_size=text.hidden_size,
        max_position_embeddings=getattr(text, "max_position_embeddings", 2048),
        bos_id=getattr(text, "bos_token_id", None) if task == "text-generation" else tokenizer.cls_token_id,
        eos_ids=eos_ids,
        pad_id=tokenizer.pad_token_id,
        chat_template=template if task == "text-generation" else None,
        stop_strings=tuple(dict.fromkeys(s for s in stops if s)),
        pooling=pooling,  # type: ignore[arg-type]
        normalize=normalize,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
    )


def _is_decoder(config: Any) -> bool:
    return any(a.endswith("ForCausalLM") for a in (config.architectures or [])) or config.model_type in {
        "llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "mistral", "smollm3",
    }  # fmt: skip


def read_config(folder: Path, source: str) -> tuple[Any, Task]:
    """The folder's config and the task it does (a decoder generates text, an encoder embeds)."""
    if not (folder / "config.json").is_file():
        raise UserInputError(
            f"model source {source!r}: {folder} is not a Hugging Face model folder (no config.json). "
            "Fix: point hf: at a folder saved with save_pretrained"
        )
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    return config, "text-generation" if _is_decoder(config) else "embeddings"


def load_hf_folder(folder: Path, task: Task, source: str, **details: Any) -> Model:
    config, kind = read_config(folder, source)
    decoder = kind == "text-generation"
    if task == "text-generation" and not decoder:
        raise UserInputError(
            f"model source {source!r} is an encoder ({config.model_type}) and cannot do text-generation. "
            'Fix: set model.task = "embeddings"'
        )
    if task == "embeddings" and decoder:
        raise UserInputError(
            f"model source {source!r} is a decoder ({config.model_type}); embeddings need an encoder. "
            'Fix: set model.task = "text-generation" or use an encoder such as builtin:minilm-l6'
        )
    loader = AutoModelForCausalLM if task == "text-generation" else AutoModel
    module = loader.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False) or not (folder / "tokenizer.json").is_file():
        raise UserInputError(
            f"model source {source!r} has no tokenizer.json (fast tokenizer); on-device runtimes need it. "
            "Fix: save the tokenizer with a recent transformers (tokenizer.save_pretrained)"
        )
    return Model(
        source=source,
        module=module,
        tokenizer=tokenizer,
        tokenizer_dir=_tokenizer_dir(folder),
        spec=spec_from(config, tokenizer, task, folder),
        license=details.get("license") or _readme_license(folder),
        license_text=details.get("license_text"),
        attribution=details.get("attribution") or f"model folder {folder.name}",
        source_quantization=details.get("source_quantization"),
        weights_digest=weights_digest(folder),
    )


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                    "chat_template.jinja")  # fmt: skip


def _tokenizer_dir(folder: Path) -> Path:
    """A folder with only the tokenizer's files, which is what bundles ship."""
    stamp = hashlib.sha256(
        b"".join((folder / n).read_bytes() for n in _TOKENIZER_FILES if (folder / n).is_file())
    ).hexdigest()[:24]
    out = cache_dir() / "tokenizers" / stamp
    if not out.is_dir():
        with published_folder(out) as staging:
            for name in _TOKENIZER_FILES:
                if (folder / name).is_file():
                    (staging / name).write_bytes((folder / name).read_bytes())
    return out
