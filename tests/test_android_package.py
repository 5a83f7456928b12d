"""The Android Gradle module a bundle carries: rendered from the manifest, compiled, linted, unit-tested.

The Android SDK cannot run here, so everything that can be proved is (DESIGN §9): the generated Kotlin
compiles with a real Kotlin compiler against android.jar and signature-only stubs of the runtimes' Android
APIs at the pinned versions (ExecuTorch; LiteRT-LM and LiteRT), ktlint passes, the manifests link with
aapt2, and the generated JVM unit tests run against golden data from the host tokenizer and chat template.
Both runtime flavours are checked for decoders and encoders: the fixture bundles carry an android-xnnpack
and an android-litert artifact each.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from builder.checksums import sha256_of, size_of
from builder.errors import UserInputError
from builder.packages import rerender
from builder.paths import templates_dir
from builder.render.escape import kotlin_string
from tests.android.toolchain import Toolchain, find_toolchain, missing_reason
from tests.snapshots import assert_matches_snapshot, rendered_text

FIXTURES = Path(__file__).parent / "fixtures"
TARGETS = ("android-xnnpack", "android-litert")  # one per runtime flavour: ExecuTorch, LiteRT
MLPACKAGE_FILES = ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel", "Data/com.apple.CoreML/weights/weight.bin")
NAMESPACE = "com.example.tinychat"
ANDROID_NS = "{http://schemas.android.com/apk/res/android}"
HOSTILE = [
    'quote " and """ triple',
    "dollar ${System.exit(1)} and $name",
    "back\\slash \\u0041 and \\n literal",
    "new\nline\r\ttab",
    "comment */ closer /* opener // line",
    "unicode é ü 中文 🙂 \u202e rtl \u0000 nul",
]


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    found = find_toolchain()
    if found is None:
        pytest.skip(missing_reason())
    return found


def fixture_bundle(kind: str, folder: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """A copy of a recorded bundle (manifest + tokenizer) with a stand-in model file."""
    bundle = folder / f"bundle-{kind}"
    shutil.copytree(FIXTURES / f"bundle-{kind}", bundle)
    manifest = bundle / "manifest.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    if mutate:
        mutate(data)
        manifest.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    payload = f"slmpack snapshot {kind} model\n".encode()
    for artifact in data["artifacts"]:
        path = bundle / artifact["path"]
        if path.suffix == ".mlpackage":  # a folder artifact: nested files, as coremltools saves them
            for name in MLPACKAGE_FILES:
                (path / name).parent.mkdir(parents=True, exist_ok=True)
                (path / name).write_bytes(payload)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(payload)
        assert (artifact["sha256"], artifact["bytes"]) == (sha256_of(path), size_of(path))
    return bundle


def module_of(bundle: Path, target: str = "android-xnnpack") -> Path:
    (module,) = [p for p in (bundle / "android").iterdir() if p.is_dir() and p.name.endswith("-" + target)]
    return module


def artifact_of(data: dict[str, Any], target: str) -> dict[str, Any]:
    (artifact,) = [a for a in data["artifacts"] if a["target"] == target]
    return artifact


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_rendered_module_matches_snapshot(kind: str, tmp_path: Path) -> None:
    bundle = fixture_bundle(kind, tmp_path)
    rerender(bundle)
    assert_matches_snapshot(bundle / "android", f"android-{kind}", copies="assets")


@pytest.mark.parametrize("target", TARGETS)
def test_assets_are_the_bundles_files_with_their_checksums(target: str, tmp_path: Path) -> None:
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle)
    assets = module_of(bundle, target) / "src/main/assets/tinychat"
    config = json.loads((assets / "slmpack-config.json").read_text())
    for asset in config["assets"]:
        data = (assets / asset["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == asset["sha256"] and len(data) == asset["bytes"]
    assert config["chat"]["generation_prompt"] == "<|im_start|>assistant\n"
    # A .litertlm carries its tokenizer: the LiteRT module ships no tokenizer.json to copy out of the APK.
    expected = ["model.pte", "tokenizer.json"] if target == "android-xnnpack" else ["model.litertlm"]
    assert [a["name"] for a in config["assets"]] == expected
    assert sorted(p.name for p in assets.iterdir()) == sorted([*expected, "slmpack-config.json"])


def test_render_refuses_a_bundle_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle)
    before = rendered_text(bundle / "android", "assets")
    (bundle / "artifacts/android-xnnpack/model.pte").write_bytes(b"tampered")
    with pytest.raises(UserInputError, match="does not match its sha256"):
        rerender(bundle)
    assert rendered_text(bundle / "android", "assets") == before  # the earlier rendering survives


@pytest.mark.parametrize("name", ["ModelConfig", "String", "lowercase", "Bad-Name"])
def test_class_names_that_would_break_the_code_are_refused(name: str, tmp_path: Path) -> None:
    def rename(data: dict[str, Any]) -> None:
        data["package"]["class_name"] = name

    with pytest.raises(UserInputError, match="class_name"):
        rerender(fixture_bundle("decoder", tmp_path, rename))


def test_kotlin_string_escaping() -> None:
    assert kotlin_string('a"b$c\\d\n') == '"a\\"b\\$c\\\\d\\n"'
    assert kotlin_string("é🙂") == '"\\u00e9\\ud83d\\ude42"'


# --- compile, lint and unit-test checks (need the toolchain from scripts/install-android-toolchain.sh) ---------------


def check_module(
    toolchain: Toolchain, module: Path, classes: Path, extra: list[Path] = (), namespace: str = NAMESPACE
) -> list[str]:
    """Compile every source set, lint, link the manifests and run the JVM unit tests; returns test names."""
    sources = [module / "src/main", module / "src/test", module / "src/androidTest", module / "sample/src/main", *extra]
    compiled = toolchain.compile_kotlin(sources, classes)
    assert compiled.ok, compiled.output
    lint = toolchain.ktlint(module.parent)
    assert lint.ok, lint.output
    for manifest, package in ((module / "src/main/AndroidManifest.xml", namespace),
                              (module / "sample/src/main/AndroidManifest.xml", namespace + ".sample")):  # fmt: skip
        linked = toolchain.aapt2_link_manifest(manifest, package)
        assert linked.ok, linked.output
    tests = sorted(f"{namespace}.{p.stem}" for p in (module / "src/test").rglob("*Test.kt"))
    result = toolchain.run_junit(classes, tests, cwd=module)
    assert result.ok and "OK (" in result.output, result.output
    return tests


def test_built_decoder_module_compiles_lints_and_passes_its_unit_tests(
    toolchain: Toolchain, chat_bundle: Path, tmp_path: Path
) -> None:
    module = chat_bundle / "android" / "tinychat-android-xnnpack"
    tests = check_module(toolchain, module, tmp_path / "classes")
    names = ("ModelFilesTest", "ChatTemplateTest", "StopStringFilterTest", "GenerationOptionsTest")
    assert {f"{NAMESPACE}.{n}" for n in names} <= set(tests)
    assert not (chat_bundle / "android" / "tinychat-ios-xnnpack").exists()  # iOS targets get no Android module


def test_built_encoder_module_tokenizes_like_the_host(
    toolchain: Toolchain, embedding_bundle: Path, tmp_path: Path
) -> None:
    module = embedding_bundle / "android" / "tinysearch-android-xnnpack"
    tests = check_module(toolchain, module, tmp_path / "classes")
    assert {f"{NAMESPACE}.ModelFilesTest", f"{NAMESPACE}.WordPieceTokenizerTest"} <= set(tests)


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("target", ["android-litert"])
def test_each_flavour_compiles_lints_and_passes_its_unit_tests(
    toolchain: Toolchain, target: str, kind: str, tmp_path: Path
) -> None:
    """The LiteRT flavour for both kinds of model, rendered from the recorded bundles: the app gets the same
    typed class whichever runtime its target picks. The ExecuTorch flavour of both kinds is compiled from the
    real builds by the two tests above (a second compile of it here took 100 s of the default run)."""
    bundle = fixture_bundle(kind, tmp_path)
    rerender(bundle)
    namespace = json.loads((bundle / "manifest.json").read_text())["package"]["android_namespace"]
    module = module_of(bundle, target)
    tests = check_module(toolchain, module, tmp_path / "classes", namespace=namespace)
    names = ("ChatTemplateTest", "StopStringFilterTest", "GenerationOptionsTest") if kind == "decoder" else ()
    assert {f"{namespace}.{n}" for n in ("ModelFilesTest", *names)} <= set(tests)
    if kind == "encoder":
        assert f"{namespace}.WordPieceTokenizerTest" in tests


# (target, kind, template, the real call, a call that does not exist at the pinned runtime version, its name)
WRONG_CALLS = [
    ("android-xnnpack", "decoder", "__Class__.kt.decoder.executorch.j2",
     "module.generate(prompt, config, callback)", "module.generateText(prompt)", "generateText"),
    ("android-litert", "decoder", "__Class__.kt.decoder.litert.j2",
     "session.generateContentStream(listOf(InputData.Text(prompt)), callback)",
     "session.generateContentAsync(listOf(InputData.Text(prompt)), callback)", "generateContentAsync"),
    ("android-litert", "decoder", "__Class__.kt.decoder.litert.j2",
     "maxNumTokens = ModelConfig.MAX_CONTEXT", "maxTokens = ModelConfig.MAX_CONTEXT", "maxTokens"),
    ("android-litert", "encoder", "__Class__.kt.encoder.litert.j2",
     "interpreter.runSignature(", "interpreter.runSignatureMethod(", "runSignatureMethod"),
]  # fmt: skip


@pytest.mark.parametrize(("target", "kind", "template", "real", "wrong", "missing"), WRONG_CALLS)
def test_a_wrong_runtime_call_in_a_template_fails_the_compile_check(
    toolchain: Toolchain, target: str, kind: str, template: str, real: str, wrong: str, missing: str, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(templates_dir(), templates)
    typed_class = templates / "android/__module__/src/main/kotlin/__package__" / template
    text = typed_class.read_text()
    assert real in text
    typed_class.write_text(text.replace(real, wrong))
    bundle = fixture_bundle(kind, tmp_path)
    rerender(bundle, templates)
    compiled = toolchain.compile_kotlin([module_of(bundle, target) / "src/main"], tmp_path / "classes")
    assert not compiled.ok
    assert any(missing in line for line in compiled.errors), compiled.output


def test_the_litert_flavour_picks_the_gpu_backend_for_a_gpu_delegate(toolchain: Toolchain, tmp_path: Path) -> None:
    def gpu(data: dict[str, Any]) -> None:
        artifact_of(data, "android-litert")["delegate"] = "gpu"

    bundle = fixture_bundle("decoder", tmp_path, gpu)
    rerender(bundle)
    module = module_of(bundle, "android-litert")
    assert "backend = Backend.GPU()," in (module / "src/main/kotlin/com/example/tinychat/TinyChat.kt").read_text()
    # LiteRT-LM's GPU backend opens the OpenCL driver, which the app must ask for. Debian's aapt2 (2.19) predates
    # <uses-native-library> (API 31), so the element is checked by parsing instead of linking.
    application = ElementTree.parse(module / "src/main/AndroidManifest.xml").getroot().find("application")
    assert application is not None
    libraries = {(e.get(f"{ANDROID_NS}name"), e.get(f"{ANDROID_NS}required")) for e in application}
    assert libraries == {("libvndksupport.so", "false"), ("libOpenCL.so", "false")}
    compiled = toolchain.compile_kotlin([module / "src/main"], tmp_path / "classes")
    assert compiled.ok, compiled.output
    cpu = fixture_bundle("decoder", tmp_path / "cpu")
    rerender(cpu)
    assert "libOpenCL" not in (module_of(cpu, "android-litert") / "src/main/AndroidManifest.xml").read_text()


def test_the_litert_encoder_feeds_the_signature_the_manifest_names(tmp_path: Path) -> None:
    def rename(data: dict[str, Any]) -> None:
        for method in artifact_of(data, "android-litert")["signature"]["methods"]:
            method["name"] = f'run "it" ${{x}} {method["inputs"][0]["shape"][1]}'
            method["outputs"][0]["name"] = "vector\n*/"

    bundle = fixture_bundle("encoder", tmp_path, rename)
    rerender(bundle)
    sources = module_of(bundle, "android-litert") / "src/main/kotlin/com/example/tinyembed"
    typed_class = (sources / "TinyEmbed.kt").read_text()
    for name in ("input_ids", "attention_mask", "vector\n*/"):
        assert f"= {kotlin_string(name)}\n" in typed_class
    methods = ", ".join(kotlin_string(f'run "it" ${{x}} {n}') for n in (32, 64, 128))
    assert "LENGTHS = intArrayOf(32, 64, 128)\n" in typed_class and f"METHODS = arrayOf({methods})\n" in typed_class
    config = (sources / "ModelConfig.kt").read_text()
    assert "const val MAX_LENGTH = 128\n" in config and "const val EMBEDDING_DIM = 64\n" in config


def _litert_signature(mutate: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    def apply(data: dict[str, Any]) -> None:
        mutate(artifact_of(data, "android-litert"))

    return apply


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a["signature"]["methods"][0]["inputs"][0].update(dtype="int64"), "input_ids and attention_mask"),
        (lambda a: a["signature"]["methods"][0]["inputs"][0].update(name="mask"), "input_ids and attention_mask"),
        (lambda a: a["signature"]["metadata"].update(lengths=[32, 64]), "one signature per length"),
        (lambda a: a["signature"]["methods"][0]["outputs"][0].update(shape=[1, 4, 64]), "not float32"),
        (lambda a: a.update(delegate="gpu"), "CPU"),
        (lambda a: a.update(backend="tflite"), "no Android wrapper"),
    ],
)
def test_litert_encoder_signatures_the_wrapper_cannot_feed_are_refused(
    mutate: Callable[[dict[str, Any]], None], message: str, tmp_path: Path
) -> None:
    with pytest.raises(UserInputError, match=message):
        rerender(fixture_bundle("encoder", tmp_path, _litert_signature(mutate)))


PRINTER = """\
package com.example.tinychat

fun hex(value: String) = value.encodeToByteArray().joinToString("") { "%02x".format(it) }

fun main() {
    println("source=" + hex(ModelConfig.SOURCE))
    ModelConfig.STOP_STRINGS.forEach { println("stop=" + hex(it)) }
    val chat = ModelConfig.CHAT_TEMPLATE!!
    println("preamble=" + hex(chat.preamble))
    println("user_prefix=" + hex(chat.prefixes.getValue(Role.USER)))
}
"""


@pytest.mark.parametrize("target", TARGETS)
def test_hostile_strings_cannot_inject_kotlin(toolchain: Toolchain, target: str, tmp_path: Path) -> None:
    hostile = "|".join(HOSTILE)
    litert = target == "android-litert"

    def poison(data: dict[str, Any]) -> None:
        data["model"]["source"] = "hf:" + hostile
        data["generation"]["stop_strings"] = [*HOSTILE, "<|im_end|>"]
        chat = data["model"]["chat"]
        chat["preamble"] = hostile
        chat["prefixes"]["user"] = "<user " + hostile + ">"
        for sample in chat["samples"]:  # keep the golden renders consistent with the poisoned template
            sample["messages"] = [{**m, "content": m["content"] + hostile} for m in sample["messages"]]
            sample["text"] = _render(chat, sample["messages"], sample["add_generation_prompt"])
        artifact_of(data, "android-litert")["golden"]["prompt_text"] = hostile  # LiteRT's device test feeds text

    bundle = fixture_bundle("decoder", tmp_path, poison)
    rerender(bundle)
    module = module_of(bundle, target)
    printer = tmp_path / "printer" / "Printer.kt"
    printer.parent.mkdir()
    extra_line = '    println("prompt_text=" + hex(DeviceGoldenData.PROMPT_TEXT))\n}\n'
    printer.write_text(PRINTER.replace("\n}\n", "\n" + extra_line) if litert else PRINTER)
    classes = tmp_path / "classes"
    check_module(toolchain, module, classes, extra=[printer.parent])
    printed = subprocess.run(
        ["java", "-cp", os.pathsep.join(map(str, [classes, toolchain.kotlin_stdlib])), f"{NAMESPACE}.PrinterKt"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    expected = [f"source={('hf:' + hostile).encode().hex()}"]
    expected += [f"stop={s.encode().hex()}" for s in [*HOSTILE, "<|im_end|>"]]
    expected += [f"preamble={hostile.encode().hex()}", f"user_prefix={('<user ' + hostile + '>').encode().hex()}"]
    expected += [f"prompt_text={hostile.encode().hex()}"] if litert else []
    assert printed == expected


def _render(chat: dict[str, Any], messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    from builder.chat_template import ChatFormat

    fmt = ChatFormat(**{k: v for k, v in chat.items() if k != "samples"})
    return fmt.render([(m["role"], m["content"]) for m in messages], add_generation_prompt)


# --- scripts and device-farm specs ----------------------------------------------------------------------------------


FAKE_ADB = """#!/usr/bin/env bash
case "$*" in
  devices) printf 'List of devices attached\\nemulator-5554\\tdevice\\n' ;;
  *"getprop sys.boot_completed"*) echo 1 ;;
  *"getprop ro.product.model"*) echo 'Pixel "7"' ;;
  *"getprop ro.build.version.sdk"*) echo 34 ;;
  *"run-as"*) cat "$FAKE_BENCHMARK" ;;
  *) echo "unexpected adb call: $*" >&2; exit 1 ;;
esac
"""
FAKE_GRADLE = """#!/usr/bin/env bash
echo "$PWD $*" > "$FAKE_GRADLE_LOG"
exit "$FAKE_GRADLE_EXIT"
"""


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("gradle_exit", [0, 1])
def test_validate_emulator_script_writes_a_result(gradle_exit: int, target: str, tmp_path: Path) -> None:
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle)
    module = module_of(bundle, target)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("adb", FAKE_ADB), ("gradle", FAKE_GRADLE)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    benchmark = tmp_path / "bench.json"
    benchmark.write_text(json.dumps({"schema": "slmpack.benchmark/1", "decode_tok_s": 42.0}))
    out = tmp_path / "result.json"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_BENCHMARK": str(benchmark), "FAKE_GRADLE_EXIT": str(gradle_exit),
           "FAKE_GRADLE_LOG": str(tmp_path / "gradle.log"), "HOME": str(tmp_path)}  # fmt: skip
    run = subprocess.run(
        ["bash", str(module / "scripts/validate-emulator.sh"), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == gradle_exit, run.stderr
    result = json.loads(out.read_text())
    assert result["tests"] == ("passed" if gradle_exit == 0 else "failed")
    assert result["serial"] == "emulator-5554" and result["device"] == {"model": "Pixel _7_", "sdk": "34"}
    assert result["benchmark"]["decode_tok_s"] == 42.0
    assert (tmp_path / "gradle.log").read_text().split() == [
        str(bundle / "android"),
        f":{module.name}:connectedDebugAndroidTest",
    ]


def test_validate_emulator_script_explains_a_missing_sdk(tmp_path: Path) -> None:
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle)
    run = subprocess.run(
        ["bash", str(module_of(bundle) / "scripts/validate-emulator.sh")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2 and "adb not found" in run.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_device_farm_specs_are_valid(target: str, tmp_path: Path) -> None:
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle)
    farm = module_of(bundle, target) / "devicefarm"
    aws = yaml.safe_load((farm / "aws-devicefarm-testspec.yml").read_text())
    assert aws["version"] == 0.1 and set(aws["phases"]) == {"install", "pre_test", "test", "post_test"}
    commands = " ".join(aws["phases"]["test"]["commands"])
    assert f"{NAMESPACE}.BenchmarkTest" in commands and f"{NAMESPACE}.test/androidx.test.runner" in commands
    firebase = yaml.safe_load((farm / "firebase-test-lab.yml").read_text())["benchmark"]
    assert firebase["type"] == "instrumentation"
    assert firebase["test-targets"] == [f"class {NAMESPACE}.GoldenOutputTest", f"class {NAMESPACE}.BenchmarkTest"]
    assert firebase["test"].endswith(f"tinychat-{target}-debug-androidTest.apk")
