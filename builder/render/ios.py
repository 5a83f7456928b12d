"""Render the iOS Swift packages of a bundle from its manifest: one package per iOS target (DESIGN §6, §11).

Each package is `ios/<Module>-<target>/`: Package.swift, the model and tokenizer as resources, the typed
class, a pure-Swift tokenizer, XCTest tests against host golden data, a SwiftUI sample and the simulator
and device-farm scripts. As for Android, everything comes from manifest.json and the files it points at.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from builder.errors import UserInputError
from builder.paths import templates_dir
from builder.render import check_generation_limits, render_tree
from builder.render.files import place_model, place_tokenizer, runtime_config
from builder.render.tokenizer_settings import bpe_settings

PACKAGE_TEMPLATE = "__module__"
SWIFT_TOOLS_VERSION = "5.10"
# ExecuTorch's Swift package: binary xcframeworks published on a branch per release (DESIGN §9).
EXECUTORCH_PACKAGE_URL = "https://github.com/pytorch/executorch"
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Names the generated Swift defines or imports: a module or class of the same name would not compile.
RESERVED_NAMES = frozenset(
    {
        "ModelConfig", "ModelResources", "ChatTemplate", "ChatMessage", "Role", "StopStringFilter",
        "GenerationOptions", "GenerationError", "Sampler", "SeededGenerator", "Float16Bits", "BPETokenizer",
        "WordPieceTokenizer", "CoreMLDecoderSession", "CoreMLEncoderSession", "BenchmarkReport", "GoldenData",
        "ContentView", "SampleApp", "Foundation", "CoreML", "XCTest", "SwiftUI", "Swift", "ExecuTorch",
        "ExecuTorchLLM", "String", "Int", "Float", "Double", "Bool", "Array", "Dictionary", "Error", "URL",
        "Data", "Bundle", "Task", "AsyncThrowingStream", "MLModel", "MLState", "MLMultiArray", "Module",
        "Tensor", "Value", "TextRunner", "Config",
    }
)  # fmt: skip
# A Swift package's platforms, by the iOS version the artifact needs; macOS lets `swift test` run the model.
_MACOS_FOR_IOS = {"17": "14.0", "18": "15.0"}


def _check_manifest(data: dict[str, Any]) -> None:
    """The manifest may come from anywhere: what would break the generated Swift is re-checked here."""
    package = data["package"]
    for key in ("ios_module", "class_name"):
        value = package[key]
        if not _TYPE_NAME.match(value) or value in RESERVED_NAMES:
            raise UserInputError(
                f"manifest package.{key} {value!r} cannot be a Swift type name here (it must be a capitalised "
                "identifier and not one the generated code uses). Fix: set package.{key} in the recipe"
            )
    check_generation_limits(data)


def package_name(data: dict[str, Any], artifact: dict[str, Any]) -> str:
    return f"{data['package']['ios_module']}-{artifact['target']}"


def _min_ios(artifact: dict[str, Any]) -> str:
    major = artifact["min_os"].split(".")[0]
    if major not in _MACOS_FOR_IOS:
        raise UserInputError(
            f"manifest artifact {artifact['target']!r} needs iOS {artifact['min_os']}, which this package "
            f"generator does not know (it knows iOS {', '.join(sorted(_MACOS_FOR_IOS))}). Fix: rebuild the bundle"
        )
    return major


def _encoder_shape(artifact: dict[str, Any]) -> tuple[int, int]:
    """Longest input and embedding width, from the signature of either backend."""
    signature = artifact["signature"]
    metadata = signature["metadata"]
    max_length = metadata.get("get_max_seq_len") or metadata["max_length"]
    output = signature["methods"][0]["outputs"][0]
    return int(max_length), int(metadata.get("get_embedding_dim") or output["shape"][-1])


# What the Swift Core ML code feeds (name -> the dtype it writes), reads and keeps as state.
COREML_INTERFACE = {
    "decoder": ({"input_ids": "int32", "causal_mask": "float16"}, "logits", ["keyCache", "valueCache"]),
    "encoder": ({"input_ids": "int32", "attention_mask": "int32"}, "embedding", []),
}


def _check_coreml_interface(artifact: dict[str, Any], kind: str) -> None:
    """The program's inputs, output and states must be the ones the Swift code uses, with the dtypes it
    writes; a mismatch would only show on a device, so it is refused here."""
    inputs, output, states = COREML_INTERFACE[kind]
    (method,) = artifact["signature"]["methods"]
    found_inputs = {i["name"]: i["dtype"] for i in method["inputs"]}
    problems = []
    if found_inputs != inputs:
        problems.append(f"inputs {found_inputs}, where the Swift code writes {inputs}")
    if output not in {o["name"] for o in method["outputs"]}:
        problems.append(f"no output {output!r}")
    if sorted(method.get("states", [])) != states:
        problems.append(f"states {sorted(method.get('states', []))}, where the Swift code keeps {states}")
    if problems:
        raise UserInputError(
            f"manifest artifact {artifact['target']!r}: the Core ML program does not have the interface the "
            f"generated Swift calls: {'; '.join(problems)}. Fix: rebuild the bundle with this version of slmpack"
        )


def _executorch_products(artifact: dict[str, Any], decoder: bool) -> list[str]:
    """The products of ExecuTorch's Swift package the app links: the runtime, the LLM runner for decoders,
    and the backends and kernels the target pins (DESIGN §11: a .pte loads only with its kernels)."""
    return ["executorch", *(["executorch_llm"] if decoder else []), *artifact["runtime_kernels"]]


def _package_context(data: dict[str, Any], artifact: dict[str, Any], bundle: Path, out: Path) -> dict[str, Any]:
    package = data["package"]
    decoder = data["model"]["task"] == "text-generation"
    module = package["ios_module"]
    resources = out / "Sources" / module / "Resources"
    if Path(artifact["path"]).suffix not in (".mlpackage", ".pte"):
        raise UserInputError(
            f"manifest artifact path {artifact['path']!r} is not a .mlpackage or .pte. Fix: rebuild the bundle"
        )
    model = place_model(bundle, artifact, resources)
    tokenizer_file, wordpiece = place_tokenizer(bundle, resources, decoder)
    if wordpiece is None:
        tokenizer = {"kind": "bpe", **bpe_settings(bundle / "tokenizer" / "tokenizer.json")}
    else:  # the vocabulary itself is vocab.txt
        tokenizer = {"kind": "wordpiece", **{k: v for k, v in wordpiece.items() if k != "vocab"}}
    coreml = artifact["backend"] == "coreml"
    if coreml:
        _check_coreml_interface(artifact, "decoder" if decoder else "encoder")
    min_ios = _min_ios(artifact)
    max_length, embedding_dim = (0, 0) if decoder else _encoder_shape(artifact)
    return {
        **data,
        "artifact": artifact,
        "ios": {
            "package": out.name,
            "module": module,
            "class_name": package["class_name"],
            "decoder": decoder,
            "flavour": "coreml" if coreml else "executorch",
            "runtime": "Core ML" if coreml else f"ExecuTorch {artifact['runtime_version']}",
            "swift_tools_version": SWIFT_TOOLS_VERSION,
            "min_ios": min_ios,
            "min_macos": _MACOS_FOR_IOS[min_ios],
            "executorch_url": EXECUTORCH_PACKAGE_URL,
            "executorch_branch": f"swiftpm-{artifact['runtime_version']}",
            "executorch_products": [] if coreml else _executorch_products(artifact, decoder),
            "model_resource": model["name"],
            "tokenizer_resource": tokenizer_file["name"],
            "resources": [model, tokenizer_file],
            "tokenizer": tokenizer,
            "max_length": max_length,
            "embedding_dim": embedding_dim,
        },
    }


def render_ios(
    data: dict[str, Any], bundle: Path, out: Path | None = None, templates: Path | None = None
) -> list[Path]:
    """Write `bundle/ios/` (or `out`): one Swift package per iOS artifact. Returns the package folders."""
    entries = [a for a in data["artifacts"] if a["platform"] == "ios"]
    if not entries:
        return []
    _check_manifest(data)
    root = templates or templates_dir()
    out = out or bundle / "ios"
    kind = "decoder" if data["model"]["task"] == "text-generation" else "encoder"
    packages = []
    for artifact in entries:
        folder = out / package_name(data, artifact)
        context = _package_context(data, artifact, bundle, folder)
        names = {"__Module__": context["ios"]["module"], "__Class__": context["ios"]["class_name"]}
        tags = {kind, context["ios"]["flavour"]}
        render_tree(root / "ios" / PACKAGE_TEMPLATE, folder, context, tags, names, root)
        resources = folder / "Sources" / context["ios"]["module"] / "Resources"
        ios = context["ios"]
        config = runtime_config(data, "slmpack.ios-config/1", ios["class_name"], ios["runtime"],
                                ("resources", ios["resources"]), tokenizer=ios["tokenizer"])  # fmt: skip
        (resources / "slmpack-config.json").write_text(config, encoding="utf-8")
        packages.append(context["ios"])
    render_tree(root / "ios", out, {**data, "packages": packages}, {kind}, {}, root, skip=PACKAGE_TEMPLATE)
    return [out / p["package"] for p in packages]
