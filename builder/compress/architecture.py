"""Where each model family keeps the parts compression edits: its blocks, MLP channels and attention heads,
and the config keys that describe their sizes. One explicit table, so a family is supported on purpose."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from torch import nn

from builder.errors import UserInputError


@dataclass(frozen=True)
class Attention:
    """Grouped-query attention as projections: query head h reads key/value head h // (heads / kv_heads)."""

    query: str  # Linear whose output rows are query heads (or a fused q|k|v projection, see `fused_qkv`)
    key: str
    value: str
    output: str  # Linear whose input columns are query heads
    fused_qkv: bool = False  # Phi-3: one `qkv_proj` whose rows are [q heads; k heads; v heads]


@dataclass(frozen=True)
class Family:
    blocks: str  # dotted path of the ModuleList of transformer blocks
    block_count_key: str
    mlp_inputs: tuple[str, ...]  # Linears (inside a block) whose output rows are MLP channels
    mlp_output: str  # the Linear whose input columns are MLP channels
    mlp_width_key: str
    attention: Attention
    fused_gate_up: bool = False  # Phi-3: one `gate_up_proj` whose rows are [gate; up]
    # Why heads cannot be removed while the config stays consistent (the head size is derived from the
    # hidden size and head count, so fewer heads would change it); None where a `head_dim` key exists.
    heads_refusal: str | None = None
    # The norm between the last block and the output projection (decoders); None where the last block's
    # output is the model's (encoders).
    final_norm: str | None = None

    def block_list(self, module: nn.Module) -> nn.ModuleList:
        return operator.attrgetter(self.blocks)(module)

    def mlp_linears(self) -> tuple[str, ...]:
        return (*self.mlp_inputs, self.mlp_output)

    def attention_linears(self) -> tuple[str, ...]:
        a = self.attention
        return (a.query, a.output) if a.fused_qkv else (a.query, a.key, a.value, a.output)


_LLAMA_LIKE = Family(
    blocks="model.layers",
    block_count_key="num_hidden_layers",
    mlp_inputs=("mlp.gate_proj", "mlp.up_proj"),
    mlp_output="mlp.down_proj",
    mlp_width_key="intermediate_size",
    attention=Attention("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    final_norm="model.norm",
)
_PHI3 = Family(
    blocks="model.layers",
    block_count_key="num_hidden_layers",
    mlp_inputs=("mlp.gate_up_proj",),
    mlp_output="mlp.down_proj",
    mlp_width_key="intermediate_size",
    attention=Attention("self_attn.qkv_proj", "", "", "self_attn.o_proj", fused_qkv=True),
    fused_gate_up=True,
    final_norm="model.norm",
)
_BERT = Family(
    blocks="encoder.layer",
    block_count_key="num_hidden_layers",
    mlp_inputs=("intermediate.dense",),
    mlp_output="output.dense",
    mlp_width_key="intermediate_size",
    attention=Attention("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"),
    heads_refusal="BERT derives its head size from hidden_size / num_attention_heads",
)
_DISTILBERT = Family(
    blocks="transformer.layer",
    block_count_key="n_layers",
    mlp_inputs=("ffn.lin1",),
    mlp_output="ffn.lin2",
    mlp_width_key="hidden_dim",
    attention=Attention("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"),
    heads_refusal="DistilBERT derives its head size from dim / n_heads",
)

FAMILIES: dict[str, Family] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi3": _PHI3,
    "bert": _BERT,
    "distilbert": _DISTILBERT,
}


def family_of(model_type: str, what: str) -> Family:
    if model_type not in FAMILIES:
        raise UserInputError(
            f"{what} does not know the layout of {model_type!r} models. "
            f"Fix: remove it from [compress], or use a model of a supported family ({', '.join(sorted(FAMILIES))})"
        )
    return FAMILIES[model_type]


def submodule(block: nn.Module, path: str) -> Any:
    return operator.attrgetter(path)(block)


def set_submodule(block: nn.Module, path: str, value: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(operator.attrgetter(parent)(block) if parent else block, name, value)
