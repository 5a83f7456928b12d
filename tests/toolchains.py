"""What the check toolchains share: where they live, how their install scripts describe them
(`toolchain.env`), and how their commands run and report."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def toolchain_dir(name: str) -> Path:
    """``$SLMPACK_TOOLCHAINS/<name>``, or ``<repo>/.toolchains/<name>`` when the variable is unset."""
    base = os.environ.get("SLMPACK_TOOLCHAINS")
    return (Path(base).resolve() if base else REPO_ROOT / ".toolchains") / name


def read_env(path: Path) -> dict[str, str]:
    """The KEY=value lines of a toolchain.env; comments and blank lines are skipped."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    output: str
    returncode: int
    command: tuple[str, ...] = ()

    @property
    def errors(self) -> list[str]:
        """The compiler's error lines (``file:line:col: error: ...``)."""
        return [line for line in self.output.splitlines() if re.search(r"(^|: )error: ", line)]


def run_check(
    cmd: Sequence[str | Path], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None,
    label: str | None = None,
) -> CheckResult:  # fmt: skip
    """Runs cmd with stdout+stderr merged; on timeout kills its whole process group, which holds wrapper
    scripts (kotlinc) and a chroot's namespace init alike. `label` names the command in a timeout message."""
    args = tuple(str(c) for c in cmd)
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return CheckResult(False, f"{out}\n[timed out after {timeout:.0f} s: {label or ' '.join(args)}]", -1, args)
    return CheckResult(proc.returncode == 0, out, proc.returncode, args)
