"""Content-keyed cache of lowered artifacts, so an unchanged model is never re-exported."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.backends.base import Artifact
from builder.paths import cache_dir, published_folder
from builder.tools import tool_versions

_PACKAGE = Path(__file__).resolve().parent
# The code that decides what an artifact contains: editing it must invalidate cached artifacts.
_EXPORT_CODE = (
    "tasks/*.py",
    "backends/base.py",
    "backends/executorch.py",
    "backends/executorch_delegates.py",
    "backends/coreml*.py",
    "backends/litert.py",
    "backends/litert_export.py",
    "backends/litert_metadata.py",
    "backends/litert_quantization.py",
    "backends/weights.py",
)


@functools.cache
def _code_digest() -> str:
    digest = hashlib.sha256()
    for pattern in _EXPORT_CODE:
        for path in sorted(_PACKAGE.glob(pattern)):
            digest.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def artifact_key(weights_digest: str, target: str, options: dict[str, Any]) -> str:
    payload = {"weights": weights_digest, "target": target, "options": options,
               "tools": tool_versions(), "code": _code_digest()}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def cached_artifact(key: str, produce: Callable[[Path], Artifact]) -> tuple[Artifact, bool]:
    """Return the cached artifact for `key`, or produce it into a temp folder and publish it atomically.

    Returns (artifact, hit).
    """
    root = cache_dir() / "artifacts"
    final = root / key
    record = final / "artifact.json"
    if record.is_file():
        return Artifact.from_json(json.loads(record.read_text()), final), True
    with published_folder(final) as staging:
        artifact = produce(staging)
        (staging / "artifact.json").write_text(json.dumps(artifact.to_json(), indent=2))
    return Artifact.from_json(json.loads(record.read_text()), final), False
