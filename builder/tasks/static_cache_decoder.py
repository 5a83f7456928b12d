"""Text generation for delegates that take only standard ops (ExecuTorch's Core ML delegate): the same
`forward(input_ids [1, S], cache_position [S]) -> logits [1, S, vocab]` as the XNNPACK wrapper, so
ExecuTorch's LLM runners drive it unchanged, but with no custom op anywhere.

ExecuTorch's `llama::custom_sdpa` and `llama::update_cache` have no Core ML lowering, and HF's
StaticCache writes with `index_copy_`, which coremltools cannot convert with a dynamic sequence length.
Here the cache write is a one-hot matmul (exact: one non-zero term per slot) and the causal mask is
built from `cache_position`, so the whole step is matmul, compare, select and softmax: one delegate
call. The cache stays a mutable buffer of the program (the Core ML delegate takes it in and hands it
back, `take_over_mutable_buffer=False`, DESIGN §9), so the program runs on iOS 17.

The delegate computes in fp16 everywhere (its compute precision is one switch, unlike ct.convert's op
selector), and SmolLM2's residual stream reaches 2.3e4: an RMSNorm's mean square overflows fp16 and
zeroes the layer (measured on SmolLM2-135M: top-1 agreement with the eager model 7%, KL 7.6 nats). So RMS
norms are rewritten to normalise by the row's largest magnitude first, which is exact in real arithmetic and
stays in range (then: top-1 100%, KL 6e-5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import StaticCache
from transformers.masking_utils import AttentionMaskInterface
from transformers.modeling_utils import AttentionInterface

ATTENTION_NAME = "slmpack_static_attention"


def _no_mask(*args: Any, **kwargs: Any) -> None:
    # The mask is the cache's own: built from cache_position in StaticKVCache.place.
    return None


def _static_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of the new queries [B, H, S, D] over the whole cache [B, H_kv, L, D]; slots after a
    query's position are masked, so stale or empty slots never count."""
    cache: StaticKVCache = kwargs["slmpack_cache"]
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    key = key[:, :, None].expand(batch, kv_heads, groups, length, dim).reshape(batch, heads, length, dim)
    value = value[:, :, None].expand(batch, kv_heads, groups, length, dim).reshape(batch, heads, length, dim)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (dim**-0.5 if scaling is None else scaling)
    # fp16's most negative finite value: hidden slots get exactly zero weight, and no -inf reaches the device.
    scores = torch.where(cache.visible, scores, torch.finfo(torch.float16).min)
    output = torch.matmul(torch.softmax(scores, dim=-1), value)
    return output.transpose(1, 2), None


def register_static_attention() -> None:
    AttentionInterface.register(ATTENTION_NAME, _static_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _no_mask)


class Fp16SafeRMSNorm(nn.Module):
    """`weight * x / sqrt(mean(x^2) + eps)`, computed on `x / max|x|` so no square exceeds 1 (fp16-safe).
    Shares the weight of the norm it replaces."""

    def __init__(self, weight: nn.Parameter, eps: float) -> None:
        super().__init__()
        self.weight = weight
        # A tensor, so `eps / scale^2` is a division: a Python number over a tensor becomes a reciprocal,
        # which Core ML computes as 1 / (x + 1e-4).
        self.register_buffer("eps", torch.tensor(eps), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        scale = hidden.abs().amax(-1, keepdim=True).clamp(min=1e-6)
        scaled = hidden / scale
        variance = scaled.pow(2).mean(-1, keepdim=True)  # >= 1/hidden_size: the largest entry is 1
        return self.weight * (scaled * torch.rsqrt(variance + self.eps / scale.pow(2)))


def _is_plain_rms_norm(module: nn.Module) -> bool:
    """A norm computing `weight * x / sqrt(mean(x^2) + eps)` (Llama, Mistral, Qwen, Phi, ...), probed on a
    sample; others (Gemma's `1 + weight`) are left as they are."""
    weight, eps = getattr(module, "weight", None), getattr(module, "variance_epsilon", None)
    if not type(module).__name__.endswith("RMSNorm") or not isinstance(weight, torch.Tensor) or weight.ndim != 1:
        return False
    if not isinstance(eps, float):
        return False
    sample = torch.randn(2, weight.shape[0], generator=torch.Generator().manual_seed(0)) * 100
    with torch.no_grad():
        expected = weight * sample * torch.rsqrt(sample.pow(2).mean(-1, keepdim=True) + eps)
        return torch.allclose(module(sample), expected, rtol=1e-4, atol=1e-4)


def make_rms_norms_fp16_safe(model: nn.Module) -> int:
    """Replace every plain RMS norm of `model` by an Fp16SafeRMSNorm; returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_plain_rms_norm(child):
                setattr(parent, name, Fp16SafeRMSNorm(child.weight, float(child.variance_epsilon)))  # type: ignore[arg-type]
                replaced += 1
    return replaced


class StaticKVCache(StaticCache):
    """Per layer a key and a value buffer [1, H_kv, max_context, D], written at `cache_position`."""

    def __init__(self, config: Any, max_cache_len: int) -> None:
        super().__init__(config=config, max_cache_len=max_cache_len)
        text = config.get_text_config(decoder=True)
        n_kv = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        shape = (1, n_kv, max_cache_len, head_dim)
        self.key_buffers = [torch.zeros(shape) for _ in range(text.num_hidden_layers)]
        self.value_buffers = [torch.zeros(shape) for _ in range(text.num_hidden_layers)]
        self.slots = max_cache_len
        self.onehot = self.keep = self.visible = torch.zeros(0)

    def place(self, cache_position: torch.Tensor) -> None:
        """Where this step's tokens go (one-hot [S, L]) and what each of them may see ([1, 1, S, L])."""
        slots = torch.arange(self.slots, dtype=cache_position.dtype)
        self.onehot = (cache_position[:, None] == slots[None, :]).to(torch.float32)
        self.keep = (1.0 - self.onehot.sum(0))[None, None, :, None]
        self.visible = (slots[None, :] <= cache_position[:, None])[None, None]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        updated = []
        pairs = ((self.key_buffers[layer_idx], key_states), (self.value_buffers[layer_idx], value_states))
        for buffer, states in pairs:
            written = torch.matmul(self.onehot.transpose(0, 1), states.to(buffer.dtype))  # [B, H, L, D]
            buffer.copy_(buffer * self.keep + written)
            updated.append(buffer)
        return updated[0], updated[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        # Only asked for when cache_position is missing; the wrapper always passes it.
        return 0

    def reset(self) -> None:
        for buffer in (*self.key_buffers, *self.value_buffers):
            buffer.zero_()


class StaticCacheDecoder(nn.Module):
    """`forward(input_ids [1, S], cache_position [S]) -> logits [1, S, vocab]` in standard ops only.

    Wrapping a model switches its attention to this module's and makes its RMS norms fp16-safe: wrap each
    model in one decoder wrapper."""

    def __init__(self, model: PreTrainedModel, max_context: int) -> None:
        super().__init__()
        register_static_attention()
        make_rms_norms_fp16_safe(model)
        for sub in model.modules():
            sub_config = getattr(sub, "config", None)
            if sub_config is not None and hasattr(sub_config, "_attn_implementation"):
                sub_config._attn_implementation = ATTENTION_NAME
        self.model = model
        self.max_context = max_context
        self.cache = StaticKVCache(model.config, max_context)
        # Registered as buffers so torch.export treats the cache as mutable state, not constants.
        for i, (k, v) in enumerate(zip(self.cache.key_buffers, self.cache.value_buffers, strict=True)):
            self.register_buffer(f"k_cache_{i}", k, persistent=False)
            self.register_buffer(f"v_cache_{i}", v, persistent=False)

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        self.cache.place(cache_position)
        out = self.model(
            input_ids=input_ids,
            position_ids=cache_position.unsqueeze(0),
            cache=self.cache,
            use_cache=True,
            slmpack_cache=self.cache,
        )
        return out.logits

    def reset_cache(self) -> None:
        self.cache.reset()
