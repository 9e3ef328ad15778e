"""Calibrate the SCM defence's release on the validation split: for each omega of G (Eq. 10),
train S^2 = G(S^1) against the suite's nasty teacher S^1 and distil each of the suite's students
from it (seed 0, KD at the student's suite parameters), beside KD from the nasty teacher itself.
``--release R`` releases S^R = G(S^(R-1)) instead (the sequence's later member; the suite's
``defence.release``), each member trained with the same omega.

    python scripts/calibrate_scm.py --suite demo --omegas 0.02,0.04,0.08 --runs-dir runs/scm-cal

Prints one JSON line per omega and writes ``<out>/<suite>-scm.{json,md}``: S^2's last-epoch
validation accuracy, its loss against the normal teacher, and each student's validation accuracy
with KD from S^2 and from S^1. Nothing here reads the test split. Runs are content-addressed: the
suite's own teachers and students already in ``--runs-dir`` are read back, not retrained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _suite_setup import suite_setup

from undistill import recipes
from undistill.suites.plan import _student


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="demo")
    ap.add_argument("--omegas", default="0.02,0.04,0.08")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--release", type=int, default=2, help="the member S^R released (R >= 2)")
    ap.add_argument("--runs-dir", default="runs/scm-cal")
    ap.add_argument("--out", default="docs/results/calibration")
    a = ap.parse_args()
    if a.release < 2:
        ap.error("--release: S^1 is the nasty teacher itself; give 2 or more")
    r = f"s{a.release}"
    t0 = time.perf_counter()
    st = suite_setup(a.suite, a.data_root, a.runs_dir)
    suite, sc, g, acc = st.suite, st.scale, st.group, st.acc
    base = {"normal_acc": acc(g.normal), "nasty_acc": acc(g.nasty)}
    for s in suite.students:
        base[f"vanilla {s.arch}"] = acc(_student(suite, s, sc, "vanilla", [], 0, "none"))
        base[f"nasty kd {s.arch}"] = acc(_student(suite, s, sc, "kd", [g.nasty], 0, "nasty"))
    print(json.dumps(base), flush=True)
    rows = []
    for omega in [float(o) for o in a.omegas.split(",")]:
        t_row = time.perf_counter()
        seq = recipes.scm_sequence(g.nasty, a.release, omega=omega, optim=g.nasty.optim.model_dump())
        released = seq[-1]
        row = {"omega": omega, "release": a.release, f"{r}_run_id": released.run_id,
               f"{r}_acc": acc(released)}
        row[f"{r}_loss_vs_normal"] = base["normal_acc"] - row[f"{r}_acc"]
        for s in suite.students:
            row[f"{r} kd {s.arch}"] = acc(_student(suite, s, sc, "kd", [released], 0, "scm-defence"))
            row[f"{r} minus nasty kd {s.arch}"] = row[f"{r} kd {s.arch}"] - base[f"nasty kd {s.arch}"]
        row["wall_s"] = time.perf_counter() - t_row
        print(json.dumps(row), flush=True)
        rows.append(row)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - t0
    stem = f"{a.suite}-scm" + ("" if a.release == 2 else f"-release{a.release}")
    (out / f"{stem}.json").write_text(json.dumps(
        {"args": vars(a), **base, "rows": rows, "wall_time_s": wall}, indent=2))
    arch = [s.arch for s in suite.students]
    md = [f"Suite {a.suite}, validation split, seed 0, last epoch. Normal teacher "
          f"{base['normal_acc']:.2f} %, nasty (S1) {base['nasty_acc']:.2f} %; "
          + "; ".join(f"{k} {v:.2f} %" for k, v in base.items() if k.startswith(("vanilla", "nasty kd")))
          + f". Wall time {wall / 60:.1f} min.", "",
          f"| omega of G | S{a.release} (%) | lost vs normal | "
          + " | ".join(f"KD from S{a.release}, {x} (%)" for x in arch)
          + " | " + " | ".join(f"S{a.release} minus S1, {x}" for x in arch) + " |",
          "|" + " --- |" * (3 + 2 * len(arch))]
    for row in rows:
        md.append(f"| {row['omega']:g} | {row[f'{r}_acc']:.2f} | {row[f'{r}_loss_vs_normal']:.2f} | "
                  + " | ".join(f"{row[f'{r} kd {x}']:.2f}" for x in arch) + " | "
                  + " | ".join(f"{row[f'{r} minus nasty kd {x}']:+.2f}" for x in arch) + " |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
