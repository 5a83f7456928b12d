"""The LiteRT path on tiny models: litert-torch export, ai-edge-quantizer schemes, TFLite metadata, and
validation in the real host runtimes (ai_edge_litert's interpreter, LiteRT-LM)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import torch

from builder.backends.base import Artifact, LoweringOptions, Prepared
from builder.backends.litert import LiteRTBackend, tflite_of
from builder.backends.litert_metadata import (
    ModelMetadata,
    TensorInfo,
    inline_buffers,
    input_order,
    read_metadata,
    write_metadata,
)
from builder.backends.litert_quantization import stored_weights
from builder.backends.litert_runners import LiteRtLmGeneration, TfliteDecoderRunner, TfliteEncoderRunner
from builder.checksums import sha256_of
from builder.models.base import Model
from builder.recipe import EvalSection
from builder.targets import catalogue
from builder.validate import golden_prompt, golden_prompt_text, validate_decoder, validate_encoder
from tests.conftest import build_cli, recipe_text

TARGET = catalogue()["android-litert"]
# tflite-support's native modules (the metadata writer) link libusb 1.0; scripts/install.sh installs it.
NO_METADATA_WRITER = (
    "libusb-1.0.so.0 is missing, so tflite-support cannot write the metadata every LiteRT encoder carries "
    "(apt-get install libusb-1.0-0)"
    if ctypes.util.find_library("usb-1.0") is None
    else None
)
CONTEXT = 96


def _lower(model: Model, scheme: str, out: Path) -> tuple[LiteRTBackend, Prepared, Artifact]:
    backend = LiteRTBackend()
    options = LoweringOptions(scheme=scheme, quantize_embeddings=scheme != "fp32", max_context=CONTEXT)
    prepared = backend.prepare(model, options)
    return backend, prepared, backend.lower(prepared, model, TARGET, options, out)


@pytest.fixture(scope="module")
def encoder_fp32(
    tiny_bert: Model, tmp_path_factory: pytest.TempPathFactory
) -> tuple[LiteRTBackend, Prepared, Artifact]:
    if NO_METADATA_WRITER:
        pytest.skip(NO_METADATA_WRITER)
    return _lower(tiny_bert, "fp32", tmp_path_factory.mktemp("litert-encoder"))


def test_encoder_tflite_has_the_embed_signature_and_matches_torch(
    tiny_bert: Model, encoder_fp32: tuple[LiteRTBackend, Prepared, Artifact]
) -> None:
    backend, prepared, artifact = encoder_fp32
    assert artifact.path.name == "model.tflite" and artifact.runtime_version == "2.3.0"
    methods = {m["name"]: m for m in artifact.signature["methods"]}
    assert set(methods) == {"embed_32", "embed_64", f"embed_{CONTEXT}"}
    for length in (32, 64, CONTEXT):
        method = methods[f"embed_{length}"]
        assert {t["name"]: (t["dtype"], t["shape"]) for t in method["inputs"]} == {
            "input_ids": ("int32", [1, length]), "attention_mask": ("int32", [1, length]),
        }  # fmt: skip
        embedding = {"name": "embedding", "dtype": "float32", "shape": [1, tiny_bert.spec.hidden_size]}
        assert method["outputs"] == [embedding]
    assert artifact.signature["metadata"] == {"max_length": CONTEXT, "lengths": [32, 64, CONTEXT]}
    runner = backend.host_runner(artifact, tiny_bert)
    assert isinstance(runner, TfliteEncoderRunner)
    for length in (5, 40, 90):  # each runs through the shortest signature that holds it, padded
        ids = torch.tensor([[2, *range(10, 10 + length - 2), 3]])
        mask = torch.ones_like(ids)
        assert torch.allclose(runner.embed(ids, mask), prepared.runner.embed(ids, mask), atol=1e-5)


def test_encoder_metadata_is_written_and_read_back(
    tiny_bert: Model, encoder_fp32: tuple[LiteRTBackend, Prepared, Artifact]
) -> None:
    _, _, artifact = encoder_fp32
    shown = read_metadata(artifact.path)
    metadata = shown["metadata"]
    assert metadata["name"] == "builtin:tiny-bert" and "sentence embeddings" in metadata["description"]
    (subgraph,) = metadata["subgraph_metadata"]
    assert [t["name"] for t in subgraph["input_tensor_metadata"]] == ["input_ids", "attention_mask"]
    vocabulary = subgraph["input_tensor_metadata"][0]["associated_files"][0]
    assert vocabulary["name"] == "vocab.txt" and vocabulary["type"] == "VOCABULARY"
    assert [t["name"] for t in subgraph["output_tensor_metadata"]] == ["embedding"]
    assert shown["associated_files"] == ["vocab.txt"]


def _externalize_buffers(data: bytes) -> tuple[bytes, int]:
    """The model with its large buffers stored after the flatbuffer, as LiteRT writes big models."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    moved = [b for b in model.buffers if b.data is not None and len(b.data) >= 4096]
    payloads = [bytes(np.asarray(b.data, np.uint8)) for b in moved]

    def pack(base: int) -> bytes:
        offset = base
        for buffer, payload in zip(moved, payloads, strict=True):
            buffer.data, buffer.offset, buffer.size = None, offset, len(payload)
            offset += -(-len(payload) // 16) * 16
        builder = flatbuffers.Builder(len(data))
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head_length = len(pack(1 << 40))  # the offsets' values do not change the flatbuffer's length
    base = -(-head_length // 16) * 16
    head = pack(base)
    assert len(head) == head_length
    tail = b"".join(p + b"\0" * (-(-len(p) // 16) * 16 - len(p)) for p in payloads)
    return head + b"\0" * (base - len(head)) + tail, len(moved)


def test_metadata_keeps_external_buffers_and_the_model_still_runs(
    encoder_fp32: tuple[LiteRTBackend, Prepared, Artifact], tmp_path: Path
) -> None:
    _, prepared, artifact = encoder_fp32
    external, moved = _externalize_buffers(artifact.path.read_bytes())
    assert moved > 0
    source = tmp_path / "external.tflite"
    source.write_bytes(external)
    ids = torch.tensor([[2, *range(10, 30), 3]])
    mask = torch.ones_like(ids)
    expected = prepared.runner.embed(ids, mask)
    assert torch.allclose(TfliteEncoderRunner(source).embed(ids, mask), expected, atol=1e-5)  # LiteRT reads it
    assert inline_buffers(external) != external
    metadata = ModelMetadata(name="m", description="d", version="v", author="a", license="l",
                             inputs=[TensorInfo(name, name) for name in input_order(source)],
                             outputs=[TensorInfo("embedding", "e")])  # fmt: skip
    dest = tmp_path / "with-metadata.tflite"
    write_metadata(source, dest, metadata)
    assert torch.allclose(TfliteEncoderRunner(dest).embed(ids, mask), expected, atol=1e-5)


def test_the_metadata_writer_drops_external_buffers_without_the_inlining(
    encoder_fp32: tuple[LiteRTBackend, Prepared, Artifact], tmp_path: Path
) -> None:
    """The tflite-support bug the inlining exists for (DESIGN §9): if this starts passing, it can go."""
    _, _, artifact = encoder_fp32
    external, _ = _externalize_buffers(artifact.path.read_bytes())
    source = tmp_path / "external.tflite"
    source.write_bytes(external)
    dest = tmp_path / "broken.tflite"
    payload = {"source": str(source), "dest": str(dest), "metadata": {
        "name": "m", "description": "d", "version": "v", "author": "a", "license": "l", "files": [],
        "inputs": [{"name": n, "description": n} for n in input_order(source)],
        "outputs": [{"name": "embedding", "description": "e"}]}}  # fmt: skip
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    cmd = [sys.executable, "-m", "builder.backends.litert_metadata", json.dumps(payload)]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    assert dest.stat().st_size < len(external) // 2  # the weights are gone


def _built(tmp_path_factory: pytest.TempPathFactory, name: str, **recipe: object) -> Path:
    root = tmp_path_factory.mktemp(name)
    (root / "recipe.toml").write_text(recipe_text(name=name, max_context=CONTEXT, **recipe))  # type: ignore[arg-type]
    code, output = build_cli(root / "recipe.toml", root / "dist")
    assert code == 0, output
    return root / "dist" / f"{name}-0.1.0"


@pytest.fixture(scope="module")
def chat_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chat model for android-litert (a8w4): the default run's one LiteRT decoder export."""
    return _built(tmp_path_factory, "litechat", targets='[[targets]]\nname = "android-litert"\n')


def _entry(bundle: Path) -> dict:
    (entry,) = json.loads((bundle / "manifest.json").read_text())["artifacts"]
    return entry


def _cached_artifact(bundle: Path) -> Artifact:
    """The cached artifact behind the bundle's .litertlm (its folder also keeps the validated .tflite)."""
    entry = _entry(bundle)
    for record in (Path(os.environ["SLMPACK_CACHE"]) / "artifacts").glob("*/artifact.json"):
        artifact = Artifact.from_json(json.loads(record.read_text()), record.parent)
        if artifact.path.suffix == ".litertlm" and sha256_of(artifact.path) == entry["sha256"]:
            return artifact
    raise AssertionError("the bundle's artifact is not in the build cache")


def test_decoder_bundle_manifest_and_signatures(chat_bundle: Path) -> None:
    entry = _entry(chat_bundle)
    assert entry["path"] == "artifacts/android-litert/model.litertlm" and (chat_bundle / entry["path"]).is_file()
    assert not list((chat_bundle / "artifacts").rglob("*.tflite"))  # the .tflite ships inside the .litertlm
    assert (entry["backend"], entry["quantization"]) == ("litert", "a8w4")
    assert (entry["runtime_library"], entry["runtime_version"]) == ("com.google.ai.edge.litertlm:litertlm-android",
                                                                    "0.18.1")  # fmt: skip
    methods = {m["name"]: m for m in entry["signature"]["methods"]}
    assert set(methods) == {f"prefill_{CONTEXT}", "decode"}
    decode_inputs = {t["name"]: t for t in methods["decode"]["inputs"]}
    assert decode_inputs["tokens"]["shape"] == [1, 1] and decode_inputs["mask"]["shape"][-1] == CONTEXT
    assert [t["name"] for t in methods["decode"]["outputs"]][-1] == "logits"
    assert entry["signature"]["metadata"] == {"max_length": CONTEXT, "prefill_lengths": [CONTEXT]}
    assert entry["operators"]["weight_granularity"] == "channelwise"
    assert entry["operators"]["tflite"]["FULLY_CONNECTED"] > 0


def test_decoder_validated_in_the_interpreter_and_in_litert_lm(chat_bundle: Path) -> None:
    entry = _entry(chat_bundle)
    v = entry["validation"]
    assert v["status"] == "passed", v["reason"]
    assert "interpreter" in v["runtime"]
    assert v["lowering_kl_divergence"] < 0.01 and v["lowering_top1_agreement"] == 1.0
    app = v["app_runtime"]
    assert app["runtime"].startswith("LiteRT-LM") and app["prompt_ids_match"] is True
    assert app["prompt_ids"] == entry["golden"]["prompt_ids"]
    assert app["greedy_match"] == 1.0 and app["greedy_text"] == app["expected_text"]
    bench = entry["benchmark"]
    assert bench["runtime"] == "litert_lm.Engine (CPU)" and bench["decode_tok_s"] > 0 and bench["prompt_tokens"] > 0
    assert "report.html" in {p.name for p in chat_bundle.iterdir()}


def test_reference_carries_the_weights_the_tflite_stores(tiny_llama: Model, chat_bundle: Path) -> None:
    """The int4 weights read back from the .tflite lie on a symmetric int4 grid per row, and the eager reference
    takes them, so the lowering gate measures the runtime's kernels, not the quantization."""
    artifact = _cached_artifact(chat_bundle)
    backend = LiteRTBackend()
    options = LoweringOptions(scheme="a8w4", quantize_embeddings=True, max_context=CONTEXT)
    stored = stored_weights(tflite_of(artifact))
    square = [w for w in stored["FULLY_CONNECTED"] if w.shape == (64, 64)]  # q_proj and o_proj of each layer
    assert len(square) == 2 * tiny_llama.spec.num_layers
    for weight in square:
        levels = np.round(weight / np.abs(weight).max(axis=1, keepdims=True) * 7, 3)
        assert set(np.unique(levels).tolist()) <= set(range(-7, 8))
    reference = backend.reference(backend.prepare(tiny_llama, options), artifact).module
    linears = [m.weight.detach().numpy() for m in reference.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(any(np.array_equal(w, s) for s in stored["FULLY_CONNECTED"]) for w in linears)
    original = [m.weight.detach().numpy() for m in tiny_llama.module.modules() if isinstance(m, torch.nn.Linear)]
    assert not any(np.array_equal(a, b) for a, b in zip(linears, original, strict=True))


class _FailingRuntime:
    runtime = "LiteRT-LM test double"

    def greedy(self, prompt_text: str, new_tokens: int) -> tuple[list[int], str]:
        raise RuntimeError("Failed to create XNNPACK Value for tensor 34")


class _OtherTokenizer:
    runtime = "LiteRT-LM test double"

    def greedy(self, prompt_text: str, new_tokens: int) -> tuple[list[int], str]:
        return [0], "\n" * new_tokens


@pytest.mark.parametrize(("app", "reason"), [
    (_FailingRuntime(), "LiteRT-LM test double failed: Failed to create XNNPACK Value for tensor 34"),
    (_OtherTokenizer(), "app_runtime_prompt_ids_match = 0"),
])  # fmt: skip
def test_the_app_runtime_failing_or_tokenizing_differently_fails_validation(
    tiny_llama: Model, chat_bundle: Path, text: str, app: object, reason: str
) -> None:
    artifact = _cached_artifact(chat_bundle)
    backend = LiteRTBackend()
    options = LoweringOptions(scheme="a8w4", quantize_embeddings=True, max_context=CONTEXT)
    runner = TfliteDecoderRunner(tflite_of(artifact), app)  # type: ignore[arg-type]
    reference = backend.reference(backend.prepare(tiny_llama, options), artifact)
    limits = EvalSection(windows=1, window_tokens=32, decode_steps=4)
    result = validate_decoder(tiny_llama, reference, runner, text, limits, "a8w4", runner.runtime)
    assert result.validation.status == "failed" and reason in (result.validation.reason or "")


def test_litert_lm_reads_the_prompt_as_the_host_tokenizer_does(tiny_llama: Model, chat_bundle: Path) -> None:
    app = LiteRtLmGeneration(chat_bundle / _entry(chat_bundle)["path"], CONTEXT)
    ids, text = app.greedy(golden_prompt_text(tiny_llama), 4)
    assert ids == golden_prompt(tiny_llama)[0].tolist() and text


@pytest.fixture(scope="module")
def search_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny embedding model for android-litert (a8w8, with TFLite metadata): the default run's LiteRT encoder."""
    if NO_METADATA_WRITER:
        pytest.skip(NO_METADATA_WRITER)
    return _built(tmp_path_factory, "litesearch", source="builtin:tiny-bert", task="embeddings", quantize="a8w8",
                  targets='[[targets]]\nname = "android-litert"\n')  # fmt: skip


def test_encoder_bundle_is_quantized_validated_and_benchmarked(tiny_bert: Model, search_bundle: Path) -> None:
    entry = _entry(search_bundle)
    assert entry["path"] == "artifacts/android-litert/model.tflite"
    assert (entry["runtime_library"], entry["runtime_version"]) == ("com.google.ai.edge.litert:litert", "2.3.0")
    v = entry["validation"]
    assert v["status"] == "passed" and v["lowering_min_cosine"] > 0.999, v
    assert entry["benchmark"]["runtime"] == "ai_edge_litert.Interpreter" and entry["benchmark"]["ttft_ms"] > 0
    tflite = search_bundle / entry["path"]
    assert _weight_types(tflite) == {"FULLY_CONNECTED": {"INT8"}, "EMBEDDING_LOOKUP": {"INT8"}}
    assert read_metadata(tflite)["associated_files"] == ["vocab.txt"]
    ids = torch.tensor([entry["golden"]["input_ids"]])
    vector = TfliteEncoderRunner(tflite).embed(ids, torch.ones_like(ids))
    assert np.allclose(vector.numpy(), entry["golden"]["embedding"], atol=1e-5)


def _weight_types(path: Path) -> dict[str, set[str]]:
    """The storage type of the weights each fully connected op and embedding lookup reads."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    ops = {schema.BuiltinOperator.FULLY_CONNECTED: ("FULLY_CONNECTED", 1),
           schema.BuiltinOperator.EMBEDDING_LOOKUP: ("EMBEDDING_LOOKUP", 1)}  # fmt: skip
    types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    found: dict[str, set[str]] = {}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for o in range(subgraph.OperatorsLength()):
            op = subgraph.Operators(o)
            kind = ops.get(model.OperatorCodes(op.OpcodeIndex()).BuiltinCode())
            if kind:
                tensor = subgraph.Tensors(op.Inputs(kind[1]))
                found.setdefault(kind[0], set()).add(types[tensor.Type()])
    return found


def test_schemes_litert_cannot_run_are_refused_with_the_reason(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(quantize="w4", targets='[[targets]]\nname = "android-litert"\n')
    code, output = build_cli(recipe, tmp_path / "dist")
    assert code == 2 and "no weight-only int4 kernels" in output and "a8w4" in output
    recipe = write_recipe(quantize="a8w8", targets='[[targets]]\nname = "android-litert-gpu"\n')
    code, output = build_cli(recipe, tmp_path / "dist")
    assert code == 2 and "Fix: use one of fp32, fp16, w8" in output


def test_slmpack_run_streams_from_litert_lm_and_embeds_with_the_interpreter(
    chat_bundle: Path, search_bundle: Path
) -> None:
    from typer.testing import CliRunner

    from builder.cli import app

    entry = _entry(chat_bundle)
    result = CliRunner().invoke(app, ["run", str(chat_bundle), "Write one sentence about the sea.",
                                      "--max-new-tokens", "8", "--temperature", "0"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output == entry["validation"]["app_runtime"]["greedy_text"] + "\n"  # the same 8 greedy tokens
    bare = CliRunner().invoke(app, ["run", str(search_bundle / _entry(search_bundle)["path"]), "hello"])
    assert bare.exit_code == 2 and "--tokenizer" in bare.output
    embedded = CliRunner().invoke(app, ["run", str(search_bundle), "hello world"])
    assert embedded.exit_code == 0 and "embedding dim 64, norm 1.0000" in embedded.output, embedded.output


def test_inspect_reads_the_litertlm_sections_and_the_model_inside(chat_bundle: Path) -> None:
    from typer.testing import CliRunner

    from builder.cli import app

    result = CliRunner().invoke(app, ["inspect", str(chat_bundle), "--json"])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.output)
    assert {s["type"] for s in info["sections"]} >= {"LlmMetadataProto", "HF_Tokenizer_Zlib", "TFLiteModel"}
    assert info["signature"]["methods"] == _entry(chat_bundle)["signature"]["methods"]
    assert info["operators"] == _entry(chat_bundle)["operators"]["tflite"]


def test_litert_lm_leaves_no_cache_file_in_the_bundle(chat_bundle: Path) -> None:
    """LiteRT-LM writes an XNNPACK weight cache beside the model unless told where: never into a bundle."""
    folder = (chat_bundle / _entry(chat_bundle)["path"]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["model.litertlm"]


def test_the_gpu_target_is_validated_on_cpu_kernels_and_says_so(tmp_path_factory: pytest.TempPathFactory) -> None:
    bundle = _built(tmp_path_factory, "litegpu", quantize="fp16", targets='[[targets]]\nname = "android-litert-gpu"\n')
    entry = _entry(bundle)
    assert (entry["delegate"], entry["quantization"], entry["abis"]) == ("gpu", "fp16", ["arm64-v8a"])
    validation = entry["validation"]
    assert validation["status"] == "passed" and "GPU backend runs only on the device" in validation["runtime"]
    assert entry["benchmark"] is None  # a CPU figure would be mislabelled as the GPU's
    assert entry["benchmark_note"] == "LiteRT-LM's GPU backend runs only on the device"
    assert "not run: LiteRT-LM&#39;s GPU backend runs only on the device" in (bundle / "report.html").read_text()
    kotlin = "".join(p.read_text() for p in (bundle / "android").rglob("*.kt"))
    assert "Backend.GPU()" in kotlin and "Backend.CPU()" not in kotlin


@pytest.mark.slow
@pytest.mark.parametrize(("task", "scheme"), [
    ("text-generation", "fp32"), ("text-generation", "fp16"), ("text-generation", "w8"), ("text-generation", "a8w8"),
    ("embeddings", "fp16"), ("embeddings", "w8"), ("embeddings", "a8w4"),
])  # fmt: skip
def test_every_scheme_lowers_runs_and_passes_the_gate(
    task: str, scheme: str, tiny_bert: Model, tiny_llama: Model, text: str, tmp_path: Path
) -> None:
    if task == "embeddings" and NO_METADATA_WRITER:
        pytest.skip(NO_METADATA_WRITER)
    model = tiny_llama if task == "text-generation" else tiny_bert
    backend, prepared, artifact = _lower(model, scheme, tmp_path)
    runner = backend.host_runner(artifact, model)
    reference = backend.reference(prepared, artifact)
    if task == "text-generation":
        limits = EvalSection(windows=1, window_tokens=32, decode_steps=8)
        v = validate_decoder(model, reference, runner, text, limits, scheme, "t").validation  # type: ignore[arg-type]
        assert v.app_runtime and v.app_runtime["prompt_ids_match"], v.app_runtime
    else:
        v = validate_encoder(model, reference, runner, text, EvalSection(), scheme, "t").validation  # type: ignore[arg-type]
    assert v.status == "passed", v.reason
    if scheme == "fp32":
        assert v.lowering_relative_diff < 1e-5


@pytest.mark.slow
def test_minilm_keeps_its_weights_through_the_metadata_writer(tmp_path: Path) -> None:
    """MiniLM's converted .tflite stores its large buffers outside the flatbuffer, where tflite-support's
    writer would drop them: the built model must still match the eager one."""
    if NO_METADATA_WRITER:
        pytest.skip(NO_METADATA_WRITER)
    from builder.models import load_model

    model = load_model("builtin:minilm-l6", "embeddings", Path.cwd(), 128)
    backend, prepared, artifact = _lower(model, "fp32", tmp_path)
    assert read_metadata(artifact.path)["associated_files"] == ["vocab.txt"]
    runner = backend.host_runner(artifact, model)
    enc = model.tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
    expected = prepared.runner.embed(enc["input_ids"], enc["attention_mask"])
    assert (
        torch.nn.functional.cosine_similarity(runner.embed(enc["input_ids"], enc["attention_mask"]), expected, dim=0)
        > 0.9999
    )
