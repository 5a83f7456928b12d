"""Render the Android Gradle project of a bundle from its manifest: one library module per Android target.

Everything the templates see comes from manifest.json (plus the files it points at), so a wrapper change
re-renders without a re-export. The artifact's backend picks the runtime flavour of the module (the
`.executorch` or `.litert` templates); both flavours give the app the same typed class.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from builder.errors import UserInputError
from builder.paths import templates_dir
from builder.render import check_generation_limits, render_tree
from builder.render.files import place_model, place_tokenizer, runtime_config

# Build tooling the generated Gradle files pin. The runtime library and its version come from the target.
ANDROID_BUILD = {
    "agp": "8.7.3",
    # LiteRT-LM's AAR carries Kotlin 2.4 metadata (since 0.17.0), which older Kotlin compilers cannot read; 2.4
    # is also the compiler this project checks the generated code with (DESIGN §9).
    "kotlin": "2.4.20",
    "compile_sdk": 35,
    "jvm_target": "17",
    "coroutines": "1.10.2",
    "junit": "4.13.2",
    "androidx_test_junit": "1.2.1",
    "androidx_test_runner": "1.6.2",
}
MODULE_TEMPLATE = "__module__"
_PACKAGE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
# Names the generated sources define or import: a typed class of the same name would not compile.
RESERVED_CLASS_NAMES = frozenset(
    {
        "ModelConfig", "ModelFiles", "AssetFile", "LoadProgress", "ChatTemplate", "ChatMessage", "Role",
        "StopStringFilter", "GenerationOptions", "GenerationException", "WordPieceTokenizer", "MainActivity",
        "String", "Any", "Unit", "Int", "Long", "Float", "Boolean", "Array", "List", "Map", "Flow", "Context",
        "File", "Module", "Tensor", "EValue", "LlmModule", "LlmCallback", "LlmGenerationConfig", "Closeable",
        "Exception", "Result", "Test", "Assert", "Dispatchers", "Bundle", "Activity", "Engine", "EngineConfig",
        "Backend", "Session", "SessionConfig", "SamplerConfig", "InputData", "ResponseCallback", "Interpreter",
        "CancellationException", "CountDownLatch", "Semaphore", "AtomicBoolean",
    }
)  # fmt: skip
# The manifest's backend -> the runtime flavour of the module (its template tag).
FLAVOURS = ("executorch", "litert")
# What a LiteRT encoder's signature takes: token ids and their mask, both int32 [1, max_length].
ENCODER_INPUTS = ("input_ids", "attention_mask")
# LiteRT-LM's backend for a manifest delegate (its Kotlin API: com.google.ai.edge.litertlm.Backend).
LITERTLM_BACKENDS = {"cpu": "Backend.CPU()", "gpu": "Backend.GPU()"}


def _check_manifest(data: dict[str, Any]) -> None:
    """The manifest may come from anywhere: what would break the generated code is re-checked here."""
    package = data["package"]
    namespace, class_name = package["android_namespace"], package["class_name"]
    if not _PACKAGE.match(namespace):
        raise UserInputError(f"manifest package.android_namespace {namespace!r} is not a Java package name")
    if not _TYPE_NAME.match(class_name) or class_name in RESERVED_CLASS_NAMES:
        raise UserInputError(
            f"manifest package.class_name {class_name!r} cannot be a Kotlin class name here "
            "(it must be a capitalised identifier and not one the generated code uses). "
            "Fix: set package.class_name in the recipe"
        )
    check_generation_limits(data)


def module_name(data: dict[str, Any], artifact: dict[str, Any]) -> str:
    return f"{data['package']['name']}-{artifact['target']}"


def _refuse(artifact: dict[str, Any], found: str, fix: str) -> UserInputError:
    return UserInputError(f"manifest artifact {artifact['target']!r}: {found}. Fix: {fix}")


def _flavour(artifact: dict[str, Any]) -> str:
    backend = artifact["backend"]
    if backend not in FLAVOURS:
        known = ", ".join(FLAVOURS)
        raise _refuse(artifact, f"backend {backend!r} has no Android wrapper (there are {known})", "rebuild the bundle")
    return backend


def _runtime_name(flavour: str, decoder: bool) -> str:
    """The library the typed class runs on: LiteRT-LM runs LiteRT decoders, LiteRT's Interpreter its encoders."""
    if flavour == "litert":
        return "LiteRT-LM" if decoder else "LiteRT"
    return "ExecuTorch"


def _encoder_signature(artifact: dict[str, Any], pad_id: int | None) -> dict[str, Any]:
    """What the typed encoder class feeds and reads. ExecuTorch's `.pte` takes any length up to its maximum;
    LiteRT's `.tflite` takes fixed lengths through named signatures, so the names and the fixed shapes are
    checked here rather than failing on a phone."""
    signature = artifact["signature"]
    metadata = signature["metadata"]
    if artifact["backend"] == "executorch":
        return {"max_length": int(metadata["get_max_seq_len"]), "embedding_dim": int(metadata["get_embedding_dim"])}
    if artifact["delegate"] != "cpu":
        # LiteRT 2.x's Interpreter has no delegates (its v2 packages drop Delegate and GpuDelegate).
        raise _refuse(
            artifact,
            f"delegate {artifact['delegate']!r}: LiteRT's Interpreter, which runs embedding models here, runs on "
            "the CPU (XNNPACK) only",
            "use a LiteRT target with delegate cpu for embedding models",
        )
    # One `embed_<length>` signature per fixed input length, all with the same tensor names; the class runs
    # a text through the shortest that holds it.
    methods = signature["methods"]
    lengths = sorted(metadata.get("lengths") or [])
    by_length: dict[int, str] = {}
    names: set[tuple[str, str, str]] = set()
    dims: set[int] = set()
    for method in methods:
        # By name, not position: the backend lists a signature's tensors in name order.
        inputs = {tensor["name"]: tensor for tensor in method.get("inputs", [])}
        outputs = method.get("outputs", [])
        feeds = [inputs.get(name, {}) for name in ENCODER_INPUTS]
        shape = feeds[0].get("shape") or [None, None]
        if len(inputs) != 2 or len(outputs) != 1 or any(
            (t.get("dtype"), t.get("shape")) != ("int32", shape) for t in feeds
        ) or len(shape) != 2 or shape[0] != 1:  # fmt: skip
            by_length.clear()
            break
        output = outputs[0]
        if output["dtype"] != "float32" or len(output["shape"]) != 2 or output["shape"][0] != 1:
            raise _refuse(artifact, f"the embedding output is {output!r}, not float32 [1, D]", "rebuild the bundle")
        by_length[int(shape[1])] = method["name"]
        names.add((feeds[0]["name"], feeds[1]["name"], output["name"]))
        dims.add(int(output["shape"][1]))
    if not by_length or sorted(by_length) != lengths or len(names) != 1 or len(dims) != 1:
        raise _refuse(
            artifact,
            "a LiteRT embedding model needs one signature per length in metadata.lengths, each taking input_ids "
            f"and attention_mask (int32, [1, length]) and giving one embedding; found {methods!r} with lengths "
            f"{lengths!r}",
            "rebuild the bundle with this slmpack",
        )
    ((ids, mask, output_name),) = names
    return {
        "max_length": max(lengths),
        "embedding_dim": dims.pop(),
        "lengths": lengths,
        "methods": [by_length[n] for n in lengths],
        "input_ids": ids,
        "attention_mask": mask,
        "output": output_name,
        "pad_id": 0 if pad_id is None else int(pad_id),
    }


def _greedy_texts(bundle: Path, golden: dict[str, Any], eos_ids: list[int]) -> tuple[str, str]:
    """The host's greedy tokens as text, whole and their first half. LiteRT-LM takes and gives text only, so
    the device test compares text: the tokens up to the end of sequence (where the runtime stops), decoded
    with the bundle's tokenizer as LiteRT-LM's own detokenizer does."""
    tokens = list(golden["greedy_tokens"])
    ends = [i for i, token in enumerate(tokens) if token in eos_ids]
    tokens = tokens[: ends[0]] if ends else tokens
    tokenizer = Tokenizer.from_file(str(bundle / "tokenizer" / "tokenizer.json"))

    def text(ids: list[int]) -> str:
        # A prefix may end inside a multi-byte character, which decodes to U+FFFD: cut it off.
        return tokenizer.decode(ids, skip_special_tokens=False).rstrip("\ufffd")

    return text(tokens), text(tokens[: len(tokens) // 2])


def _litert_decoder(data: dict[str, Any], artifact: dict[str, Any], bundle: Path) -> dict[str, Any]:
    delegate = artifact["delegate"]
    if delegate not in LITERTLM_BACKENDS:
        known = ", ".join(LITERTLM_BACKENDS)
        raise _refuse(artifact, f"delegate {delegate!r} is not a LiteRT-LM backend ({known})", "rebuild the bundle")
    greedy, half = _greedy_texts(bundle, artifact["golden"], data["model"]["eos_ids"])
    top_k = data["generation"]["top_k"]
    return {
        "backend": LITERTLM_BACKENDS[delegate],
        "gpu": delegate == "gpu",
        # LiteRT-LM's sampler needs a positive top-k: the recipe's 0 (no top-k) is the whole vocabulary.
        "top_k": top_k if top_k > 0 else data["model"]["vocab_size"],
        "prompt_text": artifact["golden"]["prompt_text"],
        "greedy_text": greedy,
        "greedy_text_half": half,
    }


def _module_context(data: dict[str, Any], artifact: dict[str, Any], bundle: Path, module: Path) -> dict[str, Any]:
    package = data["package"]
    decoder = data["model"]["task"] == "text-generation"
    flavour = _flavour(artifact)
    asset_dir = package["name"]
    assets_root = module / "src" / "main" / "assets" / asset_dir
    model = place_model(bundle, artifact, assets_root)
    assets = [model]
    tokenizer, wordpiece = None, None
    # A .litertlm carries its own tokenizer: a LiteRT decoder ships no tokenizer.json to copy out of the APK.
    if not (decoder and flavour == "litert"):
        tokenizer, wordpiece = place_tokenizer(bundle, assets_root, decoder)
        assets.append(tokenizer)
    runtime_group, runtime_artifact = artifact["runtime_library"].split(":", 1)
    return {
        **data,
        "artifact": artifact,
        "build": ANDROID_BUILD,
        "android": {
            "module": module.name,
            "namespace": package["android_namespace"],
            "package_path": package["android_namespace"].replace(".", "/"),
            "class_name": package["class_name"],
            "asset_dir": asset_dir,
            "assets": assets,
            "model_asset": model["name"],
            "tokenizer_asset": tokenizer["name"] if tokenizer else None,
            # Stored uncompressed in the APK: the model is copied out once, and compressing it only slows that.
            "no_compress": [Path(model["name"]).suffix.lstrip("."), "json", "txt"],
            "decoder": decoder,
            "flavour": flavour,
            "runtime_name": _runtime_name(flavour, decoder),
            "min_sdk": int(artifact["min_os"]),
            "abis": artifact["abis"],
            "runtime": f"{runtime_group}:{runtime_artifact}:{artifact['runtime_version']}",
            "wordpiece": wordpiece,
            "encoder": None if decoder else _encoder_signature(artifact, data["model"].get("pad_id")),
            "litert": _litert_decoder(data, artifact, bundle) if decoder and flavour == "litert" else None,
        },
    }


def render_android(
    data: dict[str, Any], bundle: Path, out: Path | None = None, templates: Path | None = None
) -> list[Path]:
    """Write `bundle/android/` (or `out`): a Gradle project with one library module per Android artifact.
    Returns the module folders."""
    entries = [a for a in data["artifacts"] if a["platform"] == "android"]
    if not entries:
        return []
    _check_manifest(data)
    root = templates or templates_dir()
    source = root / "android"
    out = out or bundle / "android"
    kind = "decoder" if data["model"]["task"] == "text-generation" else "encoder"
    modules = []
    for artifact in entries:
        module = out / module_name(data, artifact)
        context = _module_context(data, artifact, bundle, module)
        names = {"__package__": context["android"]["package_path"], "__Class__": context["android"]["class_name"]}
        render_tree(source / MODULE_TEMPLATE, module, context, {kind, context["android"]["flavour"]}, names, root)
        config = module / "src" / "main" / "assets" / context["android"]["asset_dir"] / "slmpack-config.json"
        android = context["android"]
        files = ("assets", android["assets"])
        config.write_text(
            runtime_config(data, "slmpack.android-config/1", android["class_name"], android["runtime"], files),
            encoding="utf-8",
        )
        modules.append(context["android"])
    project = {**data, "modules": modules, "build": ANDROID_BUILD}
    render_tree(source, out, project, {kind}, {}, root, skip=MODULE_TEMPLATE)
    return [out / m["module"] for m in modules]
