"""Runners over ExecuTorch models: the eager reference (custom ops run in PyTorch) and the .pte in
ExecuTorch's host runtime. Kept apart from lowering so that editing them never invalidates cached
artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from builder.quiet import quiet
from builder.tasks.causal_lm import ExportableDecoder
from builder.tasks.embeddings import ExportableEncoder
from builder.tasks.executorch_ops import load_executorch_llm_ops


class EagerDecoderRunner:
    def __init__(self, wrapper: ExportableDecoder) -> None:
        self.wrapper = wrapper

    def reset(self) -> None:
        self.wrapper.reset_cache()

    @torch.no_grad()
    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        positions = torch.arange(start_pos, start_pos + input_ids.shape[1], dtype=torch.long)
        with quiet():
            return self.wrapper(input_ids, positions)[0].clone()


class EagerEncoderRunner:
    def __init__(self, wrapper: ExportableEncoder) -> None:
        self.wrapper = wrapper

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.wrapper(input_ids, attention_mask)[0].clone()


def _load_forward(path: Path) -> Any:
    from executorch.runtime import Runtime

    load_executorch_llm_ops()
    with quiet():  # XNNPACK's cpuinfo probing writes straight to stderr
        return Runtime.get().load_program(str(path)).load_method("forward")


class PteDecoderRunner:
    """The .pte in ExecuTorch's runtime. The KV cache is positional: a new sequence from 0 overwrites it."""

    def __init__(self, path: Path) -> None:
        self.method = _load_forward(path)

    def reset(self) -> None:
        pass

    def logits(self, input_ids: torch.Tensor, start_pos: int) -> torch.Tensor:
        positions = torch.arange(start_pos, start_pos + input_ids.shape[1], dtype=torch.long)
        with quiet():
            return self.method.execute([input_ids, positions])[0][0].clone()


class PteEncoderRunner:
    def __init__(self, path: Path) -> None:
        self.method = _load_forward(path)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.method.execute([input_ids, attention_mask])[0][0].clone()
