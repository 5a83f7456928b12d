"""TFLite metadata for encoder .tflite files, written with tflite-support so Android Studio's model binding
and the TFLite tooling can read the model's description, its tensors and its vocabulary.

Two facts shape this module (DESIGN §9, §11):
- tflite-support's writer drops buffers that LiteRT stores after the flatbuffer (`Buffer.offset`), leaving a
  model that cannot run. Those buffers are copied back inside the flatbuffer first.
- tflite-support 0.4.4 is built against protobuf 3; with protobuf 7 installed it works only through the
  pure-Python protobuf implementation, which must be chosen before protobuf is first imported. So the
  writer runs in its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder.errors import SlmpackError

TFLITE_FILE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    description: str
    vocabulary: str | None = None  # an associated vocabulary file (path) for this tensor


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    description: str
    version: str
    author: str
    license: str
    inputs: list[TensorInfo]  # in the order of the model's input tensors
    outputs: list[TensorInfo]
    files: list[str] = field(default_factory=list)


def inline_buffers(data: bytes) -> bytes:
    """The same model with every buffer stored inside the flatbuffer."""
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    moved = 0
    for buffer in model.buffers or []:
        if buffer.offset and buffer.offset > 1:  # offset 1 marks an empty buffer, not an external one
            buffer.data = np.frombuffer(data, np.uint8, count=buffer.size, offset=buffer.offset)
            buffer.offset = 0
            buffer.size = 0
            moved += 1
    if not moved:
        return data
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_IDENTIFIER)
    return bytes(builder.Output())


def input_order(path: Path) -> list[str]:
    """Names of subgraph 0's inputs, in tensor order: TFLite metadata describes that subgraph, and its tensor
    metadata must follow that order."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    subgraph = model.Subgraphs(0)
    signature = next(model.SignatureDefs(i) for i in range(model.SignatureDefsLength())
                     if model.SignatureDefs(i).SubgraphIndex() == 0)  # fmt: skip
    by_index = {signature.Inputs(i).TensorIndex(): signature.Inputs(i).Name().decode() for i in
                range(signature.InputsLength())}  # fmt: skip
    return [by_index[subgraph.Inputs(i)] for i in range(subgraph.InputsLength())]


def write_metadata(source: Path, dest: Path, metadata: ModelMetadata) -> None:
    inlined = dest.with_suffix(".inlined.tflite")
    inlined.write_bytes(inline_buffers(source.read_bytes()))
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    payload = json.dumps({"source": str(inlined), "dest": str(dest), "metadata": asdict(metadata)})
    cmd = [sys.executable, "-m", "builder.backends.litert_metadata", payload]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    inlined.unlink()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        fix = (". Fix: install libusb 1.0 (Debian: apt-get install libusb-1.0-0), as scripts/install.sh does"
               if "libusb" in proc.stderr else "")  # fmt: skip
        raise SlmpackError(f"writing TFLite metadata into {dest.name} failed: {' | '.join(tail)}{fix}")


def _tensor(info: TensorInfo) -> object:
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema

    tensor = schema.TensorMetadataT()
    tensor.name = info.name
    tensor.description = info.description
    if info.vocabulary:
        vocabulary = schema.AssociatedFileT()
        vocabulary.name = Path(info.vocabulary).name
        vocabulary.description = "Token vocabulary, one token per line; a token's id is its line number."
        vocabulary.type = schema.AssociatedFileType.VOCABULARY
        tensor.associatedFiles = [vocabulary]
    return tensor


def _populate(source: Path, dest: Path, metadata: ModelMetadata) -> None:
    import flatbuffers
    from tensorflow_lite_support.metadata import metadata_schema_py_generated as schema
    from tensorflow_lite_support.metadata.python import metadata as tflite_metadata

    model = schema.ModelMetadataT()
    model.name = metadata.name
    model.description = metadata.description
    model.version = metadata.version
    model.author = metadata.author
    model.license = metadata.license
    subgraph = schema.SubGraphMetadataT()
    subgraph.inputTensorMetadata = [_tensor(info) for info in metadata.inputs]
    subgraph.outputTensorMetadata = [_tensor(info) for info in metadata.outputs]
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), tflite_metadata.MetadataPopulator.METADATA_FILE_IDENTIFIER)
    populator = tflite_metadata.MetadataPopulator.with_model_buffer(source.read_bytes())
    populator.load_metadata_buffer(builder.Output())
    if metadata.files:
        populator.load_associated_files(metadata.files)
    populator.populate()
    dest.write_bytes(populator.get_model_buffer())


def read_metadata(path: Path) -> dict[str, object]:
    """The metadata as tflite-support's displayer reads it back (JSON), in a subprocess like the writer."""
    env = {**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    cmd = [sys.executable, "-m", "builder.backends.litert_metadata", json.dumps({"read": str(path)})]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SlmpackError(f"reading TFLite metadata of {path.name} failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _display(path: Path) -> dict[str, object]:
    from tensorflow_lite_support.metadata.python import metadata as tflite_metadata

    displayer = tflite_metadata.MetadataDisplayer.with_model_file(str(path))
    return {
        "metadata": json.loads(displayer.get_metadata_json()),
        "associated_files": sorted(displayer.get_packed_associated_file_list()),
    }


if __name__ == "__main__":
    request = json.loads(sys.argv[1])
    if "read" in request:
        print(json.dumps(_display(Path(request["read"]))))
    else:
        raw = request["metadata"]
        raw["inputs"] = [TensorInfo(**t) for t in raw["inputs"]]
        raw["outputs"] = [TensorInfo(**t) for t in raw["outputs"]]
        _populate(Path(request["source"]), Path(request["dest"]), ModelMetadata(**raw))
