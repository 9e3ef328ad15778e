"""Small runs one after another (all cores each) against two at a time (half the cores each).

The demo trains about 80 small students on a 2-core CPU; a small CNN does not keep two threads
busy, so two processes of one thread each may finish the same runs sooner. This measures it, in
one invocation on one machine, for the demo's own student runs:

    .venv/bin/python benchmarks/bench_parallel_runs.py --runs 8 --out benchmarks/results-parallel-cpu.json

Set-up (not timed): the demo's normal teacher is trained once into a scratch folder. Then the same
``--runs`` student configs of the demo (its CNN student, vanilla and normal KD alternately, seeds
0, 1, 2, ...) are
trained twice from scratch: ``sequential`` in this process with every thread
(``torch.get_num_threads()``), and ``parallel`` by ``--workers`` spawned processes with
``threads // workers`` threads each, each process taking every ``workers``-th run. Reported: the
wall time of each, their ratio, and the largest difference of a run's last validation accuracy
between the two (thread counts change floating-point reduction order, so runs need not agree to
the bit).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import torch

from undistill.config import RunConfig, Runtime
from undistill.executor import LocalExecutor
from undistill.suites import build_plan, load_suite


def _configs(n: int) -> list[RunConfig]:
    """The demo's seed-0 CNN vanilla and normal-KD students, at seeds 0, 1, ... until n runs."""
    plan = build_plan(load_suite("demo"))
    base = {c.column: c.run for c in plan.cells if c.student_arch == "cnn" and c.seed == 0
            and c.ablation is None and c.column in ("vanilla", "normal-kd")}
    return [RunConfig.model_validate({**base[col].model_dump(mode="json"), "seed": i // 2})
            for i, col in zip(range(n), ["vanilla", "normal-kd"] * n, strict=False)]


def _worker(args: tuple[list[dict], str, int]) -> dict[str, float]:
    cfgs, runs_dir, threads = args
    torch.set_num_threads(threads)
    rt = Runtime(runs_dir=Path(runs_dir), device="cpu", progress=False)
    runs = [RunConfig.model_validate(c) for c in cfgs]
    res = LocalExecutor().run(runs, rt)
    return {r.run_id: res[r.run_id].last_acc for r in runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    threads = torch.get_num_threads()
    per_worker = max(1, threads // a.workers)
    runs = _configs(a.runs)
    teacher = next((t for r in runs for t in r.run_teachers), None)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "teacher"
        if teacher is not None:
            _worker(([teacher.model_dump(mode="json")], str(base), threads))
        dirs = {}
        for name in ("sequential", "parallel"):
            dirs[name] = Path(tmp) / name
            shutil.copytree(base, dirs[name]) if base.exists() else dirs[name].mkdir()
        dumped = [r.model_dump(mode="json") for r in runs]
        t0 = time.perf_counter()
        seq = _worker((dumped, str(dirs["sequential"]), threads))
        t_seq = time.perf_counter() - t0
        shards = [(dumped[i::a.workers], str(dirs["parallel"]), per_worker)
                  for i in range(a.workers)]
        t0 = time.perf_counter()
        with mp.get_context("spawn").Pool(a.workers) as pool:
            par = {k: v for part in pool.map(_worker, shards) for k, v in part.items()}
        t_par = time.perf_counter() - t0
    diff = max(abs(seq[k] - par[k]) for k in seq)
    out = {"runs": a.runs, "threads": threads, "workers": a.workers,
           "threads_per_worker": per_worker, "sequential_s": round(t_seq, 2),
           "parallel_s": round(t_par, 2), "speedup": round(t_seq / t_par, 3),
           "max_last_acc_diff": round(diff, 2), "torch": torch.__version__}
    print(json.dumps(out, indent=2))
    if a.out:
        a.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
