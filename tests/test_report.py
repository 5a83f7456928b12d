"""report.html: one self-contained page, rendered from the manifest alone, artifacts side by side.

Pages are parsed with html.parser into a small tree so the checks are about structure (which column,
which row, which element), not about substrings that could sit anywhere.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from builder.bench.host import BenchResult
from builder.packages import rerender
from builder.render import render
from builder.report import fixed, human_bytes, render_report, sci, tradeoff
from builder.validate.gates import Validation
from tests.test_android_package import fixture_bundle

FIXTURES = Path(__file__).parent / "fixtures"
HOSTILE = "<script>alert(1)</script> \"quoted\" & 'single' <img src=x onerror=alert(2)>"
NOT_RUN_REASON = "the ExecuTorch runtime on this host has no CoreMLBackend, and no replay of it exists"
VOID = frozenset({"meta", "link", "br", "hr", "img", "input", "source", "wbr", "area", "base", "col", "embed"})


# --- a tiny DOM --------------------------------------------------------------------------------------------------


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str, cls: str | None = None) -> list[Node]:
        return [n for n in self.iter() if n.tag == tag and (cls is None or cls in (n.attrs.get("class") or "").split())]

    def find(self, tag: str, cls: str | None = None) -> Node:
        found = self.find_all(tag, cls)
        assert found, f"no <{tag} class={cls}>"
        return found[0]

    def text(self) -> str:
        return " ".join(" ".join(c if isinstance(c, str) else c.text() for c in self.children).split())

    def direct(self, tag: str) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node) and c.tag == tag]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.stack = [self.root]
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>: the page is not well nested"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    assert builder.doctype is not None and builder.doctype.lower() == "doctype html"
    return builder.root


@dataclass
class SideBySide:
    """The artifacts table as {row label: [cell per column]}, cells as nodes."""

    targets: list[str]
    rows: dict[str, list[Node]]

    def cell(self, label: str, target: str) -> Node:
        return self.rows[label][self.targets.index(target)]


def side_by_side(doc: Node) -> SideBySide:
    table = doc.find("table", "artifacts")
    header = table.find("thead").find("tr").direct("th")
    targets = [th.attrs["data-target"] or "" for th in header[1:]]
    for th, target in zip(header[1:], targets, strict=True):
        assert th.text().startswith(target)
    rows: dict[str, list[Node]] = {}
    for tbody in table.direct("tbody"):
        section = ""
        for tr in tbody.direct("tr"):
            ths, tds = tr.direct("th"), tr.direct("td")
            title = str(ths[0].children[0]).strip()  # the heading's own text, before any <small> hint
            if ths[0].attrs.get("class") == "section":
                section = title
                continue
            assert len(tds) == len(targets), f"row {title!r} has {len(tds)} cells for {len(targets)} columns"
            rows[f"{section}/{title}"] = tds
    return SideBySide(targets, rows)


def value_of(cell: Node) -> str:
    return cell.find("span", "value").text()


def note_of(cell: Node) -> str:
    return " ".join(s.text() for s in cell.direct("small"))


# --- manifests ---------------------------------------------------------------------------------------------------


def fixture(kind: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"bundle-{kind}" / "manifest.json").read_text(encoding="utf-8"))


def not_run_manifest() -> dict[str, Any]:
    """ios-xnnpack turned into an artifact no runtime here could run: validation not-run, no benchmark."""
    data = fixture("decoder")
    art = data["artifacts"][2]
    art.update(
        target="ios-executorch-coreml",
        delegate="coreml",
        validation=Validation(runtime="executorch 1.5.1", status="not-run", reason=NOT_RUN_REASON).to_json(),
        benchmark=None,
        golden={},
    )
    return data


def three_backends_manifest() -> dict[str, Any]:
    """Issue 5's recipe: one model on android-xnnpack, android-litert and ios-coreml, side by side."""
    data = fixture("decoder")
    xnnpack, coreml = data["artifacts"][0], data["artifacts"][1]
    litert = copy.deepcopy(xnnpack)
    litert.update(
        target="android-litert",
        backend="litert",
        delegate="cpu",
        quantization="a8w8",
        path="artifacts/android-litert/model.litertlm",
        bytes=1_234_567,
        runtime_library="com.google.ai.edge.litertlm:litertlm-android",
        runtime_version="0.18.1",
        runtime_kernels=[],
    )
    litert["validation"].update(runtime="litert 2.3.0 (.tflite) + litert-lm 0.18.1", perplexity=512.5,
                                lowering_relative_diff=0.0123)  # fmt: skip
    litert["benchmark"] = BenchResult(
        runtime="litert_lm", runtime_version="0.18.1", model_load_ms=1336.4, ttft_ms=55.25, prefill_tok_s=927.0,
        decode_tok_s=217.31, peak_rss_mb=812.5, artifact_bytes=1_234_567, prompt_tokens=64, new_tokens=128,
        warmup=1, iterations=5, threads=2, device="host x86_64 Linux (2 cpus)",
        spread={"decode_tok_s": [165.0, 240.0]},
    ).to_json()  # fmt: skip
    xnnpack["sparsity"], coreml["sparsity"], litert["sparsity"] = None, 0.5, None
    data["artifacts"] = [xnnpack, litert, coreml]
    return data


MANIFESTS = {
    "decoder": lambda: fixture("decoder"),
    "encoder": lambda: fixture("encoder"),
    "not-run": not_run_manifest,
    "three-backends": three_backends_manifest,
}


# --- tests -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MANIFESTS)
def test_the_page_is_one_self_contained_document(name: str) -> None:
    html = render_report(MANIFESTS[name]())
    doc = parse(html)
    assert [n.tag for n in doc.direct("html")] == ["html"]
    assert len(doc.find_all("head")) == len(doc.find_all("body")) == 1
    for tag in ("script", "link", "img", "iframe", "object", "embed", "base"):
        assert not doc.find_all(tag), f"<{tag}> in a self-contained report"
    for node in doc.iter():
        for attr, value in node.attrs.items():
            assert attr not in ("src", "href", "srcset") or not value or value.startswith("#"), (node.tag, attr)
            assert not attr.startswith("on"), (node.tag, attr)
    (style,) = doc.find_all("style")
    assert "url(" not in style.text() and "@import" not in style.text()
    assert len(doc.find_all("svg")) == (2 if tradeoff(MANIFESTS[name]()) else 1)


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_artifact_is_a_column_with_its_size_and_figures(name: str) -> None:
    data = MANIFESTS[name]()
    table = side_by_side(parse(render_report(data)))
    assert table.targets == [a["target"] for a in data["artifacts"]]
    decoder = data["model"]["task"] == "text-generation"
    for a in data["artifacts"]:
        size = table.cell("Size/artifact", a["target"])
        assert value_of(size) == human_bytes(a["bytes"]) and f"{a['bytes']:,} bytes" in note_of(size)
        v = a["validation"]
        if v["status"] == "not-run":
            continue
        assert value_of(table.cell("Lowering error/relative diff", a["target"])) == sci(v["lowering_relative_diff"])
        if decoder:
            ppl = value_of(table.cell("Compression cost/perplexity", a["target"]))
            assert ppl.startswith(f"{v['perplexity_reference']:,.2f} → {v['perplexity']:,.2f}")
            assert value_of(table.cell("Lowering error/top-1 agreement", a["target"])) == "100.0%"
        else:
            assert value_of(table.cell("Compression cost/cosine to original", a["target"])) == (
                f"{v['cosine_similarity']:.6f}"
            )
            assert value_of(table.cell("Lowering error/min cosine", a["target"])) == f"{v['lowering_min_cosine']:.6f}"
        assert value_of(table.cell("Validation/status", a["target"])) == v["status"]
        assert value_of(table.cell("Validation/validated by", a["target"])) == v["runtime"]
        if a["benchmark"]:
            b = a["benchmark"]
            speed = "Host benchmark/decode tok/s" if decoder else "Host benchmark/embedding ms"
            assert value_of(table.cell(speed, a["target"])) == fixed(b["decode_tok_s"] if decoder else b["ttft_ms"])
            assert value_of(table.cell("Host benchmark/peak RSS MB", a["target"])) == fixed(b["peak_rss_mb"])


def test_three_backends_side_by_side() -> None:
    table = side_by_side(parse(render_report(three_backends_manifest())))
    assert table.targets == ["android-xnnpack", "android-litert", "ios-coreml"]
    head = parse(render_report(three_backends_manifest())).find("table", "artifacts").find("thead").text()
    assert "litert / cpu" in head and "coreml" in head and "executorch / xnnpack" in head
    assert "sparsity 50%" in head
    litert = "android-litert"
    assert value_of(table.cell("Size/artifact", litert)) == "1.2 MB"
    assert value_of(table.cell("Compression cost/perplexity", litert)) == "499.18 → 512.50 (+2.67%)"
    assert value_of(table.cell("Host benchmark/decode tok/s", litert)) == "217.3"
    assert note_of(table.cell("Host benchmark/decode tok/s", litert)) == "range 165.0–240.0"
    assert value_of(table.cell("Host benchmark/TTFT ms", litert)) == "55.2"
    assert value_of(table.cell("Host benchmark/load ms", litert)) == "1,336"
    # prefill has no spread recorded: the median alone
    assert note_of(table.cell("Host benchmark/prefill tok/s", litert)) == ""


def test_missing_figures_show_the_reason() -> None:
    doc = parse(render_report(not_run_manifest()))
    table = side_by_side(doc)
    target = "ios-executorch-coreml"
    for label in ("Lowering error/relative diff", "Compression cost/perplexity", "Validation/gates"):
        cell = table.cell(label, target)
        assert value_of(cell) == "—" and NOT_RUN_REASON in note_of(cell) and cell.attrs["class"] == "missing"
    for label in ("Host benchmark/decode tok/s", "Host benchmark/TTFT ms", "Host benchmark/peak RSS MB"):
        cell = table.cell(label, target)
        assert value_of(cell) == "—" and "Core ML does not run on this host" in note_of(cell)
    assert value_of(table.cell("Validation/status", target)) == "not-run"
    # a figure that ran sits beside it, not blanked
    assert value_of(table.cell("Lowering error/relative diff", "android-xnnpack")) != "—"
    golden = {tr.direct("th")[0].text(): tr.text() for tr in doc.find("table", "golden").find_all("tr")[1:]}
    assert "no golden data" in golden[target] and NOT_RUN_REASON in golden[target]


def test_not_run_on_this_os_lists_each_artifact_with_the_reason() -> None:
    doc = parse(render_report(not_run_manifest()))
    gaps = {li.find("strong").text(): li.text() for li in doc.find("ul", "gaps").find_all("li")}
    assert set(gaps) == {"android-xnnpack", "ios-coreml", "ios-executorch-coreml", "android-litert"}
    not_run = gaps["ios-executorch-coreml"]
    assert NOT_RUN_REASON in not_run and "Checked instead: the signature (forward)" in not_run
    coreml = fixture("decoder")["artifacts"][1]["validation"]["runtime"]
    assert coreml in gaps["ios-coreml"] and "Core ML does not run on this host" in gaps["ios-coreml"]
    assert "skipped by this build" in gaps["android-xnnpack"]


def test_a_page_where_everything_ran_says_so() -> None:
    data = fixture("decoder")
    data["artifacts"] = [data["artifacts"][2]]  # ios-xnnpack: real runtime, benchmarked
    doc = parse(render_report(data))
    assert not doc.find_all("ul", "gaps")
    assert "validated and benchmarked in its real runtime" in doc.find("body").text()


def test_chart_draws_a_bar_per_artifact_to_scale() -> None:
    data = three_backends_manifest()
    svg = parse(render_report(data)).find("svg")
    bars = svg.find_all("rect", "bar")
    widths = [float(b.attrs["width"] or 0) for b in bars]
    sizes = [a["bytes"] for a in data["artifacts"]]
    assert len(bars) == 3 and max(widths) == 340.0
    for width, size in zip(widths, sizes, strict=True):
        assert width == pytest.approx(340 * size / max(sizes), abs=0.1)
    labels = [g.direct("text")[1].text() for g in svg.find_all("g")]
    assert labels[1] == "1.2 MB · ppl 512.50"
    encoder = fixture("encoder")
    labels = [g.direct("text")[1].text() for g in parse(render_report(encoder)).find("svg").find_all("g")]
    expected = [f"{a['bytes']} B · cosine {a['validation']['cosine_similarity']:.6f}" for a in encoder["artifacts"]]
    assert labels == expected


def test_model_card_and_source_quantization_note() -> None:
    data = fixture("decoder")
    doc = parse(render_report(data))
    card = {tr.find("th").text(): tr.find("td").text() for tr in doc.find("table", "card").find_all("tr")}
    assert card["source"] == "builtin:tiny-llama" and card["licence"] == "Apache-2.0"
    assert card["parameters"] == "106,816 original → 106,816 compressed (unchanged)"
    assert card["max context"] == "128 tokens" and card["vocabulary"].startswith("512 tokens")
    assert not doc.find_all("p", "warn")
    data["model"].update(source_quantization="GGUF Q4_1 (blocks of 32), embeddings Q8_0", parameters_compressed=53408)
    doc = parse(render_report(data))
    note = doc.find("p", "warn").text()
    assert "already quantized (GGUF Q4_1" in note and "dequantized" in note
    card = {tr.find("th").text(): tr.find("td").text() for tr in doc.find("table", "card").find_all("tr")}
    assert card["parameters"] == "106,816 original → 53,408 compressed (-50.00%)"
    tools = doc.find("body").text()
    assert "torch snapshot" in tools and "executorch snapshot" in tools


def test_packages_and_golden_data_per_artifact() -> None:
    doc = parse(render_report(fixture("decoder")))
    rows = {tr.find("th").text(): tr.text() for tr in doc.find("table", "packages").find_all("tr")[1:]}
    assert "android/tinychat-android-xnnpack/" in rows["android-xnnpack"]
    assert "ios/TinyChat-ios-coreml/" in rows["ios-coreml"]
    assert "artifacts/ios-coreml/model.mlpackage" in rows["ios-coreml"]
    golden = {tr.find("th").text(): tr.text() for tr in doc.find("table", "golden").find_all("tr")[1:]}
    assert "Write one sentence about the sea." in golden["ios-xnnpack"] and "201, 201" in golden["ios-xnnpack"]
    encoder = parse(render_report(fixture("encoder")))
    golden = {tr.find("th").text(): tr.text() for tr in encoder.find("table", "golden").find_all("tr")[1:]}
    assert "64-d embedding: 0.197928" in golden["ios-coreml"]


def test_tradeoff_plots_each_compression_step_and_each_artifact() -> None:
    data = three_backends_manifest()
    figures = {"top1_agreement": 1.0, "kl_divergence": 0.0, "seconds": 0.0, "details": {}}
    original = {"step": "original", "parameters": 1_000_000, "perplexity": 20.0, **figures}
    pruned = {
        "step": "prune",
        "parameters": 700_000,
        "perplexity": 30.0,
        **figures,
        "details": {"method": "magnitude", "scope": "layer", "block_weight_sparsity": 0.3},
    }
    data["model"]["compression"] = {"steps": [original, pruned], "calibration": None}
    data["artifacts"][0]["target"] = "android-" + HOSTILE
    html = render_report(data)
    svgs = parse(html).find_all("svg")
    assert len(svgs) == 2
    titles = [g.find("title").text() for g in svgs[1].find_all("g")]
    assert titles[:2] == ["original (eager, fp32): 3.8 MB, perplexity 20",
                          "pruned (eager, fp32): 2.7 MB, perplexity 30"]  # fmt: skip
    assert len(titles) == 2 + sum(a["validation"].get("perplexity") is not None for a in data["artifacts"])
    assert any(t.startswith("android-" + HOSTILE) for t in titles) and "<script>" not in html
    dots = {g.find("title").text()[:8]: g.find("circle").attrs for g in svgs[1].find_all("g")}
    # The y axis rises with perplexity (smaller SVG y); the larger model draws further right.
    assert float(dots["original"]["cy"] or 0) > float(dots["pruned ("]["cy"] or 0)
    assert float(dots["original"]["cx"] or 0) > float(dots["pruned ("]["cx"] or 0)
    assert tradeoff(fixture("decoder") | {"artifacts": []}) is None


def test_a_manifest_from_before_distillation_notes_still_renders() -> None:
    data = fixture("decoder")
    original = {"step": "original", "parameters": 10, "perplexity": 20.0, "top1_agreement": 1.0,
                "kl_divergence": 0.0, "details": {}}  # fmt: skip
    data["model"]["compression"] = {"steps": [original], "calibration": {"held_out": "Lear, Othello, Julius Caesar"}}
    assert "Calibration text: Lear, Othello, Julius Caesar." in render_report(data)


def test_hostile_strings_are_escaped_and_keep_their_text() -> None:
    data = not_run_manifest()
    data["package"]["name"] = data["package"]["description"] = HOSTILE
    data["model"].update(source=HOSTILE, architecture=HOSTILE, attribution=HOSTILE, source_quantization=HOSTILE)
    data["tool_versions"]["torch"] = HOSTILE
    data["artifacts"][0]["target"] = "android-" + HOSTILE
    data["artifacts"][0]["golden"]["prompt_message"] = HOSTILE
    data["artifacts"][2]["validation"]["reason"] = HOSTILE
    data["artifacts"][1]["validation"]["runtime"] = "replay " + HOSTILE
    html = render_report(data)
    doc = parse(html)
    assert not doc.find_all("script") and not doc.find_all("img")
    assert not any(a.startswith("on") for n in doc.iter() for a in n.attrs)
    assert doc.find("title").text().startswith(HOSTILE)
    assert doc.find("h1").text() == f"{HOSTILE} 0.1.0"
    card = {tr.find("th").text(): tr.find("td").text() for tr in doc.find("table", "card").find_all("tr")}
    assert card["source"] == HOSTILE
    table = side_by_side(doc)
    assert table.targets[0] == "android-" + HOSTILE  # the attribute round-trips too
    assert HOSTILE in note_of(table.cell("Validation/status", "ios-executorch-coreml"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html


def test_control_characters_become_replacement_characters() -> None:
    data = fixture("encoder")
    data["model"]["source"] = "nul\x00bell\x07"
    card = parse(render_report(data)).find("table", "card").find("td")
    assert card.text() == "nul\ufffdbell\ufffd"


def test_rerender_writes_the_report_beside_the_packages(tmp_path: Path) -> None:
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle)
    table = side_by_side(parse((bundle / "report.html").read_text(encoding="utf-8")))
    assert table.targets == ["android-xnnpack", "ios-coreml", "ios-xnnpack", "android-litert"]
    assert not list(bundle.glob(".report*"))


def test_bundle_readme_mentions_the_report() -> None:
    assert "`report.html`" in render("bundle/README.md.j2", fixture("decoder"))
