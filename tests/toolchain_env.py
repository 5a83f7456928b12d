"""Where the check toolchains live and how their install scripts describe them (`toolchain.env`)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def toolchain_dir(name: str) -> Path:
    """``$SLMPACK_TOOLCHAINS/<name>``, or ``<repo>/.toolchains/<name>`` when the variable is unset."""
    base = os.environ.get("SLMPACK_TOOLCHAINS")
    return (Path(base).resolve() if base else REPO_ROOT / ".toolchains") / name


def read_env(path: Path) -> dict[str, str]:
    """The KEY=value lines of a toolchain.env; comments and blank lines are skipped."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values
