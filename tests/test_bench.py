"""slmpack bench: a bundle's artifacts re-measured in their host runtimes at several prompt lengths, with a
memory roofline, written into the manifest and report; ratios against a baseline bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from builder.bench.bundle import _figure, memory_bandwidth_gb_s, roofline
from builder.cli import app


def test_roofline_divides_bandwidth_by_the_bytes_each_token_reads() -> None:
    bound = roofline(weight_bytes=50_000_000, decode_tok_s=40.0, bandwidth_gb_s=10.0)
    assert bound == {"bandwidth_gb_s": 10.0, "weight_bytes_per_token": 50_000_000, "decode_tok_s_bound": 200.0,
                     "fraction_of_bound": 0.2}  # fmt: skip
    assert roofline(1, None, 1.0)["fraction_of_bound"] is None
    assert 0.1 < memory_bandwidth_gb_s(threads=2, megabytes=16, repeats=2) < 10_000


def test_a_figure_that_reads_zero_prints_without_a_ratio() -> None:
    # A tiny model's time to first token can round to 0 ms on a fast machine; CI once crashed on it.
    assert _figure(0.0, 3.0, higher_is_better=False) == "0.0"
    assert _figure(6.0, 3.0, higher_is_better=False) == "6.0 (0.50x)"
    assert _figure(6.0, 3.0, higher_is_better=True) == "6.0 (2.00x)"
    assert _figure(None, 3.0, higher_is_better=True) == "—"


def test_bench_measures_each_prompt_length_and_writes_manifest_and_report(chat_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "tinychat"
    shutil.copytree(chat_bundle, bundle)
    # The tiny model decodes in microseconds and the runner's clock counts milliseconds: 64 new tokens take a few.
    # 64 prompt tokens is also what the build measured, so the baseline has that figure to compare with.
    args = ["bench", str(bundle), "--prompt-tokens", "64", "--prompt-tokens", "16", "--new-tokens", "64",
            "--iterations", "1", "--compare", str(chat_bundle)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((bundle / "manifest.json").read_text())
    for entry in data["artifacts"]:
        first, second = entry["benchmarks"]
        assert entry["benchmark"] == first and entry["benchmark_note"] is None
        assert first["prompt_tokens"] > second["prompt_tokens"] and 63 <= first["new_tokens"] <= 64
        assert first["decode_tok_s"] > 0 and first["prefill_tok_s"] > 0 and second["ttft_ms"] is not None
        bound = entry["roofline"]
        # The embedding table is left out: a token reads one row of it.
        model = data["model"]
        table = model["vocab_size"] * model["hidden_size"] * (1 if entry["quantize_embeddings"] else 4)
        assert bound["weight_bytes_per_token"] == entry["bytes"] - table
        # The fraction is kept to 3 decimals: at a tiny model's small fraction that is more than 1% of it.
        expected = first["decode_tok_s"] / bound["decode_tok_s_bound"]
        assert bound["fraction_of_bound"] == pytest.approx(expected, rel=0.01, abs=5e-4)
        assert entry["memory_estimate"]["host_peak_rss_mb"] == round(first["peak_rss_mb"], 1)
    assert "x)" in result.output  # ratios to the baseline where it measured the same prompt length
    report = (bundle / "report.html").read_text()
    assert report.count("tok/s</span>") >= 2 and "per token" in report and "-token prompt, TTFT" in report
    too_long = CliRunner().invoke(app, ["bench", str(bundle), "--prompt-tokens", "120", "--new-tokens", "64"])
    assert too_long.exit_code == 2 and "do not fit model.max_context = 128" in too_long.output
    assert json.loads((bundle / "manifest.json").read_text()) == data  # a refused run leaves the bundle as it was


def test_default_prompt_lengths_are_cut_to_fit_the_context(chat_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "tinychat"
    shutil.copytree(chat_bundle, bundle)
    # max_context 128 with 96 new tokens leaves 32: both default lengths (64, 512) become one 32-token prompt.
    result = CliRunner().invoke(app, ["bench", str(bundle), "--new-tokens", "96", "--iterations", "1"])
    assert result.exit_code == 0, result.output
    for entry in json.loads((bundle / "manifest.json").read_text())["artifacts"]:
        assert [b["prompt_tokens"] for b in entry["benchmarks"]] == [32]
    no_room = CliRunner().invoke(app, ["bench", str(bundle), "--new-tokens", "128"])
    assert no_room.exit_code == 2 and "leaves no room for a prompt" in no_room.output
