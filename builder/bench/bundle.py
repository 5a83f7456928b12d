"""`slmpack bench`: re-measure a bundle's artifacts in their host runtimes at several prompt lengths, with a
roofline (weight bytes read per decoded token against this machine's measured memory bandwidth), and write
the figures into the bundle's manifest and report."""

from __future__ import annotations

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from tokenizers import Tokenizer

from builder.backends import get_backend
from builder.backends.base import Artifact
from builder.bench.host import BenchRequest
from builder.bench.records import FIGURES, host_benchmarks
from builder.errors import UserInputError
from builder.packages import read_manifest, rerender
from builder.validate.data import load_eval_text

NEW_TOKENS = 128
DEFAULT_PROMPTS = (64, 512)
_ARTIFACT_FIELDS = ("target", "backend", "delegate", "quantization", "quantize_embeddings", "signature",
                    "runtime_version", "operators", "min_os", "sparsity")  # fmt: skip


def artifact_of(bundle: Path, entry: dict[str, Any]) -> Artifact:
    return Artifact(path=bundle / entry["path"], **{key: entry.get(key) for key in _ARTIFACT_FIELDS})


def memory_bandwidth_gb_s(threads: int = 1, megabytes: int = 256, repeats: int = 10) -> float:
    """Best of `repeats` rounds of `threads` concurrent copies (the benchmark's thread count: one core alone
    cannot draw the whole bus) of buffers far larger than any cache: bytes read + written per second."""
    sources = [np.ones(megabytes * 2**20 // 8 // threads) for _ in range(threads)]
    targets = [np.empty_like(source) for source in sources]
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:  # numpy copies release the GIL
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(np.copyto, targets, sources))
            best = min(best, time.perf_counter() - start)
    return 2 * sum(source.nbytes for source in sources) / best / 1e9


def bytes_read_per_token(data: dict[str, Any], entry: dict[str, Any]) -> int:
    """The artifact's bytes less its embedding table, of which a token reads one row (int8 where the
    embeddings are quantized, else fp32): every other weight is read once per decoded token."""
    model = data["model"]
    table = model["vocab_size"] * model["hidden_size"] * (1 if entry.get("quantize_embeddings") else 4)
    return max(entry["bytes"] - table, 1)


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: list[int]


def prompts_of(bundle: Path, lengths: list[int], max_tokens: int) -> list[Prompt]:
    """The first tokens of the built-in evaluation text at each length, as text (decoders) and ids (encoders)."""
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer" / "tokenizer.json"))
    text = load_eval_text("builtin:shakespeare", bundle)
    prompts = []
    for tokens in lengths:
        ids = tokenizer.encode(text[: tokens * 32], add_special_tokens=False).ids[: min(tokens, max_tokens)]
        prompts.append(Prompt(tokenizer.decode(ids), ids))
    return prompts


def roofline(weight_bytes: int, decode_tok_s: float | None, bandwidth_gb_s: float) -> dict[str, Any]:
    """Decoding reads every weight once per token, so bandwidth / weight bytes bounds decode speed (the KV
    cache read beside them is left out: small at short prompts)."""
    bound = bandwidth_gb_s * 1e9 / weight_bytes
    return {"bandwidth_gb_s": round(bandwidth_gb_s, 2), "weight_bytes_per_token": weight_bytes,
            "decode_tok_s_bound": round(bound, 1),
            "fraction_of_bound": round(decode_tok_s / bound, 3) if decode_tok_s else None}  # fmt: skip


def bench_bundle(
    bundle: Path, prompt_lengths: list[int] | None, iterations: int, new_tokens: int = NEW_TOKENS
) -> dict[str, Any]:
    """Measure every artifact with a host runtime; returns the manifest with `benchmark` (the first prompt
    length), `benchmarks` (every length) and `roofline` set per artifact, or `benchmark_note` saying why not.
    Without `prompt_lengths`, DEFAULT_PROMPTS, each cut to what fits the context beside `new_tokens`."""
    data = read_manifest(bundle)
    decoder = data["model"]["task"] == "text-generation"
    max_tokens = data["model"]["max_context"] - (new_tokens if decoder else 0)
    if max_tokens < 1:
        raise UserInputError(f"--new-tokens {new_tokens} leaves no room for a prompt in model.max_context = "
                             f"{data['model']['max_context']}. Fix: decode fewer tokens")  # fmt: skip
    if prompt_lengths is None:
        prompt_lengths = list(dict.fromkeys(min(length, max_tokens) for length in DEFAULT_PROMPTS))
    if decoder and max(prompt_lengths) > max_tokens:
        raise UserInputError(f"--prompt-tokens {max(prompt_lengths)} and --new-tokens {new_tokens} do not fit "
                             f"model.max_context = {data['model']['max_context']}. Fix: ask for fewer tokens, "
                             f"at most {data['model']['max_context']} together")  # fmt: skip
    bandwidth = functools.cache(memory_bandwidth_gb_s)
    tokenizer_json = bundle / "tokenizer" / "tokenizer.json"
    prompts = prompts_of(bundle, prompt_lengths, max_tokens if decoder else data["model"]["max_context"])
    for entry in data["artifacts"]:
        artifact = artifact_of(bundle, entry)
        backend = get_backend(artifact.backend)
        blocker = backend.benchmark_blocker(artifact)
        if blocker is not None:
            entry.update(benchmark=None, benchmarks=[], roofline=None, benchmark_note=blocker)
            continue
        results = []
        for prompt in prompts:
            request = BenchRequest(decoder, prompt.text, prompt.ids, tokenizer_json, new_tokens, iterations)
            results.append(backend.benchmark(artifact, request).to_json())
        bound = None
        if decoder:
            first = results[0]
            bound = roofline(bytes_read_per_token(data, entry), first["decode_tok_s"], bandwidth(first["threads"]))
        entry.update(benchmark=results[0], benchmarks=results, benchmark_note=None, roofline=bound)
    return data


def write_manifest(bundle: Path, data: dict[str, Any]) -> None:
    """Replace the manifest in one rename, with the report and packages re-rendered from it."""
    for entry in data["artifacts"]:
        if entry.get("memory_estimate") and entry.get("benchmark"):
            entry["memory_estimate"]["host_peak_rss_mb"] = round(entry["benchmark"]["peak_rss_mb"], 1)
    rerender(bundle, data=data)


def print_bench(data: dict[str, Any], baseline: dict[str, Any] | None, console: Console) -> None:
    """One row per artifact and prompt length; with a baseline, each figure's ratio to the baseline artifact
    of the same target at the same prompt length (above 1 is better: speeds divided, times and memory
    inverted)."""
    before = {entry["target"]: entry for entry in (baseline or {}).get("artifacts", [])}
    table = Table(title=f"{data['package']['name']} {data['package']['version']}: host benchmark")
    for column in ("target", "scheme", "size", "prompt", *(label for label, _, _ in FIGURES), "decode bound"):
        table.add_column(column)
    for entry in data["artifacts"]:
        if not entry.get("benchmarks"):
            table.add_row(entry["target"], entry["quantization"], f"{entry['bytes'] / 2**20:.1f} MB",
                          f"not run: {entry.get('benchmark_note')}")  # fmt: skip
            continue
        base = before.get(entry["target"], {})
        old = {b["prompt_tokens"]: b for b in host_benchmarks(base)}
        for index, result in enumerate(entry["benchmarks"]):
            reference = old.get(result["prompt_tokens"])
            cells = [_figure(result.get(key), reference.get(key) if reference else None, faster)
                     for _, key, faster in FIGURES]  # fmt: skip
            bound = entry.get("roofline") or {}
            table.add_row(entry["target"], entry["quantization"], f"{entry['bytes'] / 2**20:.1f} MB",
                          str(result["prompt_tokens"]), *cells,
                          f"{bound['decode_tok_s_bound']:.0f} tok/s" if bound and index == 0 else "")  # fmt: skip
    console.print(table)


def _figure(value: float | None, reference: float | None, higher_is_better: bool) -> str:
    if value is None:
        return "—"
    text = f"{value:,.1f}"
    # The runner's clock counts whole milliseconds, so a tiny model can read 0: no ratio then, not a crash.
    if reference and value:
        text += f" ({value / reference if higher_is_better else reference / value:.2f}x)"
    return text
