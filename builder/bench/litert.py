"""Host benchmark of LiteRT artifacts in the DESIGN §8 schema: a .litertlm in LiteRT-LM (the runtime the
Android wrapper embeds, with its own benchmark counters), an encoder .tflite in the LiteRT interpreter.
Each runs in a fresh process, like the ExecuTorch benchmark, so peak RSS is the runtime's alone."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from builder.bench.host import BenchRequest, BenchResult, peak_rss_mb, run_worker, summarize, worker_main

WORKERS_MODULE = "builder.bench.litert"
ENCODER_WARMUP, ENCODER_ITERATIONS = 2, 10


def benchmark_litert(path: Path, request: BenchRequest, max_tokens: int) -> BenchResult:
    if request.decoder:
        args = {"path": str(path), "prompt": request.prompt_text, "new_tokens": request.new_tokens,
                "max_tokens": max_tokens, "warmup": 1, "iterations": request.iterations}  # fmt: skip
        report = run_worker("litertlm", args, WORKERS_MODULE)
        runs = report["runs"]
        return summarize(report["runtime"], report, path, 1, request.iterations,
                         prompt_tokens=int(statistics.median(r["prompt_tokens"] for r in runs)),
                         new_tokens=int(statistics.median(r["new_tokens"] for r in runs)))  # fmt: skip
    args = {"path": str(path), "input_ids": request.prompt_ids, "warmup": ENCODER_WARMUP,
            "iterations": ENCODER_ITERATIONS}  # fmt: skip
    report = run_worker("tflite_encoder", args, WORKERS_MODULE)
    return summarize(report["runtime"], report, path, ENCODER_WARMUP, ENCODER_ITERATIONS, len(request.prompt_ids), 0)


def _litertlm_worker(args: dict[str, Any]) -> dict[str, Any]:
    from builder.backends.litert_runners import greedy_sampler, litert_lm_engine
    from builder.tools import package_version

    options = {"apply_prompt_template": False, "max_output_tokens": args["new_tokens"],
               "sampler_config": greedy_sampler()}  # fmt: skip
    runs = []
    start = time.perf_counter()
    with litert_lm_engine(Path(args["path"]), args["max_tokens"], enable_benchmark=True) as engine:
        load_ms = (time.perf_counter() - start) * 1000
        for i in range(args["warmup"] + args["iterations"]):
            with engine.create_session(**options) as session:
                session.run_prefill([args["prompt"]])
                session.run_decode()
                info = session.get_benchmark_info()
            if i < args["warmup"]:
                continue
            runs.append(
                {
                    "ttft_ms": info.time_to_first_token_in_second * 1000,
                    "prefill_tok_s": info.last_prefill_tokens_per_second,
                    "decode_tok_s": info.last_decode_tokens_per_second,
                    "prompt_tokens": info.last_prefill_token_count,
                    "new_tokens": info.last_decode_token_count,
                }
            )
    return {"runs": runs, "model_load_ms": load_ms, "peak_rss_mb": peak_rss_mb(),
            "runtime": "litert_lm.Engine (CPU)", "runtime_version": package_version("litert-lm-api")}  # fmt: skip


def _tflite_encoder_worker(args: dict[str, Any]) -> dict[str, Any]:
    from builder.backends.litert_export import encoder_signature
    from builder.backends.litert_runners import encoder_lengths_of, interpreter, padded_inputs
    from builder.tools import package_version

    ids = args["input_ids"]
    start = time.perf_counter()
    model = interpreter(Path(args["path"]))
    feeds = padded_inputs(encoder_lengths_of(model), ids, [1] * len(ids))
    length = feeds["input_ids"].shape[1]
    embed = model.get_signature_runner(encoder_signature(length))
    load_ms = (time.perf_counter() - start) * 1000
    count = min(len(ids), length)
    runs = []
    for i in range(args["warmup"] + args["iterations"]):
        start = time.perf_counter()
        embed(**feeds)
        elapsed = (time.perf_counter() - start) * 1000
        if i >= args["warmup"]:
            runs.append({"ttft_ms": elapsed, "prefill_tok_s": count / elapsed * 1000})
    return {"runs": runs, "model_load_ms": load_ms, "peak_rss_mb": peak_rss_mb(),
            "runtime": "ai_edge_litert.Interpreter", "runtime_version": package_version("ai-edge-litert")}  # fmt: skip


if __name__ == "__main__":
    worker_main({"litertlm": _litertlm_worker, "tflite_encoder": _tflite_encoder_worker})
