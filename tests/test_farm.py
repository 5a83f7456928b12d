"""slmpack farm plan / collect: job specs that validate and scripts that run against stand-in farm CLIs, and
device results (recorded here from the schema) merged into the report only when every one is whole."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from builder.bench.farm_collect import collect
from builder.bench.farm_plan import plan, validate_plan
from builder.cli import app
from builder.errors import UserInputError
from builder.packages import read_manifest, rerender
from tests.test_android_package import fixture_bundle

ANDROID = ("android-xnnpack", "android-litert")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    folder = fixture_bundle("decoder", tmp_path)
    rerender(folder)
    return folder


def record(data: dict[str, Any], target: str, **changes: Any) -> dict[str, Any]:
    """A result as the Android package's BenchmarkTest writes it for this bundle's artifact."""
    (artifact,) = [a for a in data["artifacts"] if a["target"] == target]
    result = {
        "schema": "slmpack.benchmark/1", "class_name": data["package"]["class_name"], "target": target,
        "quantization": artifact["quantization"], "runtime": "executorch 1.5.1",
        "device": {"manufacturer": "Google", "model": "Pixel 8", "sdk": 34, "abi": "arm64-v8a", "cores": 9,
                   "battery_temperature_c": 29.5},
        "performance": {"thermal_before": "none", "thermal_after": "light", "throttled": False,
                        "power_save": False, "cooldown_ms": 0, "sustained_performance": "supported, not engaged"},
        "model_load_ms": 412.0, "artifact_bytes": artifact["bytes"], "warmup": 1, "iterations": 5,
        "peak_rss_mb": 310.5, "prompt_tokens": 14, "new_tokens": 128, "ttft_ms": 81.0, "prefill_tok_s": 172.8,
        "decode_tok_s": 48.2, "decode_tok_s_all": [48.0, 48.2, 48.5, 47.9, 48.3],
    }  # fmt: skip
    result.update(changes)
    return result


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))
    return path


def xcodebuild_log(path: Path, *records: dict[str, Any]) -> Path:
    """An xcodebuild log as the iOS farms return it: test noise around the SLMPACK_BENCHMARK lines."""
    lines = ["Test Suite 'All tests' started at 2026-12-06 10:00:00.000"]
    lines += [f"SLMPACK_BENCHMARK {json.dumps(r, sort_keys=True)}" for r in records]
    lines.append("Test Suite 'All tests' passed.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# --- farm plan ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("farm", "platform", "spec"), [("aws", "android", "device-pool-rules.json"),
                         ("firebase", "android", "matrix.yml"), ("browserstack", "android", "build.json"),
                         ("aws", "ios", "testspec.yml"), ("firebase", "ios", "matrix.yml")])  # fmt: skip
def test_plan_writes_one_valid_job_per_package(farm: str, platform: str, spec: str, bundle: Path) -> None:
    folder, jobs = plan(bundle, farm, platform, [], None)
    assert folder == bundle / "farm" / f"{farm}-{platform}"
    data = read_manifest(bundle)
    assert sorted(job.target for job in jobs) == sorted(a["target"] for a in data["artifacts"]
                                                       if a["platform"] == platform)  # fmt: skip
    summary = json.loads((folder / "plan.json").read_text())
    assert summary["farm"] == farm and len(summary["jobs"]) == len(jobs)
    for job in jobs:
        script = folder / job.folder / "submit.sh"
        assert spec in job.files and os.access(script, os.X_OK)
        # The script reaches its package from its own folder.
        relative = next(line for line in script.read_text().splitlines() if line.startswith("PACKAGE="))
        assert (folder / job.folder / relative.split('"/', 1)[1]).resolve() == (bundle / job.package).resolve()
    validate_plan(folder)
    assert "slmpack farm collect" in (folder / "README.md").read_text()


def test_plan_specs_carry_the_chosen_devices(bundle: Path) -> None:
    folder, _ = plan(bundle, "firebase", "android", ["oriole:33", "husky:34"], None)
    matrix = yaml.safe_load((folder / "tinychat-android-xnnpack" / "matrix.yml").read_text())["benchmark"]
    assert matrix["device"] == [{"model": "oriole", "version": "33"}, {"model": "husky", "version": "34"}]
    assert matrix["test-targets"][-1] == "class com.example.tinychat.BenchmarkTest"
    folder, _ = plan(bundle, "aws", "android", ["Google Pixel 8", "arn:aws:devicefarm:us-west-2::device:ABC123"], None)
    rules = json.loads((folder / "tinychat-android-litert" / "device-pool-rules.json").read_text())
    assert {r["attribute"]: json.loads(r["value"]) for r in rules} == {
        "PLATFORM": "ANDROID",
        "MODEL": ["Google Pixel 8"],
        "ARN": ["arn:aws:devicefarm:us-west-2::device:ABC123"],
    }


@pytest.mark.parametrize(("farm", "device"), [("firebase", "oriole:33\nrm -rf /"), ("aws", 'Pixel"; rm -rf ~; "'),
                                              ("browserstack", "Pixel 8-$(id)"), ("firebase", "oriole")])  # fmt: skip
def test_a_device_that_is_not_the_farms_syntax_is_refused(farm: str, device: str, bundle: Path) -> None:
    result = CliRunner().invoke(app, ["farm", "plan", str(bundle), "--farm", farm, "--devices", device])
    assert result.exit_code == 2 and f"is not a {farm} device" in result.output
    assert not (bundle / "farm").exists()


def test_plan_refuses_what_it_cannot_plan(bundle: Path) -> None:
    with pytest.raises(UserInputError, match="XCUITest UI suites only"):
        plan(bundle, "browserstack", "ios", [], None)
    with pytest.raises(UserInputError, match="not a farm slmpack plans for"):
        plan(bundle, "saucelabs", None, [], None)
    folder, _ = plan(bundle, "aws", "android", [], None)
    (folder / "tinychat-android-xnnpack" / "results").mkdir()
    with pytest.raises(UserInputError, match="holds downloaded results"):
        plan(bundle, "aws", "android", [], None)
    assert (folder / "tinychat-android-xnnpack" / "results").is_dir()


def test_validation_catches_a_broken_plan_file(bundle: Path) -> None:
    folder, _ = plan(bundle, "firebase", "android", [], None)
    matrix = folder / "tinychat-android-litert" / "matrix.yml"
    matrix.write_text(matrix.read_text().replace("model: oriole", "modle: oriole"))
    (folder / "tinychat-android-xnnpack" / "submit.sh").write_text("if then fi\n")
    with pytest.raises(UserInputError) as error:
        validate_plan(folder)
    assert "one `device` per chosen device" in str(error.value) and "syntax error" in str(error.value)


def _fake_tools(folder: Path, scripts: dict[str, str]) -> dict[str, str]:
    """Stand-ins for a farm's CLIs on PATH: each logs its arguments and answers as the farm would."""
    folder.mkdir()
    for name, body in scripts.items():
        tool = folder / name
        tool.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >> "$FAKE_LOG"\n{body}\n')
        tool.chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin", "HOME": str(folder), "FAKE_LOG": str(folder / "calls.log")}


def test_aws_script_uploads_runs_and_downloads_what_collect_merges(bundle: Path, tmp_path: Path) -> None:
    folder, jobs = plan(bundle, "aws", "android", ["Google Pixel 8"], None)
    job = next(j for j in jobs if j.target == "android-xnnpack")
    artifacts = tmp_path / "customer-artifacts.zip"
    with zipfile.ZipFile(artifacts, "w") as archive:
        archive.writestr("Host_Machine_Files/$DEVICEFARM_LOG_DIR/slmpack-benchmark.json",
                         json.dumps(record(read_manifest(bundle), "android-xnnpack")))  # fmt: skip
        archive.writestr("Host_Machine_Files/$DEVICEFARM_LOG_DIR/golden.txt", "OK (1 test)\n")
    aws = """case "$2" in
  create-upload) printf 'arn:upload:%s\\thttps://uploads.example/%s\\n' "$8" "$8" ;;
  get-upload) echo SUCCEEDED ;;
  create-device-pool) test -f "${8#file://}" && echo arn:pool ;;
  schedule-run) echo arn:run ;;
  get-run) case "$*" in *run.status*) echo COMPLETED ;; *) echo PASSED ;; esac ;;
  list-jobs) echo arn:job:1 ;;
  get-job) echo "Google Pixel 8" ;;
  list-artifacts) printf 'Customer Artifacts\\tzip\\thttps://artifacts.example/1\\n' ;;
esac"""
    curl = f'if [ "$4" = -o ]; then cp {artifacts} "$5"; fi'
    env = _fake_tools(tmp_path / "bin", {"aws": aws, "curl": curl, "gradle": "true"})
    env["PROJECT_ARN"] = "arn:aws:devicefarm:us-west-2:1:project:p"
    run = subprocess.run(["bash", str(folder / job.folder / "submit.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text()
    assert "--type INSTRUMENTATION_TEST_SPEC --name testspec.yml" in calls
    assert "type=INSTRUMENTATION,testPackageArn=arn:upload:tinychat-android-xnnpack-debug-androidTest.apk" in calls
    assert ":tinychat-android-xnnpack:assembleDebugAndroidTest" in calls
    results = folder / job.folder / "results"
    assert f"slmpack farm collect {folder / job.folder}/../../.. {results}" in run.stdout
    data, regressions = collect(bundle, [results])
    (merged,) = next(a for a in data["artifacts"] if a["target"] == "android-xnnpack")["device_benchmarks"]
    assert merged["decode_tok_s"] == 48.2 and merged["source"] == "slmpack-benchmark.json" and not regressions


def test_firebase_script_runs_the_matrix_and_copies_its_results(bundle: Path, tmp_path: Path) -> None:
    folder, jobs = plan(bundle, "firebase", "android", [], None)
    bucket = tmp_path / "bucket" / "oriole-33-en-portrait"
    write_json(bucket / "artifacts" / "sdcard" / "slmpack-benchmark.json", record(read_manifest(bundle), ANDROID[1]))
    gsutil = f'cp -r {bucket.parent} "$5/"'
    gcloud = 'test -f "${5%:benchmark}" && exit 10'  # a failed test (exit 10) still leaves results
    env = _fake_tools(tmp_path / "bin", {"gcloud": gcloud, "gsutil": gsutil, "gradle": "true"})
    env["RESULTS_BUCKET"] = "my-bucket"
    job = next(j for j in jobs if j.target == ANDROID[1])
    run = subprocess.run(["bash", str(folder / job.folder / "submit.sh")], env=env, capture_output=True, text=True)
    assert run.returncode == 10, run.stderr
    calls = (tmp_path / "bin" / "calls.log").read_text()
    assert "firebase test android run" in calls and "--results-bucket my-bucket --results-dir slmpack/" in calls
    data, _ = collect(bundle, [folder / job.folder / "results"])
    assert next(a for a in data["artifacts"] if a["target"] == ANDROID[1])["device_benchmarks"][0]["ttft_ms"] == 81.0


# --- farm collect -------------------------------------------------------------------------------------------------


def test_collect_merges_android_json_and_ios_logs_beside_the_host_figures(bundle: Path, tmp_path: Path) -> None:
    data = read_manifest(bundle)
    android = write_json(tmp_path / "results" / "pixel" / "slmpack-benchmark.json", record(data, "android-xnnpack"))
    ios = record(data, "ios-xnnpack", device={"model": "iPhone16,1", "system": "Version 18.1", "cores": 6},
                 runtime="executorch", threads=6)  # fmt: skip
    xcodebuild_log(tmp_path / "results" / "iphone" / "xcodebuild.log", ios)
    shutil.copy(android, tmp_path / "results" / "pixel" / "slmpack-benchmark-copy.json")  # one record, twice
    result = CliRunner().invoke(app, ["farm", "collect", str(bundle), str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    merged = read_manifest(bundle)
    by_target = {a["target"]: a.get("device_benchmarks", []) for a in merged["artifacts"]}
    assert [r["device"]["model"] for r in by_target["android-xnnpack"]] == ["Pixel 8"]
    assert by_target["ios-xnnpack"][0]["threads"] == 6 and by_target["ios-coreml"] == []
    assert by_target["android-xnnpack"][0]["decode_tok_s_all"] == [48.0, 48.2, 48.5, 47.9, 48.3]
    report = (bundle / "report.html").read_text()
    assert "Host and device benchmarks" in report and "Pixel 8 (Android SDK 34)" in report
    assert "iPhone16,1 (Version 18.1)" in report and "host: " in report  # the host figures sit beside them
    assert "Pixel 8 (Android SDK 34)" in result.output
    # Each figure under its own column: TTFT, prefill, decode, peak RSS, load.
    row = next(line for line in result.output.splitlines() if "│ android-xnnpack │ Pixel" in line)
    figures = [row.index(value) for value in ("81.0", "172.8", "48.2", "310.5", "412.0")]
    assert figures == sorted(figures), row


def test_collecting_a_device_again_replaces_its_record(bundle: Path, tmp_path: Path) -> None:
    data = read_manifest(bundle)
    for decode in (48.2, 50.0):
        path = write_json(tmp_path / f"run-{decode}" / "slmpack-benchmark.json",
                          record(data, "android-litert", decode_tok_s=decode))  # fmt: skip
        merged, _ = collect(bundle, [path])
        rerender(bundle, data=merged)
    other = write_json(tmp_path / "s23" / "slmpack-benchmark.json",
                       record(data, "android-litert", device={"model": "SM-S911B", "sdk": 34}))  # fmt: skip
    merged, _ = collect(bundle, [other])
    records = next(a for a in merged["artifacts"] if a["target"] == "android-litert")["device_benchmarks"]
    assert [(r["device"]["model"], r["decode_tok_s"]) for r in records] == [("Pixel 8", 50.0), ("SM-S911B", 48.2)]


BAD_RESULTS = {
    "not JSON": ("slmpack-benchmark.json", '{"schema": "slmpack.benchmark/1", "target": ', "not valid JSON"),
    "another schema": ("slmpack-benchmark.json", {"schema": "other/2"}, "expected 'slmpack.benchmark/1'"),
    "no decode figure": ("slmpack-benchmark.json", {"decode_tok_s": None}, "decode_tok_s missing"),
    "no performance notes": ("slmpack-benchmark.json", {"performance": None}, "performance: "),
    "no iterations": ("slmpack-benchmark.json", {"iterations": 0}, "iterations: Input should be greater than 0"),
    "another build": ("slmpack-benchmark.json", {"artifact_bytes": 99_000_000}, "a result from another build"),
    "unknown target": ("slmpack-benchmark.json", {"target": "android-qnn"}, "'android-qnn' is not in this bundle"),
    "cut-off log line": ("device.log", 'SLMPACK_BENCHMARK {"schema": "slmpack.bench', "is not complete JSON"),
    "log without a record": ("slmpack-benchmark.jsonl", "I/TestRunner: finished\n", "holds no SLMPACK_BENCHMARK"),
}


@pytest.mark.parametrize("case", BAD_RESULTS)
def test_malformed_or_partial_results_are_rejected_and_nothing_is_merged(case: str, bundle: Path,
                                                                         tmp_path: Path) -> None:  # fmt: skip
    data = read_manifest(bundle)
    name, content, message = BAD_RESULTS[case]
    good = write_json(tmp_path / "good" / "slmpack-benchmark.json", record(data, "android-xnnpack"))
    bad = tmp_path / "bad" / name
    bad.parent.mkdir()
    if isinstance(content, dict):
        content = json.dumps({k: v for k, v in {**record(data, "android-xnnpack"), **content}.items() if v is not None})
    bad.write_text(content)
    before = {p: p.read_bytes() for p in (bundle / "manifest.json", bundle / "report.html")}
    result = CliRunner().invoke(app, ["farm", "collect", str(bundle), str(good), str(bad)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())  # as one line, however the terminal wrapped it
    assert "nothing merged" in said and message in said and str(bad) in said
    assert {p: p.read_bytes() for p in before} == before


def test_regressions_against_a_baseline_are_flagged_and_fail(bundle: Path, tmp_path: Path) -> None:
    data = read_manifest(bundle)
    baseline = tmp_path / "baseline"
    shutil.copytree(bundle, baseline)
    merged, _ = collect(baseline, [write_json(tmp_path / "old" / "slmpack-benchmark.json",
                                              record(data, "android-xnnpack"))])  # fmt: skip
    rerender(baseline, data=merged)
    slower = record(data, "android-xnnpack", decode_tok_s=48.2 * 0.9, ttft_ms=60.0, peak_rss_mb=-1.0,
                    performance={**record(data, "android-xnnpack")["performance"], "throttled": True,
                                 "thermal_after": "severe"})  # fmt: skip
    path = write_json(tmp_path / "new" / "slmpack-benchmark.json", slower)
    result = CliRunner().invoke(app, ["farm", "collect", str(bundle), str(path), "--baseline", str(baseline)])
    said = " ".join(result.output.split())
    assert result.exit_code == 1 and "1 figure(s) regressed by more than 5%" in said
    assert "decode_tok_s 48.2 → 43.4" in said
    (entry,) = next(a for a in read_manifest(bundle)["artifacts"] if a["target"] == "android-xnnpack")[
        "device_benchmarks"
    ]
    comparison = entry["baseline"]
    assert comparison["regressions"] == ["decode_tok_s"] and comparison["changes"]["ttft_ms"] == pytest.approx(0.35)
    assert "peak_rss_mb" not in comparison["changes"]  # a phone that could not say is not compared
    report = (bundle / "report.html").read_text()
    assert "-10.0% vs tinychat 0.1.0" in report and "throttled" in report
    # The same figures on another phone have no baseline to compare with: merged, not failed.
    elsewhere = write_json(tmp_path / "other" / "slmpack-benchmark.json",
                           {**slower, "device": {"model": "SM-S911B", "sdk": 34}})  # fmt: skip
    merged, regressions = collect(bundle, [elsewhere], baseline)
    assert not regressions


def _schema_fields(model: type[Any]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items() if field.is_required()}


@pytest.mark.parametrize("platform", ["android", "ios"])
def test_the_packages_benchmarks_write_every_field_collect_requires(platform: str, bundle: Path) -> None:
    from builder.bench.records import DeviceBenchmark, Performance

    decoder_fields = {"new_tokens", "prefill_tok_s", "decode_tok_s"}
    pattern = r'\.put\(\s*"(\w+)"' if platform == "android" else r'"(\w+)"(?:\]\s*=|:)'
    for package in (p for p in (bundle / platform).iterdir() if p.is_dir()):
        sources = [f for f in package.rglob("Benchmark*") if f.suffix in (".kt", ".swift")]
        written = set(re.findall(pattern, "\n".join(f.read_text() for f in sources)))
        missing = (_schema_fields(DeviceBenchmark) | _schema_fields(Performance) | decoder_fields) - written
        assert not missing, f"{package.name} does not write {missing}"
