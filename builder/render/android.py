"""Render the Android Gradle project of a bundle from its manifest: one library module per Android target.

Everything the templates see comes from manifest.json (plus the files it points at), so a wrapper change
re-renders without a re-export.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from builder.errors import UserInputError
from builder.paths import templates_dir
from builder.render import check_generation_limits, render_tree
from builder.render.files import place_model, place_tokenizer, runtime_config

# Build tooling the generated Gradle files pin. The runtime library and its version come from the target.
ANDROID_BUILD = {
    "agp": "8.7.3",
    "kotlin": "2.1.21",
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
        "Exception", "Result", "Test", "Assert", "Dispatchers", "Bundle", "Activity",
    }
)  # fmt: skip


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


def _module_context(data: dict[str, Any], artifact: dict[str, Any], bundle: Path, module: Path) -> dict[str, Any]:
    package = data["package"]
    decoder = data["model"]["task"] == "text-generation"
    asset_dir = package["name"]
    assets_root = module / "src" / "main" / "assets" / asset_dir
    model = place_model(bundle, artifact, assets_root)
    tokenizer, wordpiece = place_tokenizer(bundle, assets_root, decoder)
    assets = [model, tokenizer]
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
            "tokenizer_asset": tokenizer["name"],
            "decoder": decoder,
            "min_sdk": int(artifact["min_os"]),
            "abis": artifact["abis"],
            "runtime": f"{runtime_group}:{runtime_artifact}:{artifact['runtime_version']}",
            "wordpiece": wordpiece,
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
        render_tree(source / MODULE_TEMPLATE, module, context, {kind}, names, root)
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
