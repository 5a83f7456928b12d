"""Platform packages of a bundle, rendered from its manifest alone (DESIGN §1, §11).

`slmpack build` renders them into the staging bundle; `slmpack render` re-renders an existing bundle
after a template change, in seconds and without a re-export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder.bundle import atomic_directory
from builder.errors import UserInputError
from builder.render.android import render_android


def rerender(bundle: Path, templates: Path | None = None) -> list[dict[str, Any]]:
    """Replace `bundle/android/` atomically with a fresh rendering; returns the modules written."""
    manifest = bundle / "manifest.json"
    if not manifest.is_file():
        raise UserInputError(f"{bundle} has no manifest.json. Fix: pass a bundle folder written by slmpack build")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if not any(a["platform"] == "android" for a in data["artifacts"]):
        return []
    with atomic_directory(bundle / "android") as staging:
        return render_android(data, bundle, staging, templates)
