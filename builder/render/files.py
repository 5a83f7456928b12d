"""What both platform renderers place beside the generated code: the model, the tokenizer files the
wrapper reads, and the runtime config describing them."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from builder.checksums import sha256_of
from builder.errors import UserInputError
from builder.render.tokenizer_settings import wordpiece_settings


def link_or_copy(src: Path | str, dest: Path | str) -> None:
    """Model files are large: a hard link costs no space where the file system allows one."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def place_model(bundle: Path, artifact: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Put the artifact in `folder` as `model<suffix>` once it is the file (or `.mlpackage` folder) the
    manifest names; returns its entry (name, sha256, bytes) for the wrapper's file list."""
    source = bundle / artifact["path"]
    if not source.exists() or sha256_of(source) != artifact["sha256"]:
        raise UserInputError(
            f"{source} does not match its sha256 in {bundle / 'manifest.json'}. Fix: rebuild the bundle"
        )
    name = "model" + source.suffix
    if source.is_dir():
        shutil.copytree(source, folder / name, copy_function=link_or_copy)
    else:
        link_or_copy(source, folder / name)
    return {"name": name, "sha256": artifact["sha256"], "bytes": artifact["bytes"]}


def place_tokenizer(bundle: Path, folder: Path, decoder: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A decoder's tokenizer.json, or an encoder's WordPiece vocabulary as vocab.txt with the settings the
    wrappers' own WordPiece tokenizers take. Returns the file's entry and those settings (None for decoders)."""
    tokenizer_json = bundle / "tokenizer" / "tokenizer.json"
    if decoder:
        link_or_copy(tokenizer_json, folder / "tokenizer.json")
        path, settings = folder / "tokenizer.json", None
    else:
        settings = wordpiece_settings(tokenizer_json)
        path = folder / "vocab.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{t}\n" for t in settings["vocab"]), encoding="utf-8")
    return {"name": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size}, settings


def runtime_config(
    data: dict[str, Any], schema: str, class_name: str, runtime: str, files: tuple[str, list[dict[str, Any]]],
    tokenizer: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """slmpack-config.json, shipped beside the model: what the typed class bakes in, for other tools (and,
    on iOS, the tokenizer's pipeline). `files` is the key and list of the wrapper's files."""
    chat = data["model"].get("chat")
    config: dict[str, Any] = {
        "schema": schema,
        "class_name": class_name,
        "task": data["model"]["task"],
        "max_context": data["model"]["max_context"],
        "eos_ids": data["model"]["eos_ids"],
        **({"tokenizer": tokenizer} if tokenizer is not None else {}),
        "chat": {k: v for k, v in chat.items() if k != "samples"} if chat else None,  # samples are test data
        "generation": data["generation"],
        files[0]: files[1],
        "runtime": runtime,
    }
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"
