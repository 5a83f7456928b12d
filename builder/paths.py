"""Where slmpack finds its package data and keeps its cache."""

from __future__ import annotations

import os
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
