"""Text generation for Core ML: a decoder spelled out so coremltools converts it to a stateful ML Program
(iOS 18): the KV cache lives in two state tensors, `keyCache` and `valueCache`, updated in place, and one
flexible-length call serves prefill and decode (DESIGN §9).

The layers are the model's own modules (projections, norms, MLP, rotary tables); only attention and the
cache are written out. That covers the pre-norm, rotary, grouped-query families: Llama/Mistral, Qwen2,
Qwen3 (q/k norms), Phi-3 (fused qkv, partial rotary) and Gemma 3 (q/k norms, sandwich norms, local and
global rotary tables) while the context fits the sliding window.

`forward(input_ids [1, S], causal_mask [1, 1, S, end]) -> logits [1, S, vocab]`, where `end` is the
number of tokens in the cache after this call; the caller owns the mask, as on device.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel

from builder.errors import UserInputError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text")


def _rotary(attention: nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    # Each family's modeling module carries its own variant (Phi-3's rotates only part of each head).
    return sys.modules[type(attention).__module__].apply_rotary_pos_emb


def _softcap(x: torch.Tensor, cap: float | None) -> torch.Tensor:
    return x if cap is None else torch.tanh(x / cap) * cap


def unsupported_reason(config: object, max_context: int) -> str | None:
    """Why the Core ML decoder cannot convert a model with this config, or None when it can."""
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED:
        return f"the Core ML decoder converts {', '.join(SUPPORTED)} models, not {model_type}"
    window = getattr(config, "sliding_window", None)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or [])
    if sliding and window is not None and max_context > window:
        return (f"{model_type} layers attend within a {window}-token sliding window, which the Core ML decoder "
                f"does not apply; model.max_context = {max_context} goes past it")  # fmt: skip
    return None


class CoreMLDecoder(nn.Module):
    def __init__(self, model: PreTrainedModel, max_context: int) -> None:
        super().__init__()
        config = model.config
        reason = unsupported_reason(config, max_context)
        if reason:
            raise UserInputError(f"ios-coreml: {reason}. Fix: use an ExecuTorch target (ios-xnnpack) for this model")
        self.model = model
        self.max_context = max_context
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.groups = config.num_attention_heads // config.num_key_value_heads
        self.layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
        rotary = model.model.rotary_emb
        self.rotary_per_layer_type = "layer_type" in inspect.signature(rotary.forward).parameters
        self.attention_softcap = getattr(config, "attn_logit_softcapping", None)
        self.final_softcap = getattr(config, "final_logit_softcapping", None)
        shape = (config.num_hidden_layers, 1, config.num_key_value_heads, max_context, self.head_dim)
        # Core ML states are fp16 (iOS 18); the eager reference keeps the same rounding of the cache.
        self.register_buffer("keyCache", torch.zeros(shape, dtype=torch.float16))
        self.register_buffer("valueCache", torch.zeros(shape, dtype=torch.float16))

    def reset_cache(self) -> None:
        self.keyCache.zero_()
        self.valueCache.zero_()

    def forward(self, input_ids: torch.Tensor, causal_mask: torch.Tensor) -> torch.Tensor:
        inner = self.model.model
        length = input_ids.shape[-1]
        end = causal_mask.shape[-1]
        past = end - length
        hidden = inner.embed_tokens(input_ids)
        positions = torch.arange(past, end, dtype=torch.long).unsqueeze(0)
        if self.rotary_per_layer_type:
            tables = {kind: inner.rotary_emb(hidden, positions, kind) for kind in set(self.layer_types)}
        else:
            tables = dict.fromkeys(set(self.layer_types), inner.rotary_emb(hidden, positions))
        for index, layer in enumerate(inner.layers):
            attention = layer.self_attn
            query, key, value = self._project(attention, layer.input_layernorm(hidden), length)
            cos, sin = tables[self.layer_types[index]]
            query, key = _rotary(attention)(query, key, cos, sin)
            self.keyCache[index, :, :, past:end, :] = key.to(torch.float16)
            self.valueCache[index, :, :, past:end, :] = value.to(torch.float16)
            keys = self.keyCache[index, :, :, :end, :].to(query.dtype).repeat_interleave(self.groups, dim=1)
            values = self.valueCache[index, :, :, :end, :].to(query.dtype).repeat_interleave(self.groups, dim=1)
            scores = _softcap(torch.matmul(query, keys.transpose(-1, -2)) * attention.scaling, self.attention_softcap)
            context = torch.matmul(torch.softmax(scores + causal_mask, dim=-1), values)
            attended = attention.o_proj(context.transpose(1, 2).reshape(1, length, -1))
            if hasattr(layer, "pre_feedforward_layernorm"):  # Gemma: norms on both sides of each sublayer
                hidden = hidden + layer.post_attention_layernorm(attended)
                hidden = hidden + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(hidden)))
            else:
                hidden = hidden + attended
                hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return _softcap(self.model.lm_head(inner.norm(hidden)), self.final_softcap)

    def _project(self, attention: nn.Module, x: torch.Tensor, length: int) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values as [1, heads, S, head_dim], q/k-normed where the family norms them."""
        if hasattr(attention, "qkv_proj"):
            q_size = self.model.config.num_attention_heads * self.head_dim
            kv_size = self.model.config.num_key_value_heads * self.head_dim
            query, key, value = attention.qkv_proj(x).split([q_size, kv_size, kv_size], dim=-1)
        else:
            query, key, value = attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)
        query, key, value = (t.view(1, length, -1, self.head_dim) for t in (query, key, value))
        if hasattr(attention, "q_norm"):
            query, key = attention.q_norm(query), attention.k_norm(key)
        return tuple(t.transpose(1, 2) for t in (query, key, value))


def causal_mask(start: int, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive mask for `length` new tokens after `start` cached ones: [1, 1, length, start + length]."""
    rows = torch.arange(start, start + length)[:, None]
    cols = torch.arange(start + length)[None, :]
    return torch.where(cols <= rows, 0.0, -1e4).to(dtype)[None, None]
