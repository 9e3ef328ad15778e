"""Choose the demo's HTC values on a validation split (never the test set).

    python scripts/search_demo.py  # writes docs/results/demo-search/search.json

The demo's nasty teacher is trained (or read back) from runs/demo; the CNN student is searched
over m x tau x alpha = {1, 5, 10} x {4, 20, 50} x {0.5, 0.9} (a part of the paper's grid that fits
a CPU), with 10 % of the training set held out as the validation split.
"""

from __future__ import annotations

import json
from pathlib import Path

from undistill.config import Runtime
from undistill.search import run_search
from undistill.suites import build_plan, load_suite


def main() -> None:
    plan = build_plan(load_suite("demo"))
    nasty = plan.groups[0].nasty
    student = plan.suite.students[0]
    runtime = Runtime(runs_dir=Path("runs/demo"), device="cpu", progress=False)
    grid = {"multiplier": [1.0, 5.0, 10.0], "temperature": [4.0, 20.0, 50.0], "alpha": [0.5, 0.9]}
    doc = run_search([nasty], student.arch, "htc", runtime, grid=grid, width=student.width,
                     optim={"epochs": student.epochs}, final=False,
                     out_dir=Path("docs/results/demo-search"))
    print(json.dumps(doc.get("best"), indent=2))


if __name__ == "__main__":
    main()
