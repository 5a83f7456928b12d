"""LiteRT quantization: the neutral schemes (DESIGN §4) as ai-edge-quantizer recipes, and the weights a
quantized .tflite really stores, read back so the lowering gate's eager reference can carry them.

One recipe serves both exports: litert-torch's Hugging Face export takes it as a JSON file, and the
encoder's .tflite is quantized with the same Quantizer afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from builder.inspect_litert import named_operators

# LiteRT's XNNPACK delegate (ai-edge-litert 2.3.0 and LiteRT-LM 0.18.1) refuses int4 weights quantized in
# blocks ("unsupported scale value (0.000000) in channel 0 for INT4 tensor"), so a8w4 stores int4 weights
# per output channel, the int4 layout its kernels run. Recorded in each artifact as `weight_granularity`.
A8W4_GRANULARITY = "CHANNELWISE"
# The output projection, found by the op's output tensor (litert-torch names the decode signature's logits
# `decode_logits_output`). One int4 scale per vocabulary row costs SmolLM2 a 20x larger weight error than
# int8, so a8w4 keeps it at 8 bits, as it does the embedding table it is usually tied to.
OUTPUT_PROJECTION = ".*logits.*"
# The ops whose weights the lowering reference takes by role: linear layers and embedding tables.
READERS = ("FULLY_CONNECTED", "EMBEDDING_LOOKUP")


def _recipe_manager() -> Any:
    from ai_edge_quantizer import recipe_manager

    return recipe_manager.RecipeManager()


def quantization_recipe(scheme: str, quantize_embeddings: bool) -> list[dict[str, Any]] | None:
    """The ai-edge-quantizer recipe for a scheme; None for fp32. Embedding tables are quantized to 8 bits
    when asked (a8w4 too, as the ExecuTorch targets do), and stay float otherwise."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    granularity = qtyping.QuantGranularity
    manager = _recipe_manager()
    if scheme == "fp32":
        return None
    if scheme == "fp16":
        manager.add_weight_only_config(
            regex=".*", operation_name=ops.ALL_SUPPORTED, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING
        )
        return manager.get_quantization_recipe()
    if scheme == "w8":
        manager.add_weight_only_config(regex=".*", operation_name=ops.FULLY_CONNECTED, num_bits=8)
        if quantize_embeddings:
            manager.add_weight_only_config(regex=".*", operation_name=ops.EMBEDDING_LOOKUP, num_bits=8)
        return manager.get_quantization_recipe()
    if scheme in ("a8w8", "a8w4"):
        bits = 8 if scheme == "a8w8" else 4
        manager.add_dynamic_config(
            regex=".*",
            operation_name=ops.FULLY_CONNECTED,
            num_bits=bits,
            granularity=granularity[A8W4_GRANULARITY] if bits == 4 else granularity.CHANNELWISE,
        )
        if bits == 4:  # the later, narrower scope wins
            manager.add_dynamic_config(regex=OUTPUT_PROJECTION, operation_name=ops.FULLY_CONNECTED, num_bits=8)
        if quantize_embeddings:
            manager.add_dynamic_config(regex=".*", operation_name=ops.EMBEDDING_LOOKUP, num_bits=8)
        return manager.get_quantization_recipe()
    raise ValueError(f"scheme {scheme!r} has no LiteRT mapping")  # the target's scheme list is checked first


def write_recipe(scheme: str, quantize_embeddings: bool, folder: Path) -> Path | None:
    recipe = quantization_recipe(scheme, quantize_embeddings)
    if recipe is None:
        return None
    path = folder / f"quantization-{scheme}.json"
    path.write_text(json.dumps(recipe, indent=2), encoding="utf-8")
    return path


def quantize_tflite(source: Path, dest: Path, recipe: list[dict[str, Any]]) -> None:
    from ai_edge_quantizer import quantizer

    engine = quantizer.Quantizer(str(source))
    engine.load_quantization_recipe(recipe)
    engine.quantize().export_model(str(dest), overwrite=True)


def stored_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """Every 2-D constant of a .tflite as float32, dequantized the way the runtime reads it (int8 and int4,
    held in int8, per channel or per block; fp16 cast up), grouped by the op that reads it:
    "FULLY_CONNECTED", "EMBEDDING_LOOKUP" or "other". Subgraphs share buffers, so duplicates within a group are
    dropped; a tied table read by both ops is in both groups."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.interpreter import Interpreter

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    interpreter = Interpreter(model_path=str(path))
    seen: set[tuple[Any, ...]] = set()
    weights: dict[str, list[np.ndarray]] = {reader: [] for reader in (*READERS, "other")}
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        roles: dict[int, set[str]] = {}
        for op, name in named_operators(model, subgraph):
            if name in READERS:
                for i in range(op.InputsLength()):
                    roles.setdefault(op.Inputs(i), set()).add(name)
        for index in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(index)
            if tensor.ShapeLength() != 2 or min(tensor.Shape(0), tensor.Shape(1)) < 2:
                continue
            try:
                details = interpreter._get_tensor_details(index, s)
                value = interpreter.get_tensor(index, s)
            except ValueError:  # an activation, not a constant
                continue
            weight = _dequantize(value, details["quantization_parameters"])
            if weight is None:
                continue
            for reader in roles.get(index, {"other"}):
                key = (reader, weight.shape, weight.tobytes()[:256], weight.tobytes()[-256:])
                if key not in seen:
                    seen.add(key)
                    weights[reader].append(weight)
    return weights


def _dequantize(value: np.ndarray, params: dict[str, Any]) -> np.ndarray | None:
    scales = params["scales"]
    if value.dtype == np.float16:
        return value.astype(np.float32)
    if value.dtype == np.float32:
        return value
    if value.dtype != np.int8 or scales.size == 0:
        return None
    rows = value.shape[0]
    block = int(params.get("block_size") or 0)
    if block and scales.size == value.size // block:
        blocks = value.reshape(rows, -1, block).astype(np.float32) * scales.reshape(rows, -1, 1)
        return blocks.reshape(value.shape)
    if scales.size == rows:
        return value.astype(np.float32) * scales.reshape(rows, 1)
    return value.astype(np.float32) * float(scales[0])
