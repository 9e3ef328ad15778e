"""Normal KD against the vanilla student on the validation split, over seeds, for a suite's
students: does the teacher help at all, and with which alpha and temperature?

    python scripts/calibrate_kd.py --suite demo --kd 0.9:4,0.5:4,0.5:2,0.5:1,0.9:1 --runs-dir runs/kd-cal
    python scripts/calibrate_kd.py --suite demo --students cnn --epochs 30 --tag=-cnn30

``--kd`` lists ``alpha:T`` pairs (``alpha:`` alone keeps the student's suite temperature). Prints,
per student, the vanilla student's and each KD setting's last-epoch validation accuracy per seed
and their mean, and writes ``<out>/<suite>-kd.json``. Nothing here reads the test split; runs
already in ``--runs-dir`` (the suite's own included) are read back, not retrained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _suite_setup import suite_setup

from undistill.suites.plan import _student


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="demo")
    ap.add_argument("--kd", default="0.9:,0.5:", help="alpha:T,... (empty T: the suite's)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--runs-dir", default="runs/kd-cal")
    ap.add_argument("--out", default="docs/results/calibration")
    ap.add_argument("--students", default=None, help="arch,... (default: every suite student)")
    ap.add_argument("--epochs", type=int, default=None, help="the students' epochs (default: "
                    "the suite's)")
    ap.add_argument("--tag", default="", help="appended to the output file's name")
    a = ap.parse_args()
    t0 = time.perf_counter()
    st = suite_setup(a.suite, a.data_root, a.runs_dir)
    suite, sc, g, rt, ex = st.suite, st.scale, st.group, st.runtime, st.executor
    seeds = [int(s) for s in a.seeds.split(",")]
    settings: list[tuple[str, str, dict[str, float] | None]] = [("vanilla", "vanilla", None)]
    for pair in a.kd.split(","):
        alpha, _, t = pair.partition(":")
        over = {"alpha": float(alpha), **({"temperature": float(t)} if t else {})}
        settings.append((f"kd alpha {alpha}" + (f" T {t}" if t else ""), "kd", over))
    out: dict[str, dict[str, object]] = {}
    students = [s if a.epochs is None else type(s).model_validate({**s.model_dump(), "epochs": a.epochs})
                for s in suite.students
                if a.students is None or s.arch in a.students.split(",")]
    for s in students:
        for label, method, over in settings:
            teachers = [] if method == "vanilla" else [g.normal]
            cfgs = [_student(suite, s, sc, method, teachers, seed, "normal", params_over=over)
                    for seed in seeds]
            res = ex.run(cfgs, rt)
            accs = [res[c.run_id].last_acc for c in cfgs]
            out[f"{s.arch} {label}"] = {"mean": statistics.mean(accs), "per_seed": accs}
            print(f"{s.arch:>10} {label:<20} {statistics.mean(accs):6.2f}  {accs}", flush=True)
    dest = Path(a.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / f"{a.suite}-kd{a.tag}.json").write_text(json.dumps(
        {"args": vars(a), "split": "val", "results": out, "wall_time_s": time.perf_counter() - t0},
        indent=2))


if __name__ == "__main__":
    main()
