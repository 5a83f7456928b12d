"""Drives the Swift compile-check toolchain that scripts/install-swift-toolchain.sh installs.

There is no Xcode here: generated Swift packages are built, unit-tested (XCTest and swift-testing) and linted by
Debian trixie's Swift 6 toolchain (swiftlang: SwiftPM, swift-corelibs Foundation/XCTest, swift-format) inside a
minbase chroot. Each call copies the package (and any extra directories, e.g. tests/ios/stubs) into a fresh
directory under ``<chroot>/work`` and runs there as root in a private mount and pid namespace
(``unshare --mount-proc``): swift needs /proc (its binaries find their libraries through /proc/self/exe), and a
namespace's mounts vanish with its last process, so nothing stays mounted even when a run is killed.

    tc = find_toolchain()
    if tc is None:
        pytest.skip(missing_reason())
    result = tc.build(package_dir)
    assert result.ok, result.output
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.toolchains import CheckResult, read_env, run_check
from tests.toolchains import toolchain_dir as shared_toolchain_dir

STUBS_DIR = Path(__file__).resolve().parent / "stubs"
INSTALL_COMMAND = "bash scripts/install-swift-toolchain.sh"
ENV_FILE_NAME = "toolchain.env"
LAYOUT = "1"  # must match LAYOUT in scripts/install-swift-toolchain.sh

BUILD_TIMEOUT_S = 600
CHECK_TIMEOUT_S = 300

CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORK_PLACEHOLDER = "{work}"  # in command arguments: the chroot directory holding the package copy and the extras
LINT_PATHS = ("Package.swift", "Sources", "Tests")


def toolchain_dir() -> Path:
    return shared_toolchain_dir("swift")


def _swift_in(root: Path) -> bool:
    """Whether the chroot has a swift; /usr/bin/swift there is an absolute symlink, resolved inside the chroot."""
    link = root / "usr" / "bin" / "swift"
    try:
        target = os.readlink(link)
    except OSError:
        return False
    return os.access(root / target.lstrip("/") if target.startswith("/") else link.parent / target, os.X_OK)


def _problems() -> tuple[list[str], dict[str, str]]:
    env_file = toolchain_dir() / ENV_FILE_NAME
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("running the chroot needs root")
    for tool in ("unshare", "chroot"):
        if shutil.which(tool) is None:
            problems.append(f"'{tool}' is not on PATH (util-linux, coreutils)")
    if not env_file.is_file():
        return [*problems, f"{env_file} does not exist"], {}
    values = read_env(env_file)
    if values.get("SLMPACK_SWIFT_TOOLCHAIN_LAYOUT") != LAYOUT:
        problems.append(f"{env_file} was written by another version of the install script")
    for key in ("SWIFT_VERSION", "SWIFT_ROOT"):
        if not values.get(key):
            problems.append(f"{env_file} has no {key}")
    if values.get("SWIFT_ROOT") and not _swift_in(Path(values["SWIFT_ROOT"])):
        problems.append(f"SWIFT_ROOT has no usr/bin/swift: {values['SWIFT_ROOT']}")
    return problems, values


def find_toolchain() -> SwiftToolchain | None:
    """The installed toolchain, or None when anything is missing (see missing_reason)."""
    problems, values = _problems()
    if problems:
        return None
    return SwiftToolchain(root=Path(values["SWIFT_ROOT"]), version=values["SWIFT_VERSION"])


def missing_reason() -> str:
    """Why find_toolchain() returned None and how to fix it; meant for pytest.skip()."""
    problems, _ = _problems()
    detail = "; ".join(problems) if problems else "nothing is missing"
    return f"Swift toolchain not available ({detail}). Install it with: {INSTALL_COMMAND}"


@dataclass(frozen=True)
class SwiftToolchain:
    root: Path  # the chroot
    version: str  # e.g. "6.0.3"

    def run_commands(
        self,
        package_dir: Path,
        commands: Sequence[Sequence[str]],
        *,
        extra_dirs: Mapping[str, Path] | None = None,
        timeout: float = BUILD_TIMEOUT_S,
    ) -> CheckResult:
        """Runs commands one after another (stopping at the first failure) in a copy of package_dir in the chroot.

        The copy lives in a fresh ``/work/run-*/<package_dir.name>`` (without any ``.build``); each extra_dirs entry
        ``name: path`` is copied next to it as ``/work/run-*/<name>``, so the package can use ``../<name>`` and
        arguments can use ``{work}/<name>``. HOME and TMPDIR point into the run directory too, which is deleted
        afterwards. In the output, chroot paths of the copies are replaced by the original paths.
        """
        package_dir = Path(package_dir).resolve()
        if not package_dir.is_dir():
            raise NotADirectoryError(package_dir)
        extras = {name: Path(path).resolve() for name, path in (extra_dirs or {}).items()}
        for name, path in extras.items():
            if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or name == package_dir.name:
                raise ValueError(f"bad extra directory name {name!r} (package is {package_dir.name!r})")
            if not path.is_dir():
                raise NotADirectoryError(path)
        (self.root / "work").mkdir(exist_ok=True)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.root / "work"))
        inside = f"/work/{run_dir.name}"
        try:
            shutil.copytree(package_dir, run_dir / package_dir.name, symlinks=True, ignore=_ignore_build_dirs)
            for name, path in extras.items():
                shutil.copytree(path, run_dir / name, symlinks=True, ignore=_ignore_build_dirs)
            (run_dir / ".home").mkdir()
            (run_dir / ".tmp").mkdir()
            script = " && ".join(
                [
                    f"cd {shlex.quote(f'{inside}/{package_dir.name}')}",
                    *(shlex.join(arg.replace(WORK_PLACEHOLDER, inside) for arg in cmd) for cmd in commands),
                ]
            )
            # Killing the process group kills the namespace's init, and with it everything left in the pid
            # namespace, build processes that moved to process groups of their own included.
            result = run_check(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    f"--mount-proc={self.root}/proc",
                    "chroot",
                    str(self.root),
                    "/usr/bin/env",
                    "-i",
                    f"HOME={inside}/.home",
                    f"TMPDIR={inside}/.tmp",
                    f"PATH={CHROOT_PATH}",
                    "LANG=C.UTF-8",
                    "LC_ALL=C.UTF-8",
                    "TERM=dumb",
                    "/bin/sh",
                    "-c",
                    script,
                ],
                timeout=timeout,
                label=script,
            )
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        output = result.output
        replacements = {f"{inside}/{package_dir.name}": str(package_dir)}
        replacements.update({f"{inside}/{name}": str(path) for name, path in extras.items()})
        for old in sorted(replacements, key=len, reverse=True):
            output = output.replace(old, replacements[old])
        return CheckResult(result.ok, output, result.returncode, result.command)

    def run(
        self,
        package_dir: Path,
        args: Sequence[str],
        *,
        extra_dirs: Mapping[str, Path] | None = None,
        timeout: float = BUILD_TIMEOUT_S,
    ) -> CheckResult:
        """``swift <args>`` in a copy of package_dir (see run_commands)."""
        return self.run_commands(package_dir, [["swift", *args]], extra_dirs=extra_dirs, timeout=timeout)

    def build(
        self,
        package_dir: Path,
        flags: Sequence[str] = (),
        *,
        extra_dirs: Mapping[str, Path] | None = None,
        timeout: float = BUILD_TIMEOUT_S,
    ) -> CheckResult:
        """``swift build <flags>``, e.g. flags=["-Xswiftc", "-I", "-Xswiftc", "{work}/stubs"]."""
        return self.run(package_dir, ["build", *flags], extra_dirs=extra_dirs, timeout=timeout)

    def test(
        self,
        package_dir: Path,
        flags: Sequence[str] = (),
        *,
        extra_dirs: Mapping[str, Path] | None = None,
        timeout: float = BUILD_TIMEOUT_S,
    ) -> CheckResult:
        """``swift test <flags>``: builds, then runs the XCTest cases and the swift-testing @Test functions."""
        return self.run(package_dir, ["test", *flags], extra_dirs=extra_dirs, timeout=timeout)

    def format_lint(
        self,
        package_dir: Path,
        paths: Sequence[str] | None = None,
        *,
        strict: bool = True,
        timeout: float = CHECK_TIMEOUT_S,
    ) -> CheckResult:
        """``swift format lint [--strict] --recursive <paths>``; paths default to those of LINT_PATHS that exist.

        swift-format reads the ``.swift-format`` (JSON) nearest above each file, so a package's own configuration
        applies; without one the defaults (2-space indentation, 100 columns) do. Without --strict warnings do not
        fail the run. A run that finds no Swift file fails.
        """
        package_dir = Path(package_dir)
        if paths is None:
            paths = [p for p in LINT_PATHS if (package_dir / p).exists()]
        if not any((package_dir / p).is_file() or any((package_dir / p).rglob("*.swift")) for p in paths):
            return CheckResult(False, f"no Swift files under {package_dir} in {list(paths)}", -1)
        args = ["format", "lint", *(["--strict"] if strict else []), "--recursive", *paths]
        return self.run(package_dir, args, timeout=timeout)


def _ignore_build_dirs(_directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == ".build"]


__all__ = [
    "INSTALL_COMMAND",
    "STUBS_DIR",
    "WORK_PLACEHOLDER",
    "CheckResult",
    "SwiftToolchain",
    "find_toolchain",
    "missing_reason",
    "toolchain_dir",
]
