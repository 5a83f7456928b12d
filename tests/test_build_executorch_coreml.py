"""ExecuTorch with the Core ML delegate on tiny models: each model becomes one Core ML delegate call, and
is validated on Linux (whose ExecuTorch runtime has no CoreMLBackend) by restoring the delegated Core ML
program from the .pte and replaying the method's plan in NumPy. These tests prove the replay faithful."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from builder.backends import coreml_mil, executorch_coreml
from builder.backends.base import Artifact, LoweringOptions, Prepared
from builder.backends.executorch import ExecuTorchBackend
from builder.backends.executorch_coreml import CoreMLInputRefused, ReplayDecoderRunner, ReplayEncoderRunner
from builder.backends.executorch_delegates import min_ios
from builder.bundle import sha256_of
from builder.cli import app
from builder.errors import UserInputError
from builder.inspect_pte import describe_pte
from builder.models.base import Model
from builder.recipe import EvalSection, load_recipe
from builder.targets import catalogue
from builder.tasks.static_cache_decoder import Fp16SafeRMSNorm, make_rms_norms_fp16_safe
from builder.validate import decoder as decoder_checks
from builder.validate import validate_decoder, validate_encoder
from tests.conftest import RecipeWriter, build_cli, recipe_text

TARGET = catalogue()["ios-executorch-coreml"]
# Window lengths stay below max_context: a call of max_context tokens is outside the program's shapes.
DECODER_LIMITS = EvalSection(windows=2, window_tokens=48, decode_steps=8)

Lowered = tuple[ExecuTorchBackend, Prepared, Artifact]


def _lower(
    model: Model, scheme: str, out: Path, plant: Callable[[torch.nn.Module], torch.Tensor] | None = None
) -> Lowered:
    """Lower for the target; with `plant`, the tensor it picks is rolled by one row while lowering only (a
    classic indexing bug), so the artifact holds a wrong program and the eager reference the right one."""
    backend = ExecuTorchBackend()
    options = LoweringOptions(scheme=scheme, quantize_embeddings=False, max_context=64)
    prepared = backend.prepare(model, options)
    if plant is None:
        return backend, prepared, backend.lower(prepared, model, TARGET, options, out)
    tensor = plant(prepared.module)
    original = tensor.detach().clone()
    with torch.no_grad():
        tensor.copy_(torch.roll(original, 1, dims=0))
    try:
        artifact = backend.lower(prepared, model, TARGET, options, out)
    finally:
        with torch.no_grad():
            tensor.copy_(original)
    return backend, prepared, artifact


@pytest.fixture(scope="module")
def encoder(tiny_bert: Model, tmp_path_factory: pytest.TempPathFactory) -> Lowered:
    return _lower(tiny_bert, "fp16", tmp_path_factory.mktemp("encoder"))


@pytest.fixture(scope="module")
def decoder(tiny_llama: Model, tmp_path_factory: pytest.TempPathFactory) -> Lowered:
    return _lower(tiny_llama, "fp16", tmp_path_factory.mktemp("decoder"))


def _forward(artifact: Artifact) -> tuple[dict[str, int], dict[str, int]]:
    forward = next(m for m in describe_pte(artifact.path).methods if m.name == "forward")
    return forward.delegated_calls, forward.operators


def test_encoder_is_one_core_ml_call_and_its_replay_passes_the_gate(
    encoder: Lowered, tiny_bert: Model, text: str
) -> None:
    backend, prepared, artifact = encoder
    assert _forward(artifact) == ({"CoreMLBackend": 1}, {})  # the whole graph, nothing left outside
    assert artifact.operators["delegated"] == {"CoreMLBackend": 1} and artifact.operators["non_delegated"] == {}
    (program,) = artifact.operators["coreml_programs"]
    assert program["specification_version"] == 8  # iOS 17
    assert [(i["name"], i["dtype"], i["shape"]) for i in program["inputs"]] == [
        ("input_ids", "int32", [1, [2, 64]]), ("attention_mask", "int32", [1, [2, 64]]),
    ]  # fmt: skip
    assert program["states"] == [] and program["compressed_weights"] == 0
    assert artifact.min_os is None and artifact.delegate == "coreml"

    runner = backend.host_runner(artifact, tiny_bert)
    assert isinstance(runner, ReplayEncoderRunner)
    assert "no CoreMLBackend" in (backend.benchmark_blocker(artifact) or "")  # the .pte itself cannot run here
    ids = torch.tensor([[2, *range(10, 40), 3]])
    mask = torch.ones_like(ids)
    assert torch.allclose(runner.embed(ids, mask), prepared.runner.embed(ids, mask), atol=2e-3)

    result = validate_encoder(tiny_bert, backend.reference(prepared, artifact), runner, text, EvalSection(), "fp16",
                              runner.runtime)  # fmt: skip
    v = result.validation
    assert v.status == "passed", v.reason
    assert v.lowering_min_cosine > 0.9999  # fp16 compute is the only difference from the eager model
    assert "NumPy replay of the delegated Core ML program" in v.runtime


def test_decoder_is_one_core_ml_call_with_the_cache_as_program_buffers(
    decoder: Lowered, tiny_llama: Model, text: str
) -> None:
    backend, prepared, artifact = decoder
    # The Core ML call takes the KV cache in and hands it back; ExecuTorch writes it back (2 layers x k, v).
    assert _forward(artifact) == ({"CoreMLBackend": 1}, {"aten::copy_": 4})
    (program,) = artifact.operators["coreml_programs"]
    inputs = {i["name"]: (i["dtype"], i["shape"]) for i in program["inputs"]}
    assert inputs.pop("input_ids") == ("int32", [1, [1, 63]])  # one-token decode steps are in range
    assert inputs.pop("cache_position") == ("int32", [[1, 63]])
    assert inputs == {f"b_{kv}_cache_{layer}": ("float32", [1, 2, 64, 16]) for layer in (0, 1) for kv in "kv"}
    assert len(program["outputs"]) == 5 and program["states"] == []  # 4 updated caches and the logits
    assert artifact.signature["metadata"]["use_sdpa_with_kv_cache"] is False

    runner = backend.host_runner(artifact, tiny_llama)
    assert isinstance(runner, ReplayDecoderRunner)
    reference = backend.reference(prepared, artifact)
    result = validate_decoder(tiny_llama, reference, runner, text, DECODER_LIMITS, "fp16", runner.runtime)
    v = result.validation
    assert v.status == "passed", v.reason
    assert v.lowering_top1_agreement == 1.0 and v.lowering_relative_diff < 5e-3 and v.positions_compared > 8
    assert len(result.golden["greedy_tokens"]) == 8


def test_decoder_replay_carries_the_cache_between_calls(decoder: Lowered, tiny_llama: Model) -> None:
    _, _, artifact = decoder
    runner = ReplayDecoderRunner(artifact.path)
    ids = torch.tensor([[1, 448, 273, 201, 57, 84, 277]])
    whole = runner.logits(ids, 0)
    pieces = torch.cat([runner.logits(ids[:, :4], 0), runner.logits(ids[:, 4:5], 4), runner.logits(ids[:, 5:], 5)])
    assert torch.allclose(whole, pieces, atol=5e-3)
    expected = tiny_llama.module(input_ids=ids).logits[0]
    assert torch.allclose(whole, expected, atol=5e-3)


def test_a_call_outside_the_core_ml_shapes_is_refused_as_on_a_device(decoder: Lowered) -> None:
    runner = ReplayDecoderRunner(decoder[2].path)
    with pytest.raises(CoreMLInputRefused, match=r"refuse input 'input_ids' of shape \[1, 64\]"):
        runner.logits(torch.ones((1, 64), dtype=torch.long), 0)


def test_what_the_replay_cannot_run_is_a_reason_not_a_guess(
    decoder: Lowered, tiny_llama: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, _, artifact = decoder
    monkeypatch.setattr(executorch_coreml, "REPLAYED_KERNELS", frozenset())
    reason = backend.host_runner(artifact, tiny_llama)
    assert isinstance(reason, str)
    assert "no CoreMLBackend" in reason and "aten::copy_" in reason


def test_gate_catches_a_wrong_encoder_program(tiny_bert: Model, text: str, tmp_path: Path) -> None:
    backend, prepared, artifact = _lower(
        tiny_bert, "fp16", tmp_path, plant=lambda m: m.model.embeddings.word_embeddings.weight
    )
    runner = backend.host_runner(artifact, tiny_bert)
    assert isinstance(runner, ReplayEncoderRunner)
    result = validate_encoder(
        tiny_bert, backend.reference(prepared, artifact), runner, text, EvalSection(), "fp16", "t"
    )
    assert result.validation.status == "failed"
    assert "lowering_min_cosine" in (result.validation.reason or "")


def test_gate_catches_a_wrong_decoder_program(tiny_llama: Model, text: str, tmp_path: Path) -> None:
    """fp32, whose gate is the logit difference: a random tiny model's near-uniform logits hide it from KL.
    The table is tied to the output layer, so both shift."""
    backend, prepared, artifact = _lower(
        tiny_llama, "fp32", tmp_path, plant=lambda m: m.model.model.embed_tokens.weight
    )
    runner = backend.host_runner(artifact, tiny_llama)
    assert isinstance(runner, ReplayDecoderRunner)
    limits = EvalSection(windows=1, window_tokens=32, decode_steps=4)
    result = validate_decoder(tiny_llama, backend.reference(prepared, artifact), runner, text, limits, "fp32", "t")
    assert result.validation.status == "failed"
    assert "lowering_relative_diff" in (result.validation.reason or "")


def test_schemes_and_the_ios_they_need(write_recipe: RecipeWriter) -> None:
    assert set(TARGET.schemes) == {"fp16", "fp32", "w8", "w4", "palette4"}
    assert [min_ios(TARGET, s) for s in ("fp16", "fp32", "w8", "w4", "palette4")] == [None, None, None, "18.0", "18.0"]
    assert min_ios(catalogue()["ios-xnnpack"], "a8w4") is None
    targets = '[[targets]]\nname = "ios-executorch-coreml"\n'
    with pytest.raises(UserInputError, match=r"no dynamic int8 activation kernels.*use w4"):
        load_recipe(write_recipe(recipe_text(quantize="a8w4", targets=targets)))


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["w8", "w4", "palette4"])
@pytest.mark.parametrize("task", ["embeddings", "text-generation"])
def test_compressed_schemes_stay_in_the_delegate_and_pass_the_gate(
    task: str, scheme: str, tiny_bert: Model, tiny_llama: Model, text: str, tmp_path: Path
) -> None:
    model = tiny_llama if task == "text-generation" else tiny_bert
    backend, prepared, artifact = _lower(model, scheme, tmp_path)
    assert _forward(artifact)[0] == {"CoreMLBackend": 1}
    (program,) = artifact.operators["coreml_programs"]
    assert program["compressed_weights"] > 0
    assert artifact.min_os == min_ios(TARGET, scheme)
    assert program["specification_version"] == (9 if artifact.min_os == "18.0" else 8)
    runner = backend.host_runner(artifact, model)
    reference = backend.reference(prepared, artifact)
    validate = validate_decoder if task == "text-generation" else validate_encoder
    limits = DECODER_LIMITS if task == "text-generation" else EvalSection()
    v = validate(model, reference, runner, text, limits, scheme, "t").validation  # type: ignore[arg-type]
    assert v.status == "passed", v.reason


def test_bundle(tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    targets = '[[targets]]\nname = "ios-executorch-coreml"\n'
    recipe.write_text(recipe_text(quantize="fp16", targets=targets))
    code, output = build_cli(recipe, tmp_path / "dist")
    assert code == 0, output
    assert "no host benchmark" in output
    bundle = tmp_path / "dist" / "tinychat-0.1.0"
    manifest = json.loads((bundle / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    pte = bundle / artifact["path"]
    assert artifact["path"] == "artifacts/ios-executorch-coreml/model.pte" and pte.is_file()
    assert artifact["sha256"] == sha256_of(pte) and artifact["bytes"] == pte.stat().st_size
    assert (artifact["platform"], artifact["backend"], artifact["delegate"]) == ("ios", "executorch", "coreml")
    assert (artifact["quantization"], artifact["min_os"], artifact["runtime_version"]) == ("fp16", "17.0", "1.5.1")
    assert artifact["runtime_kernels"] == ["backend_coreml", "kernels_optimized"]
    assert artifact["operators"]["delegated"] == {"CoreMLBackend": 1}
    v = artifact["validation"]
    assert v["status"] == "passed", v
    assert "NumPy replay of the delegated Core ML program" in v["runtime"]
    assert v["lowering_top1_agreement"] == 1.0
    assert artifact["benchmark"] is None
    # The bundle's .pte is the validated one: its replay gives the golden tokens again.
    golden = artifact["golden"]
    prompt = torch.tensor([golden["prompt_ids"]])
    tokens = decoder_checks.greedy(ReplayDecoderRunner(pte), prompt, 4)
    assert tokens == golden["greedy_tokens"][:4]
    # The Swift package links the Core ML backend the manifest names.
    package = bundle / "ios" / "TinyChat-ios-executorch-coreml" / "Package.swift"
    assert '"backend_coreml"' in package.read_text()
    # `slmpack run` wants the real runtime, which Linux lacks: a sentence, not a crash.
    ran = CliRunner().invoke(app, ["run", str(bundle), "hello"])
    assert ran.exit_code == 2 and "no host-runnable artifact" in ran.output
    ran = CliRunner().invoke(app, ["run", str(pte), "hello", "--tokenizer", str(bundle / "tokenizer")])
    # The error wraps at the console width after the .pte path, whose length depends on the temp folder.
    assert ran.exit_code == 2 and "delegates to CoreMLBackend" in " ".join(ran.output.split())


def test_gather_nd_replays_core_ml_semantics() -> None:
    """gather_nd (BERT's position lookup after torch.export) as MIL defines it, batch dimensions included."""
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    gathered = coreml_mil.OPS["gather_nd"]({"x": x, "indices": np.array([[[0, 1], [1, 2]], [[1, 0], [0, 2]]])})
    assert gathered.tolist() == [[x[0, 1].tolist(), x[1, 2].tolist()], [x[1, 0].tolist(), x[0, 2].tolist()]]
    batched = coreml_mil.OPS["gather_nd"]({"x": x, "indices": np.array([[[1], [2]], [[0], [0]]]), "batch_dims": 1})
    assert batched.tolist() == [[x[0, 1].tolist(), x[0, 2].tolist()], [x[1, 0].tolist(), x[1, 0].tolist()]]
    stacked = coreml_mil.OPS["stack"]({"values": [x[0], x[1]], "axis": 1})
    assert np.array_equal(stacked, np.stack([x[0], x[1]], axis=1))


def test_rms_norms_are_rewritten_to_survive_fp16() -> None:
    """SmolLM2's residual stream reaches 2.3e4: a plain RMSNorm's mean square overflows fp16 (the whole
    delegate computes in fp16), the rewritten one matches it in fp32 and stays finite in fp16."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class OnePlusWeightRMSNorm(LlamaRMSNorm):  # Gemma's convention: left alone
        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return (1 + self.weight) * hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6)

    model = torch.nn.Sequential(LlamaRMSNorm(64, eps=1e-5), OnePlusWeightRMSNorm(64))
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 1.5)
    plain = copy.deepcopy(model[0])
    assert make_rms_norms_fp16_safe(model) == 1
    assert isinstance(model[0], Fp16SafeRMSNorm) and isinstance(model[1], OnePlusWeightRMSNorm)
    hidden = torch.randn(3, 64, generator=torch.Generator().manual_seed(0)) * 6e3  # peaks near 2e4
    expected = plain(hidden)
    assert torch.allclose(model[0](hidden), expected, rtol=1e-5, atol=1e-5)
    assert torch.isinf(hidden.half().pow(2).mean(-1)).all()  # the plain norm's statistic, in fp16
    in_fp16 = model[0].half()(hidden.half())  # every op in fp16, as the delegate computes
    assert torch.allclose(in_fp16.float(), expected, rtol=1e-2, atol=1e-2)


def test_doctor_and_targets_list_the_target() -> None:
    listed = CliRunner().invoke(app, ["targets"])
    assert listed.exit_code == 0 and "ios-executorch-coreml" in listed.output
    doctor = CliRunner().invoke(app, ["doctor"])
    assert doctor.exit_code == 0 and "ios-executorch-coreml" in doctor.output
    assert "delegated Core ML program" in doctor.output
