"""The Jinja2 environment every generated file is rendered with."""

from __future__ import annotations

import functools
import json
from typing import Any

import jinja2

from builder.paths import templates_dir


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GB"


def _num(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,  # a template asking for a missing field is a bug, not a blank
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(human_bytes=_human_bytes, num=_num, tojson_pretty=lambda v: json.dumps(v, indent=2))
    return env


def render(template: str, context: dict[str, Any]) -> str:
    return environment().get_template(template).render(**context)
