"""Where a build matrix's cells run (builder/matrix.py): `local` builds them one after another in this
process; `ray` submits each as a Ray task, to a local Ray instance it starts or to a cluster at an address.

On a cluster every worker needs slmpack installed (`pip install 'slmpack[ray]'`), and the matrix's output
folder, its recipe and the files the recipe names must be on a filesystem all nodes share.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from rich.console import Console
from rich.markup import escape

from builder.errors import UserInputError
from builder.matrix import CellResult, CellSpec, Executor, failed, run_cell

EXECUTORS = ("local", "ray")
# Cells send back a few kilobytes of figures; Ray's default object store (30% of RAM) would only take memory
# from the builds.
_OBJECT_STORE_BYTES = 256 * 2**20


@dataclass
class LocalExecutor:
    console: Console
    name: str = "local"

    def run(self, cells: list[CellSpec], done: Callable[[CellResult], None]) -> list[CellResult]:
        results = []
        for spec in cells:
            self.console.rule(f"[bold]cell {spec.id}: {escape(spec.label)}")
            result = run_cell(spec, self.console)
            done(result)
            results.append(result)
        return results


@dataclass
class RayExecutor:
    console: Console
    address: str | None = None  # None: start a local Ray instance for this run
    cpus_per_cell: int = 1
    name: str = "ray"

    def run(self, cells: list[CellSpec], done: Callable[[CellResult], None]) -> list[CellResult]:
        ray = import_ray()
        started = not ray.is_initialized()
        if started:
            self._init(ray)
        try:
            cpus = ray.cluster_resources().get("CPU", 0)
            where = f"Ray at {self.address}" if self.address else "a local Ray instance" if started else "Ray"
            self.console.print(f"Running {len(cells)} cells on {where} ({cpus:g} CPUs, {self.cpus_per_cell} "
                               "per cell); each cell's build output is in its build.log", highlight=False)  # fmt: skip
            # No retries: a worker that crashed (out of memory, say) would most likely crash again, and a
            # failed cell is built again by the next run anyway.
            task = ray.remote(num_cpus=self.cpus_per_cell, max_retries=0)(run_cell)
            pending = {task.remote(spec): index for index, spec in enumerate(cells)}
            results: list[CellResult | None] = [None] * len(cells)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    index = pending.pop(ref)
                    results[index] = self._result(ray, ref, cells[index])
                    done(results[index])
            return [r for r in results if r is not None]
        finally:
            if started:
                ray.shutdown()

    def _init(self, ray: ModuleType) -> None:
        # The builds' output goes to each cell's build.log; Ray's own chatter stays in its session logs.
        quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        if self.address is None:
            # "local" always starts a fresh instance, never one that RAY_ADDRESS or an earlier `ray start` left.
            ray.init(address="local", num_cpus=os.cpu_count() or 1, object_store_memory=_OBJECT_STORE_BYTES, **quiet)
            return
        try:
            ray.init(address=self.address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserInputError(f"--address {self.address!r}: cannot connect to Ray ({exc}). Fix: pass the address "
                                 "`ray status` shows on the head node, or leave --address out to start a local "
                                 "Ray instance") from None  # fmt: skip

    def _result(self, ray: ModuleType, ref: object, spec: CellSpec) -> CellResult:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            # run_cell returns its own failures: what arrives here is the task's death (a crashed or killed
            # worker, a worker that could not import slmpack).
            cause = getattr(exc, "cause", None)
            return failed(spec, cause if isinstance(cause, Exception) else exc)


def import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise UserInputError(
            "--executor ray needs Ray, which is not installed. Fix: pip install 'slmpack[ray]'"
        ) from None
    return ray


def make_executor(name: str, console: Console, address: str | None = None, cpus_per_cell: int = 1) -> Executor:
    """The executor the command line asked for; wrong combinations are UserInputErrors before anything runs."""
    if name == "local":
        if address is not None:
            raise UserInputError("--address names a Ray cluster, which --executor local does not use. Fix: add "
                                 "--executor ray, or drop --address")  # fmt: skip
        return LocalExecutor(console)
    if name == "ray":
        import_ray()
        # On the local instance a cell that asks for more CPUs than there are would wait forever; a cluster's
        # autoscaler may still add bigger nodes, so there Ray decides.
        cpus = os.cpu_count() or 1
        if address is None and cpus_per_cell > cpus:
            raise UserInputError(f"--cpus-per-cell {cpus_per_cell} asks for more CPUs than this machine has ({cpus}). "
                                 f"Fix: use at most {cpus}, or --address a bigger Ray cluster")  # fmt: skip
        return RayExecutor(console, address, cpus_per_cell)
    raise UserInputError(f"--executor {name!r} is unknown. Fix: use one of {', '.join(EXECUTORS)}")
