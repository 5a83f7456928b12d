"""Versions of the tools that shape an artifact: recorded in the manifest and in cache keys."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

import builder

TRACKED = (
    "torch", "executorch", "torchao", "coremltools", "transformers", "tokenizers", "numpy",
    "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "litert-lm-api", "tflite-support",
)  # fmt: skip


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def tool_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"slmpack": builder.__version__, "python": platform.python_version()}
    versions.update({name: package_version(name) for name in TRACKED})
    return versions
