"""Choose the demo's HTC values on a validation split (never the test set), per student.

    python scripts/search_demo.py --student 0  # CNN: docs/results/demo-search/search.json
    python scripts/search_demo.py --student 1  # ShuffleNetV2: docs/results/demo-search-shufflenetv2/

The demo's nasty teacher is trained (or read back) from runs/demo; the CNN student is searched
over m x tau x alpha = {1, 5, 10} x {4, 20, 50} x {0.5, 0.9} (a part of the paper's grid that fits
a CPU), the slower ShuffleNetV2 student over {1, 5} x {20, 50} x {0.5, 0.9}, with 10 % of the
training set held out as the validation split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from undistill.config import Runtime
from undistill.search import run_search
from undistill.suites import build_plan, load_suite

GRIDS = [
    {"multiplier": [1.0, 5.0, 10.0], "temperature": [4.0, 20.0, 50.0], "alpha": [0.5, 0.9]},
    {"multiplier": [1.0, 5.0], "temperature": [20.0, 50.0], "alpha": [0.5, 0.9]},
]
OUT = ["docs/results/demo-search", "docs/results/demo-search-shufflenetv2"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--student", type=int, default=0, help="index of the demo's student")
    i = ap.parse_args().student
    plan = build_plan(load_suite("demo"))
    nasty = plan.groups[0].nasty
    student = plan.suite.students[i]
    runtime = Runtime(runs_dir=Path("runs/demo"), device="cpu", progress=False)
    doc = run_search([nasty], student.arch, "htc", runtime, grid=GRIDS[i], width=student.width,
                     optim={"epochs": student.epochs}, final=False, out_dir=Path(OUT[i]))
    print(json.dumps(doc.get("best"), indent=2))


if __name__ == "__main__":
    main()
