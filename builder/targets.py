"""The target catalogue: one TOML file per target in targets/ (platform, backend, schemes, runtime pin)."""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from builder.paths import targets_dir


class RuntimeLibrary(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    library: str
    version: str


class RuntimePin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: str
    exporter_version: str
    library: str
    version: str
    kernels: tuple[str, ...] = ()
    # Where embedding models run on another library of the same runtime (LiteRT: LiteRT-LM for decoders,
    # the LiteRT interpreter for encoders).
    encoder: RuntimeLibrary | None = None

    def for_task(self, task: str) -> RuntimeLibrary:
        """The on-device library (and its version) that runs a model of this task."""
        if task == "embeddings" and self.encoder is not None:
            return self.encoder
        return RuntimeLibrary(library=self.library, version=self.version)


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    platform: Literal["android", "ios"]
    backend: Literal["executorch", "coreml", "litert"]
    delegate: str | None = None
    schemes: tuple[str, ...]
    tasks: tuple[str, ...]
    min_os: str
    abis: tuple[str, ...]
    templates: str
    runtime: RuntimePin
    # Whether the target stores pruned (sparse) weights, so a recipe's compress.sparsity applies to it.
    prune: bool = False
    # Why a scheme is refused on this target, shown in the error (scheme -> reason).
    refused: dict[str, str] = {}


def _load(path: Path) -> Target:
    with path.open("rb") as fh:
        return Target.model_validate(tomllib.load(fh))


@functools.cache
def catalogue() -> dict[str, Target]:
    targets = (_load(p) for p in sorted(targets_dir().glob("*.toml")))
    return {t.name: t for t in targets}
