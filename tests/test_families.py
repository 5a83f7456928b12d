"""The architecture matrix: every family in builder/backends/support.TESTED, as a tiny seeded model, lowered
for every target that takes its task and run in that target's host runtime against the eager model; and
`slmpack targets --model` and the build saying "unsupported: reason" where a target cannot build a model."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import OlmoConfig
from typer.testing import CliRunner

from builder.backends import get_backend
from builder.backends.base import LoweringOptions
from builder.backends.support import TESTED, target_support
from builder.cli import app
from builder.models import describe_source, load_model
from builder.models.builtin import BUILTINS
from builder.recipe import EvalSection
from builder.targets import catalogue
from builder.validate import validate_decoder, validate_encoder
from tests.conftest import build_cli

TINY = {"llama": "tiny-llama", "qwen2": "tiny-qwen2", "qwen3": "tiny-qwen3", "gemma3_text": "tiny-gemma3",
        "phi3": "tiny-phi3", "bert": "tiny-bert", "distilbert": "tiny-distilbert"}  # fmt: skip
# ios-xnnpack lowers exactly as android-xnnpack does; the other targets each have their own path.
LOWERING_TARGETS = ("android-xnnpack", "ios-executorch-coreml", "ios-coreml", "android-litert", "android-litert-gpu")
CONTEXT = 64


def test_every_tested_family_has_a_tiny_builtin_of_that_family() -> None:
    families = [family for task in TESTED.values() for family in task]
    assert sorted(families) == sorted(TINY)
    for family, name in TINY.items():
        config, task = describe_source(f"builtin:{name}", Path.cwd())
        assert config.model_type == family and family in TESTED[task] and BUILTINS[name].task == task


def _cases() -> list[tuple[str, str]]:
    return [(family, target) for task, families in TESTED.items() for family in families
            for target in LOWERING_TARGETS if task in catalogue()[target].tasks]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(("family", "target_name"), _cases())
def test_a_tested_family_lowers_and_matches_in_the_host_runtime(family: str, target_name: str, text: str,
                                                               tmp_path: Path) -> None:  # fmt: skip
    target = catalogue()[target_name]
    config, task = describe_source(f"builtin:{TINY[family]}", Path.cwd())
    assert target_support(target, config, task, CONTEXT).status == "tested"
    model = load_model(f"builtin:{TINY[family]}", task, Path.cwd(), CONTEXT if task == "text-generation" else None)
    backend = get_backend(target.backend)
    options = LoweringOptions(target.schemes[0], False, CONTEXT)
    prepared = backend.prepare(model, options)
    artifact = backend.lower(prepared, model, target, options, tmp_path)
    runner = backend.host_runner(artifact, model)
    assert not isinstance(runner, str), runner
    validate = validate_decoder if task == "text-generation" else validate_encoder
    limits = EvalSection(windows=1, window_tokens=32, decode_steps=4)
    v = validate(model, backend.reference(prepared, artifact), runner, text, limits, options.scheme, "test").validation
    assert v.status == "passed", (family, target_name, v.reason)


def test_targets_with_a_model_say_what_each_target_can_build(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["targets", "--model", "builtin:tiny-gemma3", "--max-context", "128"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "unsupported: gemma3_text layers attend within a 64-token sliding window" in flat
    assert flat.count("tested: tiny gemma3_text") == 5  # every other target
    encoder = " ".join(CliRunner().invoke(app, ["targets", "--model", "builtin:tiny-distilbert"]).output.split())
    assert "unsupported: android-litert-gpu builds text-generation models, not embeddings" in encoder
    assert "heads: no (DistilBERT derives its head size" in encoder
    # A family no test lowers is neither claimed nor refused: the build's validation decides.
    OlmoConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=128,
               architectures=["OlmoForCausalLM"]).save_pretrained(tmp_path)  # fmt: skip
    other = " ".join(CliRunner().invoke(app, ["targets", "--model", f"hf:{tmp_path}"]).output.split())
    assert other.count("untested: no olmo model is tested") == 5, other
    assert "unsupported: the Core ML decoder converts llama, mistral" in other
    assert "compression: unsupported: [compress] does not know where this family keeps" in other
    missing = CliRunner().invoke(app, ["targets", "--model", "builtin:nope"])
    assert missing.exit_code == 2 and "not a built-in model" in missing.output


def test_a_build_refuses_a_target_that_cannot_build_the_model_before_any_work(write_recipe, tmp_path: Path) -> None:
    prune = '[compress.prune]\nmethod = "structured"\nsparsity = 0.2\nparts = ["mlp"]\n'
    recipe = write_recipe(source="builtin:tiny-gemma3", extra=prune, targets='[[targets]]\nname = "ios-coreml"\n'
                          'quantize = "fp16"\n', max_context=128)  # fmt: skip
    code, output = build_cli(recipe, tmp_path / "dist", "--no-bench")
    flat = " ".join(output.split())
    assert code == 2, output
    assert "target ios-coreml cannot build this model: gemma3_text layers attend within a 64-token" in flat
    assert "Pruning" not in output and "Lowering" not in output
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())
