"""The Android compile-check toolchain: stubs compile; kotlinc, ktlint, aapt2, JUnit accept good input, reject bad."""

from __future__ import annotations

import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.android.toolchain import INSTALL_COMMAND, Toolchain, find_toolchain, missing_reason

USES_RUNTIME = textwrap.dedent(
    """\
    package com.example.tinychat

    import android.content.Context
    import androidx.annotation.Keep
    import kotlinx.coroutines.Dispatchers
    import kotlinx.coroutines.channels.awaitClose
    import kotlinx.coroutines.flow.Flow
    import kotlinx.coroutines.flow.callbackFlow
    import kotlinx.coroutines.flow.flowOn
    import kotlinx.coroutines.flow.toList
    import kotlinx.coroutines.runBlocking
    import org.pytorch.executorch.EValue
    import org.pytorch.executorch.Module
    import org.pytorch.executorch.Tensor
    import org.pytorch.executorch.extension.llm.LlmCallback
    import org.pytorch.executorch.extension.llm.LlmGenerationConfig
    import org.pytorch.executorch.extension.llm.LlmModule

    @Keep
    class TinyChat(
        private val context: Context,
        modelPath: String,
        tokenizerPath: String,
    ) {
        private val module = LlmModule(modelPath, tokenizerPath, 0.0f)

        fun stream(prompt: String): Flow<String> =
            callbackFlow {
                val config =
                    LlmGenerationConfig
                        .create()
                        .echo(false)
                        .maxNewTokens(8)
                        .temperature(0f)
                        .build()
                val callback =
                    object : LlmCallback {
                        override fun onResult(result: String) {
                            trySend(result)
                        }

                        override fun onStats(stats: String) {
                            close()
                        }
                    }
                module.generate(prompt, config, callback)
                awaitClose { module.stop() }
            }.flowOn(Dispatchers.IO)

        fun complete(prompt: String): String = runBlocking { stream(prompt).toList().joinToString("") }

        fun embed(path: String): FloatArray {
            val encoder = Module.load(path)
            val ids = Tensor.fromBlob(longArrayOf(1L, 2L, 3L), longArrayOf(1L, 3L))
            return encoder.forward(EValue.from(ids))[0].toTensor().dataAsFloatArray
        }

        fun assetNames(): List<String> =
            context
                .getAssets()
                .list("")
                ?.toList()
                .orEmpty()
    }
    """
)

INSTRUMENTED_TEST = textwrap.dedent(
    """\
    package com.example.tinychat

    import androidx.test.ext.junit.runners.AndroidJUnit4
    import androidx.test.platform.app.InstrumentationRegistry
    import org.junit.Assert.assertNotNull
    import org.junit.Test
    import org.junit.runner.RunWith

    @RunWith(AndroidJUnit4::class)
    class TinyChatDeviceTest {
        @Test
        fun loads() {
            val context = InstrumentationRegistry.getInstrumentation().targetContext
            val model = InstrumentationRegistry.getArguments().getString("model")
            assertNotNull(TinyChat(context, model ?: "", "tokenizer.json"))
        }
    }
    """
)

JVM_TESTS = textwrap.dedent(
    """\
    package com.example.unit

    import kotlinx.coroutines.flow.flowOf
    import kotlinx.coroutines.flow.toList
    import kotlinx.coroutines.runBlocking
    import org.hamcrest.CoreMatchers.equalTo
    import org.hamcrest.MatcherAssert.assertThat
    import org.junit.Assert.assertEquals
    import org.junit.Test

    class PassingTest {
        @Test
        fun flows() {
            assertEquals(listOf(1, 2, 3), runBlocking { flowOf(1, 2, 3).toList() })
        }

        @Test
        fun matchers() {
            assertThat("a" + "b", equalTo("ab"))
        }
    }

    class FailingTest {
        @Test
        fun arithmetic() {
            assertEquals("deliberate", 5, 2 + 2)
        }
    }
    """
)

LIBRARY_MANIFEST = textwrap.dedent(
    """\
    <?xml version="1.0" encoding="utf-8"?>
    <manifest xmlns:android="http://schemas.android.com/apk/res/android"
        xmlns:tools="http://schemas.android.com/tools">
        <uses-permission android:name="android.permission.INTERNET" />
        <application android:extractNativeLibs="true" tools:ignore="UnusedAttribute" />
    </manifest>
    """
)


@pytest.fixture(scope="module")
def tc() -> Toolchain:
    toolchain = find_toolchain()
    if toolchain is None:
        pytest.skip(missing_reason())
    toolchain.stubs_jar()  # compiled once per stub revision, cached in the toolchain dir
    return toolchain


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_toolchain_explains_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLMPACK_TOOLCHAINS", str(tmp_path))
    assert find_toolchain() is None
    reason = missing_reason()
    assert INSTALL_COMMAND in reason
    assert str(tmp_path / "android" / "toolchain.env") in reason


def test_stubs_compile_into_a_jar(tc: Toolchain) -> None:
    with zipfile.ZipFile(tc.stubs_jar()) as jar:
        names = set(jar.namelist())
    for cls in (
        "org/pytorch/executorch/Module",
        "org/pytorch/executorch/Tensor",
        "org/pytorch/executorch/EValue",
        "org/pytorch/executorch/DType",
        "org/pytorch/executorch/ExecutorchRuntimeException",
        "org/pytorch/executorch/MethodMetadata",
        "org/pytorch/executorch/annotations/Experimental",
        "org/pytorch/executorch/extension/llm/LlmModule",
        "org/pytorch/executorch/extension/llm/LlmCallback",
        "org/pytorch/executorch/extension/llm/LlmGenerationConfig$Builder",
        "org/pytorch/executorch/extension/llm/LlmModuleConfig",
        "androidx/test/platform/app/InstrumentationRegistry",
        "androidx/test/ext/junit/runners/AndroidJUnit4",
        "androidx/annotation/Keep",
    ):
        assert f"{cls}.class" in names, cls


def test_code_using_the_runtime_compiles(tc: Toolchain, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write(src / "main" / "TinyChat.kt", USES_RUNTIME)
    _write(src / "androidTest" / "TinyChatDeviceTest.kt", INSTRUMENTED_TEST)
    result = tc.compile_kotlin([src], tmp_path / "classes")
    assert result.ok, result.output
    assert (tmp_path / "classes" / "com" / "example" / "tinychat" / "TinyChat.class").is_file()


def test_a_wrong_call_fails_to_compile(tc: Toolchain, tmp_path: Path) -> None:
    bad = USES_RUNTIME.replace("module.generate(prompt, config, callback)", "module.generateText(prompt, callback)")
    assert bad != USES_RUNTIME
    result = tc.compile_kotlin([_write(tmp_path / "TinyChat.kt", bad)], tmp_path / "classes")
    assert not result.ok
    assert any("unresolved reference 'generateText'" in line for line in result.errors), result.output


def test_ktlint_accepts_clean_code_and_rejects_sloppy_code(tc: Toolchain, tmp_path: Path) -> None:
    editorconfig = "root = true\n\n[*.{kt,kts}]\nktlint_code_style = ktlint_official\n"
    clean = _write(tmp_path / "clean" / "src" / "TinyChat.kt", USES_RUNTIME).parent.parent
    _write(clean / ".editorconfig", editorconfig)
    result = tc.ktlint(clean)
    assert result.ok, result.output

    sloppy = tmp_path / "sloppy"
    _write(sloppy / ".editorconfig", editorconfig)
    _write(sloppy / "Sloppy.kt", "package x\nimport java.util.*\nfun f( a:Int ) : Int{\n  return a+1 }\n")
    result = tc.ktlint(sloppy)
    assert not result.ok
    assert "Sloppy.kt:" in result.output


def test_aapt2_checks_library_manifests(tc: Toolchain, tmp_path: Path) -> None:
    good = _write(tmp_path / "good" / "AndroidManifest.xml", LIBRARY_MANIFEST)
    result = tc.aapt2_link_manifest(good, "com.example.tinychat")
    assert result.ok, result.output

    bad_value = LIBRARY_MANIFEST.replace('extractNativeLibs="true"', 'extractNativeLibs="sometimes"')
    result = tc.aapt2_link_manifest(_write(tmp_path / "v" / "AndroidManifest.xml", bad_value), "com.example.tinychat")
    assert not result.ok
    assert "sometimes" in result.output

    unknown = LIBRARY_MANIFEST.replace("android:extractNativeLibs", "android:extractNativeLibz")
    result = tc.aapt2_link_manifest(_write(tmp_path / "a" / "AndroidManifest.xml", unknown), "com.example.tinychat")
    assert not result.ok
    assert "extractNativeLibz" in result.output

    malformed = _write(tmp_path / "m" / "AndroidManifest.xml", LIBRARY_MANIFEST.replace("</manifest>", ""))
    result = tc.aapt2_link_manifest(malformed, "com.example.tinychat")
    assert not result.ok
    assert str(malformed) in result.output


def test_junit_runs_compiled_kotlin_tests(tc: Toolchain, tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    compiled = tc.compile_kotlin([_write(tmp_path / "UnitTests.kt", JVM_TESTS)], classes)
    assert compiled.ok, compiled.output

    passing = tc.run_junit(classes, ["com.example.unit.PassingTest"], cwd=tmp_path)
    assert passing.ok, passing.output
    assert "OK (2 tests)" in passing.output

    failing = tc.run_junit(classes, ["com.example.unit.FailingTest"], cwd=tmp_path)
    assert not failing.ok
    assert "Failures: 1" in failing.output
    assert "deliberate" in failing.output
