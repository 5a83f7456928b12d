"""Snapshot checks of rendered platform folders: every text file compared with tests/fixtures/snapshots/<name>.

Rerun with SLMPACK_UPDATE_SNAPSHOTS=1 to rewrite a snapshot after an intended template change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

SNAPSHOTS = Path(__file__).parent / "fixtures" / "snapshots"


def rendered_text(root: Path, copies: str) -> dict[str, str]:
    """Every file under `root` by relative path; under a `copies` folder (the model and tokenizer the
    renderer copied, checked by checksum elsewhere) only slmpack-config.json."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if f"/{copies}/" in relative and not relative.endswith("slmpack-config.json"):
            continue
        files[relative] = path.read_text(encoding="utf-8")
    return files


def assert_matches_snapshot(root: Path, name: str, copies: str) -> None:
    rendered = rendered_text(root, copies)
    snapshot = SNAPSHOTS / name
    if os.environ.get("SLMPACK_UPDATE_SNAPSHOTS"):
        shutil.rmtree(snapshot, ignore_errors=True)
        for relative, text in rendered.items():
            (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
            (snapshot / relative).write_text(text, encoding="utf-8")
    expected = rendered_text(snapshot, copies)
    assert sorted(rendered) == sorted(expected), "files differ; if intended, rerun with SLMPACK_UPDATE_SNAPSHOTS=1"
    for relative, text in rendered.items():
        assert text == expected[relative], f"{relative} differs from its snapshot; if intended, rerun as above"
