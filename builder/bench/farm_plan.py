"""`slmpack farm plan`: the job specs and exact commands that run a bundle's packages' benchmark tests on a
device farm (AWS Device Farm, Firebase Test Lab, BrowserStack App Automate), one job per package.

The instrumentation itself lives in the packages (their `BenchmarkTest`s and `devicefarm/` specs); a plan
adds what a submission needs: the device selection in each farm's own format, a script that builds the test
binaries, uploads them, starts the run, waits, and downloads the results where `slmpack farm collect` reads
them. Every data file is written by a JSON or YAML dumper and every value in a script is shell-quoted, so a
device name cannot change what a file means.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.bundle import atomic_directory
from builder.errors import UserInputError
from builder.packages import read_manifest
from builder.render import render
from builder.render.android import module_name
from builder.render.ios import package_name

FARMS = ("aws", "firebase", "browserstack")
# Phones each farm offers widely, used where --devices is not given.
DEFAULT_DEVICES = {
    ("aws", "android"): ["Google Pixel 8", "Samsung Galaxy S23"],
    ("aws", "ios"): ["Apple iPhone 15"],
    ("firebase", "android"): ["oriole:33", "a51:31"],
    ("firebase", "ios"): ["iphone15pro:18.0"],
    ("browserstack", "android"): ["Google Pixel 8-14.0", "Samsung Galaxy S23-13.0"],
}
# Each farm's device syntax. Only these characters are accepted, quoting aside, so no device can smuggle
# YAML, JSON or shell syntax into a plan.
_DEVICE_FORMS = {
    "aws": (re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()+-]*|arn:aws:devicefarm:[a-z0-9-]*::device:[A-Za-z0-9]+"),
            "a model name as Device Farm lists it (e.g. 'Google Pixel 8') or a device ARN"),
    "firebase": (re.compile(r"[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+"),
                 "MODEL:VERSION as `gcloud firebase test android|ios models list` shows (e.g. oriole:33)"),
    "browserstack": (re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._()+]*-[0-9]+(\.[0-9]+)*"),
                     "NAME-OSVERSION as BrowserStack lists it (e.g. 'Google Pixel 8-14.0')"),
}  # fmt: skip
AWS_TEST_TYPES = {"android": ("INSTRUMENTATION", "ANDROID_APP", "INSTRUMENTATION_TEST_PACKAGE",
                              "INSTRUMENTATION_TEST_SPEC"),
                  "ios": ("XCTEST", "IOS_APP", "XCTEST_TEST_PACKAGE", "XCTEST_TEST_SPEC")}  # fmt: skip


@dataclass
class Job:
    """One package on one farm: where its files are and how to submit it."""

    farm: str
    platform: str
    target: str
    package: str  # the package folder, relative to the bundle
    folder: str  # the job folder, relative to the plan
    devices: list[str]
    files: list[str] = field(default_factory=list)
    submit: str = ""  # the command that runs the whole job


def check_devices(farm: str, platform: str, devices: list[str]) -> list[str]:
    pattern, form = _DEVICE_FORMS[farm]
    for device in devices:
        if not pattern.fullmatch(device):
            raise UserInputError(f"--devices {device!r} is not a {farm} device. Fix: give {form}")
    return devices or DEFAULT_DEVICES[(farm, platform)]


def _android_context(data: dict[str, Any], artifact: dict[str, Any]) -> dict[str, Any]:
    module = module_name(data, artifact)
    namespace = data["package"]["android_namespace"]
    return {
        "module": module,
        "namespace": namespace,
        "app_apk": "sample/build/outputs/apk/debug/sample-debug.apk",
        "test_apk": f"build/outputs/apk/androidTest/debug/{module}-debug-androidTest.apk",
        "test_classes": [f"{namespace}.GoldenOutputTest", f"{namespace}.BenchmarkTest"],
        "build": f"gradle -p .. :{module}:assembleDebugAndroidTest :{module}:sample:assembleDebug",
    }


def _ios_context(data: dict[str, Any], artifact: dict[str, Any]) -> dict[str, Any]:
    module = data["package"]["ios_module"]
    return {"module": module, "scheme": f"{module}Sample", "products": "Sample/build/Build/Products"}


def _firebase_spec(platform: str, context: dict[str, Any], devices: list[str], timeout: str) -> dict[str, Any]:
    """A gcloud argument file (`gcloud firebase test android|ios run FILE:benchmark`)."""
    chosen = [dict(zip(("model", "version"), device.split(":", 1), strict=True)) for device in devices]
    if platform == "android":
        spec = {"type": "instrumentation", "app": context["app_apk"], "test": context["test_apk"],
                "test-runner-class": "androidx.test.runner.AndroidJUnitRunner",
                "test-targets": [f"class {name}" for name in context["test_classes"]],
                "environment-variables": {"iterations": "5", "warmup": "1"},
                "directories-to-pull": [f"/sdcard/Android/data/{context['namespace']}.test/files"]}  # fmt: skip
    else:
        spec = {"test": "tests.zip"}
    return {"benchmark": {**spec, "device": chosen, "timeout": timeout}}


def _aws_rules(platform: str, devices: list[str]) -> list[dict[str, str]]:
    """Device pool rules: rule values are JSON text inside the JSON, as the Device Farm API wants them."""
    arns = [d for d in devices if d.startswith("arn:")]
    names = [d for d in devices if not d.startswith("arn:")]
    rules = [{"attribute": "PLATFORM", "operator": "EQUALS", "value": json.dumps(platform.upper())}]
    if arns:
        rules.append({"attribute": "ARN", "operator": "IN", "value": json.dumps(arns)})
    if names:
        rules.append({"attribute": "MODEL", "operator": "IN", "value": json.dumps(names)})
    return rules


def _browserstack_build(context: dict[str, Any], devices: list[str], project: str) -> dict[str, Any]:
    """The build request; `app` and `testSuite` are the upload URLs the script fills in."""
    return {"app": "", "testSuite": "", "devices": devices, "project": project, "deviceLogs": True,
            "class": context["test_classes"], "instrumentationOptions": {"iterations": "5", "warmup": "1"}}  # fmt: skip


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_job(staging: Path, bundle: Path, final: Path, job: Job, artifact: dict[str, Any],
               data: dict[str, Any]) -> None:  # fmt: skip
    folder = staging / job.folder
    folder.mkdir(parents=True)
    package = bundle / job.package
    context = (_android_context if job.platform == "android" else _ios_context)(data, artifact)
    name = f"{data['package']['name']}-{data['package']['version']}-{job.target}"
    if job.farm == "aws":
        shutil.copyfile(package / "devicefarm" / "aws-devicefarm-testspec.yml", folder / "testspec.yml")
        _write_json(folder / "device-pool-rules.json", _aws_rules(job.platform, job.devices))
        job.files += ["testspec.yml", "device-pool-rules.json"]
    elif job.farm == "firebase":
        spec = _firebase_spec(job.platform, context, job.devices, "20m")
        (folder / "matrix.yml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        job.files.append("matrix.yml")
    else:
        _write_json(folder / "build.json", _browserstack_build(context, job.devices, name))
        job.files.append("build.json")
    script = render(f"farm/{job.farm}-submit.sh.j2", {
        "job": job, "context": context, "name": name, "pool_size": len(job.devices),
        "aws_types": AWS_TEST_TYPES[job.platform], "bundle_name": bundle.name,
        # The script finds the package from its own folder, wherever the plan is moved with its bundle.
        "package_from_job": os.path.relpath(bundle.resolve() / job.package, (final / job.folder).resolve()),
        "bundle_from_job": os.path.relpath(bundle.resolve(), (final / job.folder).resolve()),
    })  # fmt: skip
    (folder / "submit.sh").write_text(script, encoding="utf-8")
    (folder / "submit.sh").chmod(0o755)
    job.files.append("submit.sh")
    job.submit = f"bash {job.folder}/submit.sh"


def plan(bundle: Path, farm: str, platform: str | None, devices: list[str], out: Path | None) -> tuple[Path, list[Job]]:
    """Write the plan for every package of `platform` (default: the bundle's first platform) into `out`
    (default BUNDLE/farm/FARM-PLATFORM), atomically; returns the folder and its jobs."""
    if farm not in FARMS:
        raise UserInputError(f"--farm {farm!r} is not a farm slmpack plans for. Fix: use one of {', '.join(FARMS)}")
    data = read_manifest(bundle)
    platforms = list(dict.fromkeys(a["platform"] for a in data["artifacts"]))
    platform = platform or platforms[0]
    if platform not in platforms:
        raise UserInputError(f"--platform {platform}: {bundle} has no {platform} package (it has "
                             f"{', '.join(platforms)}). Fix: pick one of those")  # fmt: skip
    if (farm, platform) not in DEFAULT_DEVICES:
        raise UserInputError(f"{farm} cannot run the {platform} packages' benchmark: BrowserStack App Automate runs "
                             "XCUITest UI suites only, and the benchmark is an XCTest unit test. Fix: use --farm "
                             "aws or --farm firebase for iOS")  # fmt: skip
    chosen = check_devices(farm, platform, devices)
    final = out or bundle / "farm" / f"{farm}-{platform}"
    downloaded = sorted(final.glob("*/results")) if final.is_dir() else []
    if downloaded:
        raise UserInputError(f"{final} holds downloaded results ({downloaded[0]}), which a new plan would replace. "
                             "Fix: collect and move them, or pass --out for the new plan")  # fmt: skip
    jobs = []
    with atomic_directory(final) as staging:
        for artifact in data["artifacts"]:
            if artifact["platform"] != platform:
                continue
            folder = module_name(data, artifact) if platform == "android" else package_name(data, artifact)
            job = Job(farm, platform, artifact["target"], f"{platform}/{folder}", folder, chosen)
            _write_job(staging, bundle, final, job, artifact, data)
            jobs.append(job)
        _write_json(staging / "plan.json", {"schema": "slmpack.farm-plan/1", "bundle": bundle.name, "farm": farm,
                                            "platform": platform, "jobs": [asdict(job) for job in jobs]})  # fmt: skip
        (staging / "README.md").write_text(render("farm/README.md.j2", {
            "farm": farm, "platform": platform, "jobs": jobs, "bundle": bundle.name,
            "collect": collect_command(bundle, final, jobs)}), encoding="utf-8")  # fmt: skip
        validate_plan(staging)
    return final, jobs


def collect_command(bundle: Path, plan_folder: Path, jobs: list[Job]) -> str:
    results = " ".join(str(plan_folder / job.folder / "results") for job in jobs)
    return f"slmpack farm collect {bundle} {results}"


def validate_plan(folder: Path) -> None:
    """Every file of a plan parses and holds what its farm requires; the scripts pass `bash -n`."""
    summary = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    problems = []
    for job in summary["jobs"]:
        where = folder / job["folder"]
        for name in job["files"]:
            path = where / name
            if not path.is_file():
                problems.append(f"{path}: missing")
            elif name.endswith(".sh"):
                check = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
                if check.returncode:
                    problems.append(f"{path}: {check.stderr.strip()}")
            else:
                text = path.read_text(encoding="utf-8")
                problems += [f"{path}: {p}" for p in _check_spec(name, json.loads(text) if name.endswith(".json")
                                                                 else yaml.safe_load(text), job)]  # fmt: skip
    if problems:
        raise UserInputError("the farm plan does not validate:\n" + "\n".join(f"  - {p}" for p in problems))


def _check_spec(name: str, spec: Any, job: dict[str, Any]) -> list[str]:
    if name == "testspec.yml":
        ok = isinstance(spec, dict) and spec.get("version") == 0.1 and "test" in spec.get("phases", {})
        return [] if ok else ["an AWS test spec needs version 0.1 and a test phase"]
    if name == "device-pool-rules.json":
        ok = all({"attribute", "operator", "value"} <= set(rule) and isinstance(json.loads(rule["value"]), str | list)
                 for rule in spec)  # fmt: skip
        return [] if ok else ["each device pool rule needs attribute, operator and a JSON-encoded value"]
    if name == "matrix.yml":
        group = spec.get("benchmark", {})
        chosen = [f"{d.get('model')}:{d.get('version')}" for d in group.get("device", [])]
        ok = "test" in group and chosen == job["devices"]
        return [] if ok else ["a Firebase argument group needs `test` and one `device` per chosen device"]
    if name == "build.json":
        ok = {"app", "testSuite", "devices"} <= set(spec) and spec["devices"] == job["devices"]
        return [] if ok else ["a BrowserStack build needs app, testSuite and the chosen devices"]
    return [f"unknown plan file {name}"]
