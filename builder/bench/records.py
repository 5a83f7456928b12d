"""Benchmark records that come back from phones: the DESIGN §8 schema the generated packages write
(`slmpack.benchmark/1`), read from whatever a device farm returns.

Android writes `slmpack-benchmark.json`; both platforms also log one `SLMPACK_BENCHMARK {...}` line, which
survives in logcat dumps, instrumentation output and xcodebuild logs. Every record is checked against the
schema and against the bundle it claims to measure before anything is merged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, NonNegativeInt, PositiveInt, ValidationError

SCHEMA = "slmpack.benchmark/1"
LOG_MARKER = "SLMPACK_BENCHMARK "
# Names a farm gives the files it returns: the JSON file, and logs that carry the marker line.
RESULT_FILES = ("slmpack-benchmark*.json", "slmpack-benchmark*.jsonl", "*.log", "*.txt", "logcat*")


# The DESIGN §8 figures tables show and compare, in their column order: (label, field, higher is better).
FIGURES = (("TTFT ms", "ttft_ms", False), ("prefill tok/s", "prefill_tok_s", True),
           ("decode tok/s", "decode_tok_s", True), ("peak RSS MB", "peak_rss_mb", False),
           ("load ms", "model_load_ms", False))  # fmt: skip


def host_benchmarks(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """A manifest artifact's host benchmark at every prompt length; a bundle never benched by `slmpack bench`
    has only its build's figure."""
    return [b for b in entry.get("benchmarks") or [entry.get("benchmark")] if b]


class Performance(BaseModel):
    """The performance-lock notes: phones are not clock-locked, so a result says how warm it ran."""

    model_config = ConfigDict(extra="allow")
    thermal_before: str
    thermal_after: str
    throttled: bool
    power_save: bool
    cooldown_ms: NonNegativeFloat
    sustained_performance: str


class Device(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1)


class DeviceBenchmark(BaseModel):
    """One on-device measurement. Extra fields (per-run lists, device facts) are kept as they came."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    schema_: Literal["slmpack.benchmark/1"] = Field(alias="schema")
    class_name: str
    target: str
    quantization: str
    runtime: str
    device: Device
    performance: Performance
    model_load_ms: NonNegativeFloat
    artifact_bytes: PositiveInt
    warmup: NonNegativeInt
    iterations: PositiveInt
    peak_rss_mb: float
    prompt_tokens: PositiveInt
    ttft_ms: float = Field(gt=0)
    new_tokens: PositiveInt | None = None
    prefill_tok_s: float | None = Field(default=None, gt=0)
    decode_tok_s: float | None = Field(default=None, gt=0)
    threads: PositiveInt | None = None

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def device_label(record: dict[str, Any]) -> str:
    """'Pixel 8 (Android SDK 34)': the device and OS a record was measured on, as stored in a manifest."""
    device = record["device"]
    system = f"Android SDK {device['sdk']}" if "sdk" in device else str(device.get("system", "")).strip()
    return f"{device['model']} ({system})" if system else device["model"]


@dataclass(frozen=True)
class Found:
    record: DeviceBenchmark
    source: str  # "file" or "file:line", for messages


class ResultsError(Exception):
    """Every problem found in a set of result files, so one run names them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def result_files(paths: list[Path]) -> list[Path]:
    """The files named, and in each folder named the files a farm returns results in (recursively)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted({f for pattern in RESULT_FILES for f in path.rglob(pattern) if f.is_file()})
        else:
            files.append(path)
    return files


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"{where}: {'missing' if item['type'] == 'missing' else item['msg']}")
    return "; ".join(parts)


def _candidates(path: Path) -> list[tuple[str, Any]] | str:
    """The raw records in one file with where each came from, or why the file holds none."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return f"{path}: cannot be read as UTF-8 text ({error})"
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            return f"{path}: not valid JSON ({error.msg} at line {error.lineno})"
        if isinstance(data, list):
            return [(f"{path}[{index}]", item) for index, item in enumerate(data)]
        return [(str(path), data)]
    found: list[tuple[str, Any]] = []
    for number, line in enumerate(text.splitlines(), 1):
        _, marker, payload = line.partition(LOG_MARKER)
        if not marker:
            continue
        try:
            found.append((f"{path}:{number}", json.loads(payload)))
        except json.JSONDecodeError as error:
            return f"{path}:{number}: the {LOG_MARKER.strip()} line is not complete JSON ({error.msg})"
    return found or f"{path}: holds no {LOG_MARKER.strip()} line"


def read_results(paths: list[Path]) -> list[Found]:
    """Every record in `paths`, each valid against the schema; else ResultsError naming each problem."""
    files = result_files(paths)
    problems = [f"{path}: no such file or folder" for path in paths if not path.exists()]
    if not files and not problems:
        problems.append(f"no result files in {', '.join(map(str, paths))} (looked for {', '.join(RESULT_FILES)})")
    found: list[Found] = []
    for path in files:
        candidates = _candidates(path)
        if isinstance(candidates, str):
            # A folder's stray log without a record is no problem; a file named on the command line is.
            if path in paths or path.name.startswith("slmpack-benchmark"):
                problems.append(candidates)
            continue
        for source, raw in candidates:
            if not isinstance(raw, dict):
                problems.append(f"{source}: a record is a JSON object, found {type(raw).__name__}")
                continue
            if raw.get("schema") != SCHEMA:
                problems.append(f"{source}: schema is {raw.get('schema')!r}, expected {SCHEMA!r}")
                continue
            try:
                found.append(Found(DeviceBenchmark.model_validate(raw), source))
            except ValidationError as error:
                problems.append(f"{source}: partial or malformed record: {_validation_message(error)}")
    if problems:
        raise ResultsError(problems)
    # A farm returns one record in several places (the JSON file and the log line): keep each once.
    unique: dict[str, Found] = {}
    for item in found:
        unique.setdefault(json.dumps(item.record.to_json(), sort_keys=True), item)
    return list(unique.values())


def check_against_bundle(found: list[Found], data: dict[str, Any]) -> None:
    """Each record must measure one of this bundle's artifacts, as built: its target, class, scheme and
    file size, and for a decoder the decode figures too."""
    artifacts = {a["target"]: a for a in data["artifacts"]}
    class_name = data["package"].get("class_name") or data["package"]["ios_module"]
    decoder = data["model"]["task"] == "text-generation"
    problems = []
    for item in found:
        r, where = item.record, item.source
        artifact = artifacts.get(r.target)
        if artifact is None:
            problems.append(f"{where}: target {r.target!r} is not in this bundle (it has {', '.join(artifacts)})")
            continue
        if r.class_name != class_name:
            problems.append(f"{where}: class_name {r.class_name!r} is not this bundle's {class_name!r}")
        if r.quantization != artifact["quantization"]:
            problems.append(f"{where}: quantization {r.quantization!r}, but {r.target} is {artifact['quantization']}")
        if r.artifact_bytes != artifact["bytes"]:
            problems.append(f"{where}: measured a {r.artifact_bytes:,}-byte model, but {r.target}'s artifact is "
                            f"{artifact['bytes']:,} bytes: a result from another build")  # fmt: skip
        if decoder:
            missing = [k for k in ("new_tokens", "prefill_tok_s", "decode_tok_s") if getattr(r, k) is None]
            if missing:
                problems.append(f"{where}: partial decoder record: {', '.join(missing)} missing")
    if problems:
        raise ResultsError(problems)
