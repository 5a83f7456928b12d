"""The Core ML path on a tiny encoder: convert, compress, replay the saved ML Program in NumPy, gate, bundle.

Core ML predicts only on Apple platforms; here the artifact's own program (reloaded from the .mlpackage,
compressed weights included) is replayed op by op, and these tests prove that replay is faithful.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from builder.backends import coreml_mil
from builder.backends.base import Artifact, LoweringOptions, Prepared
from builder.backends.coreml import CoreMLBackend, MilDecoderRunner, MilEncoderRunner
from builder.backends.coreml_mil import MilExecutor, UnsupportedMilOp, describe_mlpackage
from builder.bundle import sha256_of
from builder.cli import app
from builder.errors import UserInputError
from builder.models.base import Model
from builder.recipe import EvalSection, load_recipe
from builder.targets import catalogue
from builder.validate import validate_decoder, validate_encoder
from tests.conftest import build_cli, recipe_text

TARGET = catalogue()["ios-coreml"]


def _lower(model: Model, scheme: str, out: Path) -> tuple[CoreMLBackend, Prepared, Artifact]:
    backend = CoreMLBackend()
    options = LoweringOptions(scheme=scheme, quantize_embeddings=scheme in ("w8", "w4"), max_context=64)
    prepared = backend.prepare(model, options)
    artifact = backend.lower(prepared, model, TARGET, options, out)
    return backend, prepared, artifact


def test_replay_of_an_fp32_program_matches_torch(tiny_bert: Model, tmp_path: Path) -> None:
    _, prepared, artifact = _lower(tiny_bert, "fp32", tmp_path)
    runner = MilEncoderRunner(artifact.path)
    for ids in ([[2, 5, 6, 7, 3]], [[2, *range(10, 60), 3]]):
        input_ids = torch.tensor(ids)
        mask = torch.ones_like(input_ids)
        expected = prepared.runner.embed(input_ids, mask)
        assert torch.allclose(runner.embed(input_ids, mask), expected, atol=1e-5)


@pytest.mark.parametrize(("scheme", "compression_op", "min_os"), [
    ("fp16", None, None),
    ("w8", "constexpr_affine_dequantize", None),
    ("w4", "constexpr_blockwise_shift_scale", "18.0"),
    ("palette4", "constexpr_lut_to_dense", None),
])  # fmt: skip
def test_schemes_convert_compress_and_pass_the_lowering_gate(
    tiny_bert: Model, text: str, tmp_path: Path, scheme: str, compression_op: str | None, min_os: str | None
) -> None:
    backend, prepared, artifact = _lower(tiny_bert, scheme, tmp_path)
    info = describe_mlpackage(artifact.path)
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "attention_mask"]
    assert info["inputs"][0]["shape"] == [1, [2, 64]] and info["inputs"][0]["dtype"] == "int32"
    assert [o["name"] for o in info["outputs"]] == ["embedding"]
    if compression_op:
        assert info["operators"].get(compression_op, 0) > 0 and info["compressed_weights"] > 0
    else:
        assert info["compressed_weights"] == 0
    assert artifact.min_os == min_os
    runner = backend.host_runner(artifact, tiny_bert)
    assert isinstance(runner, MilEncoderRunner)
    limits = EvalSection(min_cosine_similarity=0.9)
    result = validate_encoder(
        tiny_bert, backend.reference(prepared, artifact), runner, text, limits, scheme, runner.runtime
    )
    v = result.validation
    assert v.status == "passed", v.reason
    assert v.lowering_min_cosine > 0.999  # conversion and fp16 compute only: compression is in the reference
    assert "NumPy replay" in v.runtime


@pytest.mark.parametrize(("scheme", "sparse_op", "min_os"), [
    ("fp16", "constexpr_sparse_to_dense", None),
    ("w8", "constexpr_sparse_blockwise_shift_scale", "18.0"),
])  # fmt: skip
def test_pruned_weights_are_stored_sparse_and_pass_the_lowering_gate(
    tiny_bert: Model, text: str, tmp_path: Path, scheme: str, sparse_op: str, min_os: str | None
) -> None:
    backend = CoreMLBackend()
    options = LoweringOptions(scheme=scheme, quantize_embeddings=False, max_context=64, sparsity=0.5)
    prepared = backend.prepare(tiny_bert, options)
    artifact = backend.lower(prepared, tiny_bert, TARGET, options, tmp_path)
    info = describe_mlpackage(artifact.path)
    assert info["operators"].get(sparse_op, 0) > 0, info["operators"]
    assert (artifact.min_os, artifact.sparsity) == (min_os, 0.5)
    runner = backend.host_runner(artifact, tiny_bert)
    assert isinstance(runner, MilEncoderRunner)
    matrices = [w for w in runner.executor.constants.values() if w.ndim == 2 and w.size >= 2048]
    pruned = [z for z in (float(np.mean(w == 0)) for w in matrices) if z > 0.1]  # the tables stay dense
    assert len(pruned) >= 12 and all(0.49 <= z <= 0.52 for z in pruned), pruned  # 2 layers x 6 projections
    result = validate_encoder(
        tiny_bert, backend.reference(prepared, artifact), runner, text, EvalSection(), scheme, runner.runtime
    )
    v = result.validation
    assert v.status == "passed", v.reason
    assert v.lowering_min_cosine > 0.999  # the reference carries the pruned weights: conversion is all it measures
    assert v.cosine_similarity < v.lowering_min_cosine  # pruning half the weights costs quality, and it is reported


def test_pruning_is_refused_on_a_target_that_stores_dense_weights(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text().replace('quantize = "a8w4"', 'quantize = "a8w4"\nsparsity = 0.5'))
    with pytest.raises(UserInputError, match=r"'compress.sparsity' = 0.5 asks for pruning.*ios-coreml"):
        load_recipe(recipe)


def test_an_op_without_a_reference_is_named_not_guessed(
    tiny_bert: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, _, artifact = _lower(tiny_bert, "fp16", tmp_path)
    monkeypatch.delitem(coreml_mil.OPS, "softmax")
    with pytest.raises(UnsupportedMilOp, match="softmax"):
        MilExecutor(artifact.path)
    reason = CoreMLBackend().host_runner(artifact, tiny_bert)
    assert isinstance(reason, str) and "softmax" in reason and "Apple platforms" in reason


def _lower_with_rolled_table(
    model: Model, scheme: str, max_context: int, out: Path, table_of: Callable[[torch.nn.Module], torch.Tensor]
) -> tuple[CoreMLBackend, Prepared, Artifact]:
    """Lower with the token table off by one row (a classic indexing bug); the eager model keeps it right."""
    backend = CoreMLBackend()
    options = LoweringOptions(scheme=scheme, quantize_embeddings=False, max_context=max_context)
    prepared = backend.prepare(model, options)
    table = table_of(prepared.module)
    original = table.detach().clone()
    with torch.no_grad():
        table.copy_(torch.roll(original, 1, dims=0))
    artifact = backend.lower(prepared, model, TARGET, options, out)
    with torch.no_grad():
        table.copy_(original)
    return backend, prepared, artifact


def test_gate_catches_a_wrongly_converted_program(tiny_bert: Model, text: str, tmp_path: Path) -> None:
    backend, prepared, artifact = _lower_with_rolled_table(
        tiny_bert, "fp16", 64, tmp_path, lambda m: m.model.embeddings.word_embeddings.weight
    )
    runner = backend.host_runner(artifact, tiny_bert)
    reference = backend.reference(prepared, artifact)
    result = validate_encoder(tiny_bert, reference, runner, text, EvalSection(), "fp16", "test")
    assert result.validation.status == "failed"
    assert "lowering_min_cosine" in (result.validation.reason or "")


def test_coreml_bundle(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    targets = '[[targets]]\nname = "ios-coreml"\nquantize = "w8"\n'
    recipe.write_text(recipe_text(source="builtin:tiny-bert", task="embeddings", quantize="fp16", name="tinycml",
                                  targets=targets, max_context=64))  # fmt: skip
    code, output = build_cli(recipe, tmp_path / "dist")
    assert code == 0, output
    bundle = tmp_path / "dist" / "tinycml-0.1.0"
    manifest = json.loads((bundle / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    package = bundle / artifact["path"]
    assert artifact["path"] == "artifacts/ios-coreml/model.mlpackage" and package.is_dir()
    assert artifact["sha256"] == sha256_of(package) and artifact["bytes"] > 0
    assert (artifact["backend"], artifact["quantization"], artifact["min_os"]) == ("coreml", "w8", "17.0")
    assert artifact["validation"]["status"] == "passed" and "NumPy replay" in artifact["validation"]["runtime"]
    assert artifact["operators"]["compressed_weights"] > 0
    assert artifact["benchmark"] is None and "no host benchmark" in output
    golden = artifact["golden"]
    ids = torch.tensor([golden["input_ids"]])
    replayed = MilEncoderRunner(package).embed(ids, torch.ones_like(ids))
    assert np.allclose(replayed.numpy(), golden["embedding"], atol=1e-5)
    assert not (bundle / "android").exists()
    inspected = CliRunner().invoke(app, ["inspect", str(bundle), "--json"])
    assert inspected.exit_code == 0, inspected.output
    (info,) = json.loads(inspected.output)
    assert info["inputs"][0]["name"] == "input_ids" and info["operators"]["constexpr_affine_dequantize"] > 0
    table = CliRunner().invoke(app, ["inspect", str(package)])
    assert table.exit_code == 0 and "compressed weight tensors" in table.output


def _lower_decoder(model: Model, scheme: str, out: Path) -> tuple[CoreMLBackend, Prepared, Artifact]:
    backend = CoreMLBackend()
    options = LoweringOptions(scheme=scheme, quantize_embeddings=False, max_context=128)
    prepared = backend.prepare(model, options)
    return backend, prepared, backend.lower(prepared, model, TARGET, options, out)


@pytest.mark.parametrize("scheme", ["fp16", "w4"])
def test_decoder_is_a_stateful_program_that_replays_like_the_eager_model(
    tiny_llama: Model, text: str, tmp_path: Path, scheme: str
) -> None:
    backend, prepared, artifact = _lower_decoder(tiny_llama, scheme, tmp_path)
    info = describe_mlpackage(artifact.path)
    assert info["states"] == ["keyCache", "valueCache"]
    assert [(i["name"], i["dtype"]) for i in info["inputs"]] == [("input_ids", "int32"), ("causal_mask", "float16")]
    assert info["inputs"][1]["shape"] == [1, 1, [1, 128], [1, 128]]
    assert artifact.min_os == "18.0"  # state tensors need iOS 18
    runner = backend.host_runner(artifact, tiny_llama)
    assert isinstance(runner, MilDecoderRunner)
    limits = EvalSection(windows=2, window_tokens=64, decode_steps=8)
    reference = backend.reference(prepared, artifact)
    result = validate_decoder(tiny_llama, reference, runner, text, limits, scheme, runner.runtime)
    v = result.validation
    assert v.status == "passed", v.reason
    assert v.lowering_top1_agreement == 1.0 and v.positions_compared > 8
    assert len(result.golden["greedy_tokens"]) == 8


def test_decoder_replay_carries_the_cache_between_calls(tiny_llama: Model, tmp_path: Path) -> None:
    _, _, artifact = _lower_decoder(tiny_llama, "fp32", tmp_path)
    runner = MilDecoderRunner(artifact.path)
    ids = torch.tensor([[1, 448, 273, 201, 57, 84, 277]])
    whole = runner.logits(ids, 0)
    runner.reset()
    pieces = torch.cat([runner.logits(ids[:, :4], 0), runner.logits(ids[:, 4:5], 4), runner.logits(ids[:, 5:], 5)])
    assert torch.allclose(whole, pieces, atol=2e-3)
    expected = tiny_llama.module(input_ids=ids).logits[0]
    assert torch.allclose(whole, expected, atol=2e-3)


def test_decoder_gate_catches_a_wrong_program(tiny_llama: Model, text: str, tmp_path: Path) -> None:
    """The table is tied to the output layer, so both shift. fp32, whose gate is the logit difference: a
    random tiny model's near-uniform logits hide it from KL."""
    backend, prepared, artifact = _lower_with_rolled_table(
        tiny_llama, "fp32", 128, tmp_path, lambda m: m.model.model.embed_tokens.weight
    )
    limits = EvalSection(windows=1, window_tokens=32, decode_steps=4)
    runner = backend.host_runner(artifact, tiny_llama)
    result = validate_decoder(tiny_llama, backend.reference(prepared, artifact), runner, text, limits, "fp32", "t")
    assert result.validation.status == "failed"
    assert "lowering_relative_diff" in (result.validation.reason or "")


def test_memory_estimate_counts_the_fp16_cache_of_core_ml(tiny_llama: Model, tmp_path: Path) -> None:
    from builder.bundle import _memory_estimate
    from builder.recipe import load_recipe

    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(max_context=8192))  # a cache of megabytes, so rounding does not blur it
    loaded = load_recipe(recipe).recipe

    def kv_mb(backend: str) -> float:
        artifact = Artifact("t", backend, None, "fp16", False, tmp_path, {}, "1")
        return _memory_estimate(tiny_llama, loaded, artifact, 0, None)["kv_cache_mb"]

    assert kv_mb("executorch") == 4.0  # 2 (k, v) x 2 layers x 8192 positions x 2 heads x 16 dims x 4 bytes
    assert kv_mb("coreml") == 2.0
