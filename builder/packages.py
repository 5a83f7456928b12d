"""Platform packages of a bundle, rendered from its manifest alone (DESIGN §1, §11).

`slmpack build` renders them into the staging bundle; `slmpack render` re-renders an existing bundle
after a template change, in seconds and without a re-export.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from builder.bundle import atomic_directory
from builder.errors import UserInputError
from builder.render.android import render_android
from builder.render.ios import render_ios
from builder.report import render_report

RENDERERS = {"android": render_android, "ios": render_ios}


def render_packages(data: dict[str, Any], bundle: Path, templates: Path | None = None) -> list[Path]:
    """Rewrite each platform's folder (`android/`, `ios/`) of `bundle`. All are rendered before any is
    swapped into place, so a failure leaves every earlier rendering whole. Returns the package folders."""
    written: list[Path] = []
    with ExitStack() as swaps:
        for platform, render in RENDERERS.items():
            if any(a["platform"] == platform for a in data["artifacts"]):
                staging = swaps.enter_context(atomic_directory(bundle / platform))
                written += [bundle / platform / folder.name for folder in render(data, bundle, staging, templates)]
    return written


def read_manifest(bundle: Path) -> dict[str, Any]:
    manifest = bundle / "manifest.json"
    if not manifest.is_file():
        raise UserInputError(f"{bundle} has no manifest.json. Fix: pass a bundle folder written by slmpack build")
    return json.loads(manifest.read_text(encoding="utf-8"))


def rerender(bundle: Path, templates: Path | None = None, data: dict[str, Any] | None = None) -> list[Path]:
    """Replace the bundle's platform packages and report.html with a fresh rendering from its manifest, or
    from `data`, which then replaces the manifest (only once the report renders from it)."""
    replace_manifest = data is not None
    data = data if data is not None else read_manifest(bundle)
    report = render_report(data, templates)
    if replace_manifest:
        partial_manifest = bundle / ".manifest.json.partial"
        partial_manifest.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        partial_manifest.replace(bundle / "manifest.json")
    written = render_packages(data, bundle, templates)
    # Written beside and renamed into place, so a reader never sees half a page.
    partial = bundle / ".report.html.partial"
    partial.write_text(report, encoding="utf-8")
    partial.replace(bundle / "report.html")
    return written
