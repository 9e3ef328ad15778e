"""Where a suite's wall time went, from the files its runs wrote.

    python scripts/run_timeline.py runs/demo-s11e                     # every run in the folder
    python scripts/run_timeline.py runs/demo-s12b --results docs/results/demo/results.json

For every finished run of a runs directory (or only those a suite's ``results.json`` names:
records, teachers, searches) it reads ``config.json``'s and ``result.json``'s modification times
(the run's start and end) and the training time the run recorded (the sum of its epochs'
``time_s``), and prints, per (architecture, method): the runs, their epochs, training time and
wall time (their difference is building, evaluation and checkpoints); then the span from the
first start to the last end, the time between runs (what the suite did outside runs: searches'
other trials when only the results' runs are read, planning) and the test scoring after the last
run (``test.json`` files). Used for docs/calibration.md, "The demo, stop 12".
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def run_ids(doc: Any) -> set[str]:
    """Every ``run_id`` value anywhere in a results document."""
    found: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "run_id" and isinstance(v, str):
                found.add(v)
            else:
                found |= run_ids(v)
    elif isinstance(doc, list):
        for v in doc:
            found |= run_ids(v)
    return found


def timeline(runs_dir: Path, only: set[str] | None = None) -> dict[str, Any]:
    groups: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0, 0.0])
    spans, tests = [], []
    for d in sorted(p for p in runs_dir.iterdir() if (p / "result.json").exists()):
        if only is not None and d.name not in only:
            continue
        saved = json.loads((d / "result.json").read_text())
        cfg, res = saved["config"], saved["result"]
        start, end = (d / "config.json").stat().st_mtime, (d / "result.json").stat().st_mtime
        spans.append((start, end))
        if (d / "test.json").exists():
            tests.append((d / "test.json").stat().st_mtime)
        g = groups[(cfg["model"]["arch"], cfg["method"]["name"])]
        g[0] += 1
        g[1] += res["epochs_run"]
        g[2] += res["wall_time_s"]
        g[3] += end - start
    spans.sort()
    between = sum(max(0.0, b[0] - a[1]) for a, b in zip(spans, spans[1:], strict=False))
    last_end = spans[-1][1] if spans else 0.0
    scoring = max(tests) - last_end if tests and max(tests) > last_end else 0.0
    return {"groups": {f"{a} {m}": {"runs": v[0], "epochs": v[1], "train_s": round(v[2], 1),
                                    "wall_s": round(v[3], 1)}
                       for (a, m), v in sorted(groups.items(), key=lambda kv: -kv[1][3])},
            "span_s": round(last_end - spans[0][0], 1) if spans else 0.0,
            "between_runs_s": round(between, 1), "test_scoring_after_s": round(scoring, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs_dir", type=Path)
    ap.add_argument("--results", type=Path, default=None,
                    help="a suite's results.json: only the runs it names")
    a = ap.parse_args()
    only = run_ids(json.loads(a.results.read_text())) if a.results else None
    t = timeline(a.runs_dir, only)
    for name, g in t["groups"].items():
        print(f"{name:32s} runs {g['runs']:3d}  epochs {g['epochs']:5d}  "
              f"train {g['train_s']:7.1f} s  wall {g['wall_s']:7.1f} s")
    print(f"first start to last end {t['span_s']} s; between runs {t['between_runs_s']} s; "
          f"test scoring after the last run {t['test_scoring_after_s']} s")


if __name__ == "__main__":
    main()
