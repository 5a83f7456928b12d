"""Embeddings: an encoder wrapped to return one pooled (and optionally normalized) vector per text."""

from __future__ import annotations

import inspect

import torch
from torch import nn
from transformers import PreTrainedModel

from builder.errors import UserInputError
from builder.models.base import ModelSpec


class ExportableEncoder(nn.Module):
    """`forward(input_ids [1, S], attention_mask [1, S]) -> embedding [1, dim]`."""

    def __init__(self, model: PreTrainedModel, spec: ModelSpec, max_context: int) -> None:
        super().__init__()
        # The sdpa/flash paths build masks with ops export cannot trace; eager attention is plain matmuls.
        model.config._attn_implementation = "eager"
        self.model = model
        self.pooling = spec.pooling or "mean"
        self.normalize = spec.normalize
        self.max_context = min(max_context, spec.max_position_embeddings)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state
        return self._pool(hidden, attention_mask)

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled


class CoreMLEncoder(ExportableEncoder):
    """The same embedding, spelled for coremltools' TorchScript frontend: transformers' mask helpers use
    ops it cannot convert, so the additive mask is built here and the BERT layers are called directly
    (BERT and MiniLM keep them in `encoder.layer`, DistilBERT in `transformer.layer`)."""

    def __init__(self, model: PreTrainedModel, spec: ModelSpec, max_context: int) -> None:
        super().__init__(model, spec, max_context)
        stack = getattr(model, "encoder", None) or getattr(model, "transformer", None)
        if not (hasattr(model, "embeddings") and hasattr(stack, "layer")):
            raise UserInputError(
                f"{spec.architecture} is not a BERT-style encoder (embeddings + a stack of layers), which is "
                "what the Core ML path converts today. Fix: use a BERT-family model or an ExecuTorch target"
            )
        self.layers = stack.layer
        self.token_types = "token_type_ids" in inspect.signature(model.embeddings.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.token_types:
            hidden = self.model.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        else:
            hidden = self.model.embeddings(input_ids=input_ids)
        additive_mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * -1e4
        for layer in self.layers:
            out = layer(hidden, attention_mask=additive_mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return self._pool(hidden, attention_mask)


def export_encoder(wrapper: ExportableEncoder) -> torch.export.ExportedProgram:
    seq = torch.export.Dim("seq_len", min=2, max=wrapper.max_context)
    example_ids = torch.ones((1, 8), dtype=torch.long)
    example_mask = torch.ones((1, 8), dtype=torch.long)
    with torch.no_grad():
        return torch.export.export(
            wrapper, (example_ids, example_mask), dynamic_shapes=({1: seq}, {1: seq}), strict=True
        )
