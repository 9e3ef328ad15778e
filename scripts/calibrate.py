"""Calibrate the nasty teacher's omega at small scale: teacher, nasty teachers, KD students.

    python scripts/calibrate.py --dataset fashion-mnist --fraction 0.16667 --out docs/results/calibration

Prints and writes (JSON/Markdown) per omega: the nasty teacher's accuracy, KL(nasty || normal) at
tau_A, mean clear peaks per output, and the accuracy of students distilled from it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from undistill import recipes
from undistill.analysis import kl_to_reference, predict_logits
from undistill.analysis import output_stats as stats
from undistill.config import Runtime
from undistill.executor import LocalExecutor
from undistill.runs import data_views, load_run_model


def output_stats(model, reference, views, tau: float) -> dict[str, float]:
    """KL(model || normal) at tau_A and the mean number of clear peaks (p > 0.1 at T = 1)."""
    ds = views.dataset
    z = predict_logits(model, views.eval_images, ds.mean, ds.std)
    zr = predict_logits(reference, views.eval_images, ds.mean, ds.std)
    return {"kl_to_normal": kl_to_reference(z, zr, tau), "peaks": stats(z)["peaks"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--fraction", type=float, default=0.16667)
    ap.add_argument("--teacher", default="cnn")
    ap.add_argument("--teacher-width", type=float, default=1.0)
    ap.add_argument("--student", default="cnn")
    ap.add_argument("--student-width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--omegas", default="0.04,0.06,0.08,0.1")
    ap.add_argument("--tau", type=float, default=4.0)
    ap.add_argument("--kd-temps", default="4")
    ap.add_argument("--runs-dir", default="runs/calibration")
    ap.add_argument("--out", default="docs/results/calibration")
    a = ap.parse_args()
    data = {"fraction": a.fraction}
    optim = {"epochs": a.epochs}
    rt = Runtime(runs_dir=Path(a.runs_dir), progress=False, device="cpu")
    ex = LocalExecutor()
    teacher = recipes.normal_teacher(a.dataset, a.teacher, a.teacher_width, data=data, optim=optim)
    vanilla = recipes.student(None, a.student, "vanilla", width=a.student_width,
                              dataset=a.dataset, data=data, optim=optim)
    temps = [float(t) for t in a.kd_temps.split(",")]
    rows = []
    res = ex.run([teacher, vanilla], rt)
    views = data_views(teacher.data, None)
    normal = load_run_model(teacher, rt.runs_dir)
    base = {"teacher_acc": res[teacher.run_id].best_acc, "vanilla": res[vanilla.run_id].best_acc}
    kd_normal = {}
    for t in temps:
        s = recipes.student(teacher, a.student, "kd", {"temperature": t}, a.student_width,
                            optim=optim)
        kd_normal[t] = ex.run([s], rt)[s.run_id].best_acc
    print(json.dumps({**base, "kd_normal": kd_normal}), flush=True)
    for omega in [float(o) for o in a.omegas.split(",")]:
        nasty = recipes.nasty_teacher(teacher, omega=omega, temperature=a.tau)
        r = ex.run([nasty], rt)[nasty.run_id]
        row = {"omega": omega, "tau_A": a.tau, "nasty_acc": r.best_acc,
               **output_stats(load_run_model(nasty, rt.runs_dir), normal, views, a.tau)}
        for t in temps:
            s = recipes.student(nasty, a.student, "kd", {"temperature": t}, a.student_width,
                                optim=optim)
            row[f"nasty_kd_T{t:g}"] = ex.run([s], rt)[s.run_id].best_acc
        print(json.dumps(row), flush=True)
        rows.append(row)
    ref = output_stats(normal, normal, views, a.tau)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.dataset}.json").write_text(json.dumps(
        {"args": vars(a), **base, "kd_normal": kd_normal, "normal_peaks": ref["peaks"],
         "rows": rows}, indent=2))
    kd_cols = [f"nasty_kd_T{t:g}" for t in temps]
    md = [f"Teacher {a.teacher} (width {a.teacher_width:g}) {base['teacher_acc']:.2f} %, "
          f"vanilla student {a.student} (width {a.student_width:g}) {base['vanilla']:.2f} %, "
          "normal KD " + ", ".join(f"{v:.2f} % (T={t:g})" for t, v in kd_normal.items())
          + f"; normal teacher's mean peaks above 0.1: {ref['peaks']:.2f}.", "",
          "| omega | tau_A | nasty teacher (%) | KL(nasty \\|\\| normal) at tau_A | peaks > 0.1 | "
          + " | ".join(f"nasty KD T={t:g} (%)" for t in temps) + " |",
          "|" + " --- |" * (5 + len(temps))]
    for r in rows:
        md.append(f"| {r['omega']:g} | {r['tau_A']:g} | {r['nasty_acc']:.2f} | "
                  f"{r['kl_to_normal']:.3f} | {r['peaks']:.2f} | "
                  + " | ".join(f"{r[c]:.2f}" for c in kd_cols) + " |")
    (out / f"{a.dataset}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
