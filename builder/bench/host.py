"""Host benchmark of a .pte with ExecuTorch's own runners, in the DESIGN §8 schema.

Each measurement runs in a fresh subprocess: peak RSS then belongs to the runtime alone (not to the
eager models the build holds), and TextLLMRunner's habit of printing generated text to stdout
cannot reach the user's terminal.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import SlmpackError


@dataclass
class BenchResult:
    runtime: str
    runtime_version: str
    model_load_ms: float
    ttft_ms: float | None
    prefill_tok_s: float | None
    decode_tok_s: float | None
    peak_rss_mb: float
    artifact_bytes: int
    prompt_tokens: int
    new_tokens: int
    warmup: int
    iterations: int
    threads: int
    device: str
    spread: dict[str, list[float]] = field(default_factory=dict)  # metric -> [min, max] over iterations

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BenchRequest:
    """What every backend's host benchmark measures: the same prompt, so figures compare across runtimes."""

    decoder: bool
    prompt_text: str  # decoders: the prompt, as text (runners tokenize it themselves)
    prompt_ids: list[int]  # encoders: one tokenized text
    tokenizer_json: Path
    new_tokens: int
    iterations: int


def benchmark_pte(pte: Path, request: BenchRequest) -> BenchResult:
    if request.decoder:
        return benchmark_decoder(pte, request.tokenizer_json, request.prompt_text, request.new_tokens,
                                 iterations=request.iterations)  # fmt: skip
    return benchmark_encoder(pte, request.prompt_ids)


def decode_in_turn(ptes: list[Path], request: BenchRequest, rounds: int) -> list[list[float]]:
    """Decode tok/s of each decoder .pte, measured one after another `rounds` times: on a shared, noisy
    machine only figures taken side by side compare (DESIGN §9). One list of per-round medians per .pte."""
    samples: list[list[float]] = [[] for _ in ptes]
    for _ in range(rounds):
        for pte, measured in zip(ptes, samples, strict=True):
            measured.append(benchmark_pte(pte, request).decode_tok_s or 0.0)
    return samples


def _device() -> str:
    return f"host {platform.machine()} {platform.system()} ({os.cpu_count()} cpus)"


def _median_and_spread(runs: list[dict[str, float]], key: str) -> tuple[float | None, list[float]]:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None, []
    return statistics.median(values), [min(values), max(values)]


def benchmark_decoder(
    pte: Path, tokenizer_json: Path, prompt: str, new_tokens: int = 128, warmup: int = 1, iterations: int = 5
) -> BenchResult:
    """TTFT, prefill and decode speed with ExecuTorch's TextLLMRunner (the runtime apps embed)."""
    args = {"path": str(pte), "tokenizer": str(tokenizer_json), "prompt": prompt, "new_tokens": new_tokens,
            "warmup": warmup, "iterations": iterations}  # fmt: skip
    report = run_worker("decoder", args)
    runs = report["runs"]
    return summarize("executorch.TextLLMRunner", report, pte, warmup, iterations,
                      prompt_tokens=int(statistics.median(r["prompt_tokens"] for r in runs)),
                      new_tokens=int(statistics.median(r["new_tokens"] for r in runs)))  # fmt: skip


def summarize(
    runtime: str, report: dict[str, Any], pte: Path, warmup: int, iterations: int, prompt_tokens: int, new_tokens: int
) -> BenchResult:
    """Medians over the measured runs, with [min, max] as the spread of each metric."""
    result = BenchResult(
        runtime=runtime,
        runtime_version=report["runtime_version"],
        model_load_ms=report["model_load_ms"],
        ttft_ms=None,
        prefill_tok_s=None,
        decode_tok_s=None,
        peak_rss_mb=report["peak_rss_mb"],
        artifact_bytes=pte.stat().st_size,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        warmup=warmup,
        iterations=iterations,
        threads=os.cpu_count() or 1,
        device=_device(),
    )
    for key in ("ttft_ms", "prefill_tok_s", "decode_tok_s"):
        median, spread = _median_and_spread(report["runs"], key)
        setattr(result, key, median)
        if spread:
            result.spread[key] = spread
    return result


def run_worker(kind: str, args: dict[str, Any], module: str = "builder.bench.host") -> dict[str, Any]:
    """Run `module`'s worker `kind` in a fresh process; it prints one SLMPACK_BENCH line of JSON."""
    cmd = [sys.executable, "-m", module, kind, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SLMPACK_BENCH ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise SlmpackError(f"host benchmark of {args['path']} failed: {' | '.join(tail) or 'no output'}")
    return json.loads(lines[-1].removeprefix("SLMPACK_BENCH "))


def peak_rss_mb() -> float:
    # ru_maxrss survives exec on Linux, so a worker would report its parent's peak; VmHWM belongs to
    # this address space alone.
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _decoder_worker(args: dict[str, Any]) -> dict[str, Any]:
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from builder.tasks.executorch_ops import load_executorch_llm_ops
    from builder.tools import package_version

    load_executorch_llm_ops()
    runner = TextLLMRunner(args["path"], args["tokenizer"])
    runs: list[dict[str, float]] = []
    load_ms: float | None = None
    for i in range(args["warmup"] + args["iterations"]):
        captured: dict[str, float] = {}

        def on_stats(stats: Any, into: dict[str, float] = captured) -> None:
            # The runner reuses one Stats object between calls: copy the fields now.
            for name in ("model_load_start_ms", "model_load_end_ms", "inference_start_ms",
                         "prompt_eval_end_ms", "first_token_ms", "inference_end_ms",
                         "num_prompt_tokens", "num_generated_tokens"):  # fmt: skip
                into[name] = float(getattr(stats, name))

        config = GenerationConfig(echo=False, max_new_tokens=args["new_tokens"], temperature=0.0)
        runner.generate(args["prompt"], config, stats_callback=on_stats)
        if load_ms is None:
            # TextLLMRunner has no load(): it loads inside the first generate.
            load_ms = captured["model_load_end_ms"] - captured["model_load_start_ms"]
        if i < args["warmup"]:
            runner.reset()
            continue
        prompt_ms = captured["prompt_eval_end_ms"] - captured["inference_start_ms"]
        decode_ms = captured["inference_end_ms"] - captured["first_token_ms"]
        generated = captured["num_generated_tokens"]
        runs.append(
            {
                "ttft_ms": captured["first_token_ms"] - captured["inference_start_ms"],
                "prefill_tok_s": captured["num_prompt_tokens"] / prompt_ms * 1000 if prompt_ms > 0 else None,
                "decode_tok_s": (generated - 1) / decode_ms * 1000 if decode_ms > 0 and generated > 1 else None,
                "prompt_tokens": captured["num_prompt_tokens"],
                "new_tokens": generated,
            }
        )
        runner.reset()
    return {
        "runs": runs,
        "model_load_ms": load_ms,
        "peak_rss_mb": peak_rss_mb(),
        "runtime_version": package_version("executorch"),
    }


def _encoder_worker(args: dict[str, Any]) -> dict[str, Any]:
    import torch
    from executorch.runtime import Runtime

    from builder.tasks.executorch_ops import load_executorch_llm_ops
    from builder.tools import package_version

    load_executorch_llm_ops()
    start = time.perf_counter()
    method = Runtime.get().load_program(args["path"]).load_method("forward")
    load_ms = (time.perf_counter() - start) * 1000
    ids = torch.tensor([args["input_ids"]], dtype=torch.long)
    mask = torch.ones_like(ids)
    runs = []
    for i in range(args["warmup"] + args["iterations"]):
        start = time.perf_counter()
        method.execute([ids, mask])
        elapsed = (time.perf_counter() - start) * 1000
        if i >= args["warmup"]:
            runs.append({"ttft_ms": elapsed, "prefill_tok_s": ids.shape[1] / elapsed * 1000})
    return {"runs": runs, "model_load_ms": load_ms, "peak_rss_mb": peak_rss_mb(),
            "runtime_version": package_version("executorch")}  # fmt: skip


def benchmark_encoder(pte: Path, input_ids: list[int], warmup: int = 2, iterations: int = 10) -> BenchResult:
    """Latency of one embedding call (reported as TTFT) and its token throughput."""
    args = {"path": str(pte), "input_ids": input_ids, "warmup": warmup, "iterations": iterations}
    report = run_worker("encoder", args)
    return summarize("executorch.runtime", report, pte, warmup, iterations, len(input_ids), 0)


def worker_main(workers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """The worker process: run the named worker and print its report on one SLMPACK_BENCH line."""
    kind, raw = sys.argv[1], sys.argv[2]
    report = workers[kind](json.loads(raw))
    sys.stdout.flush()
    print("\nSLMPACK_BENCH " + json.dumps(report), flush=True)


if __name__ == "__main__":
    worker_main({"decoder": _decoder_worker, "encoder": _encoder_worker})
