"""The Swift compile-check toolchain: swift build, swift test and swift format lint accept good input, reject bad."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from tests.ios.toolchain import INSTALL_COMMAND, SwiftToolchain, find_toolchain, missing_reason

PACKAGE_SWIFT = textwrap.dedent(
    """\
    // swift-tools-version:5.9
    import PackageDescription

    let package = Package(
        name: "Tiny",
        targets: [
            .target(name: "Tiny"),
            .testTarget(name: "TinyTests", dependencies: ["Tiny"]),
        ]
    )
    """
)

LIBRARY = textwrap.dedent(
    """\
    import Foundation

    public func add(_ a: Int, _ b: Int) -> Int {
        a + b
    }
    """
)

XCTESTS = textwrap.dedent(
    """\
    import XCTest

    @testable import Tiny

    final class TinyTests: XCTestCase {
        func testAdd() {
            XCTAssertEqual(add(2, 2), EXPECTED, "deliberate")
        }
    }
    """
)

SWIFT_FORMAT = '{ "version": 1, "indentation": { "spaces": 4 }, "lineLength": 120 }\n'


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _package(root: Path, library: str = LIBRARY, expected: int = 4) -> Path:
    _write(root / "Package.swift", PACKAGE_SWIFT)
    _write(root / ".swift-format", SWIFT_FORMAT)
    _write(root / "Sources" / "Tiny" / "Tiny.swift", library)
    _write(root / "Tests" / "TinyTests" / "TinyTests.swift", XCTESTS.replace("EXPECTED", str(expected)))
    return root


def _leftovers(tc: SwiftToolchain, package: Path) -> list[Path]:
    """Copies of package still in the chroot (package names are unique per test, other runs may be under way)."""
    return sorted((tc.root / "work").glob(f"run-*/{package.name}"))


def test_missing_toolchain_explains_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMPACK_TOOLCHAINS", str(tmp_path))
    assert find_toolchain() is None
    reason = missing_reason()
    assert INSTALL_COMMAND in reason
    assert str(tmp_path / "swift" / "toolchain.env") in reason


def test_a_package_builds_and_its_xctests_run(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    package = _package(tmp_path / f"Tiny-{tmp_path.name}")
    result = swift_toolchain.build(package)
    assert result.ok, result.output
    assert "Build complete!" in result.output

    result = swift_toolchain.test(package)
    assert result.ok, result.output
    assert "Executed 1 test, with 0 failures" in result.output

    failing = swift_toolchain.test(_package(tmp_path / "Failing", expected=5))
    assert not failing.ok
    assert "XCTAssertEqual failed" in failing.output
    assert "deliberate" in failing.output
    assert not (package / ".build").exists()  # the package itself is never built in place
    assert _leftovers(swift_toolchain, package) == []


def test_a_broken_package_fails_to_build(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    package = _package(tmp_path / "Broken", library=LIBRARY.replace("a + b", 'a + "b"'))
    result = swift_toolchain.build(package)
    assert not result.ok
    source = package / "Sources" / "Tiny" / "Tiny.swift"
    assert any(line.startswith(f"{source}:4:") for line in result.errors), result.output  # host paths in output
    assert "cannot convert" in result.output or "no exact matches" in result.output, result.output


def test_format_lint_reads_the_package_config(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    package = _package(tmp_path / "Tiny")
    result = swift_toolchain.format_lint(package)
    assert result.ok, result.output

    (package / ".swift-format").unlink()  # swift-format's default is 2-space indentation
    result = swift_toolchain.format_lint(package)
    assert not result.ok
    assert "[Indentation]" in result.output


def test_extra_dirs_sit_next_to_the_package(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    """A check-only stub module: compiled to a .swiftmodule in the chroot, found through -I by swift build."""
    stubs = _write(tmp_path / "stubs" / "FakeKit.swift", "public struct Fake {\n    public init() {}\n}\n").parent
    package = _package(tmp_path / "Tiny", library=LIBRARY.replace("import Foundation", "import FakeKit"))
    _write(package / "Sources" / "Tiny" / "UsesFake.swift", "import FakeKit\n\npublic let fake = Fake()\n")
    emit_stub = ["swiftc", "-parse-as-library", "-emit-module", "-module-name", "FakeKit", "../stubs/FakeKit.swift"]
    result = swift_toolchain.run_commands(
        package,
        [
            [*emit_stub, "-emit-module-path", "../stubs/FakeKit.swiftmodule"],
            ["swift", "build", "-Xswiftc", "-I", "-Xswiftc", "{work}/stubs"],
        ],
        extra_dirs={"stubs": stubs},
    )
    assert result.ok, result.output
    assert not (stubs / "FakeKit.swiftmodule").exists()  # built in the copy only


def test_a_timeout_kills_the_run_and_cleans_up(swift_toolchain: SwiftToolchain, tmp_path: Path) -> None:
    package = _package(tmp_path / f"Tiny-{tmp_path.name}")
    start = time.monotonic()
    result = swift_toolchain.run_commands(package, [["sh", "-c", "sleep 120 & sleep 120"]], timeout=3)
    assert time.monotonic() - start < 30
    assert not result.ok
    assert "timed out after 3 s" in result.output
    assert _leftovers(swift_toolchain, package) == []
