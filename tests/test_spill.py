"""Float models wait on disk while a backend lowers a copy of them (builder/spill.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from builder.backends.base import LoweringOptions
from builder.backends.executorch import ExecuTorchBackend
from builder.models.base import Model
from builder.pipeline import lower_artifact
from builder.spill import spilled
from builder.targets import catalogue


class _Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.norm = nn.LayerNorm(4)
        self.register_buffer("positions", torch.arange(6).expand(2, -1), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in (*module.named_parameters(), *module.named_buffers())}


def test_spilled_module_holds_no_data_and_gets_every_value_back() -> None:
    torch.manual_seed(0)
    module = _Tied()
    ids = torch.tensor([[1, 2, 3]])
    expected, before = module(ids), _snapshot(module)
    weight = module.embed.weight
    with spilled([module, module], keep=nn.Module()):
        assert all(t.numel() == 0 for t in (*module.parameters(), *module.buffers()))
        with pytest.raises(RuntimeError):
            module(ids)
    assert module.embed.weight is weight and module.head.weight is module.embed.weight  # still one tied tensor
    after = _snapshot(module)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[name], before[name]) for name in before)
    assert torch.equal(module(ids), expected)


def test_spill_keeps_what_the_lowered_model_shares_and_restores_after_an_error() -> None:
    module = _Tied()
    lowered = nn.Module()
    lowered.norm = module.norm  # a module the copy shares with the original
    before = _snapshot(module)
    with pytest.raises(ValueError, match="lowering failed"), spilled([module], keep=lowered):
        assert module.norm.weight.numel() == 4 and module.embed.weight.numel() == 0
        raise ValueError("lowering failed")
    assert all(torch.equal(t, before[name]) for name, t in _snapshot(module).items())


class _ReadsFloatWeights:
    """A backend like LiteRT's, whose lowering exports the float model itself."""

    name = "reads-floats"
    lowers_prepared_only = False

    def lower(self, prepared: object, model: Model, *_: object) -> int:
        return sum(p.numel() for p in model.module.parameters())


def test_executorch_lowers_with_the_float_model_on_disk(
    tiny_llama: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ExecuTorchBackend()
    options = LoweringOptions(scheme="fp32", quantize_embeddings=False, max_context=64)
    prepared = backend.prepare(tiny_llama, options)
    before = _snapshot(tiny_llama.module)
    seen: list[int] = []
    real_lower = ExecuTorchBackend.lower

    def lower(self: ExecuTorchBackend, *args: object) -> object:
        seen.append(sum(p.numel() for p in tiny_llama.module.parameters()))
        return real_lower(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ExecuTorchBackend, "lower", lower)
    target = catalogue()["android-xnnpack"]
    artifact = lower_artifact(backend, prepared, [tiny_llama, tiny_llama], target, options, tmp_path)
    assert seen == [0]
    assert artifact.path.is_file()
    assert all(torch.equal(t, before[name]) for name, t in _snapshot(tiny_llama.module).items())
    reads = lower_artifact(_ReadsFloatWeights(), prepared, [tiny_llama], target, options, tmp_path)  # type: ignore[arg-type]
    assert reads == tiny_llama.parameters
