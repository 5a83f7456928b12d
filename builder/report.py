"""report.html: one self-contained page per bundle, rendered from manifest.json alone (DESIGN §1, §5, §8).

The heart of it is the artifacts side by side: one column per target, rows for size, lowering error,
compression cost, host benchmark, memory estimate and status. Every figure is formatted here; the template
only lays the strings out. It has its own autoescaping Jinja2 environment because the shared one
(builder.render) writes source code and must not escape; every manifest string reaches HTML escaped.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from builder.bench.records import FIGURES, device_label, host_benchmarks
from builder.paths import templates_dir
from builder.plots import Point, Scatter, scatter
from builder.render.android import module_name
from builder.render.ios import package_name

TEMPLATE = "bundle/report.html.j2"
MISSING = "—"
# HTML text may not hold C0 controls (other than tab, newline, carriage return): they would make the
# page invalid, so each becomes U+FFFD, as an HTML parser would read it.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Cell:
    """One figure of one artifact: the value, or MISSING with the reason in `note`."""

    value: str
    note: str = ""
    missing: bool = False
    tone: str = ""  # "good" / "bad": a CSS class for statuses


@dataclass(frozen=True)
class Row:
    label: str
    cells: list[Cell]
    hint: str = ""


@dataclass(frozen=True)
class Section:
    title: str
    rows: list[Row]
    note: str = ""


@dataclass(frozen=True)
class Column:
    target: str
    platform: str
    backend: str
    scheme: str
    sparsity: str


@dataclass(frozen=True)
class Bar:
    label: str
    title: str
    y: int
    width: float
    text: str
    failed: bool


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    label_x: int
    bar_x: int
    bar_height: int
    bars: list[Bar]
    caption: str


@dataclass(frozen=True)
class MeasuredRow:
    """One row of the host-and-device benchmark table."""

    target: str
    where: str
    prompt_tokens: int
    cells: list[Cell]
    conditions: Cell


@dataclass(frozen=True)
class HostGap:
    target: str
    lines: list[str] = field(default_factory=list)


# --- formatting --------------------------------------------------------------------------------------------------


def human_bytes(n: int | float) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def fixed(value: float) -> str:
    """A speed or a duration: more decimals where the number is small, thousands separators where large."""
    if abs(value) < 10:
        return f"{value:,.2f}"
    return f"{value:,.1f}" if abs(value) < 1000 else f"{value:,.0f}"


def sci(value: float) -> str:
    return f"{value:.2e}"


def percent(value: float) -> str:
    return f"{value:.1%}"


def signed_percent(value: float) -> str:
    text = f"{value:+.2%}"
    return "±0.00%" if text in ("+0.00%", "-0.00%") else text  # a rounding of zero has no sign


def cosine(value: float) -> str:
    return f"{value:.6f}"


def two_decimals(value: float) -> str:
    return f"{value:,.2f}"


def missing(reason: str) -> Cell:
    return Cell(MISSING, reason, missing=True)


# --- what did not run on the host, and why -------------------------------------------------------------------------


def _stand_in(validation: dict[str, Any]) -> bool:
    """Whether a stand-in checked the artifact instead of its real runtime. Backends whose runtime cannot
    run on this OS (Core ML off Apple platforms) validate by a NumPy replay and say so in `runtime`."""
    return validation.get("status") != "not-run" and "replay" in str(validation.get("runtime", "")).lower()


def _runtime_name(a: dict[str, Any]) -> str:
    if "coreml" in (a.get("backend"), a.get("delegate")):
        return "Core ML"
    return f"{a.get('backend')} with {a['delegate']}" if a.get("delegate") else str(a.get("backend"))


def _validation_reason(a: dict[str, Any]) -> str:
    v = a["validation"]
    if v.get("status") == "not-run":
        return f"not run: {v.get('reason') or 'no reason recorded'}"
    return "not measured"


def _benchmark_reason(a: dict[str, Any]) -> str:
    if a.get("benchmark_note"):  # manifests before it was recorded fall through to what the validation implies
        return f"not run: {a['benchmark_note']}"
    if a["validation"].get("status") == "not-run" or _stand_in(a["validation"]):
        return f"not run: {_runtime_name(a)} does not run on this host"
    return "not run: skipped by this build"


def _checked_instead(a: dict[str, Any]) -> str:
    """What the manifest holds about an artifact no runtime ran: its interface and operators."""
    methods = [m.get("name", "?") for m in (a.get("signature") or {}).get("methods", [])]
    parts = [f"the signature ({', '.join(methods) or 'no methods'})"]
    ops = a.get("operators") or {}
    if "mil" in ops:
        parts.append(f"the ML Program op histogram ({sum(ops['mil'].values())} ops)")
    elif "delegated" in ops:
        parts.append(f"the delegated and non-delegated ops ({sum(ops['delegated'].values())} delegated)")
    parts.append("size and sha256")
    return ", ".join(parts)


def host_gaps(artifacts: list[dict[str, Any]]) -> list[HostGap]:
    gaps = []
    for a in artifacts:
        v, lines = a["validation"], []
        if v.get("status") == "not-run":
            lines.append(f"Validation not run: {v.get('reason') or 'no reason recorded'}.")
            lines.append(f"Checked instead: {_checked_instead(a)}.")
        elif _stand_in(v):
            lines.append(f"Validation: {_runtime_name(a)} does not run here; checked instead with {v['runtime']}.")
        if a.get("benchmark") is None:
            lines.append(f"Host benchmark {_benchmark_reason(a)}.")
        if lines:
            gaps.append(HostGap(a["target"], lines))
    return gaps


# --- the side-by-side table ----------------------------------------------------------------------------------------


def _column(a: dict[str, Any]) -> Column:
    backend = a["backend"] + (f" / {a['delegate']}" if a.get("delegate") else "")
    scheme = a["quantization"] + (" + int8 embeddings" if a.get("quantize_embeddings") else "")
    sparsity = a.get("sparsity")
    return Column(a["target"], a["platform"], backend, scheme, f"{sparsity:.0%}" if sparsity else "none")


def _figure(a: dict[str, Any], key: str, fmt: Callable[[float], str], note: str = "") -> Cell:
    value = a["validation"].get(key)
    return missing(_validation_reason(a)) if value is None else Cell(fmt(value), note)


def _eval_note(a: dict[str, Any]) -> str:
    ev = a["validation"].get("eval") or {}
    if "windows" in ev:
        return f"{ev['windows']} windows × {ev.get('window_tokens', '?')} tokens"
    return f"{ev['sentences']} sentences" if "sentences" in ev else ""


def _perplexity(a: dict[str, Any]) -> Cell:
    v = a["validation"]
    ppl, ref = v.get("perplexity"), v.get("perplexity_reference")
    if ppl is None or ref is None:
        return missing(_validation_reason(a))
    delta = f" ({signed_percent(ppl / ref - 1)})" if ref else ""
    return Cell(f"{two_decimals(ref)} → {two_decimals(ppl)}{delta}", _eval_note(a))


def _bench(a: dict[str, Any], key: str) -> Cell:
    b = a.get("benchmark")
    if b is None:
        return missing(_benchmark_reason(a))
    value = b.get(key)
    if value is None:
        return missing(f"not measured by {b.get('runtime', 'the benchmark')}")
    spread = (b.get("spread") or {}).get(key)
    note = f"range {fixed(spread[0])}–{fixed(spread[1])}" if spread else ""
    return Cell(fixed(value), note)


def _longer_prompts(a: dict[str, Any]) -> Cell:
    """Prefill speed and TTFT at the other prompt lengths `slmpack bench` measured."""
    others = (a.get("benchmarks") or [])[1:]
    if not others:
        return missing(_benchmark_reason(a) if a.get("benchmark") is None else "measured by slmpack bench")

    def figure(value: float | None, unit: str) -> str:
        return MISSING if value is None else f"{fixed(value)} {unit}"

    return Cell(
        ", ".join(figure(b["prefill_tok_s"], "tok/s") for b in others),
        "; ".join(f"{b['prompt_tokens']}-token prompt, TTFT {figure(b['ttft_ms'], 'ms')}" for b in others),
    )


def _roofline(a: dict[str, Any]) -> Cell:
    r = a.get("roofline")
    if not r:
        return missing(_benchmark_reason(a) if a.get("benchmark") is None else "measured by slmpack bench")
    share = f"{percent(r['fraction_of_bound'])} of it" if r["fraction_of_bound"] is not None else ""
    return Cell(f"{fixed(r['decode_tok_s_bound'])} tok/s", f"{share}; {r['bandwidth_gb_s']} GB/s copy bandwidth / "
                f"{human_bytes(r['weight_bytes_per_token'])} read per token (all but the embedding table)")  # fmt: skip


def _bench_setup(a: dict[str, Any]) -> Cell:
    b = a.get("benchmark")
    if b is None:
        return missing(_benchmark_reason(a))
    runs = f"median of {b['iterations']} runs after {b['warmup']} warm-up"
    return Cell(f"{b['runtime']} {b['runtime_version']}", f"{runs}; {b['prompt_tokens']} prompt + "
                f"{b['new_tokens']} new tokens; {b['threads']} threads; {b['device']}")  # fmt: skip


def _size(a: dict[str, Any]) -> Cell:
    return Cell(human_bytes(a["bytes"]), f"{a['bytes']:,} bytes · {a['path']} · sha256 {a['sha256'][:12]}…")


def _memory(a: dict[str, Any]) -> Cell:
    m = a.get("memory_estimate")
    if not m:
        return missing("no memory estimate in the manifest")
    rss = m.get("host_peak_rss_mb")
    note = f"weights {m['weights_mb']} MB + KV cache {m['kv_cache_mb']} MB at {m['max_context']} tokens; "
    note += f"host peak RSS {rss} MB" if rss is not None else "host peak RSS —: no host benchmark"
    return Cell(f"{m['weights_mb'] + m['kv_cache_mb']:.2f} MB", note)


def _status(a: dict[str, Any]) -> Cell:
    v = a["validation"]
    status = v.get("status", "not-run")
    tone = {"passed": "good", "failed": "bad"}.get(status, "")
    return Cell(status, v.get("reason") or "", missing=status == "not-run", tone=tone)


def _gates(a: dict[str, Any]) -> Cell:
    gates = a["validation"].get("gates") or []
    if not gates:
        return missing(_validation_reason(a) if a["validation"].get("status") == "not-run" else "no gates")
    sign = {"max": "≤", "min": "≥"}
    text = []
    for g in gates:
        value = MISSING if g["value"] is None else f"{g['value']:.4g}"
        mark = "✓" if g["passed"] else "✗"
        text.append(f"{mark} {g['name']} {value} {sign.get(g['kind'], '?')} {g['limit']:.4g}")
    return Cell(f"{sum(g['passed'] for g in gates)}/{len(gates)} passed", "; ".join(text))


def _task(kind: str, metric: str) -> Callable[[dict[str, Any]], Cell]:
    """Task accuracy from the recipe's data file: the original model → the artifact."""

    def cell(a: dict[str, Any]) -> Cell:
        scores = (a["validation"].get("tasks") or {}).get(kind)
        if not scores:
            return missing("no task file in the recipe")
        original, artifact = scores["original"][metric], scores["artifact"][metric]
        count = scores["artifact"].get("items") or scores["artifact"].get("texts")
        return Cell(f"{percent(original)} → {percent(artifact)}", f"{count} items; original → artifact")

    return cell


def sections(data: dict[str, Any]) -> list[Section]:
    arts, decoder = data["artifacts"], data["model"]["task"] == "text-generation"

    def row(label: str, cell: Callable[[dict[str, Any]], Cell], hint: str = "") -> Row:
        return Row(label, [cell(a) for a in arts], hint)

    lowering = [row("relative diff", lambda a: _figure(a, "lowering_relative_diff", sci),
                    "max |artifact − PyTorch| / max |PyTorch output|"),
                row("max abs diff", lambda a: _figure(a, "lowering_max_abs_diff", sci))]  # fmt: skip
    if decoder:
        lowering += [
            row("top-1 agreement", lambda a: _figure(a, "lowering_top1_agreement", percent)),
            row("KL divergence", lambda a: _figure(a, "lowering_kl_divergence", sci), "nats per token"),
        ]
        cost = [
            row("perplexity", _perplexity, "reference → artifact (change) on the evaluation text"),
            row("KL divergence", lambda a: _figure(a, "kl_divergence", sci), "nats per token vs the original"),
            row("top-1 vs original", lambda a: _figure(a, "top1_agreement", percent)),
            row("greedy match", lambda a: _figure(a, "greedy_match", percent), "greedy continuation"),
            row("multiple choice acc", _task("multiple_choice", "acc"), "highest log-likelihood choice"),
            row("multiple choice acc_norm", _task("multiple_choice", "acc_norm"), "per byte of the choice"),
        ]
        bench = [
            row("decode tok/s", lambda a: _bench(a, "decode_tok_s")),
            row("prefill tok/s", lambda a: _bench(a, "prefill_tok_s")),
            row("TTFT ms", lambda a: _bench(a, "ttft_ms"), "time to first token"),
            row("prefill, longer prompts", _longer_prompts),
            row("decode bound", _roofline, "memory roofline: bandwidth / bytes a token reads (all but the embeddings)"),
        ]
    else:
        lowering.append(row("min cosine", lambda a: _figure(a, "lowering_min_cosine", cosine)))
        cost = [
            row("cosine to original", lambda a: _figure(a, "cosine_similarity", cosine, _eval_note(a))),
            row(
                "similarity rank ρ",
                lambda a: _figure(a, "similarity_rank_correlation", "{:.4f}".format),
                "Spearman correlation of pairwise sentence similarities with the original model's",
            ),
            row("classification (centroid)", _task("classification", "nearest_centroid"), "leave-one-out"),
            row("classification (k-NN)", _task("classification", "knn"), "leave-one-out"),
        ]
        bench = [
            row("embedding ms", lambda a: _bench(a, "ttft_ms"), "latency of one embedding call"),
            row("tokens/s", lambda a: _bench(a, "prefill_tok_s")),
        ]
    bench += [
        row("load ms", lambda a: _bench(a, "model_load_ms")),
        row("peak RSS MB", lambda a: _bench(a, "peak_rss_mb")),
        row("setup", _bench_setup),
    ]
    return [
        Section("Size", [row("artifact", _size)]),
        Section("Lowering error", lowering, "The artifact in its host runtime vs the same compressed model in "
                "eager PyTorch: near zero, or a backend bug (the build fails on it)."),
        Section("Compression cost", cost, "The compressed artifact vs the original model: the price of "
                "compression, gated only where the recipe sets a limit."),
        Section("Host benchmark", bench, "Medians with [min, max] ranges; compare speeds only within one build, "
                "side by side."),
        Section("Memory", [row("estimate", _memory, "weights + KV cache at max context")]),
        Section("Validation", [
            row("validated by", lambda a: Cell(str(a["validation"].get("runtime") or MISSING))),
            row("on-device runtime", lambda a: Cell(_on_device(a))),
            row("gates", _gates),
            row("status", _status),
        ]),
    ]  # fmt: skip


# --- host and device benchmarks ----------------------------------------------------------------------------------


def _measured_cells(record: dict[str, Any]) -> list[Cell]:
    baseline = record.get("baseline") or {}
    cells = []
    for _, key, _ in FIGURES:
        value, change = record.get(key), baseline.get("changes", {}).get(key)
        if value is None or value < 0:
            cells.append(missing("not reported"))
        elif change is None:
            cells.append(Cell(fixed(value)))
        else:
            tone = "bad" if key in baseline.get("regressions", []) else ""
            cells.append(Cell(fixed(value), f"{change:+.1%} vs {baseline['bundle']}", tone=tone))
    return cells


def _conditions(record: dict[str, Any]) -> Cell:
    p = record["performance"]
    note = f"thermal {p['thermal_before']} → {p['thermal_after']}; sustained performance: {p['sustained_performance']}"
    if p["throttled"]:
        return Cell("throttled", note + "; figures unreliable", tone="bad")
    if p["power_save"]:
        return Cell("power saving", note + "; figures unreliable", tone="bad")
    return Cell("cool", note, tone="good")


def measured(data: dict[str, Any]) -> list[MeasuredRow]:
    """Per artifact that phones measured (`slmpack farm collect`): its host figures, then each device's."""
    rows = []
    for a in data["artifacts"]:
        devices = a.get("device_benchmarks") or []
        if not devices:
            continue
        rows += [MeasuredRow(a["target"], f"host: {host.get('device', 'build machine')}", host["prompt_tokens"],
                             _measured_cells(host), Cell(f"{host.get('threads', '?')} threads"))
                 for host in host_benchmarks(a)]  # fmt: skip
        rows += [MeasuredRow(a["target"], device_label(r), r["prompt_tokens"], _measured_cells(r), _conditions(r))
                 for r in devices]  # fmt: skip
    return rows


# --- the size vs quality chart -------------------------------------------------------------------------------------


def _quality(a: dict[str, Any], decoder: bool) -> str:
    v = a["validation"]
    if decoder:
        ppl = v.get("perplexity")
        return f"ppl {MISSING}" if ppl is None else f"ppl {two_decimals(ppl)}"
    cos = v.get("cosine_similarity")
    return f"cosine {MISSING}" if cos is None else f"cosine {cosine(cos)}"


def chart(data: dict[str, Any]) -> Chart:
    """Horizontal bars of artifact size, each labelled with its size and quality, scaled to the largest."""
    arts, decoder = data["artifacts"], data["model"]["task"] == "text-generation"
    label_x, bar_x, bar_span, row_height, bar_height = 170, 180, 340, 30, 18
    largest = max((a["bytes"] for a in arts), default=0) or 1
    bars = []
    for i, a in enumerate(arts):
        target = a["target"]
        label = target if len(target) <= 24 else target[:23] + "…"  # the full name is in the bar's title
        width = round(bar_span * a["bytes"] / largest, 1)
        text = f"{human_bytes(a['bytes'])} · {_quality(a, decoder)}"
        failed = a["validation"].get("status") == "failed"
        bars.append(Bar(label, f"{target}: {text}", 10 + i * row_height, width, text, failed))
    measure = "perplexity on the evaluation text (lower is better)" if decoder else "cosine to the original"
    return Chart(
        width=bar_x + bar_span + 230,
        height=20 + len(arts) * row_height,
        label_x=label_x,
        bar_x=bar_x,
        bar_height=bar_height,
        bars=bars,
        caption=f"Artifact size (bars, to scale) and {measure} per target.",
    )


def tradeoff(data: dict[str, Any]) -> Scatter | None:
    """Size against quality for each compression step (fp32 weights) and each artifact (its file), where at
    least two such points exist: the path the build took from the original model to the artifacts."""
    decoder = data["model"]["task"] == "text-generation"
    metric = "perplexity" if decoder else "cosine_similarity"
    points = []
    for step in (data["model"].get("compression") or {}).get("steps") or []:
        if step.get(metric) is not None:
            name = _STEP_NAMES.get(step["step"], step["step"])
            mb = step["parameters"] * 4 / 2**20
            points.append(Point(name, f"{name} (eager, fp32): {mb:.1f} MB, {metric} {step[metric]:.4g}", mb,
                                step[metric]))  # fmt: skip
    for a in data["artifacts"]:
        value = a["validation"].get(metric)
        if value is not None:
            mb = a["bytes"] / 2**20
            label = f"{a['target']} {a['quantization']}"
            points.append(Point(label, f"{label}: {mb:.1f} MB file, {metric} {value:.4g}", mb, value))
    if len(points) < 2:
        return None
    y_label = "perplexity (lower is better)" if decoder else "cosine to the original"
    return scatter(points, "MB (steps: fp32 weights; artifacts: file)", y_label)


# --- model card, packages, golden data -----------------------------------------------------------------------------


def model_card(data: dict[str, Any]) -> list[tuple[str, str]]:
    m = data["model"]
    original, compressed = m["parameters"], m.get("parameters_compressed", m["parameters"])
    change = "unchanged" if compressed == original else f"{signed_percent(compressed / original - 1)}"
    rows = [
        ("source", str(m["source"])),
        ("architecture", f"{m['architecture']} ({m.get('model_type', '?')})"),
        ("parameters", f"{original:,} original → {compressed:,} compressed ({change})"),
        ("task", str(m["task"])),
        ("max context", f"{m['max_context']:,} tokens"),
        ("vocabulary", f"{m['vocab_size']:,} tokens ({data.get('tokenizer', {}).get('kind', '?')} tokenizer)"),
        ("size", f"{m.get('num_layers', '?')} layers, hidden size {m.get('hidden_size', '?')}"),
    ]
    if m["task"] == "embeddings":
        rows.append(("pooling", f"{m.get('pooling')}, {'normalized' if m.get('normalize') else 'not normalized'}"))
    rows += [
        ("licence", str(m.get("license") or "unknown: check the model source before you ship it")),
        ("attribution", str(m.get("attribution") or MISSING)),
        ("evaluation text", str(data.get("eval", {}).get("text", MISSING))),
    ]
    return rows


_STEP_NAMES = {"original": "original", "prune": "pruned", "lowrank": "low-rank factorized", "distill": "distilled"}


def _step_details(step: dict[str, Any]) -> str:
    d = step.get("details") or {}
    name = step["step"]
    if name == "prune" and d.get("method") == "structured":
        parts = [f"{', '.join(d['parts'])}, sparsity {d['sparsity']} asked, {percent(d['achieved_sparsity'])} removed"]
        for key, label in (("blocks", "blocks"), ("mlp_width", "MLP width"), ("attention_heads", "heads"),
                           ("kv_heads", "KV heads")):  # fmt: skip
            before, after = d[key]
            if before != after:
                parts.append(f"{label} {before} → {after}")
        return "; ".join(parts)
    if name == "prune":
        return f"magnitude ({d['scope']}), {percent(d['block_weight_sparsity'])} of block weights zeroed"
    if name == "lowrank":
        rule = f"ratio {d['ratio']}" if d.get("ratio") is not None else f"energy {d['energy']}"
        return f"{rule}: {d['replaced']} Linears factorized, {d['kept_full_rank']} kept (no saving)"
    if name == "distill":
        return (f"{d['steps']} steps x {d['batch_size']} x {d['sequence_length']} tokens, {d['loss']} loss "
                f"{d['loss_first']:.4f} → {d['loss_last']:.4f}, {d['device']}")  # fmt: skip
    return ""


def task_headlines(tasks: dict[str, Any]) -> list[str]:
    """One phrase per task kind for the measured model (the `artifact` side of `Validation.tasks`)."""
    phrases = []
    for kind, scores in tasks.items():
        mine = scores["artifact"]
        if kind == "multiple_choice":
            phrases.append(f"multiple choice acc {mine['acc']:.1%}")
        else:
            phrases.append(f"classification centroid {mine['nearest_centroid']:.1%}, k-NN {mine['knn']:.1%}")
    return phrases


def compression_steps(data: dict[str, Any]) -> list[dict[str, str]]:
    """One row per compression step (original first): parameters and eager quality against the original."""
    steps = (data["model"].get("compression") or {}).get("steps") or []
    rows = []
    original = steps[0]["parameters"] if steps else 0
    for step in steps:
        change = "" if step["step"] == "original" else f" ({signed_percent(step['parameters'] / original - 1)})"
        if "perplexity" in step:
            quality = (f"ppl {two_decimals(step['perplexity'])} · top-1 {percent(step['top1_agreement'])} · "
                       f"KL {step['kl_divergence']:.4f}")  # fmt: skip
        else:
            quality = f"cosine {cosine(step['cosine_similarity'])}"
            if step.get("similarity_rank_correlation") is not None:
                quality += f" · similarity ρ {step['similarity_rank_correlation']:.4f}"
        quality = " · ".join([quality, *task_headlines(step.get("tasks") or {})])
        nonzero = step.get("nonzero_parameters", step["parameters"])
        sparse = f", {nonzero:,} non-zero" if nonzero < step["parameters"] * 0.99 else ""
        rows.append({"step": _STEP_NAMES.get(step["step"], step["step"]), "parameters": f"{step['parameters']:,}"
                     f"{change}{sparse}", "quality": quality, "details": _step_details(step),
                     "seconds": f"{step.get('seconds', 0):.1f} s"})  # fmt: skip
    return rows


def source_quantization_note(data: dict[str, Any]) -> str:
    quant = data["model"].get("source_quantization")
    if not quant:
        return ""
    return (
        f"The source weights were already quantized ({quant}). They were dequantized before compression, so "
        "every quality figure here compares against that dequantized model, not against a full-precision one; "
        "re-quantizing weights that already sit on a low-bit grid can look nearly lossless by construction."
    )


def _on_device(a: dict[str, Any]) -> str:
    return f"{a.get('runtime_library', MISSING)} {a.get('runtime_version', '')}".strip()


def packages(data: dict[str, Any]) -> list[dict[str, str]]:
    out, pkg = [], data["package"]
    for a in data["artifacts"]:
        if a["platform"] == "android":
            path = f"android/{module_name(data, a)}/"
            kind = f"Gradle library module, class {pkg['android_namespace']}.{pkg['class_name']}"
        else:
            path = f"ios/{package_name(data, a)}/"
            kind = f"Swift package, module {pkg['ios_module']}, class {pkg['class_name']}"
        needs = _on_device(a)
        kernels = ", ".join(a.get("runtime_kernels") or [])
        abis = ", ".join(a.get("abis") or [])
        out.append({
            "target": a["target"], "path": path, "kind": kind, "model": a["path"],
            "runtime": needs + (f" (kernels: {kernels})" if kernels else ""),
            "platform": f"{a['platform']} {a.get('min_os') or '?'}+" + (f", {abis}" if abis else ""),
        })  # fmt: skip
    return out


def _clip(values: list[Any], n: int) -> str:
    shown = ", ".join(str(v) for v in values[:n])
    return shown + (f", … ({len(values)} in all)" if len(values) > n else "")


def golden(data: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(target, input, expected output) per artifact: what the platform tests replay on a device."""
    out = []
    for a in data["artifacts"]:
        g = a.get("golden") or {}
        if "greedy_tokens" in g:
            prompt = f"“{g.get('prompt_message', '')}” ({len(g.get('prompt_ids', []))} prompt tokens)"
            out.append((a["target"], prompt, f"greedy tokens: {_clip(g['greedy_tokens'], 16)}"))
        elif "embedding" in g:
            text = f"“{g.get('text', '')}” ({len(g.get('input_ids', []))} tokens)"
            out.append((a["target"], text, f"{len(g['embedding'])}-d embedding: {_clip(g['embedding'], 4)}"))
        else:
            out.append((a["target"], MISSING, f"{MISSING} no golden data: {_validation_reason(a)}"))
    return out


# --- rendering -----------------------------------------------------------------------------------------------------


def _printable(value: Any) -> Any:
    # Markup (a macro's output) is already escaped markup, not manifest text.
    return _CONTROL.sub("\ufffd", value) if isinstance(value, str) and not isinstance(value, Markup) else value


@functools.cache
def environment(root: Path | None = None) -> jinja2.Environment:
    # A templates folder given to `slmpack render` overrides the report too, where it holds one.
    folders = [str(folder) for folder in (root, templates_dir()) if folder is not None]
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folders),
        undefined=jinja2.StrictUndefined,
        autoescape=True,  # every manifest string is text, never markup
        finalize=_printable,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_report(data: dict[str, Any], templates: Path | None = None) -> str:
    """The bundle's report.html, from its manifest alone (`templates`: a folder overriding slmpack's own)."""
    context = {
        "package": data["package"],
        "schema": data.get("schema", ""),
        "model_card": model_card(data),
        "source_note": source_quantization_note(data),
        "compression_steps": compression_steps(data),
        "calibration": (data["model"].get("compression") or {}).get("calibration"),
        "columns": [_column(a) for a in data["artifacts"]],
        "sections": sections(data),
        "chart": chart(data),
        "tradeoff": tradeoff(data),
        "gaps": host_gaps(data["artifacts"]),
        "measured": measured(data),
        "measured_columns": [label for label, _, _ in FIGURES],
        "packages": packages(data),
        "golden": golden(data),
        "tool_versions": sorted((data.get("tool_versions") or {}).items()),
    }
    return environment(templates).get_template(TEMPLATE).render(**context)
