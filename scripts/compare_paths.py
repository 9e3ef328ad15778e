"""Accuracy of the default compute path against fp32, over seeds, on a slice of the demo.

    nice -n 15 python scripts/compare_paths.py --seeds 0 1 2 --threads 1

The slice is the demo suite's CNN student cells *vanilla* and *normal KD* as the demo defined
them until commit e4a56c0 (fashion-mnist-mini at 16x16; a normal CNN teacher of width 1.0, 10
epochs; CNN students of width 0.5, 6 epochs; Adam, lr 1e-3; KD alpha 0.9, tau 4), written out
here so that the measurement does not move when the suite does. The figure compared is the
final (last-epoch) model's test accuracy: nothing is chosen on the test set (the best epoch on
test, which that demo reported, is kept in the output for reference only).

For each seed and each path (``fp32``: fp32 NCHW, the old CPU default; ``default``: what
:mod:`undistill.precision` picks on this machine) it trains both students with that seed, each
path in its own runs directory (the path is not part of a run's identity). The KD students of
both paths learn from one teacher (seed 0, as in the suite), trained once in fp32, so the KD
comparison is about the student's path; the vanilla cell is a from-scratch training like a
teacher's. It writes ``compute-paths.json`` with every accuracy, the mean +/- 95 % confidence
interval per path (Student's t over seeds) and the per-seed difference default - fp32 with its
95 % interval.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from undistill.checkpoint import atomic_write_json
from undistill.config import RunConfig, Runtime, parse_config
from undistill.executor import ensure_trained
from undistill.precision import cpu_path
from undistill.runs import run_dir

# two-sided 95 % quantiles of Student's t, by degrees of freedom
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(xs: list[float]) -> dict[str, float]:
    m = statistics.fmean(xs)
    half = T95[len(xs) - 1] * statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return {"mean": m, "ci95": half, "n": len(xs)}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


DATA = {"name": "fashion-mnist-mini", "resize": 16}
OPTIM = {"name": "adam", "lr": 0.001, "schedule": "constant", "milestones": [], "weight_decay": 0.0,
         "batch_size": 128}
TEACHER = {"data": DATA, "model": {"arch": "cnn", "width": 1.0}, "optim": {**OPTIM, "epochs": 10},
           "name": "normal cnn"}
METHODS = {"vanilla": {"name": "vanilla"},
           "normal-kd": {"name": "kd", "params": {"alpha": 0.9, "temperature": 4.0}}}


def cell(column: str, seed: int) -> RunConfig:
    """The demo's CNN student of ``column`` with ``seed`` (its teacher's seed stays 0)."""
    return parse_config({"data": DATA, "model": {"arch": "cnn", "width": 0.5},
                         "optim": {**OPTIM, "epochs": 6}, "method": METHODS[column],
                         "teachers": [TEACHER] if column != "vanilla" else [], "seed": seed,
                         "name": f"{column} cnn"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/compute-paths"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/compute-paths"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: best on a busy machine)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    default = cpu_path().name
    paths = {"fp32": {"precision": "fp32", "channels_last": False}, "default": {}}
    fp32_rt = Runtime(runs_dir=a.runs_dir / "fp32", device="cpu", progress=False,
                      num_threads=a.threads, **paths["fp32"])
    acc: dict[str, dict[str, list[float]]] = {p: {} for p in paths}
    runs: list[dict[str, Any]] = []
    for seed in a.seeds:
        for p, fmt in paths.items():
            rt = Runtime(runs_dir=a.runs_dir / p, device="cpu", progress=False,
                         num_threads=a.threads, **fmt)
            for column in sorted(METHODS):
                cfg = cell(column, seed)
                for t in cfg.teachers:  # trained once, in fp32, shared by both paths
                    ensure_trained(t, fp32_rt)
                    if not run_dir(t, rt.runs_dir).exists():
                        shutil.copytree(run_dir(t, fp32_rt.runs_dir), run_dir(t, rt.runs_dir))
                res = ensure_trained(cfg, rt)
                acc[p].setdefault(column, []).append(res.last_acc)
                runs.append({"seed": seed, "path": p, "compute": res.compute, "column": column,
                             "last_acc": res.last_acc, "best_acc": res.best_acc,
                             "run_id": res.run_id, "wall_time_s": res.wall_time_s})
                print(f"seed {seed} {p:8s} ({res.compute}) {column:10s} last {res.last_acc:6.2f} % "
                      f"(best over epochs {res.best_acc:6.2f} %)", flush=True)
    summary = {}
    for column in acc["fp32"]:
        f, d = acc["fp32"][column], acc["default"][column]
        summary[column] = {"fp32": mean_ci(f), "default": mean_ci(d),
                           "default_minus_fp32": mean_ci([y - x for x, y in zip(f, d, strict=True)])}
    doc = {"command": "python scripts/compare_paths.py --seeds " + " ".join(map(str, a.seeds))
           + f" --threads {a.threads}", "threads": a.threads,
           "default_path_on_this_machine": default, "seeds": a.seeds,
           "slice": "the demo's CNN student cells (as of commit e4a56c0; fashion-mnist-mini, 16x16): "
                    "CNN student (width 0.5, 6 epochs) vanilla and normal KD (from the normal CNN "
                    "teacher, width 1.0, 10 epochs, seed 0, fp32); test accuracy (%) of the final "
                    "model (last epoch: nothing chosen on the test set)",
           "ci": "mean +/- half-width of the 95 % confidence interval (Student's t over seeds)",
           "summary": summary, "runs": runs, "wall_time_s": time.perf_counter() - t0,
           "cpu_time_s": _cpu_s()}
    atomic_write_json(a.out / "compute-paths.json", doc)
    for column, s in summary.items():
        print(f"{column:10s} fp32 {s['fp32']['mean']:.2f} +/- {s['fp32']['ci95']:.2f}   "
              f"{default} {s['default']['mean']:.2f} +/- {s['default']['ci95']:.2f}   "
              f"difference {s['default_minus_fp32']['mean']:+.2f} +/- {s['default_minus_fp32']['ci95']:.2f}")
    print(f"wall time {doc['wall_time_s']:.0f} s, CPU time {doc['cpu_time_s']:.0f} s")


if __name__ == "__main__":
    main()
