"""Shared fixtures: an isolated cache per session and recipe writers."""

from __future__ import annotations

import os
import shutil
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


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, recipe: str) -> Path:
    """Builds a recipe once per test run, for the tests that only read the bundle: pytest-xdist workers share
    it. The first worker to take the lock builds it, with a cache of its own (`build_cache`); the others wait
    and read it. Returns the output folder."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's folder, above each worker's own
    root = shared / name
    with FileLock(shared / f"{name}.lock"):
        if not (root / "built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            (root / "recipe.toml").write_text(recipe)
            session_cache = os.environ["SLMPACK_CACHE"]
            os.environ["SLMPACK_CACHE"] = str(root / "cache")
            try:
                code, output = build_cli(root / "recipe.toml", root / "dist")
            finally:
                os.environ["SLMPACK_CACHE"] = session_cache
            assert code == 0, output
            (root / "built").touch()
    return root / "dist"


def build_cache(bundle: Path) -> Path:
    """The cache a `built_once` bundle was built with (its artifacts, weight plans, tiny models)."""
    return bundle.parents[1] / "cache"


@pytest.fixture(scope="session")
def chat_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chat model built for Android (a8w4) and iOS (fp32): shared by the tests that read a bundle."""
    return built_once(tmp_path_factory, "chat", recipe_text(targets=TWO_TARGETS)) / "tinychat-0.1.0"


@pytest.fixture(scope="session")
def embedding_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny embedding model built for Android (a8w8) with a cosine gate."""
    recipe = recipe_text(source="builtin:tiny-bert", task="embeddings", quantize="a8w8", name="tinysearch",
                         extra="min_cosine_similarity = 0.9\n")  # fmt: skip
    return built_once(tmp_path_factory, "embed", recipe) / "tinysearch-0.1.0"


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
