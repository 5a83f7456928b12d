"""The backend table: one module per backend, looked up by the target's `backend` field."""

from __future__ import annotations

from builder.backends.base import Backend
from builder.errors import UserInputError


def get_backend(name: str) -> Backend:
    # Imported lazily: each backend pulls in a heavy toolchain.
    if name == "executorch":
        from builder.backends.executorch import ExecuTorchBackend

        return ExecuTorchBackend()
    if name == "coreml":
        from builder.backends.coreml import CoreMLBackend

        return CoreMLBackend()
    if name == "litert":
        from builder.backends.litert import LiteRTBackend

        return LiteRTBackend()
    raise UserInputError(f"backend {name!r} is not available in this version of slmpack")
