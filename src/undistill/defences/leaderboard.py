"""The defence leaderboard: every attack against every defence, utility against protection.

For each defence (a released model, optionally behind an output defence):

* utility, on the test split: the released answers' top-1 accuracy, their agreement with the
  undefended (normal) teacher, and the calibration cost (ECE, NLL) honest users see;
* protection: vanilla accuracy minus the accuracy of the **best** attack's student, the attack
  (and its hyper-parameters) chosen on a validation split, never on the test set.

Every student trains on the training split minus a validation split (``val_fraction``); its
hyper-parameters and the best attack are chosen by the final model's validation accuracy; the
final model's test accuracy (:func:`undistill.analysis.test_accuracy`) is what the table
reports, as mean and 95 % Student-t confidence interval over seeds (:func:`undistill.stats.mean_ci`).

Run: ``python -m undistill.defences.leaderboard --out docs/results/defences-demo``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from undistill import recipes
from undistill.analysis import test_accuracy
from undistill.config import ConfigError, RunConfig, Runtime, builtin_specs, load_spec
from undistill.data import normalize
from undistill.defences.base import DefenceConfig, build_defence
from undistill.defences.release_path import released_answers
from undistill.engine import train_run
from undistill.runs import get_dataset, load_run_model
from undistill.stats import mean_ci
from undistill.suites.plan import scale_of, teacher_group
from undistill.suites.spec import load_suite

Model = Literal["normal", "nasty", "nasty-es", "scm-release"]
#: what each released ``model`` is (docs/defences.md)
MODELS: dict[str, str] = {
    "normal": "the suite's normal teacher",
    "nasty": "its nasty version (Eq. 5)",
    "nasty-es": "Nasty KD ES: the nasty training stopped at the SCM release's validation accuracy",
    "scm-release": "the SCM defence: S^r of the nasty teacher's sequence (Eq. 10)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AttackSpec(_Strict):
    name: str
    method: str
    grid: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1,
                                       description="candidate method parameters, chosen on validation")
    data: dict[str, Any] = Field(default_factory=dict, description="data-config fields of this "
                                 "attack (e.g. classes: out-of-distribution queries)")
    teachers: Literal["released", "sequence"] = Field(
        "released", description="sequence: the SCM sequence S^1..S^k of the nasty teacher (only "
        "for the undefended nasty teacher, where that sequence exists)")


class DefenceEntry(_Strict):
    name: str
    model: Model = "normal"
    output: DefenceConfig | None = None


class StudentSpec(_Strict):
    arch: str = "cnn"
    width: float = Field(0.5, gt=0.0)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(128, ge=1)
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of the training split")


class LeaderboardSpec(_Strict):
    name: str
    title: str = ""
    suite: str = Field("demo", description="victim teachers: this suite's first teacher group")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    select_seed: int = Field(0, description="seed on which grid candidates are compared")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    student: StudentSpec = Field(default_factory=StudentSpec)
    vanilla: str = Field("vanilla", description="the attack that is the floor (no teacher)")
    attacks: list[AttackSpec] = Field(min_length=1)
    defences: list[DefenceEntry] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> LeaderboardSpec:
        for what, names in (("attacks", [a.name for a in self.attacks]),
                            ("defences", [d.name for d in self.defences])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what}: names repeat: {names}")
        if self.vanilla not in [a.name for a in self.attacks]:
            raise ValueError(f"vanilla: {self.vanilla!r} is not among the attacks")
        if self.select_seed not in self.seeds:
            raise ValueError(f"select_seed: {self.select_seed} is not among the seeds {self.seeds}")
        return self


def builtin_leaderboards() -> list[str]:
    return builtin_specs("undistill.defences")


def load_leaderboard(name_or_path: str | Path) -> LeaderboardSpec:
    """A built-in leaderboard (``defences-demo``, ``defences-cifar10-cpu``) by name, or a YAML
    file by path."""
    return load_spec(name_or_path, "undistill.defences", "leaderboard", LeaderboardSpec)


@dataclass
class Victims:
    normal: RunConfig
    nasty: RunConfig
    sequence: list[RunConfig]
    release: RunConfig
    data: dict[str, Any]


def victims(spec: LeaderboardSpec, runtime: Runtime) -> tuple[Victims, dict[Model, RunConfig]]:
    """Train (or read back) the suite's teachers: normal, nasty, the SCM release S^r, and Nasty
    KD ES when a defence releases it.

    The attacker's sequence is S^1..S^r (the nasty teacher up to the release), so no model
    beyond the release is trained."""
    suite = load_suite(spec.suite)
    _, scale = scale_of(suite, None)
    g = teacher_group(suite, suite.teachers[0], scale)
    if g.defence is None:
        raise ConfigError(f"suite: {spec.suite!r} releases no SCM defence")
    sequence = g.sequence[:suite.defence.release]
    for run in (g.normal, g.nasty, *sequence):
        train_run(run, runtime)
    v = Victims(g.normal, g.nasty, sequence, g.defence, g.normal.data.model_dump())
    models: dict[Model, RunConfig] = {"normal": g.normal, "nasty": g.nasty, "scm-release": g.defence}
    if any(d.model == "nasty-es" for d in spec.defences):
        # as the suites build it (Table 6): stopped at the release's best validation accuracy
        target = train_run(g.defence, runtime).best_acc
        models["nasty-es"] = recipes.nasty_es(g.nasty, target, name=f"nasty-ES {g.spec.arch}")
        train_run(models["nasty-es"], runtime)
    return v, models


def attack_config(spec: LeaderboardSpec, v: Victims, models: dict[Model, RunConfig],
                  d: DefenceEntry | None, a: AttackSpec, params: dict[str, Any], seed: int) -> RunConfig:
    """The student run of attack ``a`` with ``params`` against defence ``d`` (None: vanilla)."""
    teachers: list[RunConfig] = []
    if d is not None:
        teachers = v.sequence if a.teachers == "sequence" else [models[d.model]]
    s = spec.student
    cfg = recipes.student(
        teachers, s.arch, a.method, params, width=s.width, dataset=v.normal.data.name,
        data={**v.data, "val_fraction": spec.val_fraction, "fraction": s.fraction, **a.data},
        optim={"epochs": s.epochs, "batch_size": s.batch_size}, seed=seed,
        name=f"{a.name} <- {d.name if d else 'none'} (seed {seed})")
    if d is not None and d.output is not None:
        cfg = cfg.model_copy(update={"defence": d.output})
        cfg = RunConfig.model_validate(cfg.model_dump())
    return cfg


def applicable(a: AttackSpec, d: DefenceEntry) -> bool:
    """SCM's sequence exists for the undefended nasty teacher only (docs/defences.md)."""
    return a.teachers == "released" or (d.model == "nasty" and d.output is None)


@torch.no_grad()
def utility(model_cfg: RunConfig, normal_cfg: RunConfig, output: DefenceConfig | None,
            runtime: Runtime, bins: int = 15, seed: int = 0) -> dict[str, float]:
    """Top-1 accuracy, agreement with the normal teacher, ECE and NLL of the released answers."""
    ds = get_dataset(model_cfg.data.name, runtime.data_root, model_cfg.data.resize)
    model = load_run_model(model_cfg, runtime.runs_dir, runtime.data_root)
    normal = load_run_model(normal_cfg, runtime.runs_dir, runtime.data_root)
    defence = build_defence(output, ds.num_classes) if output is not None else None
    torch.manual_seed(seed)  # noise defences: a fixed draw
    r = released_answers(model, ds.test_images, ds.mean, ds.std, defence)  # as users get them
    ref = torch.cat([normal(normalize(xb, ds.mean, ds.std)).argmax(1) for xb in ds.test_images.split(1000)])
    y = ds.test_labels
    pred = r.argmax(1)
    p = r / r.sum(1, keepdim=True).clamp_min(1e-12)  # rounded rows: as a client reads them
    conf = p.max(1).values
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ece += float(m.float().mean() * ((pred[m] == y[m]).float().mean() - conf[m].mean()).abs())
    nll = float(-p.gather(1, y[:, None]).clamp_min(1e-6).log().mean())
    return {"utility_acc": 100.0 * float((pred == y).float().mean()),
            "agreement": 100.0 * float((pred == ref).float().mean()), "ece": ece, "nll": nll}


def _ci(values: list[float]) -> dict[str, float]:
    """Mean and 95 % Student-t interval over seeds (``lo = hi = mean`` for one seed)."""
    m = mean_ci(values)
    half = m.ci or 0.0
    return {"mean": m.mean, "lo": m.mean - half, "hi": m.mean + half, "n": m.n}


def run_leaderboard(spec: LeaderboardSpec, runtime: Runtime, out_dir: Path,
                    log: Any = print) -> dict[str, Any]:
    """Train everything (finished runs are read back), write the results to ``out_dir``.

    The outputs are rewritten after every defence, so an interrupted run leaves the defences done
    so far on disk; running it again resumes (runs are content-addressed)."""
    t0, c0 = time.perf_counter(), time.process_time()
    v, models = victims(spec, runtime)
    log(f"victims ready ({time.perf_counter() - t0:.0f} s)")
    attacks = {a.name: a for a in spec.attacks}
    vanilla = attacks[spec.vanilla]

    def student(cfg: RunConfig) -> dict[str, Any]:
        res = train_run(cfg, runtime)  # last_acc: the final model on val
        test = test_accuracy(cfg, runtime.runs_dir, runtime.data_root)  # the final model, once
        return {"val": res.last_acc, "test": test, "run_id": cfg.run_id}

    floor = {s: student(attack_config(spec, v, models, None, vanilla, vanilla.grid[0], s))
             for s in spec.seeds}
    out: dict[str, Any] = {"name": spec.name, "title": spec.title, "seeds": spec.seeds,
                           "vanilla": _ci([floor[s]["test"] for s in spec.seeds]),
                           "rows": [], "cells": [], "notes": spec.notes}
    for d in spec.defences:
        model_cfg = models[d.model]
        row: dict[str, Any] = {"defence": d.name, "model": d.model,
                               "params": d.output.model_dump(mode="json") if d.output else None,
                               "teacher_acc": test_accuracy(model_cfg, runtime.runs_dir, runtime.data_root,
                                                             which="auto"),  # as released
                               **utility(model_cfg, v.normal, d.output, runtime)}
        results = {}
        for a in spec.attacks:
            if a.name == spec.vanilla or not applicable(a, d):
                continue
            # hyper-parameters: the candidate with the best validation accuracy on select_seed
            trials = [student(attack_config(spec, v, models, d, a, g, spec.select_seed))["val"]
                      for g in a.grid]
            best = max(range(len(trials)), key=trials.__getitem__)
            per_seed = {s: student(attack_config(spec, v, models, d, a, a.grid[best], s))
                        for s in spec.seeds}
            results[a.name] = {
                "params": a.grid[best], "grid_val": trials,
                "val": _ci([r["val"] for r in per_seed.values()]),
                "test": _ci([r["test"] for r in per_seed.values()]),
                "protection": _ci([floor[s]["test"] - per_seed[s]["test"] for s in spec.seeds]),
                "seeds": {str(s): r for s, r in per_seed.items()}}
            out["cells"].append({"defence": d.name, "attack": a.name, **results[a.name]})
            log(f"{d.name:>16} <- {a.name:<14} val {results[a.name]['val']['mean']:6.2f} "
                f"test {results[a.name]['test']['mean']:6.2f} ({time.perf_counter() - t0:.0f} s)")
        best_attack = max(results, key=lambda k: results[k]["val"]["mean"])  # chosen on validation
        b = results[best_attack]
        row.update(best_attack=best_attack, best_attack_params=b["params"],
                   best_attack_acc=b["test"]["mean"], best_attack_ci=[b["test"]["lo"], b["test"]["hi"]],
                   protection=b["protection"]["mean"],
                   protection_ci=[b["protection"]["lo"], b["protection"]["hi"]])
        out["rows"].append(row)
        out["rows"].sort(key=lambda r: -r["protection"])
        out.update(wall_time_s=time.perf_counter() - t0, cpu_time_s=time.process_time() - c0,
                   complete=d is spec.defences[-1])
        write_outputs(out, out_dir)
    return out


def markdown(out: dict[str, Any]) -> str:
    v = out["vanilla"]
    lines = [f"# {out['title'] or out['name']}", ""]
    if not out.get("complete", True):
        lines += ["**Incomplete**: the run was interrupted; the defences below are those finished.", ""]
    lines += [f"Vanilla student (the floor, no teacher): {v['mean']:.2f} % test accuracy "
              f"[{v['lo']:.2f}, {v['hi']:.2f}] (mean and 95 % CI over seeds {out['seeds']}).", "",
              "Sorted by protection (vanilla minus the best attack's student; higher protects more). "
              "Utility columns are the released answers on the test split; the best attack and its "
              "hyper-parameters are chosen on a validation split.", "",
              "| Defence | Model | Utility acc (%) | Agreement (%) | ECE | NLL | Best attack | "
              "Best attack acc (%) [95 % CI] | Protection (points) [95 % CI] |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in out["rows"]:
        lines.append(f"| {r['defence']} | {r['model']} | {r['utility_acc']:.2f} | {r['agreement']:.2f} | "
                     f"{r['ece']:.3f} | {r['nll']:.3f} | {r['best_attack']} | {r['best_attack_acc']:.2f} "
                     f"[{r['best_attack_ci'][0]:.2f}, {r['best_attack_ci'][1]:.2f}] | "
                     f"{r['protection']:+.2f} [{r['protection_ci'][0]:+.2f}, {r['protection_ci'][1]:+.2f}] |")
    attacks = sorted({c["attack"] for c in out["cells"]}, key=[c["attack"] for c in out["cells"]].index)
    lines += ["", "## Every attack against every defence", "",
              "Student test accuracy (%), mean over seeds; `-`: not applicable.", "",
              "| Defence | " + " | ".join(attacks) + " |", "| --- |" + " --- |" * len(attacks)]
    by = {(c["defence"], c["attack"]): c for c in out["cells"]}
    for r in out["rows"]:
        vals = [f"{by[(r['defence'], a)]['test']['mean']:.2f}" if (r["defence"], a) in by else "-"
                for a in attacks]
        lines.append(f"| {r['defence']} | " + " | ".join(vals) + " |")
    used = list(dict.fromkeys(r["model"] for r in out["rows"]))
    lines += ["", "Model: " + "; ".join(f"{m} = {MODELS[m]}" for m in used if m in MODELS) + "."]
    if out["notes"]:
        lines += ["", "## Choices", ""] + [f"- {n}" for n in out["notes"]]
    return "\n".join(lines) + "\n"


def write_outputs(out: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ("defence", "params", "utility_acc", "agreement", "best_attack", "best_attack_acc",
            "protection")
    (out_dir / "leaderboard.json").write_text(json.dumps(
        {"rows": [{k: r[k] for k in keys} for r in out["rows"]], "details": out}, indent=1) + "\n")
    (out_dir / "leaderboard.md").write_text(markdown(out))
    pareto_plot(out["rows"], out_dir / "pareto.png")


def pareto_plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Utility (released top-1 accuracy) against protection, the Pareto front joined."""
    from undistill.plots import _figure, _save

    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    names: dict[tuple[float, float], list[str]] = {}  # defences on one spot share one label
    for r in rows:
        lo, hi = r["protection_ci"]
        ax.errorbar(r["utility_acc"], r["protection"], yerr=[[r["protection"] - lo], [hi - r["protection"]]],
                    fmt="o", color="tab:blue", ecolor="lightsteelblue", capsize=2)
        names.setdefault((round(r["utility_acc"], 1), round(r["protection"], 1)), []).append(r["defence"])
    for i, ((x, y), spot) in enumerate(sorted(names.items())):
        ax.annotate(", ".join(spot), (x, y), fontsize=7, xytext=(3, 3 if i % 2 else -9),
                    textcoords="offset points")
    front, best = [], float("-inf")
    for r in sorted(rows, key=lambda r: (-r["utility_acc"], -r["protection"])):
        if r["protection"] > best:
            front.append(r)
            best = r["protection"]
    ax.plot([r["utility_acc"] for r in front], [r["protection"] for r in front], color="tab:red",
            linewidth=1, label="Pareto front")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("utility: released top-1 accuracy (%)")
    ax.set_ylabel("protection: vanilla - best attack (points, 95 % CI)")
    ax.legend(fontsize=8)
    _save(fig, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m undistill.defences.leaderboard",
                                 description="every attack against every defence (docs/defences.md)")
    ap.add_argument("spec", nargs="?", default="defences-demo", help="built-in name or YAML path")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs-dir", type=Path, default=Path("runs"))
    ap.add_argument("--data-root", type=Path, default=None,
                    help="the dataset's files (cifar10-jpeg: the archive or its folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    spec = load_leaderboard(args.spec)
    runtime = Runtime(runs_dir=args.runs_dir, data_root=args.data_root, device=args.device,
                      progress=False, num_threads=args.threads)
    out = run_leaderboard(spec, runtime, args.out)
    print(f"wrote {args.out} ({out['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
