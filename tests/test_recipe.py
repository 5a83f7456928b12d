"""Recipe parsing: good recipes resolve, bad ones give one clear message and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.cli import app
from builder.errors import UserInputError
from builder.recipe import load_recipe
from tests.conftest import RecipeWriter, recipe_text

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# Matrix files (*matrix.toml) are not recipes: tests/test_matrix.py checks them.
RECIPES = sorted(p for p in EXAMPLES.glob("*.toml") if not p.stem.endswith("matrix"))


@pytest.mark.parametrize("example", RECIPES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    loaded = load_recipe(example)
    assert loaded.targets


def test_defaults_and_per_target_override(write_recipe: RecipeWriter) -> None:
    targets = '[[targets]]\nname = "android-xnnpack"\n\n[[targets]]\nname = "ios-xnnpack"\nquantize = "fp32"\n'
    loaded = load_recipe(write_recipe(targets=targets))
    assert [(t.target.name, t.scheme) for t in loaded.targets] == [("android-xnnpack", "a8w4"), ("ios-xnnpack", "fp32")]
    assert loaded.recipe.generation.temperature == 0.7
    assert loaded.recipe.eval.text == "builtin:shakespeare"
    assert loaded.recipe.package.type_name == "TinyChat"
    only = load_recipe(write_recipe(targets=targets), only_targets=["ios-xnnpack"])
    assert [t.target.name for t in only.targets] == ["ios-xnnpack"]


BAD_RECIPES = {
    "unknown key": (recipe_text(extra="bogus = 1\n"), ["eval.bogus", "unknown key"]),
    "wrong type": (recipe_text().replace("max_context = 128", 'max_context = "big"'), ["model.max_context", "'big'"]),
    "unknown target": (
        recipe_text(targets='[[targets]]\nname = "android-gpu"\n'),
        ["targets[0].name", "android-xnnpack"],
    ),
    "w8 on xnnpack": (recipe_text(quantize="w8"), ["compress.quantize", "'w8'", "silently wrong", "fp32, a8w8, a8w4"]),
    "unknown scheme": (recipe_text(quantize="int3"), ["compress.quantize", "'int3'", "'a8w4'"]),
    "bad package name": (recipe_text(name="Smol Chat"), ["package.name", "'Smol Chat'", "lower-case"]),
    "bad namespace": (
        recipe_text().replace("com.example.tinychat", "com.example.tiny-chat"),
        ["package.android_namespace", "Java package name"],
    ),
    "keyword namespace": (recipe_text().replace("com.example.tinychat", "com.fun.chat"), ["reserved word"]),
    "injection in module": (recipe_text().replace('"TinyChat"', '"Tiny\\"; import Evil"'), ["package.ios_module"]),
    "missing section": (recipe_text().replace("[package]", "[pkg]"), ["missing key 'package'"]),
    "no targets": (recipe_text(targets=""), ["targets"]),
    "window too long": (recipe_text(max_context=64), ["eval.window_tokens", "max_context"]),
    "reply too long": (
        recipe_text(extra="[generation]\nmax_new_tokens = 128\n"),
        ["generation.max_new_tokens (128)", "model.max_context (128)"],
    ),
    "bad toml": ("[package\nname=", ["not valid TOML"]),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_names_file_key_and_fix(case: str, write_recipe: RecipeWriter) -> None:
    text, needles = BAD_RECIPES[case]
    path = write_recipe(text)
    with pytest.raises(UserInputError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    assert "Fix" in message or "TOML" in message
    for needle in needles:
        assert needle in message


def test_default_reply_length_fits_a_short_context(write_recipe: RecipeWriter) -> None:
    assert load_recipe(write_recipe()).recipe.generation.max_new_tokens == 64  # half of max_context 128
    long_context = recipe_text(source="builtin:tiny-llama").replace("max_context = 128", "max_context = 1024")
    assert load_recipe(write_recipe(long_context)).recipe.generation.max_new_tokens == 256


def test_cli_exit_code_2_without_traceback(write_recipe: RecipeWriter) -> None:
    path = write_recipe(recipe_text(quantize="w4"))
    result = CliRunner().invoke(app, ["build", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "not supported by target 'android-xnnpack'" in result.output


def test_missing_model_path_is_exit_2(write_recipe: RecipeWriter, tmp_path: Path) -> None:
    path = write_recipe(source="hf:./no-such-model")
    result = CliRunner().invoke(app, ["build", str(path), "--out", str(tmp_path / "dist")])
    assert result.exit_code == 2, result.output
    assert "no-such-model" in result.output
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_unknown_cli_target_is_exit_2(write_recipe: RecipeWriter) -> None:
    result = CliRunner().invoke(app, ["build", str(write_recipe()), "--target", "ios-coreml"])
    assert result.exit_code == 2
    assert "--target 'ios-coreml'" in result.output
