"""Benchmark: SmolLM2-135M-Instruct at 4 bits, the default a8w4 against each of its options and fp32.

Each variant is built with `slmpack build` (one android-xnnpack target, max_context 1024, Hamlet 4 x 256
tokens) and benchmarked with `slmpack bench` (ExecuTorch TextLLMRunner, 64-token prompt, 128 new tokens,
median of 5), one after another on this machine. Reported side by side: .pte bytes, decode tok/s, build wall
and peak RSS (the whole build: loading, weight plan, export, validation), perplexity, top-1 agreement and KL
against the fp32 model. The source weights are a Q4_1 GGUF dequantized to fp32, so fp32 here is that
dequantization, not the original bf16 model.

`--peer PTE` benchmarks another .pte (e.g. optimum-executorch's 8da4w export) in the same run: each variant's
.pte and the peer's are measured in turn, `--rounds` times, and the decode ratio is of the medians, so both
see the same machine; the peer's issue-9 figures (105 MB, 240 tok/s, perplexity 40.47) are printed beside.
The peer's perplexity, top-1 and KL are measured on the same Hamlet windows, through the same ExecuTorch
runner, so its row compares with ours. `--prose FILE` (repeatable) scores every .pte (the peer's too) on the
first 4 x 256 tokens of another text as well: held-out prose besides Shakespeare (none ships offline; e.g. the
Python documentation's topics, `python -c "import pydoc_data.topics as t; print(*t.topics.values())"`, and a
licence such as /usr/share/common-licenses/GPL-3 on Debian).
`--reuse` keeps bundles an earlier run built (no build figures then), to re-measure without rebuilding.

Run on demand: .venv/bin/python bench/quality_4bit.py [--out bench-out] [--only default,hqq] [--peer x.pte]
    [--rounds 3] [--prose FILE ...] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from builder.models.base import Model

RECIPE = """\
[package]
name = "q4-{name}"
version = "0.1.0"
android_namespace = "com.example.q4"
ios_module = "Q4"

[model]
source = "builtin:smollm2-135m-instruct"
task = "text-generation"
max_context = 1024

[compress]
quantize = "{scheme}"
{compress}

[eval]
windows = 4
window_tokens = 256

[[targets]]
name = "android-xnnpack"
"""

# name -> (scheme, extra [compress] lines)
VARIANTS: dict[str, tuple[str, str]] = {
    "fp32": ("fp32", ""),
    "default": ("a8w4", ""),
    "hqq": ("a8w4", 'output_layer_int8 = true\n[compress.a8w4]\nmethod = "hqq"\nmixed_precision = false'),
    "hqq-head4": ("a8w4", 'output_layer_int8 = false\n[compress.a8w4]\nmethod = "hqq"\nmixed_precision = false'),
    "gptq-head8": ("a8w4", "output_layer_int8 = true\n[compress.a8w4]\nmixed_precision = false"),
    "gptq-4.8": ("a8w4", "[compress.a8w4]\nbits_per_weight = 4.8"),
    "gptq-6.0": ("a8w4", "[compress.a8w4]\nbits_per_weight = 6.0"),
}
PEER = {"pte_mb": 105, "decode_tok_s": 240, "perplexity": 40.47}  # issue 9: optimum-executorch 8da4w g32


def _slmpack(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "builder.cli", *args], check=True)


def run_variant(name: str, out: Path, reuse: bool) -> dict:
    scheme, compress = VARIANTS[name]
    recipe = out / f"{name}.toml"
    recipe.write_text(RECIPE.format(name=name, scheme=scheme, compress=compress))
    bundle = out / "dist" / f"q4-{name}-0.1.0"
    wall = peak = before = None
    if not (reuse and (bundle / "manifest.json").exists()):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.perf_counter()
        _slmpack("build", str(recipe), "--out", str(out / "dist"), "--no-bench")
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        _slmpack("bench", str(bundle), "--prompt-tokens", "64", "--iterations", "5")
    artifact = json.loads((bundle / "manifest.json").read_text())["artifacts"][0]
    v, b = artifact["validation"], artifact["benchmark"]
    plan = artifact.get("weight_plan") or {}
    return {
        "variant": name, "pte": str(bundle / artifact["path"]), "pte_bytes": artifact["bytes"],
        "decode_tok_s": b["decode_tok_s"], "build_s": round(wall, 1) if wall is not None else None,
        # ru_maxrss of children is the largest so far, so it is this build's only when it grew.
        "build_peak_rss_mb": round(peak / 1024) if peak and before is not None and peak > before else None,
        "perplexity": v["perplexity"], "perplexity_fp32": v["perplexity_reference"],
        "top1_agreement": v["top1_agreement"], "kl_divergence": v["kl_divergence"],
        "bits_per_weight": plan.get("bits_per_weight"), "eight_bit_layers": len(plan.get("eight_bit", [])),
    }  # fmt: skip


def head_to_head(model: Model, hamlet: str, rows: list[dict], peer: Path, rounds: int) -> dict:
    """Decode tok/s of each variant's .pte and the peer's, measured in turn `rounds` times (each a median of 5,
    64-token prompt, 128 new tokens, TextLLMRunner); each row gets the median of its rounds."""
    from builder.bench.host import decode_in_turn
    from builder.pipeline import bench_request

    peer_row = {"variant": f"peer {peer.name}", "pte": str(peer), "pte_bytes": peer.stat().st_size}
    measured = [*rows, peer_row]
    samples = decode_in_turn([Path(r["pte"]) for r in measured], bench_request(model, hamlet, 5), rounds)
    for r, rounds_of_r in zip(measured, samples, strict=True):
        r["decode_tok_s_head_to_head"] = statistics.median(rounds_of_r)
        r["decode_tok_s_rounds"] = rounds_of_r
    peer_row["decode_tok_s"] = peer_row["decode_tok_s_head_to_head"]
    return peer_row


def score(model: Model, pte: Path, text: str) -> dict:
    """Perplexity, top-1 agreement and KL against fp32 eager on the first 4 x 256 tokens of `text`, for `pte`
    run by the runner the build validates with (a fresh sequence per window)."""
    from builder.backends.executorch_runners import PteDecoderRunner
    from builder.validate.data import token_windows
    from builder.validate.decoder import OriginalDecoderRunner, measure_compression
    from builder.validate.gates import Validation

    v = Validation(runtime="executorch")
    windows = token_windows(model.tokenizer, text, 4, 256)
    measure_compression(PteDecoderRunner(pte), OriginalDecoderRunner(model.module), windows, v)
    return {"perplexity": v.perplexity, "perplexity_fp32": v.perplexity_reference,
            "top1_agreement": v.top1_agreement, "kl_divergence": v.kl_divergence}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-out/quality_4bit"))
    parser.add_argument("--only", default=",".join(VARIANTS), help="Variants, comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--peer", type=Path, help="Another .pte to benchmark in the same run (e.g. optimum's 8da4w)")
    parser.add_argument("--rounds", type=int, default=3, help="With --peer: turns each .pte is measured in")
    parser.add_argument("--prose", type=Path, action="append", default=[],
                        help="Another text to score every .pte on (first 4 x 256 tokens); repeatable")  # fmt: skip
    parser.add_argument("--reuse", action="store_true", help="Keep bundles an earlier run built in --out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(name.strip(), args.out, args.reuse) for name in args.only.split(",") if name.strip()]
    peer = None
    if args.peer or args.prose:
        from builder.models import load_model
        from builder.validate.data import load_eval_text

        model = load_model("builtin:smollm2-135m-instruct", "text-generation", Path.cwd(), 1024)
        hamlet = load_eval_text("builtin:shakespeare", Path.cwd())
    if args.peer:
        peer = head_to_head(model, hamlet, rows, args.peer, args.rounds)
        peer.update(score(model, args.peer, hamlet))  # the variants' Hamlet figures are their build's
        rows.append(peer)
    for path in args.prose:
        prose = path.read_text(encoding="utf-8")
        for r in rows:
            r.setdefault("prose", {})[str(path)] = score(model, Path(r["pte"]), prose)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    fp32 = next((r for r in rows if r["variant"] == "fp32"), None)
    print("Source weights: GGUF Q4_1 dequantized to fp32. Perplexity: Hamlet, 4 x 256 tokens.")
    print(f"Peer (issue 9, optimum-executorch 8da4w): {PEER}")
    print(
        "| variant | .pte MB | vs peer 105 MB | decode tok/s | vs peer | build s | build peak RSS MB | bits/weight "
        "| perplexity | vs fp32 | top-1 vs fp32 | KL |"
    )
    print("|---" * 12 + "|")
    for r in rows:
        mb = r["pte_bytes"] / 1e6
        # With a peer measured in turn, both figures come from the head-to-head rounds.
        decode = r.get("decode_tok_s_head_to_head", r["decode_tok_s"])
        peer_decode = peer["decode_tok_s"] if peer else PEER["decode_tok_s"]
        ppl, base = r.get("perplexity"), (fp32 or r).get("perplexity_fp32")
        change = ppl / base - 1 if ppl and base else None
        cells = [r["variant"], _fmt(mb, ".1f"), _fmt(mb / PEER["pte_mb"], ".2f"), _fmt(decode, ".1f"),
                 _fmt(decode / peer_decode if decode else None, ".2f"), _fmt(r.get("build_s"), ".0f"),
                 _fmt(r.get("build_peak_rss_mb"), ".0f"), _fmt(r.get("bits_per_weight"), ".2f"), _fmt(ppl, ".2f"),
                 _fmt(change, "+.1%"), _fmt(r.get("top1_agreement"), ".1%"),
                 _fmt(r.get("kl_divergence"), ".3f")]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    for path in args.prose:
        print(f"\nHeld-out prose: {path}, first 4 x 256 tokens, each .pte against fp32 eager.")
        print("| variant | perplexity | fp32 | vs fp32 | top-1 vs fp32 | KL |\n" + "|---" * 6 + "|")
        for r in rows:
            p = r["prose"][str(path)]
            cells = [r["variant"], _fmt(p["perplexity"], ".2f"), _fmt(p["perplexity_fp32"], ".2f"),
                     _fmt(p["perplexity"] / p["perplexity_fp32"] - 1, "+.1%"), _fmt(p["top1_agreement"], ".1%"),
                     _fmt(p["kl_divergence"], ".3f")]  # fmt: skip
            print("| " + " | ".join(cells) + " |")


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
