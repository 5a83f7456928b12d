"""The Jinja2 environment every generated file is rendered with, and the tree renderer.

Template folders mirror the folders they produce (copier style). In a path, `__package__` becomes the
Kotlin package path, `__Module__` the Swift module and `__Class__` the typed class name. A file ending in
`.j2` is rendered, anything else is copied as it is. Tags at the end of a name (before any `.j2`) limit
a file to one kind of model (`.decoder`, `.encoder`) or runtime flavour (`.coreml`, `.executorch`,
`.litert`); the tags are dropped from the name written.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import jinja2

from builder.errors import UserInputError
from builder.paths import templates_dir
from builder.render.escape import comment_text, kotlin_string, shell_quote, swift_string, xml_text


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
def environment(root: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root or templates_dir())),
        undefined=jinja2.StrictUndefined,  # a template asking for a missing field is a bug, not a blank
        keep_trailing_newline=True,
        trim_blocks=True,  # a line holding only a {% tag %} leaves no blank line behind
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(
        human_bytes=_human_bytes,
        num=_num,
        tojson_pretty=lambda v: json.dumps(v, indent=2, ensure_ascii=False),
        comment=comment_text,
        kt=kotlin_string,
        swift=swift_string,
        sh=shell_quote,
        xml=xml_text,
    )
    return env


def check_generation_limits(data: dict[str, Any]) -> None:
    """A decoder's reply must fit its context; the manifest may come from anywhere, so this is re-checked."""
    generation, context = data["generation"], data["model"]["max_context"]
    if data["model"]["task"] == "text-generation" and not 0 < generation["max_new_tokens"] < context:
        raise UserInputError(
            f"manifest generation.max_new_tokens {generation['max_new_tokens']} must be within 1 and "
            f"model.max_context {context}. Fix: lower generation.max_new_tokens in the recipe"
        )


def render(template: str, context: dict[str, Any], root: Path | None = None) -> str:
    return environment(root).get_template(template).render(**context)


# Name tags: `X.swift.decoder.coreml.j2` is written as `X.swift`, only when both tags are active.
TAGS = frozenset({"decoder", "encoder", "coreml", "executorch", "litert"})


def _output_name(name: str, active: Collection[str]) -> str | None:
    """The file name a template produces, or None when one of its tags is not active."""
    parts = name.removesuffix(".j2").split(".")
    while len(parts) > 1 and parts[-1] in TAGS:
        if parts.pop() not in active:
            return None
    return ".".join(parts)


def render_tree(
    source: Path,
    dest: Path,
    context: dict[str, Any],
    tags: Collection[str],
    names: dict[str, str],
    root: Path | None = None,
    skip: str | None = None,
) -> list[Path]:
    """Render every template under `source` into `dest`; `tags` are the active name tags (the kind of
    model, the runtime flavour), `names` maps path placeholders to values and `skip` names a top-level
    folder rendered separately."""
    root = root or templates_dir()
    written = []
    for template in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = template.relative_to(source)
        if skip and relative.parts[0] == skip:
            continue
        name = _output_name(relative.name, tags)
        if name is None:
            continue
        parts = [*relative.parent.parts, name]
        for placeholder, value in names.items():
            parts = [part.replace(placeholder, value) for part in parts]
        out = dest.joinpath(*parts)
        out.parent.mkdir(parents=True, exist_ok=True)
        if template.name.endswith(".j2"):
            out.write_text(render(template.relative_to(root).as_posix(), context, root), encoding="utf-8")
        else:
            shutil.copyfile(template, out)
        if out.suffix == ".sh":
            out.chmod(0o755)
        written.append(out)
    return written
