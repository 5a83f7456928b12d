"""What every model source produces: a torch module, its tokenizer and a ModelSpec."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from torch import nn
from transformers import PreTrainedTokenizerBase

Task = Literal["text-generation", "embeddings"]


@dataclass(frozen=True)
class ModelSpec:
    architecture: str  # e.g. "LlamaForCausalLM", "BertModel"
    model_type: str  # config.model_type: "llama", "bert", ...
    task: Task
    vocab_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    hidden_size: int
    max_position_embeddings: int
    bos_id: int | None
    eos_ids: tuple[int, ...]
    pad_id: int | None
    chat_template: str | None = None
    stop_strings: tuple[str, ...] = ()
    # Embedding models: how token states become one vector (sentence-transformers pooling config).
    pooling: Literal["mean", "cls"] | None = None
    normalize: bool = False
    head_dim: int | None = None  # None: hidden_size // num_heads

    @property
    def attention_head_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_heads


@dataclass
class Model:
    source: str  # as the recipe wrote it, e.g. "builtin:tiny-llama"
    module: nn.Module  # transformers PreTrainedModel, fp32, eval mode
    tokenizer: PreTrainedTokenizerBase  # a fast tokenizer
    tokenizer_dir: Path  # folder holding tokenizer.json (+ tokenizer_config.json, vocab.txt, ...)
    spec: ModelSpec
    source_quantization: str | None = None  # e.g. "GGUF Q4_1" when the weights came pre-quantized
    license: str | None = None  # SPDX id or licence name
    license_text: str | None = None  # full text to ship in LICENSES/, when the source carries one
    attribution: str | None = None  # who made the model, where it came from
    weights_digest: str = ""  # content hash of the source weights, keys the stage cache
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    @property
    def tokenizer_files(self) -> list[Path]:
        return sorted(p for p in self.tokenizer_dir.iterdir() if p.is_file())
