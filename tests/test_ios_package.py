"""The iOS Swift packages a bundle carries: rendered from the manifest, type-checked, unit-tested, linted.

Xcode cannot run here, so everything that can be proved is (DESIGN §9): Debian's Swift 6 toolchain builds
each generated package and runs its XCTest tests (the pure-Swift tokenizer against the host tokenizer's
ids, the chat template against the model's own Jinja renders, the sampler and stop strings), with the
runtime calls type-checked against signature-only stubs of Core ML and ExecuTorch (tests/ios/stubs);
`swift format lint` passes. The model tests are skipped here, with the reason, and run on Apple hardware.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.checksums import sha256_of, size_of
from builder.errors import UserInputError
from builder.models.tiny import tiny_model_folder
from builder.packages import rerender
from builder.paths import templates_dir
from builder.render.escape import swift_string
from tests.conftest import build_cli, recipe_text
from tests.ios.toolchain import STUBS_DIR, CheckResult, SwiftToolchain
from tests.snapshots import assert_matches_snapshot, rendered_text
from tests.test_android_package import HOSTILE, _render, fixture_bundle

STUB_MODULES = ("CoreML", "ExecuTorch", "ExecuTorchLLM", "SwiftUI")


def package_of(bundle: Path, target: str) -> Path:
    (package,) = [p for p in (bundle / "ios").iterdir() if p.is_dir() and p.name.endswith(f"-{target}")]
    return package


def rendered_bundle(kind: str, folder: Path, mutate: Callable[[dict[str, Any]], None] | None = None) -> Path:
    bundle = fixture_bundle(kind, folder, mutate)
    rerender(bundle)
    return bundle


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_rendered_packages_match_snapshot(kind: str, tmp_path: Path) -> None:
    assert_matches_snapshot(rendered_bundle(kind, tmp_path) / "ios", f"ios-{kind}", copies="Resources")


def test_one_package_per_ios_target_with_the_runtime_it_needs(tmp_path: Path) -> None:
    bundle = rendered_bundle("decoder", tmp_path)
    coreml, executorch = package_of(bundle, "ios-coreml"), package_of(bundle, "ios-xnnpack")
    assert (coreml.name, executorch.name) == ("TinyChat-ios-coreml", "TinyChat-ios-xnnpack")
    assert '.iOS("18.0")' in (coreml / "Package.swift").read_text()  # stateful decoders need iOS 18
    assert "executorch" not in (coreml / "Package.swift").read_text()
    assert (coreml / "Sources/TinyChat/CoreMLDecoderSession.swift").is_file()
    manifest = (executorch / "Package.swift").read_text()
    assert '.iOS("17.0")' in manifest and 'branch: "swiftpm-1.5.1"' in manifest
    for product in ("executorch_llm", "backend_xnnpack", "kernels_llm", "kernels_quantized"):
        assert f'.product(name: "{product}", package: "executorch")' in manifest
    assert not list(executorch.rglob("CoreML*.swift"))


def test_resources_are_the_bundles_files_with_their_checksums(tmp_path: Path) -> None:
    bundle = rendered_bundle("decoder", tmp_path)
    resources = package_of(bundle, "ios-coreml") / "Sources/TinyChat/Resources"
    config = json.loads((resources / "slmpack-config.json").read_text())
    for resource in config["resources"]:
        path = resources / resource["name"]  # model.mlpackage is a folder
        assert (sha256_of(path), size_of(path)) == (resource["sha256"], resource["bytes"])
    assert config["tokenizer"]["kind"] == "bpe" and config["tokenizer"]["byte_level"] is True
    assert config["chat"]["generation_prompt"] == "<|im_start|>assistant\n"


def test_render_refuses_a_bundle_that_does_not_match_its_manifest(tmp_path: Path) -> None:
    bundle = rendered_bundle("decoder", tmp_path)
    before = rendered_text(bundle / "ios", "Resources")
    android_before = sorted(p.name for p in (bundle / "android").iterdir())
    (bundle / "artifacts/ios-coreml/model.mlpackage/Manifest.json").write_bytes(b"tampered")
    with pytest.raises(UserInputError, match="does not match its sha256"):
        rerender(bundle)
    assert rendered_text(bundle / "ios", "Resources") == before  # every earlier rendering survives
    assert sorted(p.name for p in (bundle / "android").iterdir()) == android_before


@pytest.mark.parametrize(
    ("key", "name"), [("class_name", "ModelConfig"), ("ios_module", "CoreML"), ("class_name", "bad-name")]
)
def test_names_that_would_break_the_swift_are_refused(key: str, name: str, tmp_path: Path) -> None:
    def rename(data: dict[str, Any]) -> None:
        data["package"][key] = name

    bundle = fixture_bundle("decoder", tmp_path, rename)
    with pytest.raises(UserInputError, match=f"package.{key}"):
        rerender(bundle)


def test_swift_string_escaping() -> None:
    assert swift_string('a"b\\(c)\n\t\0') == '"a\\"b\\\\(c)\\n\\t\\0"'
    assert swift_string("é🙂\u202e") == '"\\u{e9}\\u{1f642}\\u{202e}"'
    with pytest.raises(ValueError, match="surrogate"):
        swift_string("\ud800")


# --- build, test and lint checks (need the toolchain from scripts/install-swift-toolchain.sh) -----------------------


def _stub_flags() -> list[list[str]]:
    """Commands that compile the signature-only stubs into modules under {work}/stubs."""
    return [
        ["swiftc", "-emit-module", "-parse-as-library", "-module-name", name,
         "-emit-module-path", f"{{work}}/stubs/{name}.swiftmodule", f"{{work}}/stubs/{name}.swift"]
        for name in STUB_MODULES
    ]  # fmt: skip


def type_check(toolchain: SwiftToolchain, package: Path, module: str) -> CheckResult:
    """Build the library and its test module with the runtime stubs visible, so every `#if canImport`
    branch is compiled, and type-check the SwiftUI sample against them; nothing is linked, as the stubs
    have no code."""
    include = ["-Xswiftc", "-I", "-Xswiftc", "{work}/stubs"]
    sample = sorted(p.relative_to(package).as_posix() for p in (package / "Sample").rglob("*.swift"))
    commands = [
        *_stub_flags(),
        ["swift", "build", "--target", module, *include],
        ["swift", "build", "--target", f"{module}Tests", *include],
        ["swiftc", "-typecheck", "-parse-as-library", "-I", "{work}/stubs", "-I", ".build/debug/Modules",
         "-I", ".build/debug", *sample],
    ]  # fmt: skip
    return toolchain.run_commands(package, commands, extra_dirs={"stubs": STUBS_DIR})


def executed(result: CheckResult) -> tuple[int, int, int]:
    """(tests, skipped, failures) from XCTest's summary of all tests."""
    found = re.findall(r"Executed (\d+) tests?, with (?:(\d+) tests? skipped and )?(\d+) failures?", result.output)
    assert found, result.output[-4000:]
    tests, skipped, failures = found[-1]
    return int(tests), int(skipped or 0), int(failures)


def check_package(toolchain: SwiftToolchain, package: Path, module: str, skipped: int) -> int:
    """Type-check with stubs, run the tests for real, lint; returns how many tests ran."""
    checked = type_check(toolchain, package, module)
    assert checked.ok, checked.output[-6000:]
    tested = toolchain.test(package)
    assert tested.ok, tested.output[-6000:]
    tests, skipped_here, failures = executed(tested)
    assert (skipped_here, failures) == (skipped, 0), tested.output[-6000:]
    assert "runs on Apple platforms only" in tested.output  # the model tests say why they skip
    lint = toolchain.format_lint(package)
    assert lint.ok, lint.output
    return tests


@pytest.mark.parametrize("target", ["ios-coreml", "ios-xnnpack"])
def test_decoder_packages_type_check_pass_their_tests_and_lint(
    swift_toolchain: SwiftToolchain, target: str, tmp_path: Path
) -> None:
    bundle = rendered_bundle("decoder", tmp_path)
    tests = check_package(swift_toolchain, package_of(bundle, target), "TinyChat", skipped=2)
    assert tests >= 20


@pytest.mark.parametrize("target", ["ios-coreml", "ios-xnnpack"])
def test_encoder_packages_type_check_pass_their_tests_and_lint(
    swift_toolchain: SwiftToolchain, target: str, tmp_path: Path
) -> None:
    bundle = rendered_bundle("encoder", tmp_path)
    module = json.loads((bundle / "manifest.json").read_text())["package"]["ios_module"]
    tests = check_package(swift_toolchain, package_of(bundle, target), module, skipped=2)
    assert tests >= 3


def test_the_built_bundles_ios_package_passes_its_tests(swift_toolchain: SwiftToolchain, chat_bundle: Path) -> None:
    package = package_of(chat_bundle, "ios-xnnpack")
    resources = package / "Sources/TinyChat/Resources"
    assert (resources / "model.pte").read_bytes() == (chat_bundle / "artifacts/ios-xnnpack/model.pte").read_bytes()
    tested = swift_toolchain.test(package)
    assert tested.ok and executed(tested)[2] == 0, tested.output[-6000:]


@pytest.mark.parametrize(
    ("template", "right", "wrong", "target"),
    [
        ("Sources/__Module__/CoreMLDecoderSession.swift.decoder.coreml.j2",
         "model.prediction(from: inputs, using: state", "model.predict(from: inputs, using: state", "ios-coreml"),
        ("Sources/__Module__/__Class__.swift.decoder.j2", "try runner.generate(", "try runner.generateText(",
         "ios-xnnpack"),
        ("Sample/Sources/ContentView.swift.decoder.j2", "model.chat([.user(prompt)])",
         "model.chatStream([.user(prompt)])", "ios-coreml"),
    ],
)  # fmt: skip
def test_a_wrong_runtime_call_in_a_template_fails_the_type_check(
    swift_toolchain: SwiftToolchain, template: str, right: str, wrong: str, target: str, tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(templates_dir(), templates)
    source = templates / "ios/__module__" / template
    text = source.read_text()
    assert right in text
    source.write_text(text.replace(right, wrong))
    bundle = fixture_bundle("decoder", tmp_path)
    rerender(bundle, templates)
    checked = type_check(swift_toolchain, package_of(bundle, target), "TinyChat")
    assert not checked.ok
    name = wrong.split("(")[0].split(".")[-1]
    assert any(name in line for line in checked.errors), checked.output[-4000:]


def _hex_test(module: str, values: Sequence[tuple[str, str, str]]) -> str:
    """An XCTest case asserting that each Swift expression holds the UTF-8 bytes given in hex."""
    lines = [
        "import XCTest",
        "",
        f"@testable import {module}",
        "",
        "final class InjectionTests: XCTestCase {",
        '    func hex(_ text: String) -> String { text.utf8.map { String(format: "%02x", $0) }.joined() }',
        "",
        "    func testHostileStringsArriveIntact() {",
    ]
    for label, expr, value in values:
        lines.append(f'        XCTAssertEqual(hex({expr}), "{value.encode().hex()}", "{label}")')
    return "\n".join([*lines, "    }", "}", ""])


def test_hostile_strings_cannot_inject_swift(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    hostile = "|".join([*HOSTILE, 'swift \\(exit(1)) """ #"raw"# /* */'])
    stops = [*HOSTILE, "<|im_end|>"]

    def poison(data: dict[str, Any]) -> None:
        data["model"]["source"] = "hf:" + hostile
        data["generation"]["stop_strings"] = stops
        chat = data["model"]["chat"]
        chat["preamble"] = hostile
        chat["prefixes"]["user"] = "<user " + hostile + ">"
        for sample in chat["samples"]:  # keep the golden renders consistent with the poisoned template
            sample["messages"] = [{**m, "content": m["content"] + hostile} for m in sample["messages"]]
            sample["text"] = _render(chat, sample["messages"], sample["add_generation_prompt"])
        for artifact in data["artifacts"]:
            golden = artifact["golden"]
            golden["prompt_text"] = _render(chat, [{"role": "user", "content": golden["prompt_message"]}], True)

    bundle = fixture_bundle("decoder", tmp_path, poison)
    rerender(bundle)
    package = package_of(bundle, "ios-coreml")
    values = [("source", "ModelConfig.source", "hf:" + hostile)]
    values += [("preamble", "ModelConfig.chatTemplate!.preamble", hostile)]
    values += [(f"stop {i}", f"ModelConfig.stopStrings[{i}]", s) for i, s in enumerate(stops)]
    (package / "Tests/TinyChatTests/InjectionTests.swift").write_text(_hex_test("TinyChat", values))
    tested = swift_toolchain.run(package, ["test", "--filter", "InjectionTests|ChatTemplateTests"])
    assert tested.ok, tested.output[-6000:]
    tests, _, failures = executed(tested)
    assert tests >= 2 and failures == 0


# --- scripts and device-farm specs ----------------------------------------------------------------------------------

SIMULATOR = "0A1B2C3D-0000-4000-8000-00000000ABCD"
FAKE_XCRUN = f"""#!/usr/bin/env bash
case "$*" in
  "simctl list devices available") printf -- '-- iOS 18.0 --\\n    iPhone 16 ({SIMULATOR}) (Shutdown)\\n' ;;
  "simctl boot"*) echo "$*" >> "$FAKE_LOG" ;;
  *) echo "unexpected xcrun call: $*" >&2; exit 1 ;;
esac
"""
FAKE_XCODEBUILD = """#!/usr/bin/env bash
echo "$PWD $*" >> "$FAKE_LOG"
echo "Test Case '-[TinyChatTests.ModelGoldenTests testGreedyTokensMatchTheHost]' passed (1.2 seconds)."
echo 'SLMPACK_BENCHMARK {"schema": "slmpack.benchmark/1", "decode_tok_s": 42.0}'
echo "Executed 25 tests, with 0 failures (0 unexpected) in 3.1 (3.2) seconds"
exit "$FAKE_EXIT"
"""


@pytest.mark.parametrize("xcodebuild_exit", [0, 65])
def test_validate_simulator_script_writes_a_result(xcodebuild_exit: int, tmp_path: Path) -> None:
    package = package_of(rendered_bundle("decoder", tmp_path), "ios-coreml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("xcrun", FAKE_XCRUN), ("xcodebuild", FAKE_XCODEBUILD)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "result.json"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_LOG": str(tmp_path / "calls.log"),
           "FAKE_EXIT": str(xcodebuild_exit), "HOME": str(tmp_path)}  # fmt: skip
    run = subprocess.run(
        ["bash", str(package / "scripts/validate-simulator.sh"), "--out", str(out)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == (0 if xcodebuild_exit == 0 else 1), run.stderr
    result = json.loads(out.read_text())
    assert result["tests"] == ("passed" if xcodebuild_exit == 0 else "failed")
    assert result["destination"] == SIMULATOR
    assert result["summary"] == "Executed 25 tests, with 0 failures" and result["skipped"] == 0
    assert result["benchmark"]["decode_tok_s"] == 42.0
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls == [f"simctl boot {SIMULATOR}", f"{package} test -scheme TinyChat -destination id={SIMULATOR}"]


def test_validate_simulator_script_explains_a_missing_xcode(tmp_path: Path) -> None:
    package = package_of(rendered_bundle("decoder", tmp_path), "ios-coreml")
    run = subprocess.run(
        ["bash", str(package / "scripts/validate-simulator.sh")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 2 and "xcodebuild not found" in run.stderr


def test_device_farm_spec_and_sample_project_are_valid_yaml(tmp_path: Path) -> None:
    package = package_of(rendered_bundle("encoder", tmp_path), "ios-xnnpack")
    spec = yaml.safe_load((package / "devicefarm/aws-devicefarm-testspec.yml").read_text())
    assert any("xcodebuild test-without-building" in c for c in spec["phases"]["test"]["commands"])
    project = yaml.safe_load((package / "Sample/project.yml").read_text())
    (target,) = project["targets"].values()
    assert target["settings"]["base"]["OTHER_LDFLAGS"] == ["-all_load"]  # ExecuTorch's kernels register statically
    assert project["packages"][target["dependencies"][0]["package"]] == {"path": ".."}


def test_a_tokenizer_the_swift_code_would_not_reproduce_is_refused_before_exporting(tmp_path: Path) -> None:
    folder = tmp_path / "odd-model"
    shutil.copytree(tiny_model_folder("tiny-llama"), folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(recipe_text(source="hf:odd-model", targets='[[targets]]\nname = "ios-coreml"\nquantize = "w8"\n'))
    code, output = build_cli(recipe, tmp_path / "dist", "--no-bench")
    assert code == 2, output
    assert "tokenizer.json" in output and "Metaspace" in output and "Lowering" not in output
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_a_core_ml_program_without_the_interface_the_swift_calls_is_refused(tmp_path: Path) -> None:
    def rename_input(data: dict[str, Any]) -> None:
        coreml = next(a for a in data["artifacts"] if a["target"] == "ios-coreml")
        coreml["signature"]["methods"][0]["inputs"][1]["name"] = "attention_mask"

    bundle = fixture_bundle("decoder", tmp_path, rename_input)
    with pytest.raises(UserInputError, match=r"'ios-coreml'.*interface the generated Swift calls.*causal_mask"):
        rerender(bundle)


def test_slmpack_render_rewrites_every_platform_and_names_each_package(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from builder.cli import app

    bundle = rendered_bundle("decoder", tmp_path)
    (package_of(bundle, "ios-coreml") / "Sources/TinyChat/Stale.swift").write_text("// left by hand")
    result = CliRunner().invoke(app, ["render", str(bundle)])
    assert result.exit_code == 0, result.output
    names = [line.split()[-1] for line in result.output.splitlines() if line.startswith("rendered")]
    expected = ["tinychat-android-xnnpack", "tinychat-android-litert", "TinyChat-ios-coreml", "TinyChat-ios-xnnpack"]
    assert [Path(n).name for n in names] == expected
    assert not (package_of(bundle, "ios-coreml") / "Sources/TinyChat/Stale.swift").exists()
