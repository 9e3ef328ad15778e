"""Runs as Ray tasks: a suite's runs, or a search's trials, spread over a Ray cluster.

``undistill reproduce SUITE --executor ray [--address HOST:PORT]`` (and ``search``): without an
address Ray starts locally on this machine (``ray.init()``), with one it joins that cluster.
Needs the optional extra: ``pip install 'undistill[ray]'``.

Each run the suite needs and has not finished is one Ray task holding ``cpus_per_run`` CPUs and
``gpus_per_run`` GPUs (default: one GPU when the cluster has GPUs, else none). A run's task takes
its teachers' tasks as arguments, so Ray starts it only once they are finished: the suite's graph
(normal teacher -> nasty teacher -> SCM sequence -> students) becomes task dependencies, and runs
that do not depend on each other train at the same time. A task calls :func:`undistill.engine.train_run`
exactly as the local executor does (its config bound to the driver's data, under the run's lock),
so a run's result does not depend on where it ran (given the
same compute path and thread count: the path is chosen per machine, see :mod:`undistill.precision`).

What must be shared: **the runs directory**, at the same absolute path on every node (an NFS
mount, a shared volume), since a task reads its teachers' checkpoints from it and writes its own
run there; and the data root (or each node's dataset cache) must hold the same dataset files.
The executor checks the first at the start: it writes a marker file with a random token under
``RUNS_DIR/.shared-check/`` and runs one small task on every alive node, pinned to it, which must
read the same token at the same path; every training task checks it again before it trains
(nodes may join later). A node that does not see it stops the suite before any training, naming
the node and the path. ``undistill`` itself must be installed on every node (the same version).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from undistill.config import RunConfig, Runtime
from undistill.engine import RunResult, train_run
from undistill.exceptions import UndistillError
from undistill.executor import plan
from undistill.precision import ENV as COMPUTE_PATH_ENV
from undistill.progress import Reporter
from undistill.runlock import own_run
from undistill.runs import bind_data, is_done, read_result, run_dir

MARKER_DIR = ".shared-check"


class SharedDirError(UndistillError, RuntimeError):
    """A Ray node does not see the runs directory the driver writes to."""


def _require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install 'undistill[ray]'") from None
    return ray


def check_marker(runs_dir: str, token: str) -> dict[str, Any]:
    """On a node: whether ``runs_dir`` holds the driver's marker with ``token`` (and where)."""
    path = Path(runs_dir) / MARKER_DIR / token
    try:
        seen = path.read_text().strip()
    except OSError as e:
        seen = f"unreadable ({e.__class__.__name__})"
    return {"host": socket.gethostname(), "path": str(path), "ok": seen == token, "seen": seen}


def _fail_unshared(report: dict[str, Any]) -> None:
    if not report["ok"]:
        raise SharedDirError(f"node {report['host']} does not see the runs directory: "
                             f"{report['path']} is {report['seen']!r}, not the marker this suite "
                             f"wrote. The runs directory must be shared by every node at the same "
                             f"absolute path (see docs/suites.md)")


def _train_task(cfg: dict[str, Any], runtime: dict[str, Any], token: str, threads: int,
                compute_path: str | None, *teachers_done: Any) -> dict[str, Any]:
    """One run, on a Ray worker; ``teachers_done`` are the teachers' results (only awaited)."""
    import torch

    _fail_unshared(check_marker(runtime["runs_dir"], token))
    if compute_path:
        os.environ[COMPUTE_PATH_ENV] = compute_path
    rt = Runtime.model_validate(runtime)
    if rt.num_threads is None:
        torch.set_num_threads(threads)
    run = RunConfig.model_validate(cfg)  # bound to the driver's data: another node's is refused
    with own_run(run_dir(run, rt.runs_dir), rt.runs_dir, run.run_id):
        result = train_run(run, rt, Reporter(enabled=False))
    return {**asdict(result), "host": f"{socket.gethostname()}:{os.getpid()}"}


class RayExecutor:
    """Runs the plan as Ray tasks (see the module docstring); finished runs are read back."""

    def __init__(self, address: str | None = None, *, cpus_per_run: float = 1.0,
                 gpus_per_run: float | None = None, num_cpus: int | None = None,
                 reporter: Reporter | None = None) -> None:
        if cpus_per_run <= 0:
            raise ValueError(f"cpus_per_run must be > 0, got {cpus_per_run}")
        if gpus_per_run is not None and gpus_per_run < 0:
            raise ValueError(f"gpus_per_run must be >= 0, got {gpus_per_run}")
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self.num_cpus = num_cpus  # only for a local Ray started here
        self.reporter = reporter
        self.hosts: dict[str, str] = {}  # run id -> "host:pid" of the worker that trained it

    # -- the cluster ----------------------------------------------------------------------------

    def _ray(self) -> Any:
        ray = _require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, num_cpus=None if self.address else self.num_cpus,
                     include_dashboard=False, logging_level="WARNING", log_to_driver=True)
        return ray

    def _gpus(self, ray: Any) -> float:
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0

    @property
    def slots(self) -> int:
        """How many runs the cluster trains at once (a search asks this many trials at a time)."""
        ray = self._ray()
        res = ray.cluster_resources()
        n = int(res.get("CPU", 1) // self.cpus_per_run)
        gpus = self._gpus(ray)
        if gpus > 0:
            n = min(n, int(res.get("GPU", 0) // gpus))
        return max(1, n)

    def check_shared(self, runs_dir: Path) -> str:
        """Write a marker into ``runs_dir`` and make every alive node read it back; its token."""
        ray = self._ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        marker = runs_dir / MARKER_DIR / token
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(token + "\n")
        probe = ray.remote(check_marker)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [probe.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(runs_dir), token) for n in nodes]
        for report in ray.get(refs):
            _fail_unshared(report)
        return token

    # -- the executor ---------------------------------------------------------------------------

    def run(self, runs: Iterable[RunConfig], runtime: Runtime) -> dict[str, RunResult]:
        ray = self._ray()
        reporter = self.reporter or Reporter(enabled=runtime.progress)
        runs_dir = runtime.runs_dir.resolve()
        shared = runtime.model_copy(update={
            "runs_dir": runs_dir, "progress": False,
            "data_root": runtime.data_root.resolve() if runtime.data_root else None})
        ordered = plan(runs)
        results: dict[str, RunResult] = {}
        todo = []
        bound: dict[str, RunConfig] = {}  # run id as passed in -> config bound to the data
        for cfg in ordered:
            bound[cfg.run_id] = b = bind_data(cfg, shared.data_root)
            if is_done(b, runs_dir):
                results[cfg.run_id] = RunResult(**{**read_result(run_dir(b, runs_dir))["result"],
                                                   "cached": True})
            else:
                todo.append(cfg)
        if not todo:
            return results
        token = self.check_shared(runs_dir)
        try:
            task = ray.remote(_train_task).options(num_cpus=self.cpus_per_run,
                                                   num_gpus=self._gpus(ray), max_retries=0)
            threads = max(1, int(self.cpus_per_run))
            forced = os.environ.get(COMPUTE_PATH_ENV)
            rt = shared.model_dump(mode="json")
            refs: dict[str, Any] = {}
            for cfg in todo:
                deps = [refs[t.run_id] for t in cfg.run_teachers if t.run_id in refs]
                refs[cfg.run_id] = task.remote(bound[cfg.run_id].model_dump(mode="json"), rt, token,
                                               threads, forced, *deps)
            names = {ref: cfg for cfg in todo for ref in [refs[cfg.run_id]]}
            pending = list(names)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                cfg = names[done[0]]
                try:
                    out = self._get(ray, done[0])
                except BaseException:
                    for ref in pending:  # the rest of the suite stops too (finished runs stay)
                        ray.cancel(ref)
                    raise
                self.hosts[cfg.run_id] = out.pop("host")
                results[cfg.run_id] = RunResult(**out)
                reporter.message(f"[{len(results)}/{len(ordered)}] {cfg.name or cfg.run_id}: "
                                 f"{out['best_acc']:.2f}% on {self.hosts[cfg.run_id]}")
        finally:
            (runs_dir / MARKER_DIR / token).unlink(missing_ok=True)
        return {cfg.run_id: results[cfg.run_id] for cfg in ordered}

    @staticmethod
    def _get(ray: Any, ref: Any) -> dict[str, Any]:
        """A task's result; a task's own exception is raised as itself (e.g. TrainingDiverged)."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            raise cause from None
