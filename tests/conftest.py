"""Shared fixtures: an isolated cache per session and recipe writers."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from tests.ios.toolchain import SwiftToolchain
from tests.ios.toolchain import find_toolchain as find_swift_toolchain
from tests.ios.toolchain import missing_reason as missing_swift_reason

if TYPE_CHECKING:
    from builder.models.base import Model

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


def build_cli(recipe: Path, out: Path, *extra: str) -> tuple[int, str]:
    from builder.cli import app

    result = CliRunner().invoke(app, ["build", str(recipe), "--out", str(out), *extra])
    return result.exit_code, result.output


TWO_TARGETS = '[[targets]]\nname = "android-xnnpack"\n\n[[targets]]\nname = "ios-xnnpack"\nquantize = "fp32"\n'


@pytest.fixture(scope="session")
def chat_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat model built for Android (a8w4) and iOS (fp32): shared by the tests that read a bundle."""
    root = tmp_path_factory.mktemp("chat")
    recipe = root / "recipe.toml"
    recipe.write_text(recipe_text(targets=TWO_TARGETS))
    code, output = build_cli(recipe, root / "dist")
    assert code == 0, output
    return root / "dist" / "tinychat-0.1.0"


@pytest.fixture(scope="session")
def embedding_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedding model built for Android (a8w8) with a cosine gate."""
    root = tmp_path_factory.mktemp("embed")
    recipe = root / "recipe.toml"
    recipe.write_text(recipe_text(source="builtin:tiny-bert", task="embeddings", quantize="a8w8", name="tinysearch",
                                  extra="min_cosine_similarity = 0.9\n"))  # fmt: skip
    code, output = build_cli(recipe, root / "dist")
    assert code == 0, output
    return root / "dist" / "tinysearch-0.1.0"


@pytest.fixture(scope="session")
def swift_toolchain() -> SwiftToolchain:
    """The Swift 6 chroot from scripts/install-swift-toolchain.sh; tests that need it skip, with the reason, without."""
    found = find_swift_toolchain()
    if found is None:
        pytest.skip(missing_swift_reason())
    return found


# Tiny models and the evaluation text, loaded once per test module (backends copy a model before changing it).
@pytest.fixture(scope="module")
def text() -> str:
    from builder.validate.data import load_eval_text

    return load_eval_text("builtin:shakespeare", Path("."))


@pytest.fixture(scope="module")
def tiny_bert() -> Model:
    from builder.models import load_model

    return load_model("builtin:tiny-bert", "embeddings", Path("."))


@pytest.fixture(scope="module")
def tiny_llama() -> Model:
    from builder.models import load_model

    return load_model("builtin:tiny-llama", "text-generation", Path("."))
