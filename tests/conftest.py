"""Shared fixtures: an isolated cache per session and recipe writers."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests never touch a hub; the cache lives in the session's temp folder unless the caller set one.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    if "SLMPACK_TEST_CACHE" in os.environ:
        os.environ["SLMPACK_CACHE"] = os.environ["SLMPACK_TEST_CACHE"]
    else:
        os.environ["SLMPACK_CACHE"] = str(tmp_path_factory.mktemp("slmpack-cache"))


RecipeWriter = Callable[..., Path]


def recipe_text(
    source: str = "builtin:tiny-llama",
    task: str = "text-generation",
    targets: str = '[[targets]]\nname = "android-xnnpack"\n',
    quantize: str = "a8w4",
    extra: str = "",
    name: str = "tinychat",
    max_context: int = 128,
) -> str:
    return (
        textwrap.dedent(
            f"""\
        [package]
        name = "{name}"
        version = "0.1.0"
        android_namespace = "com.example.tinychat"
        ios_module = "TinyChat"

        [model]
        source = "{source}"
        task = "{task}"
        max_context = {max_context}

        [compress]
        quantize = "{quantize}"

        [eval]
        windows = 2
        window_tokens = 64
        decode_steps = 8
        """
        )
        + extra
        + "\n"
        + targets
    )


@pytest.fixture
def write_recipe(tmp_path: Path) -> RecipeWriter:
    def write(text: str | None = None, filename: str = "recipe.toml", **kwargs: object) -> Path:
        path = tmp_path / filename
        path.write_text(text if text is not None else recipe_text(**kwargs))  # type: ignore[arg-type]
        return path

    return write
