"""The demo's own student runs under each compute path (and torch.compile), in one invocation.

    .venv/bin/python benchmarks/bench_demo_paths.py --runs 8 --repeats 2 --compile \
        --out benchmarks/results-demo-paths-cpu.json

``bench_train.py`` measures steady-state steps of CIFAR-sized models; the demo's runs are tiny
(16x16 images, a CNN x0.5 student at batch 32, a ResNet-18 x0.125 at batch 32) and short, so what
matters there is the whole run: building it, its steps, its per-epoch evaluation and checkpoints.
This trains the same ``--runs`` student configs of the demo (vanilla and normal KD, both
students, seeds 5, 6, ...) from scratch once per path, every path in its own runs directory
(the demo's normal teacher is trained once beforehand, not timed, and copied in), the paths
interleaved ``--repeats`` times; reported: the median wall time of each path, its ratio to the
machine's default path (:mod:`undistill.precision`), and the runs' last validation accuracies
(paths are not bit-identical, so they may differ a little). ``--compile`` adds the default path
under ``torch.compile`` (``Runtime.compile``), whose compilation is paid in every run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from undistill.config import RunConfig, Runtime
from undistill.executor import LocalExecutor
from undistill.precision import resolve as resolve_compute_path
from undistill.suites import build_plan, load_suite

#: name -> Runtime fields choosing the path
PATHS: dict[str, dict[str, Any]] = {
    "fp32": {"precision": "fp32", "channels_last": False},
    "fp32+channels_last": {"precision": "fp32", "channels_last": True},
    "bf16+channels_last": {"precision": "bf16", "channels_last": True},
}


def demo_student_runs(n: int) -> list[RunConfig]:
    """The demo's seed-0 vanilla and normal-KD cells of both students, at seeds 5, 6, ..."""
    plan = build_plan(load_suite("demo"))
    cells = [c for c in plan.cells if c.seed == 0 and c.ablation is None
             and c.column in ("vanilla", "normal-kd")]
    out = []
    for i in range(n):
        c = cells[i % len(cells)]
        out.append(RunConfig.model_validate({**c.run.model_dump(mode="json"),
                                             "seed": 5 + i // len(cells)}))
    return out


def _time(runs: list[RunConfig], teacher_dir: Path, work: Path, fields: dict[str, Any]
          ) -> tuple[float, list[float]]:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(teacher_dir, work)
    rt = Runtime(runs_dir=work, device="cpu", progress=False, **fields)
    t0 = time.perf_counter()
    res = LocalExecutor().run(runs, rt)
    return time.perf_counter() - t0, [res[r.run_id].last_acc for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="add the default path compiled")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    runs = demo_student_runs(a.runs)
    default = resolve_compute_path(Runtime(device="cpu"), torch.device("cpu")).name
    paths = dict(PATHS)
    if a.compile:
        paths[f"{default} compiled"] = {**PATHS.get(default, {}), "compile": True}
    teacher = next(t for r in runs for t in r.run_teachers)
    walls: dict[str, list[float]] = {p: [] for p in paths}
    accs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "teacher"
        LocalExecutor().run([teacher], Runtime(runs_dir=base, device="cpu", progress=False))
        for _ in range(a.repeats):
            for name, fields in paths.items():
                wall, acc = _time(runs, base, Path(tmp) / "work", fields)
                walls[name].append(wall)
                accs[name] = acc
    median = {p: statistics.median(w) for p, w in walls.items()}
    out = {"runs": a.runs, "repeats": a.repeats, "threads": torch.get_num_threads(),
           "default_path": default, "wall_s": {p: round(v, 2) for p, v in median.items()},
           "wall_s_each": {p: [round(x, 2) for x in w] for p, w in walls.items()},
           "ratio_to_default": {p: round(v / median[default], 3) for p, v in median.items()},
           "last_acc": accs, "torch": torch.__version__}
    print(json.dumps(out, indent=2))
    if a.out:
        a.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
