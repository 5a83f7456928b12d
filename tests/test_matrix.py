"""slmpack matrix: the matrix file's checks, cell expansion, a local run where some cells fail, the cell cache,
and a 2x2 matrix under a local Ray instance."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from builder import matrix as matrix_module
from builder.cli import app
from builder.errors import UserInputError
from builder.matrix import CellResult, CellSpec, read_matrix
from builder.recipe import recipe_from_data
from tests.conftest import recipe_text

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TWO_TARGETS = '[[targets]]\nname = "android-xnnpack"\nquantize = "fp32"\n\n[[targets]]\nname = "ios-xnnpack"\n'


def write_matrix(folder: Path, body: str, recipe: str | None = None) -> Path:
    """A base recipe (tiny Llama, android-xnnpack and ios-xnnpack unless `recipe` says otherwise) and a
    matrix file beside it."""
    (folder / "base.toml").write_text(recipe if recipe is not None else recipe_text(targets=TWO_TARGETS))
    path = folder / "matrix.toml"
    path.write_text(textwrap.dedent(body))
    return path


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["matrix", *args], terminal_width=200)
    return result.exit_code, result.output


@pytest.mark.parametrize(("body", "message"), [
    ('recipe = "base.toml"\nbogus = 1\n[axes]\n"compress.quantize" = ["a8w8"]\n',
     r"unknown key 'bogus'\. Fix: a matrix file holds `recipe` and an \[axes\] table only"),
    ('[axes]\n"compress.quantize" = ["a8w8"]\n', r"'recipe' is missing or not a string\. Fix: add recipe ="),
    ('recipe = "nope.toml"\n[axes]\n"compress.quantize" = ["a8w8"]\n',
     r"'recipe' = 'nope\.toml': no such file .*nope\.toml\. Fix: give the base recipe's path relative to the matrix"),
    ('recipe = "base.toml"\n', r"no \[axes\] table, or an empty one\. Fix: add one"),
    ('recipe = "base.toml"\n[axes]\n', r"no \[axes\] table, or an empty one"),
    ('recipe = "base.toml"\n[axes]\n"compress.quantize" = "a8w8"\n',
     r"\[axes\] 'compress\.quantize' = 'a8w8' is not a non-empty list\. Fix: list the values"),
    ('recipe = "base.toml"\n[axes]\n"compress.quantize" = []\n', r"'compress\.quantize' = \[\] is not a non-empty"),
    ('recipe = "base.toml"\n[axes]\ncompress.quantize = ["a8w8"]\n',
     r"\[axes\] 'compress' is a table, not a list of values\. Fix: quote a dotted key, e\.g\. \"compress\.quantize\""),
    ('recipe = "base.toml"\n[axes]\n"compress.quantise" = ["a8w8"]\n',
     r"\[axes\] 'compress\.quantise' is not a recipe key\. Fix: use a dotted key of the recipe"),
    ('recipe = "base.toml"\n[axes]\n"targets.quantize" = ["a8w8"]\n', r"'targets\.quantize' is not a recipe key"),
    ('recipe = "base.toml"\n[axes]\ntargets = ["android-gpu"]\n',
     r"\[axes\] 'targets': 'android-gpu' is not a known target\. Fix: use one of .*android-xnnpack"),
    ('recipe = "base.toml"\n[axes]\n"compress.quantize" = ["a8w8", "a8w4", "a8w8"]\n',
     r"'compress\.quantize' lists a value twice.*Fix: list each value once"),
    ('recipe = "base.toml"\n[axes]\n"model.source.name" = ["x"]\n', r"'model\.source\.name' is not a recipe key"),
    ('recipe = "base.toml"\n[axes\n', r"not valid TOML"),
])  # fmt: skip
def test_matrix_file_errors_name_the_file_key_and_fix(tmp_path: Path, body: str, message: str) -> None:
    path = write_matrix(tmp_path, body)
    with pytest.raises(UserInputError, match=message) as error:
        read_matrix(path, tmp_path / "out", benchmark=False)
    assert str(error.value).startswith(str(path))


def test_bad_input_exits_2_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, output = run_cli(str(tmp_path / "missing.toml"))
    assert code == 2 and "matrix file not found" in output and "Traceback" not in output
    path = write_matrix(tmp_path, 'recipe = "base.toml"\n[axes]\n"compress.quantize" = ["a8w8"]\n')
    code, output = run_cli(str(path), "--address", "127.0.0.1:6379")
    assert code == 2 and "--address names a Ray cluster, which --executor local does not use" in output
    code, output = run_cli(str(path), "--executor", "slurm")
    assert code == 2
    if importlib.util.find_spec("ray") is not None:
        code, output = run_cli(str(path), "--executor", "ray", "--cpus-per-cell", "4096")
        assert code == 2 and "--cpus-per-cell 4096 asks for more CPUs than this machine has" in output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, output = run_cli(str(path), "--executor", "ray")
    assert code == 2 and "pip install 'slmpack[ray]'" in output
    assert not (tmp_path / "matrix").exists() and not Path("matrix").exists()


def test_cells_are_the_product_of_the_axes_and_the_targets_axis_picks_one_target(tmp_path: Path) -> None:
    path = write_matrix(tmp_path, """\
        recipe = "base.toml"
        [axes]
        "model.source" = ["builtin:tiny-llama", "builtin:tiny-qwen2"]
        "compress.prune" = [{ method = "structured", sparsity = 0.2 }]
        targets = ["android-xnnpack", "android-litert"]
    """)  # fmt: skip
    cells = read_matrix(path, tmp_path / "out", benchmark=False).cells
    assert [c.label for c in cells] == [
        f'model.source=builtin:tiny-{m}, compress.prune={{"method": "structured", "sparsity": 0.2}}, target={t}'
        for m in ("llama", "qwen2") for t in ("android-xnnpack", "android-litert")
    ]  # fmt: skip
    first = cells[0]
    # The base recipe's entry of that name, with its override; a target the recipe lacks gets a bare entry.
    assert first.recipe["targets"] == [{"name": "android-xnnpack", "quantize": "fp32"}]
    assert cells[1].recipe["targets"] == [{"name": "android-litert"}]
    assert first.recipe["model"]["source"] == "builtin:tiny-llama" and cells[2].recipe["model"]["source"] == (
        "builtin:tiny-qwen2"
    )
    assert first.recipe["compress"] == {"quantize": "a8w4", "prune": {"method": "structured", "sparsity": 0.2}}
    assert Path(first.folder) == (tmp_path / "out" / "cells" / first.id).resolve()
    assert Path(first.recipe_path) == (tmp_path / "base.toml").resolve()
    assert len({c.id for c in cells}) == 4 and all(re.fullmatch(r"[0-9a-f]{12}", c.id) for c in cells)
    # Stable across reads; the benchmark setting is part of what a cell builds.
    assert [c.id for c in read_matrix(path, tmp_path / "elsewhere", benchmark=False).cells] == [c.id for c in cells]
    assert read_matrix(path, tmp_path / "out", benchmark=True).cells[0].id != first.id
    # Without a targets axis every cell builds all the recipe's targets.
    path.write_text('recipe = "base.toml"\n[axes]\n"compress.quantize" = ["a8w8", "a8w4"]\n')
    cells = read_matrix(path, tmp_path / "out", benchmark=False).cells
    assert [[t["name"] for t in c.recipe["targets"]] for c in cells] == [["android-xnnpack", "ios-xnnpack"]] * 2
    assert [c.label for c in cells] == ["compress.quantize=a8w8", "compress.quantize=a8w4"]


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*matrix.toml")), ids=lambda p: p.name)
def test_example_matrices_expand_to_valid_recipes(example: Path, tmp_path: Path) -> None:
    cells = read_matrix(example, tmp_path, benchmark=True).cells
    assert len(cells) >= 2
    for spec in cells:
        assert recipe_from_data(spec.recipe, Path(spec.recipe_path)).targets


LOCAL = """\
    recipe = "base.toml"
    [axes]
    "model.source" = ["builtin:tiny-llama", "builtin:nope"]
    "compress.quantize" = ["a8w8", "w8"]
    targets = ["android-xnnpack"]
"""


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A local 2x2 matrix where three cells fail fast (XNNPACK refuses w8; no such model) and one builds."""
    root = tmp_path_factory.mktemp("matrix-local")
    path = write_matrix(root, LOCAL, recipe=recipe_text())  # android-xnnpack at compress.quantize
    code, output = run_cli(str(path), "--out", str(root / "out"), "--no-bench")
    return root / "out", code, output


def table_rows(output: str) -> list[tuple[str, str]]:
    """(status, line) of each row of the comparison table (these tests build android-xnnpack only)."""
    rows = [(m.group(1), line) for line in output.splitlines()
            if (m := re.search(r"\s(built|cached|failed)\s+android-xnnpack\s", line))]  # fmt: skip
    return [(status, line.strip()) for status, line in rows]


def _cells(out: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((out / "matrix.json").read_text())
    assert data["schema"] == "slmpack.matrix/1" and data["executor"] in ("local", "ray")
    return {c["label"]: c for c in data["cells"]}


def test_local_failed_cells_are_reported_and_the_others_built(local_run: tuple[Path, int, str]) -> None:
    out, code, output = local_run
    assert code == 1, output
    assert "3 of 4 cells failed" in output and str(out / "matrix.json") in output and "Traceback" not in output
    cells = _cells(out)
    good = cells["model.source=builtin:tiny-llama, compress.quantize=a8w8, target=android-xnnpack"]
    assert good["status"] == "built" and good["error"] is None and good["seconds"] > 0
    bundle = Path(good["bundle"])
    assert (bundle / "manifest.json").is_file() and bundle.parent == out / "cells" / good["id"]
    assert (bundle.parent / "cell.json").is_file()
    (artifact,) = good["artifacts"]
    assert artifact["target"] == "android-xnnpack" and artifact["scheme"] == "a8w8" and artifact["bytes"] > 10_000
    assert artifact["validation"] == "passed" and artifact["parameters_compressed"] > 0
    assert artifact["perplexity"] > 1 and 0.5 <= artifact["top1_agreement"] <= 1 and artifact["kl_divergence"] >= 0
    assert artifact["decode_tok_s"] is None and "--no-bench" in artifact["benchmark_note"]
    refused = cells["model.source=builtin:tiny-llama, compress.quantize=w8, target=android-xnnpack"]
    assert refused["status"] == "failed" and refused["error"].startswith("UserInputError: ")
    assert "'compress.quantize' = 'w8'" in refused["error"] and "android-xnnpack" in refused["error"]
    unknown = cells["model.source=builtin:nope, compress.quantize=a8w8, target=android-xnnpack"]
    assert unknown["status"] == "failed" and "'builtin:nope' is not a built-in model" in unknown["error"]
    for cell in (refused, unknown):
        assert "\n" not in cell["error"] and cell["bundle"] is None and cell["artifacts"] == []
        assert not (out / "cells" / cell["id"] / "cell.json").exists()  # failed cells are not cached
    # One table: the built row with its figures, the failed rows, then each failure's message.
    rows = table_rows(output)
    assert [status for status, _ in rows] == ["built", "failed", "failed", "failed"]
    assert rows[0][1].startswith("builtin:tiny-llama, a8w8") and f"{artifact['perplexity']:.2f}" in rows[0][1]
    assert "✗ " + refused["id"] in output


def test_a_second_run_reuses_finished_cells_and_retries_failed_ones(
    local_run: tuple[Path, int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _, _ = local_run
    before = _cells(out)
    good = before["model.source=builtin:tiny-llama, compress.quantize=a8w8, target=android-xnnpack"]
    manifest = Path(good["bundle"]) / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    built: list[str] = []

    def no_build(spec: CellSpec, console: object) -> Path:
        built.append(spec.label)
        raise RuntimeError("build stubbed out")

    monkeypatch.setattr(matrix_module, "_build", no_build)
    matrix_file = out.parent / "matrix.toml"
    code, output = run_cli(str(matrix_file), "--out", str(out), "--no-bench")
    assert code == 1 and "3 of 4 cells failed" in output
    cells = _cells(out)
    cached = cells[good["label"]]
    assert cached["status"] == "cached" and cached["artifacts"] == good["artifacts"]
    assert cached["bundle"] == good["bundle"] and manifest.stat().st_mtime_ns == stamp
    assert sorted(built) == sorted(label for label, c in before.items() if c["status"] == "failed")
    assert all(c["error"] == "RuntimeError: build stubbed out" for label, c in cells.items() if label in built)
    assert "✓ cached " + good["id"] in output
    assert [status for status, _ in table_rows(output)] == ["cached", "failed", "failed", "failed"]
    # --force rebuilds a finished cell; when that build fails, its old record goes (its bundle stays).
    built.clear()
    code, output = run_cli(str(matrix_file), "--out", str(out), "--no-bench", "--force")
    assert code == 1 and "4 of 4 cells failed" in output and len(built) == 4
    assert not (out / "cells" / good["id"] / "cell.json").exists() and manifest.is_file()


def _two_by_two(root: Path) -> Path:
    return write_matrix(root, """\
        recipe = "base.toml"
        [axes]
        "model.source" = ["builtin:tiny-llama", "builtin:tiny-qwen2"]
        "compress.quantize" = ["a8w8", "a8w4"]
        targets = ["android-xnnpack"]
    """, recipe=recipe_text())  # fmt: skip


# Four full builds in Ray workers, each importing torch anew: the slowest test by far (over 5 minutes on
# two cores). The default run keeps Ray covered by the crashed-worker test below and matrix builds by the
# local executor's tests.
@pytest.mark.slow
def test_a_2x2_matrix_runs_under_local_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'slmpack[ray]')")
    out = tmp_path / "out"
    code, output = run_cli(str(_two_by_two(tmp_path)), "--executor", "ray", "--out", str(out), "--no-bench")
    assert code == 0, output
    assert "Running 4 cells on a local Ray instance" in output and "Traceback" not in output
    cells = _cells(out)
    assert len(cells) == 4 and {c["status"] for c in cells.values()} == {"built"}
    for cell in cells.values():
        assert (Path(cell["bundle"]) / "manifest.json").is_file() and cell["log"].endswith("build.log")
        assert "Writing bundle" in Path(cell["log"]).read_text()  # the worker's build output
        (artifact,) = cell["artifacts"]
        assert artifact["scheme"] == cell["settings"]["compress.quantize"] and artifact["validation"] == "passed"
        assert artifact["perplexity"] > 1 and 0.5 <= artifact["top1_agreement"] <= 1 and artifact["bytes"] > 10_000
    assert [status for status, _ in table_rows(output)] == ["built"] * 4
    sizes = {c["settings"]["compress.quantize"]: c["artifacts"][0]["bytes"] for c in cells.values()}
    assert sizes["a8w4"] < sizes["a8w8"]  # 4-bit weights make a smaller file than 8-bit


def _crash_or_succeed(spec: CellSpec, console: object = None) -> CellResult:
    if spec.id == "crash":
        os._exit(1)  # the worker process dies mid-task, as a native crash or an OOM kill would
    return CellResult(spec.id, spec.label, spec.settings, "built", seconds=0.1)


def test_a_crashed_ray_worker_fails_only_its_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'slmpack[ray]')")
    from rich.console import Console

    from builder import executors

    monkeypatch.setattr(executors, "run_cell", _crash_or_succeed)
    specs = [CellSpec(i, f"cell {i}", {}, {}, "", str(tmp_path / i), False) for i in ("crash", "fine")]
    finished: list[str] = []
    results = executors.RayExecutor(Console(quiet=True)).run(specs, lambda r: finished.append(r.id))
    assert [r.id for r in results] == ["crash", "fine"] and sorted(finished) == ["crash", "fine"]
    assert results[1].status == "built"
    assert results[0].status == "failed" and results[0].error.startswith("WorkerCrashedError: ")
