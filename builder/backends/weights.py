"""Give an eager model the weights an artifact really stores, for backends that compress while lowering.

Core ML and LiteRT quantize inside their own converters, so the lowering gate's eager reference must carry
the artifact's (decompressed) weights; otherwise it would measure compression, not lowering.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

# A stored tensor is this weight's compressed copy when it is this close (mean absolute difference relative
# to the weight's mean magnitude); another tensor of the same shape is much further away.
SAME_TENSOR_TOLERANCE = 0.25


def adopt_artifact_weights(params: Iterable[torch.nn.Parameter], stored: Iterable[np.ndarray]) -> int:
    """Replace each parameter by the stored tensor of the same shape nearest to it.
    Returns how many parameters were replaced."""
    by_shape: dict[tuple[int, ...], list[np.ndarray]] = {}
    for value in stored:
        if value.dtype.kind == "f" and value.ndim >= 1:
            by_shape.setdefault(tuple(value.shape), []).append(value)
    replaced = 0
    with torch.no_grad():
        for param in params:
            candidates = by_shape.get(tuple(param.shape), [])
            if not candidates:
                continue
            own = param.detach().numpy()
            distances = [float(np.abs(c.astype(np.float32) - own).mean()) for c in candidates]
            best = int(np.argmin(distances))
            scale = float(np.abs(own).mean()) or 1.0
            if distances[best] <= SAME_TENSOR_TOLERANCE * scale:
                param.copy_(torch.from_numpy(candidates[best].astype(np.float32)))
                replaced += 1
    return replaced
