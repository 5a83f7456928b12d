"""`slmpack farm collect`: merge the benchmark records a device farm returned into a bundle's manifest and
report, beside the host figures, and flag regressions against a baseline bundle.

Everything is checked first (schema, and that each record measured this bundle's artifact); one bad file
means nothing is merged. Records replace earlier ones of the same device, OS and prompt length."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from builder.bench.records import (
    FIGURES,
    ResultsError,
    check_against_bundle,
    device_label,
    host_benchmarks,
    read_results,
)
from builder.errors import UserInputError
from builder.packages import read_manifest

REGRESSION_THRESHOLD = 0.05


@dataclass(frozen=True)
class Regression:
    target: str
    device: str
    prompt_tokens: int
    figure: str
    before: float
    after: float

    def describe(self) -> str:
        return (f"{self.target} on {self.device}, {self.prompt_tokens}-token prompt: {self.figure} "
                f"{self.before:,.1f} → {self.after:,.1f}")  # fmt: skip


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return device_label(a) == device_label(b) and a["prompt_tokens"] == b["prompt_tokens"]


def compare(record: dict[str, Any], before: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Each figure's change against the baseline's record (positive = better) and those worse than `threshold`."""
    changes, regressions = {}, []
    for _, figure, higher_is_better in FIGURES:
        old, new = before.get(figure), record.get(figure)
        if not old or not new or old < 0 or new < 0:  # absent, or -1 where a phone could not say
            continue
        change = (new / old - 1) if higher_is_better else (old / new - 1)
        changes[figure] = round(change, 4)
        if change < -threshold:
            regressions.append(figure)
    return {"changes": changes, "regressions": regressions}


def collect(bundle: Path, results: list[Path], baseline: Path | None = None,
            threshold: float = REGRESSION_THRESHOLD) -> tuple[dict[str, Any], list[Regression]]:  # fmt: skip
    """The bundle's manifest with the records in `results` merged into `artifacts[].device_benchmarks`, and
    the regressions against `baseline`'s records of the same target, device and prompt length."""
    data = read_manifest(bundle)
    base = read_manifest(baseline) if baseline else None
    try:
        found = read_results(results)
        check_against_bundle(found, data)
    except ResultsError as error:
        listed = "\n".join(f"  - {problem}" for problem in error.problems)
        raise UserInputError(f"farm results rejected, nothing merged into {bundle}:\n{listed}\nFix: pass the "
                             "complete files the farm returned for this bundle's packages") from None  # fmt: skip
    artifacts = {entry["target"]: entry for entry in data["artifacts"]}
    base_artifacts = {entry["target"]: entry for entry in (base or {}).get("artifacts", [])}
    regressions: list[Regression] = []
    for item in found:
        record = {**item.record.to_json(), "source": Path(item.source).name}
        if base is not None:
            earlier = [r for r in base_artifacts.get(record["target"], {}).get("device_benchmarks", [])
                       if _same_run(r, record)]  # fmt: skip
            name = f"{base['package']['name']} {base['package']['version']}"
            if earlier:
                record["baseline"] = {"bundle": name, **compare(record, earlier[-1], threshold)}
                regressions += [Regression(record["target"], device_label(record), record["prompt_tokens"], figure,
                                           earlier[-1][figure], record[figure])
                                for figure in record["baseline"]["regressions"]]  # fmt: skip
            else:
                record["baseline"] = {"bundle": name, "note": "the baseline has no record of this device and prompt"}
        entry = artifacts[record["target"]]
        kept = [r for r in entry.get("device_benchmarks", []) if not _same_run(r, record)]
        entry["device_benchmarks"] = [*kept, record]
    return data, regressions


def _cell(value: float | None, change: float | None = None, regressed: bool = False) -> str:
    if value is None or value < 0:
        return "—"
    text = f"{value:,.1f}"
    if change is not None:
        text += f" ({change:+.0%}{' ⚠' if regressed else ''})"
    return text


def print_collected(data: dict[str, Any], console: Console) -> None:
    """Host figures and every device record, one row each, per artifact."""
    table = Table(title=f"{data['package']['name']} {data['package']['version']}: host and device benchmarks")
    for column in ("target", "measured on", "prompt", *(label for label, _, _ in FIGURES), "thermal"):
        table.add_column(column)
    for entry in data["artifacts"]:
        devices = entry.get("device_benchmarks") or []
        if not devices:
            continue
        for host in host_benchmarks(entry):
            table.add_row(entry["target"], f"host ({host.get('device', 'this machine')})", str(host["prompt_tokens"]),
                          *(_cell(host.get(key)) for _, key, _ in FIGURES), "")  # fmt: skip
        for record in devices:
            baseline = record.get("baseline") or {}
            changes, regressed = baseline.get("changes", {}), baseline.get("regressions", [])
            performance = record["performance"]
            thermal = f"{performance['thermal_before']} → {performance['thermal_after']}"
            if performance["throttled"] or performance["power_save"]:
                thermal += " ⚠ throttled" if performance["throttled"] else " ⚠ power saving"
            table.add_row(entry["target"], device_label(record), str(record["prompt_tokens"]),
                          *(_cell(record.get(key), changes.get(key), key in regressed) for _, key, _ in FIGURES),
                          thermal)  # fmt: skip
    console.print(table)
