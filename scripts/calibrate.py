"""Calibrate the nasty teacher's omega at small scale: teacher, nasty teachers, KD students.

    python scripts/calibrate.py --dataset cifar10-jpeg --data-root ../shared/data/cifar10-jpeg.tar.gz \
        --resize 16 --val-fraction 0.1 --teacher resnet18 --teacher-width 0.25 \
        --students cnn:0.5,shufflenetv2:0.5 --student-fraction 0.2 --omegas 0.06,0.1,0.15

Prints and writes (JSON/Markdown) per omega: the nasty teacher's accuracy, KL(nasty || normal) at
tau_A, mean clear peaks per output, and the accuracy of each student distilled from it. With
``--val-fraction > 0`` every run is evaluated on a validation split carved from the training set
(nothing here reads the test set), and the accuracies are last-epoch validation accuracies.

Students are ``arch:width[:epochs]`` (epochs default: ``--student-epochs``). ``--kd-temps protocol``
distils each student at its protocol temperature only (4 for the CNN, 20 otherwise, as the suites
do) instead of crossing every temperature with every student. ``--nasty-epochs`` trains the nasty
teachers for that many epochs (same schedule, stretched) against the normal teacher of
``--epochs``. ``--tag`` names the output files ``<dataset>-<tag>.{json,md}``. Each row also gives
the nasty teacher's loss against the normal one, each student's poisoning margin (vanilla minus
Nasty KD) and the row's wall time (runs already in ``--runs-dir`` are read back, not retrained).

Two levers of the nasty teacher (``methods/nasty.py``), off by default: ``--init-from-teacher``
fine-tunes each nasty teacher from the normal teacher's weights instead of training it from scratch
(same architecture and width: the nasty teacher's always are here), and ``--omega-warmup N`` ramps
omega linearly from 0 over its first N epochs. They are passed as the nasty runs' method parameters
(so they change those runs' ids), recorded per row in the JSON and Markdown, and, without
``--tag``, name the output files (``<dataset>-init-wu3.{json,md}``), so a lever screen never
overwrites the plain one:

    python scripts/calibrate.py ... --omegas 0.1 --init-from-teacher --omega-warmup 3 --tag c6
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from undistill import recipes
from undistill.analysis import kl_to_reference, predict_logits
from undistill.analysis import output_stats as stats
from undistill.config import Runtime, parse_config
from undistill.executor import LocalExecutor
from undistill.methods.kd import protocol_temperature
from undistill.presets import with_epochs
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
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--resize", type=int, default=None)
    ap.add_argument("--val-fraction", type=float, default=0.0)
    ap.add_argument("--fraction", type=float, default=0.16667, help="the teacher's training share")
    ap.add_argument("--student-fraction", type=float, default=None, help="default: --fraction")
    ap.add_argument("--teacher", default="cnn")
    ap.add_argument("--teacher-width", type=float, default=1.0)
    ap.add_argument("--students", default=None,
                    help="arch:width[:epochs],... (default: --student/--student-width)")
    ap.add_argument("--student", default="cnn")
    ap.add_argument("--student-width", type=float, default=0.5)
    ap.add_argument("--epochs", type=int, default=15, help="teacher epochs")
    ap.add_argument("--student-epochs", type=int, default=None, help="default: --epochs")
    ap.add_argument("--student-batch-size", type=int, default=None,
                    help="the students' batch size (default: the preset's)")
    ap.add_argument("--omegas", default="0.04,0.06,0.08,0.1")
    ap.add_argument("--tau", type=float, default=4.0)
    ap.add_argument("--kd-temps", default="4",
                    help="T,... crossed with every student, or 'protocol': each student's own")
    ap.add_argument("--nasty-epochs", type=int, default=None, help="default: --epochs")
    ap.add_argument("--init-from-teacher", action="store_true",
                    help="nasty teachers start from the normal teacher's weights (fine-tuning)")
    ap.add_argument("--omega-warmup", type=int, default=0, metavar="N",
                    help="omega ramps linearly from 0 over the nasty teachers' first N epochs "
                    "(0: constant)")
    ap.add_argument("--tag", default="", help="output files <dataset>-<tag>.{json,md} (default: "
                    "the levers set, e.g. init-wu3; none: <dataset>.{json,md})")
    ap.add_argument("--runs-dir", default="runs/calibration")
    ap.add_argument("--out", default="docs/results/calibration")
    a = ap.parse_args()
    if a.omega_warmup < 0:
        ap.error("--omega-warmup must be >= 0")
    # the nasty levers, as method parameters (absent at their defaults: run ids stay as before)
    levers: dict[str, object] = {}
    if a.init_from_teacher:
        levers["init_from_teacher"] = True
    if a.omega_warmup:
        levers["omega_warmup"] = a.omega_warmup
    lever_tag = "-".join(([] if not a.init_from_teacher else ["init"])
                         + ([f"wu{a.omega_warmup}"] if a.omega_warmup else []))
    t_start = time.perf_counter()
    data = {"fraction": a.fraction, "val_fraction": a.val_fraction}
    if a.resize:
        data["resize"] = a.resize
    sdata = {"fraction": a.student_fraction or a.fraction}
    optim = {"epochs": a.epochs}
    sepochs = a.student_epochs or a.epochs
    students = []
    for spec in (a.students.split(",") if a.students else [f"{a.student}:{a.student_width}"]):
        f = spec.split(":")
        soptim = {"epochs": int(f[2]) if len(f) > 2 else sepochs}
        if a.student_batch_size:
            soptim["batch_size"] = a.student_batch_size
        students.append((f[0], float(f[1]), soptim))
    rt = Runtime(runs_dir=Path(a.runs_dir), data_root=a.data_root, progress=False, device="cpu")
    ex = LocalExecutor()
    protocol = a.kd_temps == "protocol"
    fixed_temps = [] if protocol else [float(t) for t in a.kd_temps.split(",")]

    def temps_of(arch: str) -> list[float]:
        return [protocol_temperature(arch)] if protocol else fixed_temps

    def acc(cfg) -> float:
        return ex.run([cfg], rt)[cfg.run_id].last_acc

    teacher = recipes.normal_teacher(a.dataset, a.teacher, a.teacher_width, data=data, optim=optim)
    base = {"teacher_acc": acc(teacher), "split": data_views(teacher.data, a.data_root).eval_split}
    print(json.dumps(base), flush=True)
    for arch, width, soptim in students:
        v = recipes.student(None, arch, "vanilla", width=width, dataset=a.dataset,
                            data={**data, **sdata}, optim=soptim)
        base[f"vanilla {arch}"] = acc(v)
        for t in temps_of(arch):
            s = recipes.student(teacher, arch, "kd", {"temperature": t}, width, optim=soptim, data=sdata)
            base[f"kd {arch} T{t:g}"] = acc(s)
        print(json.dumps(base), flush=True)
    base["baselines_wall_s"] = time.perf_counter() - t_start
    views = data_views(teacher.data, a.data_root)
    normal = load_run_model(teacher, rt.runs_dir, a.data_root)
    rows = []
    nasty_optim = (with_epochs(teacher.optim.model_dump(), a.nasty_epochs) if a.nasty_epochs
                   else None)
    for omega in [float(o) for o in a.omegas.split(",")]:
        t_row = time.perf_counter()
        nasty = recipes.nasty_teacher(teacher, omega=omega, temperature=a.tau, optim=nasty_optim)
        if levers:
            d = nasty.model_dump()
            d["method"]["params"].update(levers)
            nasty = parse_config(d)
        row = {"omega": omega, "tau_A": a.tau, "nasty_epochs": nasty.optim.epochs,
               "init_from_teacher": a.init_from_teacher, "omega_warmup": a.omega_warmup,
               "nasty_run_id": nasty.run_id, "nasty_acc": acc(nasty)}
        row["nasty_wall_s"] = time.perf_counter() - t_row
        row["loss_vs_normal"] = base["teacher_acc"] - row["nasty_acc"]
        row.update(output_stats(load_run_model(nasty, rt.runs_dir, a.data_root), normal, views, a.tau))
        margins = []
        for arch, width, soptim in students:
            for t in temps_of(arch):
                s = recipes.student(nasty, arch, "kd", {"temperature": t}, width, optim=soptim, data=sdata)
                row[f"nasty kd {arch} T{t:g}"] = acc(s)
                row[f"margin {arch} T{t:g}"] = base[f"vanilla {arch}"] - row[f"nasty kd {arch} T{t:g}"]
                margins.append(row[f"margin {arch} T{t:g}"])
        row["min_margin"] = min(margins) if margins else None
        row["wall_s"] = time.perf_counter() - t_row
        print(json.dumps(row), flush=True)
        rows.append(row)
    ref = output_stats(normal, normal, views, a.tau)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wall = time.perf_counter() - t_start
    tag = a.tag or lever_tag
    stem = f"{a.dataset}-{tag}" if tag else a.dataset
    (out / f"{stem}.json").write_text(json.dumps(
        {"args": vars(a), **base, "normal_peaks": ref["peaks"], "rows": rows, "wall_time_s": wall},
        indent=2))
    kd_cols = [k for k in rows[0] if k.startswith("nasty kd")] if rows else []
    md = [f"Split: {base['split']} (last-epoch accuracy). Teacher {a.teacher} (width "
          f"{a.teacher_width:g}) {base['teacher_acc']:.2f} %; "
          + "; ".join(f"{k} {v:.2f} %" for k, v in base.items() if k.startswith(("vanilla", "kd ")))
          + f"; normal teacher's mean peaks above 0.1: {ref['peaks']:.2f}. Wall time {wall / 60:.1f} min.",
          f"Nasty teachers {'fine-tuned from the normal teacher' if a.init_from_teacher else 'from scratch'}"
          f", omega {f'warmed up over {a.omega_warmup} epochs' if a.omega_warmup else 'constant'}.",
          "", "| omega | tau_A | nasty epochs | init from teacher | omega warm-up | nasty teacher (%) | "
          "lost vs normal | "
          "KL(nasty \\|\\| normal) at tau_A | peaks > 0.1 | "
          + " | ".join(f"{c} (%)" for c in kd_cols) + " | min margin vs vanilla | wall (min) |",
          "|" + " --- |" * (11 + len(kd_cols))]
    for r in rows:
        mm = "" if r["min_margin"] is None else f"{r['min_margin']:.2f}"
        md.append(f"| {r['omega']:g} | {r['tau_A']:g} | {r['nasty_epochs']} | "
                  f"{'yes' if r['init_from_teacher'] else 'no'} | {r['omega_warmup']} | "
                  f"{r['nasty_acc']:.2f} | "
                  f"{r['loss_vs_normal']:.2f} | {r['kl_to_normal']:.3f} | {r['peaks']:.2f} | "
                  + " | ".join(f"{r[c]:.2f}" for c in kd_cols) + f" | {mm} | {r['wall_s'] / 60:.1f} |")
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
