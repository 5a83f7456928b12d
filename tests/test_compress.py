"""Torch-level compression on tiny seeded models of each family: structured pruning is exact surgery (the
pruned model equals the original with the removed units silenced), keeps a consistent config that
transformers reloads, removes what calibration scores as least important; magnitude pruning, low-rank
factorization and distillation do what they say, deterministically."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from builder.compress.architecture import FAMILIES, submodule
from builder.compress.distill import distill
from builder.compress.lowrank import LowRankLinear, apply_ranks, lowrank_factorize, lowrank_ranks
from builder.compress.prune import Selection, magnitude_prune, structured_prune
from builder.errors import UserInputError
from builder.recipe import DistillSection, LowRankSection, PruneSection

VOCAB = 96


def _decoder(kind: str) -> nn.Module:
    common = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  bos_token_id=0, eos_token_id=1, pad_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    if kind == "llama":
        return LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=True)).eval()
    if kind == "qwen2":  # biases on q/k/v
        return Qwen2ForCausalLM(Qwen2Config(**common)).eval()
    if kind == "qwen3":  # q/k norms, explicit head_dim
        return Qwen3ForCausalLM(Qwen3Config(**common, head_dim=16)).eval()
    if kind == "gemma3":  # sandwich norms, per-layer attention types
        return Gemma3ForCausalLM(Gemma3TextConfig(**common, head_dim=16, sliding_window=16)).eval()
    if kind == "phi3":  # fused qkv and gate_up projections
        return Phi3ForCausalLM(Phi3Config(**common)).eval()
    raise AssertionError(kind)


def _encoder(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "bert":
        return BertModel(BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                    num_attention_heads=4, max_position_embeddings=64)).eval()  # fmt: skip
    return DistilBertModel(DistilBertConfig(vocab_size=VOCAB, dim=64, hidden_dim=128, n_layers=3, n_heads=4,
                                            max_position_embeddings=64)).eval()  # fmt: skip


def _windows(count: int = 4, length: int = 24, seed: int = 1) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (1, length), generator=generator) for _ in range(count)]


def _out(module: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = module(input_ids=ids, attention_mask=torch.ones_like(ids))
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@torch.no_grad()
def _silenced(module: nn.Module, selection: Selection) -> nn.Module:
    """The original with every unit pruning removed contributing nothing: removed MLP channels and heads get
    zero output-projection columns, removed blocks zero output projections (a pre-norm block is then the
    identity). This is what the pruned model must compute exactly."""
    silenced = copy.deepcopy(module)
    family = FAMILIES[module.config.model_type]
    config = module.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for index, block in enumerate(family.block_list(silenced)):
        mlp_out = submodule(block, family.mlp_output).weight
        attn_out = submodule(block, family.attention.output).weight
        if index not in selection.blocks:
            mlp_out.zero_()
            attn_out.zero_()
            continue
        if index in selection.channels:
            dropped = torch.ones(mlp_out.shape[1], dtype=torch.bool)
            dropped[selection.channels[index]] = False
            mlp_out[:, dropped] = 0
        if index in selection.query_heads:
            heads = attn_out.shape[1] // head_dim
            for head in set(range(heads)) - set(selection.query_heads[index]):
                attn_out[:, head * head_dim : (head + 1) * head_dim] = 0
    return silenced


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_structured_pruning_is_exact_surgery_and_reloads(kind: str, tmp_path: Path) -> None:
    model = _decoder(kind)
    settings = PruneSection(method="structured", sparsity=0.45, parts=["mlp", "heads", "layers"])
    pruned, record, selection = structured_prune(model, settings, _windows())
    assert record["blocks"] == [4, 3] and record["mlp_width"][1] < 128 and record["attention_heads"][1] < 4
    assert record["kv_heads"] == [2, 2]  # grouped-query attention: groups thinned evenly, KV heads kept
    assert all(len(q) == 2 for q in selection.query_heads.values())
    assert all(len(kv) == 2 for kv in selection.kv_heads.values())
    assert 0.3 < record["achieved_sparsity"] < 0.6
    config = pruned.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (3, 2, 2)
    assert config.head_dim == 16
    if getattr(model.config, "layer_types", None):
        assert config.layer_types == [model.config.layer_types[i] for i in selection.blocks]
    ids = _windows(1, 20, seed=7)[0]
    torch.testing.assert_close(_out(pruned, ids), _out(_silenced(model, selection), ids), atol=2e-5, rtol=1e-4)
    pruned.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_out(reloaded, ids), _out(pruned, ids))
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in pruned.parameters())


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_structured_pruning_of_encoders_mlp_and_layers(kind: str, tmp_path: Path) -> None:
    model = _encoder(kind)
    settings = PruneSection(method="structured", sparsity=0.2, parts=["mlp"])
    pruned, record, selection = structured_prune(model, settings, _windows())
    assert record["mlp_width"] == [128, 64] and record["blocks"] == [3, 3]
    ids = _windows(1, 20, seed=7)[0]
    # Post-norm blocks are not the identity when silenced, so only MLP channels are checked exactly.
    torch.testing.assert_close(_out(pruned, ids), _out(_silenced(model, selection), ids), atol=2e-5, rtol=1e-4)
    pruned.save_pretrained(tmp_path)
    torch.testing.assert_close(_out(AutoModel.from_pretrained(tmp_path).eval(), ids), _out(pruned, ids))
    by_layers = PruneSection(method="structured", sparsity=0.2, parts=["layers"])
    layers, _, _ = structured_prune(model, by_layers, _windows())
    assert len(FAMILIES[kind].block_list(layers)) == 2
    with pytest.raises(UserInputError, match="heads cannot be removed"):
        structured_prune(model, PruneSection(method="structured", sparsity=0.2, parts=["heads"]), _windows())


@torch.no_grad()
def test_importance_removes_the_least_important_units() -> None:
    model = _decoder("llama")
    block = model.model.layers
    # Block 1 contributes nothing: its output projections are zero.
    block[1].self_attn.o_proj.weight.zero_()
    block[1].mlp.down_proj.weight.zero_()
    block[0].mlp.down_proj.weight[:, :32] *= 1e-4  # 32 channels of block 0 barely matter
    block[2].self_attn.o_proj.weight[:, 16:32] *= 1e-4  # query head 1 of block 2 (group 0) barely matters
    settings = PruneSection(method="structured", sparsity=0.45, parts=["mlp", "heads", "layers"])
    _, record, selection = structured_prune(model, settings, _windows())
    assert record["removed_blocks"] == [1]
    assert selection.channels[0].min() >= 32  # the quiet channels went first
    assert selection.query_heads[2] == [0, 2] or selection.query_heads[2] == [0, 3]


def test_whole_kv_groups_go_when_groups_hold_one_head() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    pruned, record, selection = structured_prune(
        model, PruneSection(method="structured", sparsity=0.1, parts=["heads"]), _windows()
    )
    assert record["kv_heads"][1] == record["attention_heads"][1] < 4
    ids = _windows(1, 16, seed=3)[0]
    torch.testing.assert_close(_out(pruned, ids), _out(_silenced(model, selection), ids), atol=2e-5, rtol=1e-4)


def test_structured_pruning_refuses_what_its_parts_cannot_reach() -> None:
    with pytest.raises(UserInputError, match=r"can take \d+% of the .* parameters at most.*Fix"):
        structured_prune(_decoder("llama"), PruneSection(method="structured", sparsity=0.9, parts=["heads"]),
                         _windows())  # fmt: skip


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_magnitude_pruning_zeroes_the_smallest_block_weights(scope: str) -> None:
    model = _decoder("llama")
    before = copy.deepcopy(model)
    family = FAMILIES["llama"]
    record = magnitude_prune(model, family, 0.5, scope)
    assert record["block_weight_sparsity"] == pytest.approx(0.5, abs=1e-3)
    linears = [submodule(b, p) for b in family.block_list(model) for p in (*family.mlp_linears(),
                                                                           *family.attention_linears())]  # fmt: skip
    olds = [submodule(b, p) for b in family.block_list(before) for p in (*family.mlp_linears(),
                                                                         *family.attention_linears())]  # fmt: skip
    for new, old in zip(linears, olds, strict=True):
        zeroed = new.weight == 0
        if scope == "layer":
            assert zeroed.float().mean().item() == pytest.approx(0.5, abs=1e-2)
        # Every survivor is at least as large as every zeroed weight of the same matrix.
        if zeroed.any() and (~zeroed).any():
            assert old.weight[~zeroed].abs().min() >= old.weight[zeroed].abs().max()
    torch.testing.assert_close(model.model.embed_tokens.weight, before.model.embed_tokens.weight)


def test_lowrank_factorizes_by_ratio_and_energy_and_skips_where_nothing_is_saved() -> None:
    model = _decoder("llama")
    ids = _windows(1, 16)[0]
    expected = _out(model, ids)
    exact = copy.deepcopy(model)
    record = lowrank_factorize(exact, LowRankSection(energy=0.999999, rank_multiple=1, modules=["mlp"]))
    # Near-full rank saves nothing on 64x128 matrices: every one is kept.
    assert record["replaced"] == 0 and record["kept_full_rank"] == 12
    low = copy.deepcopy(model)
    record = lowrank_factorize(low, LowRankSection(ratio=0.25, rank_multiple=8))
    assert record["replaced"] > 0 and record["parameters_removed"] > 0
    assert {layer["rank"] for layer in record["layers"]} <= {8, 16}
    mlp = low.model.layers[0].mlp.gate_proj
    assert isinstance(mlp, LowRankLinear) and mlp.rank == 16
    # The factors are the truncated SVD: the best rank-16 approximation of the weight.
    original = model.model.layers[0].mlp.gate_proj.weight
    u, s, vh = torch.linalg.svd(original.double(), full_matrices=False)
    best = (u[:, :16] * s[:16]) @ vh[:16]
    torch.testing.assert_close((mlp.up.weight @ mlp.down.weight).double(), best, atol=1e-5, rtol=1e-5)
    assert (_out(low, ids) - expected).abs().max() > 0
    # Rebuilt from its recorded ranks, a factorized model loads its own state dict.
    rebuilt = _decoder("llama")
    apply_ranks(rebuilt, lowrank_ranks(low))
    rebuilt.load_state_dict(low.state_dict())
    torch.testing.assert_close(_out(rebuilt, ids), _out(low, ids))


def test_distillation_heals_and_is_deterministic() -> None:
    teacher = _decoder("llama")
    settings = PruneSection(method="structured", sparsity=0.3, parts=["mlp", "heads"])
    student, _, _ = structured_prune(teacher, settings, _windows())
    data = _windows(8, 32, seed=5)
    config = DistillSection(steps=30, batch_size=2, sequence_length=32, learning_rate=3e-3, seed=4)
    first = copy.deepcopy(student)
    record = distill(first, teacher, data, config, decoder=True)
    assert record["loss_last"] < 0.8 * record["loss_first"], record
    second = copy.deepcopy(student)
    distill(second, teacher, data, config, decoder=True)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)
    steps: list[int] = []
    distill(copy.deepcopy(student), teacher, data, config.model_copy(update={"steps": 3}), True,
            lambda step, loss: steps.append(step))  # fmt: skip
    assert steps == [1, 2, 3]


def test_encoder_distillation_moves_toward_the_teacher() -> None:
    teacher = _encoder("bert")
    student, _, _ = structured_prune(teacher, PruneSection(method="structured", sparsity=0.2, parts=["mlp"]),
                                     _windows())  # fmt: skip
    config = DistillSection(steps=20, batch_size=2, sequence_length=24, learning_rate=3e-3)
    record = distill(student, teacher, _windows(6, 24, seed=9), config, decoder=False)
    assert record["loss"] == "cosine distance" and record["loss_last"] < record["loss_first"]
