"""Where slmpack finds its package data and keeps its cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent


def _data_dir(name: str) -> Path:
    # A wheel carries templates/ and targets/ under builder/_data; an editable install reads the repo.
    for candidate in (_PACKAGE_DIR / "_data" / name, _REPO_ROOT / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"slmpack package data '{name}' is missing; reinstall slmpack")


def templates_dir() -> Path:
    return _data_dir("templates")


def targets_dir() -> Path:
    return _data_dir("targets")


def cache_dir() -> Path:
    """User cache for converted weights, trained test tokenizers and exported artifacts."""
    root = os.environ.get("SLMPACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "slmpack"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def published_folder(final: Path) -> Iterator[Path]:
    """A fresh folder beside `final` to write into; when the block succeeds it becomes `final` in one rename
    (unless another process published `final` first: theirs stays), and when it fails it is removed, so
    readers never see half a folder."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield staging
        try:
            staging.rename(final)
        except OSError:
            # Another process published a non-empty `final` since we began: theirs stays.
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def published_file(final: Path, text: str) -> None:
    """Write `text` to a temp file beside `final` and rename it into place: readers see the old file or the
    whole new one, never half of it."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(staging, final)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
