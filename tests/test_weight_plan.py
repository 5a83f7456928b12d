"""The a8w4 weight plan: GPTQ rounding, sensitivity, mixed precision under a budget, caching, and how the
ExecuTorch backend applies it (builder/compress/gptq.py, builder/compress/weight_plan.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from builder.backends.base import LoweringOptions
from builder.backends.executorch import ExecuTorchBackend, weight_layout
from builder.backends.zero_point_linear import ZeroPointLinear
from builder.compress.architecture import family_of
from builder.compress.gptq import choose_grid, gptq, hqq_scales, round_to_grid, zero_point_grid
from builder.compress.quantization import estimated_weight_bytes, linear_storage_bits
from builder.compress.weight_plan import (
    cached_plan,
    choose_bits,
    eight_bits_help,
    linears_of,
    make_plan,
    rounded,
    sensitivity,
)
from builder.errors import UserInputError
from builder.models.base import Model
from builder.recipe import CompressSection


def _settings(**a8w4: object) -> CompressSection:
    return CompressSection.model_validate({"quantize": "a8w4", "a8w4": a8w4})


@pytest.fixture(scope="module")
def windows(tiny_llama: Model) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(1, tiny_llama.spec.vocab_size, (1, 32), generator=generator) for _ in range(4)]


def test_gptq_lowers_the_layer_output_error_below_round_to_nearest() -> None:
    generator = torch.Generator().manual_seed(0)
    # Correlated inputs with uneven scales, as real activations have: where GPTQ's error feedback pays.
    mixing = torch.randn(64, 64, generator=generator) * torch.linspace(0.1, 3.0, 64)
    inputs = torch.randn(512, 64, generator=generator) @ mixing
    weight = torch.randn(48, 64, generator=generator)
    scale = hqq_scales(weight, 32, 4)
    hessian = inputs.double().T @ inputs.double()

    def error(w: torch.Tensor) -> float:
        return float(((inputs @ (weight - w).T) ** 2).sum())

    symmetric, zero_points = (
        round_to_grid(weight, scale, bits=4),
        round_to_grid(weight, *zero_point_grid(weight, 32, 4), bits=4),
    )
    for nearest in (symmetric, zero_points):
        result = gptq(weight, hessian, nearest)
        assert torch.equal(result.scale, nearest.scale) and result.q.dtype == torch.int8
        assert result.offset is nearest.offset
        assert int(result.q.min()) >= -8 and int(result.q.max()) <= 7
        assert error(result.dequantize()) < 0.8 * error(nearest.dequantize())


def _on_q4_1_grid(rows: int, columns: int, seed: int = 0) -> torch.Tensor:
    """A weight as a Q4_1 GGUF dequantizes it: per group of 32, fp16 scale and minimum, codes 0..15, each used."""
    generator = torch.Generator().manual_seed(seed)
    groups = columns // 32
    scale = (torch.rand(rows, groups, 1, generator=generator) * 0.02 + 0.001).half().float()
    low = (torch.randn(rows, groups, 1, generator=generator) * 0.05 - 8 * scale).half().float()
    codes = torch.randint(0, 16, (rows, groups, 32), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15
    return (codes * scale + low).reshape(rows, columns)


def test_zero_points_recover_a_q4_1_grid_that_symmetric_scales_cannot() -> None:
    weight = _on_q4_1_grid(48, 128)
    exact = choose_grid(weight, 32, 4, zero_points=True)
    assert exact.offset is not None and exact.offset.shape == exact.scale.shape == (48, 4)
    assert int(exact.q.min()) == -8 and int(exact.q.max()) == 7
    # Scales are stored as bf16: what is left is their rounding, not the integers'.
    error = (exact.dequantize() - weight).abs().max() / weight.abs().max()
    symmetric = (choose_grid(weight, 32, 4, zero_points=False).dequantize() - weight).abs().max() / weight.abs().max()
    assert error < 5e-3 and symmetric > 10 * error, (error, symmetric)
    linear = nn.Linear(128, 48, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    assert not eight_bits_help(linear, zero_points=True) and eight_bits_help(linear, zero_points=False)
    # GPTQ has nothing to spread: it keeps the integers.
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(256, 128, generator=generator)
    assert torch.equal(gptq(weight, inputs.double().T @ inputs.double(), exact).q, exact.q)


def test_zero_point_linear_computes_the_asymmetric_weight() -> None:
    weight = _on_q4_1_grid(16, 64, seed=2)
    grid = choose_grid(weight, 32, 4, zero_points=True)
    symmetric_part = nn.Linear(64, 16, bias=False)
    with torch.no_grad():
        symmetric_part.weight.copy_(grid.q.float() * grid.scale.repeat_interleave(32, dim=1))
    layer = ZeroPointLinear(symmetric_part, grid.offset)
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(layer(x), x @ grid.dequantize().T, atol=1e-5)


def test_sensitivity_from_recorded_block_inputs_equals_a_whole_run(tiny_llama: Model,
                                                                   windows: list[torch.Tensor]) -> None:  # fmt: skip
    module = copy.deepcopy(tiny_llama.module).eval()
    # The exported model stores the output layer apart from the (int8) embedding table it may be tied to:
    # rounding one must not round the other.
    module.lm_head.weight = nn.Parameter(module.lm_head.weight.detach().clone())
    family = family_of(module.config.model_type, "test")
    names = ["model.layers.1.mlp.down_proj", "model.layers.0.self_attn.q_proj", "lm_head"]
    scores = sensitivity(module, family, windows, names, zero_points=True)
    with torch.no_grad():
        reference = [torch.log_softmax(module(ids).logits.float(), -1) for ids in windows]
        for name in names:
            linear = module.get_submodule(name)
            original = linear.weight.detach().clone()
            linear.weight.copy_(rounded(linear, 4, zero_points=True))
            kls = [float((r.exp() * (r - torch.log_softmax(module(ids).logits.float(), -1))).sum(-1).mean())
                   for ids, r in zip(windows, reference, strict=True)]  # fmt: skip
            linear.weight.copy_(original)
            assert scores[name] == pytest.approx(sum(kls) / len(kls), rel=1e-4, abs=1e-7), name
    # KL is never below 0; float error leaves a layer that barely matters (random tiny weights) near ±1e-8.
    assert all(score > -1e-6 for score in scores.values()) and max(scores.values()) > 1e-6, scores


def test_mixed_precision_buys_the_most_sensitivity_per_byte_within_the_budget(tiny_llama: Model) -> None:
    linears = linears_of(tiny_llama.module)
    names = sorted(linears)
    scores = {name: float(i + 1) for i, name in enumerate(names)}
    four = sum(linear_storage_bits(m, 4) for m in linears.values())
    for extra_share in (0.0, 0.1, 0.3, 1.0):
        budget = int(four * (1 + extra_share))
        bits = choose_bits(linears, scores, {}, budget)
        assert sum(linear_storage_bits(linears[n], b) for n, b in bits.items()) <= budget
        chosen = [n for n, b in bits.items() if b == 8]
        left = [n for n, b in bits.items() if b == 4]
        if extra_share == 0.0:
            assert not chosen

        def extra(n: str) -> int:
            return linear_storage_bits(linears[n], 8) - linear_storage_bits(linears[n], 4)

        # Nothing left at 4 bits had a better ratio than everything chosen, unless it no longer fitted.
        spent = sum(linear_storage_bits(linears[n], b) for n, b in bits.items())
        for n in left:
            if spent + extra(n) <= budget:
                raise AssertionError(f"{n} still fits the budget")
        if chosen:
            worst = min(scores[n] / extra(n) for n in chosen)
            assert all(scores[n] / extra(n) <= worst or spent + extra(n) > budget for n in left)
    assert choose_bits(linears, scores, {"lm_head": 8}, four * 2)["lm_head"] == 8
    assert choose_bits(linears, scores, {"lm_head": 4}, four * 2)["lm_head"] == 4


def test_plan_respects_each_budget_and_is_deterministic(tiny_llama: Model, windows: list[torch.Tensor]) -> None:
    module = tiny_llama.module
    linears = linears_of(module)
    first = make_plan(module, _settings(bits_per_weight=6.0), windows, None, True)
    again = make_plan(module, _settings(bits_per_weight=6.0), windows, None, True)
    assert first.bits == again.bits and first.sensitivity == again.sensitivity
    assert set(first.weights) == set(linears)
    for name, weight in first.weights.items():
        assert torch.equal(weight.q, again.weights[name].q) and torch.equal(weight.scale, again.weights[name].scale)
    assert 4.5 <= first.bits_per_weight <= 6.0
    assert any(bits == 8 for bits in first.bits.values())
    assert first.zero_points and all(first.weights[n].offset is not None for n, b in first.bits.items() if b == 4)
    assert first.estimated_weight_bytes == estimated_weight_bytes(module, "a8w4", True, bits=first.bits,
                                                                  zero_points=True)  # fmt: skip

    cap = estimated_weight_bytes(module, "a8w4", True, bits={n: 4 for n in linears}, zero_points=True) + 4000
    capped = make_plan(module, _settings(max_bytes=cap), windows, None, True)
    assert capped.estimated_weight_bytes <= cap
    assert any(bits == 8 for bits in capped.bits.values())
    with pytest.raises(UserInputError, match=r"compress\.a8w4\.max_bytes = 1000 is below the smallest"):
        make_plan(module, _settings(max_bytes=1000), windows, None, True)

    plain = make_plan(module, _settings(method="hqq", mixed_precision=False, zero_points=False), windows, None, True)
    assert plain.weights == {} and plain.sensitivity == {} and plain.calibration is None
    assert plain.bits == {name: 8 if name == "lm_head" else 4 for name in linears}
    # torchao rounds only to symmetric grids: with zero points, the plan carries every Linear's integers.
    nearest = make_plan(module, _settings(method="hqq", mixed_precision=False), windows, None, True)
    assert set(nearest.weights) == set(linears) and nearest.calibration is None
    assert all((w.offset is not None) == (nearest.bits[n] == 4) for n, w in nearest.weights.items())


def test_backend_applies_the_plan_bits_and_rounding(tiny_llama: Model, windows: list[torch.Tensor]) -> None:
    plan = make_plan(tiny_llama.module, _settings(bits_per_weight=6.0), windows, None, True)
    options = LoweringOptions("a8w4", True, 64, plan=plan)
    prepared = ExecuTorchBackend().prepare(tiny_llama, options)
    module = prepared.module.model
    for name, weight in plan.weights.items():
        layer = module.get_submodule(name)
        assert isinstance(layer, ZeroPointLinear) == (plan.bits[name] == 4), name
        tensor = (layer.linear if isinstance(layer, ZeroPointLinear) else layer).weight
        assert tensor.target_dtype == (torch.int8 if plan.bits[name] == 8 else torch.int4), name
        assert torch.equal(tensor.qdata, weight.q) and torch.equal(tensor.scale, weight.scale), name
        if isinstance(layer, ZeroPointLinear):  # offsets int8 per row, as the 8-bit Linears
            offsets = layer.offsets.weight
            assert offsets.target_dtype == torch.int8 and offsets.block_size[1] == offsets.shape[1], name
            assert torch.allclose(offsets.dequantize() / 32, weight.offset, atol=float(weight.offset.abs().max()) / 100)
    layout = weight_layout(module, options)
    eight = sum(bits == 8 for name, bits in plan.bits.items() if name != "lm_head")
    assert f"int8 symmetric, per output channel ({eight} layers)" in layout["linear"]
    assert "int4 with zero points (int8 offsets on the group means), groups of 32" in layout["linear"]
    assert layout["rounding"] == "GPTQ (act-order) on min/max zero points"
    assert options.cache_fields()["plan"] == plan.digest


def test_a_cached_plan_loads_back_identical(tiny_llama: Model, windows: list[torch.Tensor],
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SLMPACK_CACHE", str(tmp_path))
    made = make_plan(tiny_llama.module, _settings(), windows, {"sha256": "x"}, True)
    stored, hit = cached_plan("k" * 32, lambda: made)
    assert not hit and stored.digest == "k" * 32
    loaded, hit = cached_plan("k" * 32, lambda: pytest.fail("recomputed"))
    assert hit and loaded.to_json() == made.to_json()
    for name, weight in made.weights.items():
        assert torch.equal(loaded.weights[name].q, weight.q) and loaded.weights[name].bits == weight.bits
        assert (weight.offset is None) == (loaded.weights[name].offset is None), name
        assert weight.offset is None or torch.equal(loaded.weights[name].offset, weight.offset), name
    (tmp_path / "weight-plans" / ("k" * 32) / "weights.safetensors").write_bytes(b"damaged")
    _, hit = cached_plan("k" * 32, lambda: made)
    assert not hit


@pytest.mark.parametrize(("a8w4", "message"), [
    ({"bits_per_weight": 5.5, "max_bytes": 10}, "set at most one budget"),
    ({"mixed_precision": False, "bits_per_weight": 6}, "a budget applies only with mixed_precision = true"),
    ({"method": "awq"}, "method"),
    ({"bits_per_weight": 4}, "bits_per_weight"),
])  # fmt: skip
def test_recipe_refuses_contradictory_a8w4_settings(a8w4: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _settings(**a8w4)


def test_linear_storage_counts_scales(tiny_llama: Model) -> None:
    down = nn.Linear(128, 64, bias=False)
    assert linear_storage_bits(down, 4) == 128 * 64 * 4 + 64 * 4 * 16  # bf16 group scales
    # and an int8 offset per group, with an fp32 scale per row
    assert linear_storage_bits(down, 4, zero_points=True) == 128 * 64 * 4 + 64 * 4 * (16 + 8) + 64 * 32
    assert linear_storage_bits(down, 8) == 128 * 64 * 8 + 64 * 32
    odd = nn.Linear(48, 16, bias=False)  # no multiple of 32: per row
    assert linear_storage_bits(odd, 4) == 48 * 16 * 4 + 16 * 32


def test_quantize_report_lists_sensitivities_and_the_size_quality_curve(write_recipe, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from builder.cli import app

    # Zero points (the default) put this model's every-Linear-at-4-bits layout at 5.21 bits per weight.
    recipe = write_recipe(extra="[compress.a8w4]\nbits_per_weight = 5.5\n")
    out = tmp_path / "report" / "a8w4.html"
    result = CliRunner().invoke(app, ["quantize-report", str(recipe), "--budgets", "5.25,6.5", "--top", "3",
                                      "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    labels = [p["label"] for p in data["points"]]
    assert labels == ["recipe", "gptq, 5.25 bits/weight", "gptq, 6.5 bits/weight", "hqq, no mixed precision"]
    by = {p["label"]: p for p in data["points"]}
    assert by["recipe"]["bits_per_weight"] <= 5.5 and by["gptq, 6.5 bits/weight"]["bits_per_weight"] <= 6.5
    assert by["gptq, 5.25 bits/weight"]["eight_bit_layers"] < by["gptq, 6.5 bits/weight"]["eight_bit_layers"]
    assert (by["gptq, 5.25 bits/weight"]["estimated_weight_bytes"]
            < by["gptq, 6.5 bits/weight"]["estimated_weight_bytes"])  # fmt: skip
    assert all(p["perplexity"] > 1 and 0 <= p["top1_agreement"] <= 1 for p in data["points"])
    layers = data["plan"]["layers"]
    assert len(layers) == 15 and all(layer["sensitivity"] > -1e-6 for layer in layers), layers[-3:]
    assert [layer["sensitivity"] for layer in layers] == sorted((x["sensitivity"] for x in layers), reverse=True)
    assert layers[0]["name"] in result.output and "12 less sensitive Linears not shown" in result.output
    # The model's own calibration windows are sampled once at most (none if a build cached them), not per point.
    assert result.output.count("calibration windows from the model") <= 1
    assert data["plan"]["calibration"]["generated"]["windows"] == 32
    page = out.read_text()
    assert "<svg" in page and all(layer["name"] in page for layer in layers)

    bad = CliRunner().invoke(app, ["quantize-report", str(recipe), "--budgets", "4"])
    assert bad.exit_code != 0 and "between 4.5 (all int4) and 9.0" in bad.output
    assert "Example: slmpack quantize-report" in CliRunner().invoke(app, ["quantize-report", "--help"]).output


def test_generated_windows_are_seeded_full_length_and_leave_the_global_rng_alone(tiny_llama: Model) -> None:
    from builder.compress.generated import generated_windows, interleaved

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = generated_windows(tiny_llama.module, 0, count=3, length=20)
    after = torch.rand(1)
    second = generated_windows(tiny_llama.module, 0, count=3, length=20)
    assert [w.shape for w in first] == [torch.Size([1, 20])] * 3
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not torch.equal(first[0], first[1])  # sampled, not one greedy continuation thrice
    assert torch.equal(before, after)  # the caller's random stream is not consumed
    text, own = [torch.full((1, 2), i) for i in range(3)], [torch.full((1, 2), 10 + i) for i in range(1)]
    assert [int(w[0, 0]) for w in interleaved(text, own)] == [0, 10, 1, 2]


def test_calibration_windows_sample_the_whole_text() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from builder.validate.data import calibration_windows

    words = [f"w{i}" for i in range(4000)]
    vocab = {word: i for i, word in enumerate(words)} | {"[UNK]": len(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    text = "\n".join(" ".join(words[i : i + 10]) for i in range(0, 4000, 10))  # one token per word, in order
    spread = calibration_windows(tokenizer, text, count=4, length=50)
    starts = [int(w[0, 0]) for w in spread]
    assert all(w.shape == (1, 50) and torch.equal(w[0], torch.arange(start, start + 50))
               for w, start in zip(spread, starts, strict=True))  # fmt: skip
    # One from each quarter of the characters (words grow from 2 to 5 characters), each at a line's start.
    assert starts[0] == 0 and 800 < starts[1] < starts[2] < starts[3] and starts[3] > 2900
    assert all(start % 10 == 0 for start in starts)
    # A text that barely holds the windows gives them one after another.
    short = "\n".join(" ".join(words[i : i + 10]) for i in range(0, 300, 10))
    assert [int(w[0, 0]) for w in calibration_windows(tokenizer, short, count=4, length=50)] == [0, 50, 100, 150]
    with pytest.raises(UserInputError, match=r"compress\.calibration needs 8 x 50"):
        calibration_windows(tokenizer, short, count=8, length=50)
