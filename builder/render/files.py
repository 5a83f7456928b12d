"""File placement shared by the platform renderers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def link_or_copy(src: Path | str, dest: Path | str) -> None:
    """Model files are large: a hard link costs no space where the file system allows one."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)
