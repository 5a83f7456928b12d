"""Float models held on disk instead of in memory while a backend lowers a copy of them.

Lowering an ExecuTorch program peaks far above the quantized model it lowers (ExecuTorch copies the program
and its constants on the way), while the float model it came from waits, unused, for validation: 513 MB of
SmolLM2-135M's 2.5 GB peak. Spilling it to a temporary safetensors file for that time and reading it back
after costs a second of disk I/O. The file goes to slmpack's cache folder, not the system's temp folder,
which is RAM (tmpfs) on many Linux systems."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from builder.paths import cache_dir


def _tensors(modules: Iterable[nn.Module]) -> dict[int, torch.Tensor]:
    """Every parameter and buffer, once each: a tied weight is one tensor object in two modules."""
    return {id(t): t for module in modules for t in (*module.parameters(), *module.buffers())}


@contextmanager
def spilled(modules: Iterable[nn.Module], keep: nn.Module) -> Iterator[None]:
    """Within the block, `modules` hold no tensor data, except what `keep` (the model being lowered) shares
    with them: each other parameter and buffer is written to a temporary file and its data replaced by an
    empty tensor (a module used meanwhile fails on shapes rather than computing with stale values). The same
    tensor objects get their data back afterwards, so ties, references and hooks are kept, and the values are
    bit-exact. The data is freed only where nothing else (another
    model, a copy's shared weight) still refers to it."""
    kept = _tensors([keep])
    tensors = {key: t for key, t in _tensors(modules).items() if key not in kept}
    with tempfile.TemporaryDirectory(prefix="spill-", dir=cache_dir()) as scratch:
        path = Path(scratch) / "spilled.safetensors"
        save_file({str(key): t.detach().contiguous() for key, t in tensors.items()}, str(path))
        for tensor in tensors.values():
            tensor.data = torch.empty(0, dtype=tensor.dtype)
        try:
            yield
        finally:
            restored = load_file(str(path))
            for key, tensor in tensors.items():
                tensor.data = restored[str(key)]
