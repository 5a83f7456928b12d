"""The real path on tiny models: export, lower to XNNPACK, run in ExecuTorch's runtime, bundle."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from builder.backends.base import LoweringOptions
from builder.backends.executorch import ExecuTorchBackend, _check_runtime_ops
from builder.backends.executorch_runners import PteEncoderRunner
from builder.bundle import sha256_of
from builder.cli import app
from builder.errors import UserInputError
from builder.inspect_pte import MethodInfo, PteInfo, describe_pte
from builder.models.base import Model
from builder.targets import catalogue
from builder.validate import GOLDEN_USER_MESSAGE, TOKENIZER_SAMPLES
from tests.conftest import TWO_TARGETS, build_cache, recipe_text
from tests.conftest import build_cli as _build


@pytest.fixture(scope="module")
def manifest(chat_bundle: Path) -> dict:
    return json.loads((chat_bundle / "manifest.json").read_text())


def test_bundle_layout(chat_bundle: Path) -> None:
    assert sorted(p.name for p in chat_bundle.parent.iterdir()) == ["tinychat-0.1.0"]  # no partial folders
    for rel in ("manifest.json", "README.md", "tokenizer/tokenizer.json", "LICENSES/MODEL_LICENSE.txt",
                "artifacts/android-xnnpack/model.pte", "artifacts/ios-xnnpack/model.pte"):  # fmt: skip
        assert (chat_bundle / rel).is_file(), rel
    assert "android-xnnpack" in (chat_bundle / "README.md").read_text()
    assert (chat_bundle / "android/tinychat-android-xnnpack/build.gradle.kts").is_file()
    assert [p.name for p in (chat_bundle / "android").iterdir() if p.is_dir()] == ["tinychat-android-xnnpack"]


def test_manifest_contract(chat_bundle: Path, manifest: dict) -> None:
    assert manifest["schema"] == "slmpack.manifest/1"
    assert manifest["package"] == {
        "name": "tinychat", "version": "0.1.0", "android_namespace": "com.example.tinychat",
        "ios_module": "TinyChat", "class_name": "TinyChat", "description": "",
    }  # fmt: skip
    model = manifest["model"]
    assert model["source"] == "builtin:tiny-llama"
    assert model["architecture"] == "LlamaForCausalLM"
    assert model["task"] == "text-generation"
    assert model["max_context"] == 128
    assert model["parameters"] == model["parameters_compressed"] > 0
    assert model["eos_ids"] and model["chat_template"].startswith("{% for message")
    assert model["source_quantization"] is None
    assert {"slmpack", "torch", "executorch", "transformers"} <= set(manifest["tool_versions"])
    assert manifest["tokenizer"]["kind"] == "bpe"
    assert "<|im_end|>" in manifest["generation"]["stop_strings"]
    assert model["chat"]["generation_prompt"] == "<|im_start|>assistant\n" and model["chat"]["samples"]
    golden = manifest["tokenizer"]["golden"]
    assert [g["text"] for g in golden] == list(TOKENIZER_SAMPLES) and all(g["ids"] for g in golden)

    by_target = {a["target"]: a for a in manifest["artifacts"]}
    assert set(by_target) == {"android-xnnpack", "ios-xnnpack"}
    for name, scheme in (("android-xnnpack", "a8w4"), ("ios-xnnpack", "fp32")):
        a = by_target[name]
        file = chat_bundle / a["path"]
        assert a["path"] == f"artifacts/{name}/model.pte"
        assert a["bytes"] == file.stat().st_size
        assert a["sha256"] == sha256_of(file)
        assert (a["backend"], a["delegate"], a["quantization"]) == ("executorch", "xnnpack", scheme)
        assert a["runtime_version"] == catalogue()[name].runtime.version
        v = a["validation"]
        assert v["status"] == "passed", v
        for key in ("lowering_max_abs_diff", "lowering_top1_agreement", "top1_agreement", "kl_divergence",
                    "perplexity", "perplexity_reference", "greedy_match"):  # fmt: skip
            assert isinstance(v[key], float), key
        assert v["positions_compared"] > 8  # prefill positions plus decode steps
        assert a["golden"]["prompt_ids"] and len(a["golden"]["greedy_tokens"]) == 8
        assert a["benchmark"]["decode_tok_s"] > 0 and a["benchmark"]["runtime"] == "executorch.TextLLMRunner"
        assert a["memory_estimate"]["kv_cache_mb"] > 0
        methods = {m["name"] for m in a["signature"]["methods"]}
        assert methods == {"forward"}
    fp32 = by_target["ios-xnnpack"]["validation"]
    assert fp32["lowering_max_abs_diff"] < 1e-4
    assert fp32["perplexity"] == pytest.approx(fp32["perplexity_reference"], rel=1e-4)
    a8w4 = by_target["android-xnnpack"]
    assert a8w4["bytes"] < by_target["ios-xnnpack"]["bytes"]
    assert a8w4["quantize_embeddings"] is True
    # The default a8w4: GPTQ on int4 groups with zero points, mixed precision at 5.08 bits per weight or this
    # tiny model's smallest layout (5.21: its narrow layers' per-row scales), read back from the quantized model.
    layout, plan = a8w4["operators"]["weight_layout"], a8w4["weight_plan"]
    assert layout["rounding"] == "GPTQ (act-order) on min/max zero points" and layout["embeddings"] == "int8, per row"
    assert (plan["method"], plan["zero_points"], plan["budget"]) == ("gptq", True, {"bits_per_weight": 5.2115})
    assert plan["bits_per_weight"] <= 5.2115 and plan["calibration"]["sha256"]
    generated = plan["calibration"]["generated"]  # the model's own samples beside the calibration text
    assert generated["windows"] == 32 and generated["seed"] == 0 and len(generated["sha256"]) == 64
    four = sum(layer["bits"] == 4 for layer in plan["layers"] if layer["name"] != "lm_head")
    assert f"int4 with zero points (int8 offsets on the group means), groups of 32 ({four} layers)" in layout["linear"]
    assert all(layer["sensitivity"] is None or layer["sensitivity"] > -1e-6 for layer in plan["layers"])  # KL


def test_pte_carries_llm_runner_metadata(chat_bundle: Path) -> None:
    info = describe_pte(chat_bundle / "artifacts/android-xnnpack/model.pte")
    values = {m.name: m.value for m in info.methods if not m.inputs}
    assert values["get_max_seq_len"] == 128
    assert values["use_kv_cache"] is True and values["enable_dynamic_shape"] is True
    assert values["get_eos_ids"] == [0]
    forward = next(m for m in info.methods if m.name == "forward")
    assert [t.dtype for t in forward.inputs] == ["int64", "int64"]
    assert forward.delegated_calls.get("XnnpackBackend", 0) >= 1
    assert "llama::custom_sdpa.out" in forward.operators
    assert "llama::update_cache.out" in forward.operators
    assert "quantized_decomposed::embedding_byte.out" in forward.operators
    assert "aten::mean.out" not in forward.operators  # RMSNorm runs inside XNNPACK (builder.backends.xnnpack_graph)
    # q/k/v and gate/up each run as one fused matmul (builder.backends.fused_projections); XNNPACK slices no
    # dynamic-length tensor, so the portable kernel slices their 5 outputs apart, beside RoPE's 4 halves.
    assert forward.operators["aten::slice_copy.Tensor_out"] == (5 + 4) * values["get_n_layers"]


def test_run_replays_golden_tokens(chat_bundle: Path, manifest: dict) -> None:
    from transformers import AutoTokenizer

    golden = next(a for a in manifest["artifacts"] if a["target"] == "ios-xnnpack")["golden"]
    result = CliRunner().invoke(
        app, ["run", str(chat_bundle), GOLDEN_USER_MESSAGE, "--target", "ios-xnnpack",
              "--temperature", "0", "--max-new-tokens", "8"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tokenizer = AutoTokenizer.from_pretrained(str(chat_bundle / "tokenizer"))
    tokens = []
    for t in golden["greedy_tokens"]:
        if t in manifest["model"]["eos_ids"]:
            break
        tokens.append(t)
    expected = tokenizer.decode(tokens)
    for stop in manifest["generation"]["stop_strings"]:
        expected = expected.split(stop)[0]
    assert result.output == expected + "\n"  # run ends the stream with one newline


def test_inspect_json(chat_bundle: Path) -> None:
    result = CliRunner().invoke(app, ["inspect", str(chat_bundle), "--json"])
    assert result.exit_code == 0, result.output
    infos = json.loads(result.output)
    assert len(infos) == 2
    assert all(any(m["delegated_calls"] for m in info["methods"]) for info in infos)


def test_unchanged_model_is_not_re_exported(chat_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("lowered again although nothing changed")

    monkeypatch.setattr(ExecuTorchBackend, "lower", refuse)
    monkeypatch.setenv("SLMPACK_CACHE", str(build_cache(chat_bundle)))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(targets=TWO_TARGETS))
    code, output = _build(recipe, tmp_path / "dist", "--no-bench")
    assert code == 0, output
    assert "reused the cached artifact" in output


def _plain_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors a (possibly quantized subclass) tensor is made of."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return [t for name in names for t in _plain_tensors(getattr(tensor, name))]
    return [tensor]


@pytest.mark.parametrize(("scheme", "embeddings"), [("a8w4", True), ("a8w8", False), ("fp32", False)])
def test_prepare_leaves_the_model_alone_and_shares_none_of_its_tensors(
    tiny_llama: Model, scheme: str, embeddings: bool
) -> None:
    """Preparing shares the float weights it replaces instead of copying them (peak memory): the prepared
    model must still hold none of the original's tensors, and the original must come out unchanged."""
    before = {name: t.clone() for name, t in tiny_llama.module.state_dict().items()}
    prepared = ExecuTorchBackend().prepare(tiny_llama, LoweringOptions(scheme, embeddings, 64))
    original = {t.untyped_storage().data_ptr() for t in tiny_llama.module.state_dict().values()}
    held = [name for name, t in prepared.module.state_dict().items()
            if any(p.untyped_storage().data_ptr() in original for p in _plain_tensors(t))]  # fmt: skip
    assert held == []
    assert all(torch.equal(t, before[name]) for name, t in tiny_llama.module.state_dict().items())
    ids = torch.tensor([[1, 2, 3]])
    assert torch.isfinite(prepared.runner.logits(ids, 0)).all()


def test_gate_catches_a_wrong_artifact(chat_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lower a subtly different model than the reference: the build must fail and keep the old bundle."""
    monkeypatch.setenv("SLMPACK_CACHE", str(tmp_path / "fresh-cache"))
    real_lower = ExecuTorchBackend.lower

    def lower_wrong_model(self, prepared, *args, **kwargs):  # type: ignore[no-untyped-def]
        norm = prepared.module.model.model.norm.weight
        saved = norm.detach().clone()
        with torch.no_grad():
            norm.mul_(1.5)
        try:
            return real_lower(self, prepared, *args, **kwargs)
        finally:
            with torch.no_grad():
                norm.copy_(saved)

    monkeypatch.setattr(ExecuTorchBackend, "lower", lower_wrong_model)
    out = chat_bundle.parent
    before = (chat_bundle / "manifest.json").read_bytes()
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(quantize="fp32"))
    code, output = _build(recipe, out, "--no-bench")
    assert code == 1, output
    assert "lowering_relative_diff" in output and "no bundle written" in output
    assert "Traceback" not in output
    assert (chat_bundle / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["tinychat-0.1.0"]


def test_unsupported_operator_is_named() -> None:
    info = PteInfo(Path("m.pte"), 1, [MethodInfo("forward", operators={"mylib::fancy_op.out": 1})])
    with pytest.raises(
        UserInputError, match=r"operator 'mylib::fancy_op.out' is not supported by target 'android-xnnpack'"
    ):
        _check_runtime_ops(info, catalogue()["android-xnnpack"])


def test_embedding_bundle(embedding_bundle: Path) -> None:
    bundle = embedding_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["task"] == "embeddings" and manifest["model"]["pooling"] == "mean"
    assert manifest["tokenizer"]["kind"] == "wordpiece"
    artifact = manifest["artifacts"][0]
    v = artifact["validation"]
    assert v["status"] == "passed"
    assert v["lowering_min_cosine"] > 0.99 and v["cosine_similarity"] > 0.9
    assert [g["name"] for g in v["gates"]] == ["lowering_min_cosine", "cosine_similarity"]
    golden = artifact["golden"]
    runner = PteEncoderRunner(bundle / artifact["path"])
    ids = torch.tensor([golden["input_ids"]])
    embedding = runner.embed(ids, torch.ones_like(ids))
    assert torch.allclose(embedding, torch.tensor(golden["embedding"]), atol=1e-5)
    assert embedding.norm().item() == pytest.approx(1.0, abs=1e-4)
    assert artifact["benchmark"]["ttft_ms"] > 0


@pytest.mark.parametrize(("scheme", "output_layer_int8", "head_dtype", "body_dtype"),
                         [("a8w4", True, torch.int8, torch.int4), ("a8w4", False, torch.int4, torch.int4),
                          ("a8w8", True, torch.int8, torch.int8)])  # fmt: skip
def test_a8w4_keeps_the_output_layer_at_8_bits(scheme: str, output_layer_int8: bool, head_dtype: torch.dtype,
                                               body_dtype: torch.dtype, tiny_llama: Model) -> None:  # fmt: skip
    from builder.backends.executorch import _quantize
    from builder.compress.quantization import estimated_weight_bytes

    module = copy.deepcopy(tiny_llama.module)
    _quantize(module, scheme, quantize_embeddings=True, output_layer_int8=output_layer_int8)
    head = module.get_output_embeddings()
    assert head.weight.target_dtype == head_dtype
    assert head.weight.block_size == (1, head.in_features if head_dtype == torch.int8 else 32)
    body = [m for m in module.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    assert body and {m.weight.target_dtype for m in body} == {body_dtype}
    # The size estimate agrees: with an int8 output layer, a8w8 and a8w4 differ by the body's linears only.
    if scheme == "a8w4":
        linears = body if output_layer_int8 else [*body, head]
        # int8 per row: one fp32 scale a row; int4: a bf16 scale per group of 32.
        saving = sum(m.weight.numel() // 2 + m.out_features * 4 - m.out_features * (m.in_features // 32) * 2
                     for m in linears)  # fmt: skip
        assert (estimated_weight_bytes(tiny_llama.module, "a8w8", True)
                - estimated_weight_bytes(tiny_llama.module, "a8w4", True, output_layer_int8)) == saving  # fmt: skip


class _FixedLogits:
    """A runner that answers every call with the next of its logits rows."""

    def __init__(self, rows: list[list[float]]) -> None:
        self.rows = [torch.tensor([r]) for r in rows]

    def reset(self) -> None:
        self.calls = 0

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        self.calls += 1
        return self.rows[self.calls - 1]


def test_lowering_top1_leaves_out_near_ties_but_counts_decisive_flips() -> None:
    from builder.validate.decoder import measure_lowering
    from builder.validate.gates import Validation

    reference = [[2.0, 1.9, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 1.0]]  # leads 0.1, 3.0, 3.0 logits
    near_tie_flip = [[1.9, 2.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 1.0]]
    v = Validation(runtime="test")
    measure_lowering(_FixedLogits(near_tie_flip), _FixedLogits(reference), torch.tensor([[1]]), 2, v)
    assert (v.lowering_top1_agreement, v.lowering_near_ties, v.positions_compared) == (1.0, 1, 3)
    decisive_flip = [[2.0, 1.9, 0.0], [0.0, 3.5, 0.0], [0.0, 4.0, 1.0]]
    measure_lowering(_FixedLogits(decisive_flip), _FixedLogits(reference), torch.tensor([[1]]), 2, v)
    assert v.lowering_top1_agreement == 0.5 and v.lowering_near_ties == 1
