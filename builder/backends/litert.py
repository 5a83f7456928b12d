"""LiteRT backend: litert-torch export (.litertlm for decoders, .tflite with metadata for encoders),
ai-edge-quantizer for the schemes, and host validation in LiteRT's own runtimes (DESIGN §4, §9, §11).

Quantization happens inside the LiteRT toolchain, after conversion, so the lowering gate's eager reference
takes the weights the .tflite stores (dequantized) and the gate measures conversion and kernels only.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from builder.backends.base import Artifact, LoweringOptions, Prepared, Runner
from builder.backends.executorch_runners import EagerEncoderRunner
from builder.backends.litert_export import DecoderExport, convert_encoder, encoder_lengths, export_decoder
from builder.backends.litert_metadata import ModelMetadata, TensorInfo, input_order, write_metadata
from builder.backends.litert_quantization import (
    A8W4_GRANULARITY,
    quantization_recipe,
    quantize_tflite,
    stored_weights,
    write_recipe,
)
from builder.backends.litert_runners import (
    LiteRtLmGeneration,
    TfliteDecoderRunner,
    TfliteEncoderRunner,
    interpreter,
    run_on_zeros,
)
from builder.backends.weights import adopt_artifact_weights
from builder.bench.host import BenchRequest, BenchResult
from builder.bench.litert import benchmark_litert
from builder.errors import SlmpackError, UserInputError
from builder.inspect_litert import tflite_operators, tflite_signature
from builder.models.base import Model
from builder.quiet import quiet
from builder.targets import Target
from builder.tasks.embeddings import ExportableEncoder
from builder.validate.decoder import OriginalDecoderRunner

DECODER_FILE = "model.litertlm"
# The decoder's .tflite, kept beside the bundle in the artifact folder: the interpreter validates it, and the
# .litertlm carries the same bytes inside.
DECODER_TFLITE = "model.tflite"
ENCODER_FILE = "model.tflite"
PREFILL_LENGTH = 128
TENSOR_DESCRIPTIONS = {
    "input_ids": "Token ids from the WordPiece vocabulary, padded with 0 to the fixed length.",
    "attention_mask": "1 for each real token, 0 for padding.",
}


def _save_hf_folder(model: Model, folder: Path) -> None:
    """The model as litert-torch's Hugging Face export reads it: weights, config and tokenizer files."""
    model.module.save_pretrained(folder, safe_serialization=True)
    for file in model.tokenizer_files:
        shutil.copy2(file, folder / file.name)


def _check_runs(path: Path, target: Target) -> None:
    """Run every signature once on zeros: an op or tensor type the LiteRT runtime has no kernel for is named
    here (the runtime's message names the op and tensor), not left for the phone to find."""
    model = interpreter(path)
    for name in model.get_signature_list():
        try:
            run_on_zeros(model.get_signature_runner(name))
        except RuntimeError as exc:
            raise UserInputError(
                f"target {target.name!r} cannot run the lowered model: LiteRT rejects signature {name!r}: {exc}"
            ) from exc


class LiteRTBackend:
    name = "litert"
    lowers_prepared_only = False  # the Hugging Face export reads the float model's weights

    def prepare(self, model: Model, options: LoweringOptions) -> Prepared:
        module = copy.deepcopy(model.module).eval()
        if model.spec.task == "embeddings":
            encoder = ExportableEncoder(module, model.spec, options.max_context).eval()
            return Prepared(module=encoder, runner=EagerEncoderRunner(encoder))
        return Prepared(module=module, runner=OriginalDecoderRunner(module))

    def lower(
        self, prepared: Prepared, model: Model, target: Target, options: LoweringOptions, out_dir: Path
    ) -> Artifact:
        out_dir.mkdir(parents=True, exist_ok=True)
        decoder = model.spec.task == "text-generation"
        with tempfile.TemporaryDirectory(prefix="slmpack-litert-") as scratch:
            work = Path(scratch)
            if decoder:
                path, tflite = self._lower_decoder(model, options, work, out_dir)
            else:
                path = tflite = self._lower_encoder(prepared, model, options, work, out_dir)
        _check_runs(tflite, target)
        signature = tflite_signature(tflite)
        if decoder:
            signature["metadata"] = {"max_length": _cache_length(signature),
                                     "prefill_lengths": [min(PREFILL_LENGTH, options.max_context)]}  # fmt: skip
        else:
            lengths = encoder_lengths(prepared.module.max_context)  # type: ignore[union-attr]
            signature["metadata"] = {"max_length": max(lengths), "lengths": lengths}
        runtime = target.runtime.for_task(model.spec.task)
        operators: dict[str, Any] = {"tflite": tflite_operators(tflite.read_bytes())}
        if options.scheme == "a8w4":
            operators["weight_granularity"] = A8W4_GRANULARITY.lower()
        return Artifact(
            target=target.name,
            backend=self.name,
            delegate=target.delegate,
            quantization=options.scheme,
            quantize_embeddings=options.quantize_embeddings,
            path=path,
            signature=signature,
            runtime_version=runtime.version,
            operators=operators,
        )

    def _lower_decoder(self, model: Model, options: LoweringOptions, work: Path, out_dir: Path) -> tuple[Path, Path]:
        folder = work / "hf"
        _save_hf_folder(model, folder)
        recipe = write_recipe(options.scheme, options.quantize_embeddings, work)
        request = DecoderExport(
            folder=str(folder),
            out_dir=str(work / "export"),
            prefill_length=min(PREFILL_LENGTH, options.max_context),
            cache_length=options.max_context,
            recipe=str(recipe) if recipe else None,
        )
        try:
            bundle, tflite = export_decoder(request)
        except SlmpackError as exc:
            raise UserInputError(f"{model.spec.architecture} cannot be exported to LiteRT: {exc}") from exc
        shutil.move(bundle, out_dir / DECODER_FILE)
        shutil.move(tflite, out_dir / DECODER_TFLITE)
        shutil.move(work / "export" / "export.log", out_dir / "export.log")
        return out_dir / DECODER_FILE, out_dir / DECODER_TFLITE

    def _lower_encoder(
        self, prepared: Prepared, model: Model, options: LoweringOptions, work: Path, out_dir: Path
    ) -> Path:
        encoder = prepared.module
        assert isinstance(encoder, ExportableEncoder)
        converted = work / "converted.tflite"
        try:
            convert_encoder(encoder, encoder_lengths(encoder.max_context), converted)
        except Exception as exc:  # litert-torch reports unsupported constructs in many exception types
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserInputError(f"{model.spec.architecture} cannot be converted to LiteRT: {first_line}") from exc
        recipe = quantization_recipe(options.scheme, options.quantize_embeddings)
        if recipe is not None:
            quantized = work / "quantized.tflite"
            with quiet(1, 2):
                quantize_tflite(converted, quantized, recipe)
            converted = quantized
        vocabulary = next((str(f) for f in model.tokenizer_files if f.name == "vocab.txt"), None)
        descriptions = {**TENSOR_DESCRIPTIONS}
        inputs = [TensorInfo(name, descriptions[name], vocabulary if name == "input_ids" else None)
                  for name in input_order(converted)]  # fmt: skip
        pooled = f"{model.spec.pooling or 'mean'}-pooled" + (", L2-normalized" if model.spec.normalize else "")
        metadata = ModelMetadata(
            name=model.source,
            description=f"{model.spec.architecture} sentence embeddings ({pooled}), one signature per input length",
            version=f"{options.scheme}, {encoder.max_context} tokens",
            author=model.attribution or "unknown",
            license=model.license or "unknown",
            inputs=inputs,
            outputs=[TensorInfo("embedding", f"One {model.spec.hidden_size}-dim sentence embedding ({pooled}).")],
            files=[vocabulary] if vocabulary else [],
        )
        path = out_dir / ENCODER_FILE
        write_metadata(converted, path, metadata)
        return path

    def reference(self, prepared: Prepared, artifact: Artifact) -> Prepared:
        module = copy.deepcopy(prepared.module)
        _adopt_by_role(module, stored_weights(tflite_of(artifact)))
        if isinstance(module, ExportableEncoder):
            return Prepared(module=module, runner=EagerEncoderRunner(module))
        return Prepared(module=module, runner=OriginalDecoderRunner(module))

    def benchmark_blocker(self, artifact: Artifact) -> str | None:
        # LiteRT-LM and the interpreter run on every desktop OS, but on its CPU kernels: no figure for a GPU target.
        return "LiteRT-LM's GPU backend runs only on the device" if artifact.delegate == "gpu" else None

    def benchmark(self, artifact: Artifact, request: BenchRequest) -> BenchResult:
        return benchmark_litert(artifact.path, request, signature_length(artifact.signature))

    def host_runner(self, artifact: Artifact, model: Model) -> Runner | str:
        if model.spec.task == "text-generation":
            app_runtime = LiteRtLmGeneration(artifact.path, signature_length(artifact.signature))
            runner = TfliteDecoderRunner(tflite_of(artifact), app_runtime)
            if artifact.delegate == "gpu":  # say which kernels the figures come from
                runner.runtime += "; CPU kernels: LiteRT's GPU backend runs only on the device"
            return runner
        return TfliteEncoderRunner(artifact.path)


def _adopt_by_role(module: torch.nn.Module, stored: dict[str, list[Any]]) -> None:
    """Linear layers take the weights fully connected ops read, embedding tables those lookups read. A tied
    output projection is untied first: LiteRT stores it twice, quantized for each op."""
    hf_model = module.model if isinstance(module, ExportableEncoder) else module
    output, table = hf_model.get_output_embeddings(), hf_model.get_input_embeddings()
    if output is not None and table is not None and output.weight is table.weight:
        output.weight = torch.nn.Parameter(output.weight.detach().clone())
    linears = [m.weight for m in module.modules() if isinstance(m, torch.nn.Linear)]
    tables = [m.weight for m in module.modules() if isinstance(m, torch.nn.Embedding)]
    adopt_artifact_weights(linears, stored["FULLY_CONNECTED"] + stored["other"])
    adopt_artifact_weights(tables, stored["EMBEDDING_LOOKUP"] + stored["other"])


def tflite_of(artifact: Artifact) -> Path:
    """The .tflite the interpreter runs: the encoder artifact itself, or the decoder's, kept beside its bundle."""
    return artifact.path.with_name(DECODER_TFLITE) if artifact.path.suffix == ".litertlm" else artifact.path


def signature_length(signature: dict[str, Any]) -> int:
    """The longest token sequence the artifact takes: a decoder's KV cache length, an encoder's longest input."""
    return int(signature["metadata"]["max_length"])


def _cache_length(signature: dict[str, Any]) -> int:
    """A decoder's KV cache length: the last dimension of its decode signature's attention mask."""
    method = next(m for m in signature["methods"] if m["name"] == "decode")
    return int(next(t for t in method["inputs"] if t["name"] == "mask")["shape"][-1])
