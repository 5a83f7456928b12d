"""Benchmark: export SmolLM2-135M-Instruct with a8w4 for XNNPACK and measure it on the host.

Reports export wall time, export peak RSS, .pte size and TextLLMRunner decode speed (64-token prompt,
128 new tokens, median of 5), with ratios to the targets in issue 2 and the peer figures in DESIGN §9.
Run on demand: .venv/bin/python bench/export_smollm2_a8w4.py [--scheme a8w4] [--iterations 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from builder.backends.base import LoweringOptions
from builder.backends.executorch import ExecuTorchBackend
from builder.bench.host import benchmark_decoder
from builder.models import load_model
from builder.targets import catalogue
from builder.validate.data import load_eval_text

# DESIGN §9, optimum-executorch 1.1.0 on this machine: 8da4w g32 + emb 8w, custom SDPA/KV.
PEER = {"a8w4": {"pte_mb": 105, "decode_tok_s": 240, "export_s": 356, "export_peak_rss_mb": 2646},
        "a8w8": {"pte_mb": 164, "decode_tok_s": 217, "export_s": 380, "export_peak_rss_mb": 2628}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scheme", default="a8w4", choices=["fp32", "a8w8", "a8w4"])
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()

    model = load_model("builtin:smollm2-135m-instruct", "text-generation", Path.cwd(), 512)
    fp32_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    backend = ExecuTorchBackend()
    options = LoweringOptions(scheme=args.scheme, quantize_embeddings=args.scheme != "fp32", max_context=512)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        prepared = backend.prepare(model, options)
        artifact = backend.lower(prepared, model, catalogue()["android-xnnpack"], options, Path(tmp))
        export_s = time.perf_counter() - start
        export_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        text = load_eval_text("builtin:shakespeare", Path.cwd())
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"][:64]
        bench = benchmark_decoder(
            artifact.path, model.tokenizer_dir / "tokenizer.json", model.tokenizer.decode(ids),
            new_tokens=128, warmup=1, iterations=args.iterations,
        )  # fmt: skip
        pte_mb = artifact.path.stat().st_size / 2**20
    report = {
        "scheme": args.scheme,
        "pte_mb": round(pte_mb, 1),
        "export_s": round(export_s, 1),
        "export_peak_rss_mb": round(export_rss, 0),
        "rss_before_export_mb": round(rss_before, 0),
        "fp32_model_mb": round(fp32_bytes / 2**20, 1),
        "export_peak_rss_over_fp32_bytes": round(export_rss * 2**20 / fp32_bytes, 2),
        "decode_tok_s": bench.decode_tok_s,
        "decode_tok_s_spread": bench.spread.get("decode_tok_s"),
        "prefill_tok_s": bench.prefill_tok_s,
        "ttft_ms": bench.ttft_ms,
        "model_load_ms": bench.model_load_ms,
        "runtime_peak_rss_mb": bench.peak_rss_mb,
        "prompt_tokens": bench.prompt_tokens,
        "new_tokens": bench.new_tokens,
    }
    peer = PEER.get(args.scheme)
    if peer:
        report["ratio_vs_peer"] = {
            "decode_tok_s": round((bench.decode_tok_s or 0) / peer["decode_tok_s"], 2),
            "pte_mb": round(pte_mb / peer["pte_mb"], 2),
            "export_s": round(export_s / peer["export_s"], 2),
            "note": "peer figures are from DESIGN §9 (a different run; the machine is noisy)",
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
