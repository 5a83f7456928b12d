"""LiteRT exports: decoders through litert-torch's Hugging Face export (.tflite with prefill/decode signatures,
bundled as .litertlm), encoders through `litert_torch.convert` (.tflite with one `embed` signature).

The decoder export runs in a subprocess: it needs the TensorFlow import shim on its path (which must never
reach the build process), it peaks at several GB on real models, and it prints its own progress log,
which is kept in the artifact folder instead of the user's terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from builder.errors import SlmpackError
from builder.quiet import quiet

SHIM = Path(__file__).resolve().parent / "litert_shim"
EXPORT_LOG = "export.log"


@dataclass(frozen=True)
class DecoderExport:
    folder: str  # a Hugging Face model folder: weights, config, tokenizer
    out_dir: str
    prefill_length: int
    cache_length: int
    recipe: str | None  # an ai-edge-quantizer recipe JSON, None for fp32


def export_decoder(request: DecoderExport) -> tuple[Path, Path]:
    """Run the export; returns the .litertlm bundle and the (quantized) .tflite inside it."""
    out = Path(request.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = out / EXPORT_LOG
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SHIM), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "builder.backends.litert_export", json.dumps(asdict(request))]
    with log.open("w", encoding="utf-8") as sink:
        proc = subprocess.run(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, check=False)
    if proc.returncode != 0:
        tail = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()][-4:]
        raise SlmpackError(f"litert-torch export failed (log: {log}): {' | '.join(tail)}")
    tflites = sorted(out.glob("*.tflite"), key=lambda p: p.name.endswith("_quantized.tflite"), reverse=True)
    return out / "model.litertlm", tflites[0]


def _run_decoder_export(request: DecoderExport) -> None:
    from litert_torch.generative.export_hf import export as hf_export
    from litert_torch.generative.export_hf.core import litert_lm_builder

    build_llm_metadata = litert_lm_builder.build_llm_metadata

    def without_start_token(*args: object, **kwargs: object) -> object:
        # The exporter makes a chat template's first token (SmolLM2: <|im_start|>) the bundle's start token,
        # which LiteRT-LM prepends to every prefill. The wrappers feed text slmpack's chat template already
        # formatted, special tokens included, so the runtime must add none: the device then reads exactly
        # the prompt ids the host validated.
        metadata = build_llm_metadata(*args, **kwargs)
        metadata.ClearField("start_token")
        return metadata

    litert_lm_builder.build_llm_metadata = without_start_token
    hf_export.export(
        model=request.folder,
        output_dir=request.out_dir,
        prefill_lengths=[request.prefill_length],
        cache_length=request.cache_length,
        bundle_litert_lm=True,
        quantization_recipe=request.recipe or "none",  # the exporter's own default is int8
        keep_temporary_files=True,  # keeps the .tflite beside the bundle, for the interpreter to validate
    )


class NamedEmbedding(torch.nn.Module):
    """Names the encoder's output `embedding` in the .tflite signature (a dict output keeps its keys)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"embedding": self.encoder(input_ids, attention_mask)}


SHORTEST_ENCODER_LENGTH = 32


def encoder_lengths(max_length: int) -> list[int]:
    """The fixed input lengths an encoder .tflite offers: powers of two from 32 up, and its maximum. A text
    runs through the shortest that holds it, so a short sentence does not pay for the whole context."""
    lengths = [n for n in (2**k for k in range(5, 16)) if n < max_length]
    return [*lengths, max_length] if max_length >= SHORTEST_ENCODER_LENGTH else [max_length]


def encoder_signature(length: int) -> str:
    return f"embed_{length}"


def convert_encoder(encoder: torch.nn.Module, lengths: list[int], path: Path) -> None:
    """One `embed_<length>` signature per length, sharing one copy of the weights: litert-torch 0.10.0 cannot
    convert a dynamic sequence length of this graph, so the wrappers pad to the shortest length that fits.
    The longest comes first, as subgraph 0 is the one TFLite metadata describes."""
    named = NamedEmbedding(encoder).eval()
    with quiet(1, 2), torch.no_grad():  # the converter's native logging starts on import
        import litert_torch

        converter: Any = litert_torch
        for length in sorted(lengths, reverse=True):
            example = {
                "input_ids": torch.ones((1, length), dtype=torch.long),
                "attention_mask": torch.ones((1, length), dtype=torch.long),
            }
            converter = converter.signature(encoder_signature(length), named, sample_kwargs=example)
        converter.convert().export(str(path))


if __name__ == "__main__":
    _run_decoder_export(DecoderExport(**json.loads(sys.argv[1])))
