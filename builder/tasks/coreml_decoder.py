"""Text generation for Core ML: a Llama-family decoder spelled out so coremltools converts it to a
stateful ML Program (iOS 18): the KV cache lives in two state tensors, `keyCache` and `valueCache`,
updated in place, and one flexible-length call serves prefill and decode (DESIGN §9).

`forward(input_ids [1, S], causal_mask [1, 1, S, end]) -> logits [1, S, vocab]`, where `end` is the
number of tokens in the cache after this call; the caller owns the mask, as on device.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from builder.errors import UserInputError

# Families whose layers are Llama's (pre-norm, rotary q/k, grouped-query attention, gated MLP).
SUPPORTED = ("llama", "mistral", "qwen2")


class CoreMLDecoder(nn.Module):
    def __init__(self, model: PreTrainedModel, max_context: int) -> None:
        super().__init__()
        config = model.config
        if config.model_type not in SUPPORTED:
            raise UserInputError(
                f"the Core ML decoder path converts {', '.join(SUPPORTED)} models; {config.model_type} is not one. "
                "Fix: use an ExecuTorch target (ios-xnnpack) for this model"
            )
        self.model = model
        self.max_context = max_context
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.groups = config.num_attention_heads // config.num_key_value_heads
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
        cos, sin = inner.rotary_emb(hidden, positions)
        for index, layer in enumerate(inner.layers):
            attention = layer.self_attn
            x = layer.input_layernorm(hidden)
            query = attention.q_proj(x).view(1, length, -1, self.head_dim).transpose(1, 2)
            key = attention.k_proj(x).view(1, length, -1, self.head_dim).transpose(1, 2)
            value = attention.v_proj(x).view(1, length, -1, self.head_dim).transpose(1, 2)
            query, key = apply_rotary_pos_emb(query, key, cos, sin)
            self.keyCache[index, :, :, past:end, :] = key.to(torch.float16)
            self.valueCache[index, :, :, past:end, :] = value.to(torch.float16)
            keys = self.keyCache[index, :, :, :end, :].to(query.dtype).repeat_interleave(self.groups, dim=1)
            values = self.valueCache[index, :, :, :end, :].to(query.dtype).repeat_interleave(self.groups, dim=1)
            scores = torch.matmul(query, keys.transpose(-1, -2)) * self.head_dim**-0.5 + causal_mask
            context = torch.matmul(torch.softmax(scores, dim=-1), values)
            hidden = hidden + attention.o_proj(context.transpose(1, 2).reshape(1, length, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return self.model.lm_head(inner.norm(hidden))


def causal_mask(start: int, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive mask for `length` new tokens after `start` cached ones: [1, 1, length, start + length]."""
    rows = torch.arange(start, start + length)[:, None]
    cols = torch.arange(start + length)[None, :]
    return torch.where(cols <= rows, 0.0, -1e4).to(dtype)[None, None]
