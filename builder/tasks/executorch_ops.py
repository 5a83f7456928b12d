"""Registration of ExecuTorch's LLM and quantized kernels with torch (export) and the runtime (load)."""

from __future__ import annotations

import functools


@functools.cache
def load_executorch_llm_ops() -> None:
    # A .pte that uses custom SDPA/KV or quantized embedding ops only loads after both imports (§11).
    import executorch.extension.llm.custom_ops.custom_ops
    import executorch.kernels.quantized  # noqa: F401
