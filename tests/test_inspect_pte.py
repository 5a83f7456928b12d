"""describe_pte / render_pte_info on a tiny .pte exported inside the test."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from builder.errors import UserInputError
from builder.inspect_pte import MethodInfo, PteInfo, describe_pte, render_pte_info

VOCAB, DIM, SEQ = 32, 16, 5


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.proj = nn.Linear(DIM, 8)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.proj(self.embed(tokens)))


@pytest.fixture(scope="module")
def tiny_pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis, quantize_

    from builder.quiet import quiet
    from builder.tasks.executorch_ops import load_executorch_llm_ops

    torch.manual_seed(0)
    module = _Tiny().eval()
    with quiet():
        load_executorch_llm_ops()  # registers quantized_decomposed::embedding_byte for export
        quantize_(
            module,
            IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
            filter_fn=lambda m, fqn: isinstance(m, nn.Embedding),
        )
        with torch.no_grad():
            ep = torch.export.export(module, (torch.zeros(1, SEQ, dtype=torch.long),))
        program = to_edge_transform_and_lower(
            ep,
            partitioner=[XnnpackPartitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
            constant_methods={"get_max_seq_len": 16, "get_eos_ids": [2, 3], "get_bos_id": 1, "use_kv_cache": False},
        ).to_executorch(
            # Fuses torchao's dequantize + embedding into ExecuTorch's quantized embedding kernel.
            ExecutorchBackendConfig(do_quant_fusion_and_const_prop=True)
        )
    path = tmp_path_factory.mktemp("pte") / "tiny.pte"
    path.write_bytes(program.buffer)
    return path


@pytest.fixture(scope="module")
def info(tiny_pte: Path) -> PteInfo:
    return describe_pte(tiny_pte)


def _method(info: PteInfo, name: str) -> MethodInfo:
    return next(m for m in info.methods if m.name == name)


def test_methods_and_size(info: PteInfo, tiny_pte: Path) -> None:
    names = {m.name for m in info.methods}
    assert {"forward", "get_max_seq_len", "get_eos_ids", "get_bos_id", "use_kv_cache"} <= names
    assert info.bytes == tiny_pte.stat().st_size
    assert info.path == tiny_pte


def test_metadata_values_keep_their_shape(info: PteInfo) -> None:
    values = {m.name: m.value for m in info.methods if not m.inputs}
    assert values["get_max_seq_len"] == 16
    assert values["get_eos_ids"] == [2, 3]
    assert values["get_bos_id"] == 1
    assert values["use_kv_cache"] is False
    assert all(not m.outputs for m in info.methods if not m.inputs)


def test_forward_signature(info: PteInfo) -> None:
    forward = _method(info, "forward")
    assert forward.value is None
    assert [(t.name, t.dtype, t.shape) for t in forward.inputs] == [("input_0", "int64", [1, SEQ])]
    assert [(t.dtype, t.shape) for t in forward.outputs] == [("float32", [1, SEQ, 8])]


def test_delegated_and_other_ops(info: PteInfo) -> None:
    forward = _method(info, "forward")
    assert forward.delegated_calls.get("XnnpackBackend", 0) >= 1
    assert "quantized_decomposed::embedding_byte.out" in forward.operators
    assert all(calls >= 1 for calls in forward.operators.values())
    assert not any(m.delegated_calls or m.operators for m in info.methods if not m.inputs)


def test_to_dict_is_json(info: PteInfo) -> None:
    data = json.loads(json.dumps(info.to_dict()))
    assert data["bytes"] == info.bytes
    forward = next(m for m in data["methods"] if m["name"] == "forward")
    assert forward["inputs"][0] == {"name": "input_0", "dtype": "int64", "shape": [1, SEQ]}
    assert next(m for m in data["methods"] if m["name"] == "get_eos_ids")["value"] == [2, 3]


def test_render(info: PteInfo) -> None:
    out = io.StringIO()
    render_pte_info(info, Console(file=out, width=140, color_system=None))
    text = out.getvalue()
    for expected in ("forward: inputs and outputs", "XnnpackBackend", "embedding_byte", "get_eos_ids", "[2, 3]"):
        assert expected in text


@pytest.mark.parametrize("content", [b"", b"not a program at all" * 50, bytes(range(256)) * 8])
def test_garbage_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "broken.pte"
    bad.write_bytes(content)
    with pytest.raises(UserInputError, match=r"broken\.pte"):
        describe_pte(bad)


def test_truncated_program_is_a_user_error(tmp_path: Path, tiny_pte: Path) -> None:
    bad = tmp_path / "cut.pte"
    bad.write_bytes(tiny_pte.read_bytes()[:400])
    with pytest.raises(UserInputError, match=r"cut\.pte"):
        describe_pte(bad)


def test_program_cut_inside_its_weights_is_a_user_error(tmp_path: Path, tiny_pte: Path) -> None:
    # The flatbuffer table is whole; the data segments after it (weights, delegate blobs) are not.
    bad = tmp_path / "cut.pte"
    bad.write_bytes(tiny_pte.read_bytes()[:-64])
    with pytest.raises(UserInputError, match=r"cut\.pte .*data segments end at byte"):
        describe_pte(bad)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"nothere\.pte"):
        describe_pte(tmp_path / "nothere.pte")


def test_keyword_inputs_keep_their_names(tmp_path: Path) -> None:
    from executorch.exir import to_edge_transform_and_lower

    class _Masked(nn.Module):
        def forward(self, x: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
            return x * mask

    ep = torch.export.export(_Masked(), (torch.ones(3),), {"mask": torch.ones(3)})
    path = tmp_path / "kw.pte"
    path.write_bytes(to_edge_transform_and_lower(ep).to_executorch().buffer)
    forward = _method(describe_pte(path), "forward")
    assert [(t.name, t.shape) for t in forward.inputs] == [("input_0", [3]), ("mask", [3])]
    assert forward.operators.get("aten::mul.out") == 1
