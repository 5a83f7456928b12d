"""The command line: help with examples everywhere, and the informational commands."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from builder.cli import app

COMMANDS = ["build", "eval", "sweep", "matrix", "bench", "run", "inspect", "render", "targets", "doctor"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Example: slmpack " + command in result.output


def test_targets_lists_schemes() -> None:
    result = CliRunner().invoke(app, ["targets"], terminal_width=200)
    assert result.exit_code == 0
    assert "android-xnnpack" in result.output and "ios-xnnpack" in result.output
    assert "fp32, a8w8, a8w4" in result.output


def test_doctor_reports_versions_and_assets() -> None:
    result = CliRunner().invoke(app, ["doctor"], terminal_width=200)
    assert result.exit_code == 0
    assert "executorch" in result.output and "builtin:shakespeare" in result.output


def test_inspect_missing_file_is_exit_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope.pte")])
    assert result.exit_code == 2
    garbage = tmp_path / "garbage.pte"
    garbage.write_bytes(b"not a program")
    result = CliRunner().invoke(app, ["inspect", str(garbage)])
    assert result.exit_code == 2
    assert "not an ExecuTorch program" in result.output
