"""Drives the Android compile-check toolchain that scripts/install-android-toolchain.sh installs.

There is no Android SDK here: generated Kotlin is compiled by a real kotlinc against android.jar (API 23) plus the
signature-only stubs in tests/android/stubs (ExecuTorch v1.4.1's Android API, a few androidx.test classes);
manifests are checked by aapt2 against framework-res.apk; JVM unit tests run under JUnit 4.

    tc = find_toolchain()
    if tc is None:
        pytest.skip(missing_reason())
    result = tc.compile_kotlin([module / "src/main/java"], tmp_path / "classes")
    assert result.ok, result.output
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.toolchains import CheckResult, read_env, run_check
from tests.toolchains import toolchain_dir as shared_toolchain_dir

STUBS_DIR = Path(__file__).resolve().parent / "stubs"
INSTALL_COMMAND = "bash scripts/install-android-toolchain.sh"
ENV_FILE_NAME = "toolchain.env"
LAYOUT = "1"  # must match LAYOUT in scripts/install-android-toolchain.sh

# toolchain.env key -> Toolchain field
_KEYS = {
    "KOTLINC": "kotlinc",
    "KOTLIN_STDLIB": "kotlin_stdlib",
    "KOTLINX_COROUTINES": "coroutines",
    "KTLINT": "ktlint_launcher",
    "ANDROID_JAR": "android_jar",
    "AAPT2": "aapt2",
    "FRAMEWORK_RES": "framework_res",
    "JUNIT": "junit",
    "HAMCREST": "hamcrest",
}

COMPILE_TIMEOUT_S = 600
CHECK_TIMEOUT_S = 300


def toolchain_dir() -> Path:
    return shared_toolchain_dir("android")


def _problems() -> tuple[list[str], dict[str, str]]:
    env_file = toolchain_dir() / ENV_FILE_NAME
    problems: list[str] = []
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            problems.append(f"'{tool}' is not on PATH (a JDK 17 is needed)")
    if not env_file.is_file():
        return [*problems, f"{env_file} does not exist"], {}
    values = read_env(env_file)
    if values.get("SLMPACK_ANDROID_TOOLCHAIN_LAYOUT") != LAYOUT:
        problems.append(f"{env_file} was written by another version of the install script")
    for key in _KEYS:
        if key not in values:
            problems.append(f"{env_file} has no {key}")
        elif not Path(values[key]).exists():
            problems.append(f"{key} points at a missing path: {values[key]}")
    return problems, values


def find_toolchain() -> Toolchain | None:
    """The installed toolchain, or None when anything is missing (see missing_reason)."""
    problems, values = _problems()
    if problems:
        return None
    return Toolchain(root=toolchain_dir(), **{name: Path(values[key]) for key, name in _KEYS.items()})


def missing_reason() -> str:
    """Why find_toolchain() returned None and how to fix it; meant for pytest.skip()."""
    problems, _ = _problems()
    detail = "; ".join(problems) if problems else "nothing is missing"
    return f"Android toolchain not available ({detail}). Install it with: {INSTALL_COMMAND}"


@dataclass(frozen=True)
class CompileResult(CheckResult):
    out_dir: Path | None = None


def _source_files(sources: Sequence[Path], suffixes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files += sorted(p for p in src.rglob("*") if p.suffix in suffixes and p.is_file())
        elif src.is_file():
            files.append(src)
        else:
            raise FileNotFoundError(src)
    return files


@dataclass(frozen=True)
class Toolchain:
    root: Path
    kotlinc: Path
    kotlin_stdlib: Path
    coroutines: Path
    ktlint_launcher: Path
    android_jar: Path
    aapt2: Path
    framework_res: Path
    junit: Path
    hamcrest: Path
    _memo: dict[str, Path] = field(default_factory=dict, compare=False, repr=False)

    # ---- stubs -------------------------------------------------------------------------------------------------------

    def stubs_jar(self) -> Path:
        """tests/android/stubs compiled into a jar, cached in the toolchain dir under a hash of the stub sources."""
        if "stubs" in self._memo:
            return self._memo["stubs"]
        files = sorted(p for p in STUBS_DIR.rglob("*") if p.suffix in (".kt", ".java") and p.is_file())
        digest = hashlib.sha256(f"{LAYOUT}\0{self.kotlinc}\0".encode())
        for path in files:
            digest.update(path.relative_to(STUBS_DIR).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
        cache = self.root / "cache"
        jar = cache / f"stubs-{digest.hexdigest()[:16]}.jar"
        if not jar.is_file():
            cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="stubs-", dir=cache) as tmp:
                classes = Path(tmp) / "classes"
                self._compile_stubs(files, classes)
                partial = Path(tmp) / "stubs.jar"
                with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
                    zf.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
                    for path in sorted(classes.rglob("*")):
                        if path.is_file():
                            zf.write(path, path.relative_to(classes).as_posix())
                os.replace(partial, jar)  # atomic: concurrent builders race harmlessly
            for old in cache.glob("stubs-*.jar"):
                if old != jar:
                    old.unlink(missing_ok=True)
        self._memo["stubs"] = jar
        return jar

    def _compile_stubs(self, files: list[Path], classes: Path) -> None:
        kt = [p for p in files if p.suffix == ".kt"]
        java = [p for p in files if p.suffix == ".java"]
        # ExecuTorch's own build: jvmTarget 11 with -Xjvm-default=all (now spelled -jvm-default=no-compatibility).
        result = run_check(
            [
                self.kotlinc,
                *kt,
                "-d",
                classes,
                "-jvm-target",
                "11",
                "-jvm-default=no-compatibility",
                "-no-reflect",
                "-no-jdk",
                "-nowarn",
                "-classpath",
                os.pathsep.join(map(str, [self.android_jar, self.junit])),
            ],
            timeout=COMPILE_TIMEOUT_S,
        )
        if result.ok and java:
            result = run_check(
                [
                    "javac",
                    "--release",
                    "11",
                    "-nowarn",
                    "-d",
                    classes,
                    "-classpath",
                    os.pathsep.join(map(str, [classes, self.android_jar, self.junit])),
                    *java,
                ],
                timeout=COMPILE_TIMEOUT_S,
            )
        if not result.ok:
            raise RuntimeError(f"the stubs in {STUBS_DIR} do not compile:\n{result.output}")

    # ---- checks ------------------------------------------------------------------------------------------------------

    def compile_classpath(self) -> list[Path]:
        """What generated Android code compiles against (android.jar stands in for the JDK, as with Gradle)."""
        return [self.android_jar, self.stubs_jar(), self.coroutines, self.junit, self.hamcrest, self.kotlin_stdlib]

    def compile_kotlin(
        self,
        sources: Sequence[Path],
        out_dir: Path,
        classpath: Sequence[Path] = (),
        *,
        jdk: bool = False,
        timeout: float = COMPILE_TIMEOUT_S,
    ) -> CompileResult:
        """Compiles Kotlin files (directories are searched for *.kt; *.java there is only read for resolution).

        The JDK is left out (``-no-jdk``) unless jdk=True, so java.* resolves against android.jar (API 23) as it
        does on a device. Warnings are suppressed; errors come back in ``output`` / ``errors``.
        """
        files = _source_files(sources, (".kt", ".java"))
        if not any(p.suffix == ".kt" for p in files):
            return CompileResult(False, f"no Kotlin sources under {[str(s) for s in sources]}", -1)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        cp = [*classpath, *self.compile_classpath()]
        cmd: list[str | Path] = [*files, "-d", out_dir, "-jvm-target", "17", "-no-reflect", "-nowarn"]
        if not jdk:
            cmd.append("-no-jdk")
        result = run_check([self.kotlinc, *cmd, "-classpath", os.pathsep.join(map(str, cp))], timeout=timeout)
        return CompileResult(result.ok, result.output, result.returncode, result.command, out_dir)

    def ktlint(
        self, root: Path, patterns: Sequence[str] = ("**/*.kt", "**/*.kts"), *, timeout: float = CHECK_TIMEOUT_S
    ) -> CheckResult:
        """Runs ktlint in root (so root's .editorconfig applies); a run that matches no file fails."""
        result = run_check([self.ktlint_launcher, "--relative", *patterns], cwd=Path(root), timeout=timeout)
        if result.ok and "No files matched" in result.output:
            return CheckResult(False, result.output, result.returncode, result.command)
        return result

    def aapt2_link_manifest(self, manifest: Path, package: str, *, timeout: float = CHECK_TIMEOUT_S) -> CheckResult:
        """Validates an AndroidManifest.xml with ``aapt2 link -I framework-res.apk``.

        A library manifest has no ``package`` attribute (Gradle's ``namespace`` supplies it), so a copy with
        ``package="<package>"`` added on the ``<manifest`` line (line numbers unchanged) is linked instead.
        """
        manifest = Path(manifest)
        text = manifest.read_text(encoding="utf-8")
        match = re.search(r"<manifest\b([^>]*)>", text)
        if match and not re.search(r"(^|\s)package\s*=", match.group(1)):
            text = f'{text[: match.start()]}<manifest package="{package}"{text[match.start() + len("<manifest") :]}'
        with tempfile.TemporaryDirectory(prefix="aapt2-") as tmp:
            copy = Path(tmp) / "AndroidManifest.xml"
            copy.write_text(text, encoding="utf-8")
            result = run_check(
                [self.aapt2, "link", "-I", self.framework_res, "--manifest", copy, "-o", Path(tmp) / "out.apk"],
                timeout=timeout,
            )
        output = result.output.replace(str(copy), str(manifest))
        return CheckResult(result.ok, output, result.returncode, result.command)

    def run_junit(
        self,
        classes_dir: Path,
        test_classes: Sequence[str],
        extra_classpath: Sequence[Path] = (),
        cwd: Path | None = None,
        *,
        timeout: float = CHECK_TIMEOUT_S,
    ) -> CheckResult:
        """Runs JUnit 4 tests on the host JVM: classes_dir + extra + kotlin-stdlib, coroutines, junit, hamcrest.

        android.jar and the stubs are deliberately absent: JVM unit tests must not need the Android runtime.
        """
        if not test_classes:
            return CheckResult(False, "no test classes given", -1)
        cp = [Path(classes_dir), *extra_classpath, self.kotlin_stdlib, self.coroutines, self.junit, self.hamcrest]
        return run_check(
            ["java", "-cp", os.pathsep.join(map(str, cp)), "org.junit.runner.JUnitCore", *test_classes],
            cwd=cwd,
            timeout=timeout,
        )


__all__ = [
    "INSTALL_COMMAND",
    "STUBS_DIR",
    "CheckResult",
    "CompileResult",
    "Toolchain",
    "find_toolchain",
    "missing_reason",
    "toolchain_dir",
]
