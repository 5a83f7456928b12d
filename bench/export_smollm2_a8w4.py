"""Benchmark: export SmolLM2-135M-Instruct with a8w4 for XNNPACK and measure it on the host.

The model comes from a default recipe (max_context 512, as the peer's export), so a8w4 applies the recipe's
weight plan (GPTQ, mixed precision): planning is timed apart, and is quick when a build made the plan before
(it is cached by model, settings and calibration text). Reports export wall time and peak RSS, the whole
process's wall time and peak RSS up to the written .pte (what /usr/bin/time shows for the peer's optimum-cli
run, imports and model loading included), .pte size and TextLLMRunner decode speed (64-token prompt, 128 new
tokens, median of 5), with ratios to the peer figures in DESIGN §9. `--peer PTE` (e.g. optimum-executorch's
8da4w export) measures decode of both .pte files in turn, `--rounds` times, and reports the ratio of their
medians: the machine is noisy, so only that ratio compares (DESIGN §9).
Run on demand: .venv/bin/python bench/export_smollm2_a8w4.py [--scheme a8w4] [--iterations 5] [--peer x.pte]
    [--keep ours.pte]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # the process's wall time counts imports, as the peer's does

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from rich.console import Console  # noqa: E402

from builder.backends.base import LoweringOptions  # noqa: E402
from builder.backends.executorch import ExecuTorchBackend  # noqa: E402
from builder.bench.host import benchmark_pte, decode_in_turn  # noqa: E402
from builder.pipeline import WeightPlans, bench_request, load_inputs, lower_artifact  # noqa: E402
from builder.progress import BuildProgress  # noqa: E402
from builder.recipe import load_recipe  # noqa: E402
from builder.targets import catalogue  # noqa: E402

RECIPE = """\
[package]
name = "export-bench"
version = "0.1.0"
android_namespace = "com.example.exportbench"
ios_module = "ExportBench"

[model]
source = "builtin:smollm2-135m-instruct"
task = "text-generation"
max_context = 512

[compress]
quantize = "{scheme}"

[eval]  # as bench/quality_4bit.py's, so the weight plan a build of it made is reused
windows = 4
window_tokens = 256

[[targets]]
name = "android-xnnpack"
"""

# DESIGN §9, optimum-executorch 1.1.0 on this machine: 8da4w g32 + emb 8w, custom SDPA/KV.
PEER = {"a8w4": {"pte_mb": 105, "decode_tok_s": 240, "export_s": 356, "export_peak_rss_mb": 2646},
        "a8w8": {"pte_mb": 164, "decode_tok_s": 217, "export_s": 380, "export_peak_rss_mb": 2628}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scheme", default="a8w4", choices=["fp32", "a8w8", "a8w4"])
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--peer", type=Path, help="Another .pte whose decode is measured in turn with ours")
    parser.add_argument("--rounds", type=int, default=3, help="With --peer: turns each .pte is measured in")
    parser.add_argument("--keep", type=Path, help="Copy the exported .pte here, to measure it again later")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "recipe.toml"
        recipe.write_text(RECIPE.format(scheme=args.scheme))
        loaded = load_recipe(recipe)
        model, text, _ = load_inputs(loaded)
        fp32_bytes = sum(p.numel() * p.element_size() for p in model.module.parameters())
        options = LoweringOptions(scheme=args.scheme, quantize_embeddings=args.scheme != "fp32", max_context=512)
        start = time.perf_counter()
        with BuildProgress(Console(stderr=True), 0) as progress:
            options = WeightPlans(model, loaded, text, progress).options(options, "executorch")
        plan_s = time.perf_counter() - start
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        backend = ExecuTorchBackend()
        start = time.perf_counter()
        prepared = backend.prepare(model, options)
        target = catalogue()["android-xnnpack"]
        artifact = lower_artifact(backend, prepared, [model], target, options, Path(tmp))  # as a build does
        export_s = time.perf_counter() - start
        process_s = time.perf_counter() - STARTED
        export_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        request = bench_request(model, text, args.iterations)
        bench = benchmark_pte(artifact.path, request)
        in_turn = decode_in_turn([artifact.path, args.peer], request, args.rounds) if args.peer else None
        pte_mb = artifact.path.stat().st_size / 1e6  # decimal MB, as the peer table (RSS figures are MiB)
        if args.keep:
            shutil.copyfile(artifact.path, args.keep)
    report = {
        "scheme": args.scheme,
        "pte_mb": round(pte_mb, 1),
        "plan_s": round(plan_s, 1),
        "eight_bit_linears": sum(b == 8 for b in options.plan.bits.values()) if options.plan else None,
        "export_s": round(export_s, 1),
        "process_s_to_pte": round(process_s, 1),
        # ru_maxrss is the process's peak so far: the export's own peak when it exceeds what came before.
        "peak_rss_to_pte_mb": round(export_rss, 0),
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
            "process_s_to_pte": round(process_s / peer["export_s"], 2),
            "peak_rss_to_pte_mb": round(export_rss / peer["export_peak_rss_mb"], 2),
            "note": "peer figures are from DESIGN §9 (a different run; the machine is noisy)",
        }
    if in_turn:
        ours, theirs = (statistics.median(rounds) for rounds in in_turn)
        report["decode_in_turn_with_peer"] = {
            "peer": str(args.peer), "ours_tok_s": in_turn[0], "peer_tok_s": in_turn[1], "ratio": round(ours / theirs, 3)
        }  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
