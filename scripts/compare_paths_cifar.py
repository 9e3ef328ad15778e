"""fp32 vs bf16 + channels_last on the cifar10-cpu suite's CNN cells (vanilla, normal KD, nasty KD).

Run from a checkout whose run ids match the committed suite (commit 308f4a1..16dc570, before data
fingerprints), with a runs directory holding (or linking) the suite's normal and nasty teachers:

    PYTHONPATH=src python scripts/compare_paths_cifar.py --runs-dir runs/cifar-bf16 \
        --data-root ../shared/data/cifar10-jpeg.tar.gz --reference docs/results/cifar10-cpu/results.json

Trains the cells with ``Runtime(precision="bf16", channels_last=True)`` (the run ids are the fp32
runs' ids: the compute path is not part of a run's identity) and prints both paths' last-epoch test
accuracies over the seeds, with 95 % intervals and a Welch test of "no difference".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from undistill.analysis import test_accuracy
from undistill.config import Runtime
from undistill.executor import LocalExecutor
from undistill.stats import mean_ci, welch
from undistill.suites import build_plan, load_suite


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs-dir", type=Path, required=True)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--reference", type=Path, required=True)
    a = ap.parse_args()
    plan = build_plan(load_suite("cifar10-cpu"))
    cells = [c for c in plan.cells if c.student_arch == "cnn" and c.table == "table1"
             and c.column in ("vanilla", "normal-kd", "nasty-kd")]
    rt = Runtime(runs_dir=a.runs_dir, data_root=a.data_root, device="cpu", precision="bf16",
                 channels_last=True, progress=False)
    LocalExecutor().run([c.run for c in cells], rt)
    ref = {r["run_id"]: r["test_acc"] for r in json.loads(a.reference.read_text())["records"]}
    out = {}
    for col in ("vanilla", "normal-kd", "nasty-kd"):
        runs = [c.run for c in cells if c.column == col]
        fp32 = [ref[r.run_id] for r in runs]
        bf16 = [test_accuracy(r, a.runs_dir, a.data_root) for r in runs]
        p = welch(bf16, fp32, alternative="greater")
        out[col] = {"fp32": fp32, "bf16": bf16, "fp32_ci": mean_ci(fp32).fmt(),
                    "bf16_ci": mean_ci(bf16).fmt(),
                    "p_two_sided": None if p is None else 2 * min(p, 1 - p)}
        print(col, out[col]["fp32_ci"], "vs", out[col]["bf16_ci"], "p", out[col]["p_two_sided"], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
