"""The defence leaderboard: every attack against every defence, utility against protection.

For each defence (a released model, optionally behind an output defence):

* utility, on the test split: the released answers' top-1 accuracy, their agreement with the
  undefended (normal) teacher, and the calibration cost (ECE, NLL) honest users see;
* protection: the accuracy of the **best** attack's student against the undefended release (the
  spec's ``reference``) minus that of the best attack's student against the defence, with the 95 %
  Welch t interval over their per-seed accuracies (the audit's definition,
  :func:`undistill.audit_defences.welch_interval`); each best attack (and its hyper-parameters)
  chosen on a validation split, never on the test set. The vanilla student (true labels, no
  teacher) stays as a reference column ("vanilla minus best attack"). With ``student.labels:
  false`` the thief has no labels, and the board says whether its setting is one where the
  undefended teacher is actually stolen (best attack at least ``stolen_fraction`` of the normal
  teacher's test accuracy): only there can the board tell defences apart.

Every student trains on the training split minus a validation split (``val_fraction``); its
hyper-parameters and the best attack are chosen by the final model's validation accuracy; the
final model's test accuracy (:func:`undistill.analysis.test_accuracy`) is what the table
reports, as mean and 95 % Student-t confidence interval over seeds (:func:`undistill.stats.mean_ci`).

Every run trains through an :class:`undistill.executor.Executor` (each run under its lock; the
Ray executor spreads a stage's runs over a cluster): the normal teacher first, then the vanilla
students of every seed, then per defence (the reference, the other defences of the normal teacher,
then the rest) the victims it releases when not yet trained, the grid candidates of every attack and
then every attack's seeds, each stage one ``executor.run`` call. A victim trains when its first
defence is reached, so an interrupted board keeps every row finished before it. The spec and the
run configs are :mod:`undistill.suites.leaderboard_spec`.

Run: ``undistill leaderboard defences-demo --out docs/results/defences-demo``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from undistill.analysis import predict_logits, test_accuracy
from undistill.audit_defences import welch_interval
from undistill.config import RunConfig, Runtime
from undistill.data import normalize
from undistill.defences.base import DefenceConfig, build_defence
from undistill.defences.release_path import released_answers
from undistill.executor import Executor, LocalExecutor
from undistill.metrics import ece
from undistill.runs import bind_data, get_dataset, load_run_model, split_validation
from undistill.stats import mean_ci
from undistill.suites.leaderboard_spec import (
    MODELS,
    AttackSpec,
    DefenceEntry,
    LeaderboardSpec,
    Model,
    StudentSpec,
    Victims,
    applicable,
    attack_config,
    builtin_leaderboards,
    check_budget,
    load_leaderboard,
    nasty_es,
    victim_plan,
)

__all__ = ["MODELS", "AttackSpec", "DefenceEntry", "LeaderboardSpec", "Model", "StudentSpec", "Victims",
           "applicable", "attack_config", "builtin_leaderboards", "check_budget", "load_leaderboard",
           "markdown", "pareto_plot", "run_leaderboard", "stolen_regime", "utility", "val_accuracy",
           "victims", "write_outputs"]


def victims(spec: LeaderboardSpec, runtime: Runtime, executor: Executor | None = None,
            defences: list[DefenceEntry] | None = None) -> tuple[Victims, dict[Model, RunConfig]]:
    """Train (or read back) the suite's teachers that ``defences`` (default: the spec's) release:
    the normal teacher always; the nasty one for a nasty defence; the sequence S^1..S^r and the SCM
    release S^r where a release or an SCM attack on the nasty teacher needs them (one
    ``executor.run``), then Nasty KD ES when a defence releases it."""
    executor = executor or LocalExecutor()
    v = victim_plan(spec)
    defences = spec.defences if defences is None else defences
    used = {d.model for d in defences}
    sequence = "nasty-es" in used or "scm-release" in used or any(
        applicable(a, d) and a.teachers == "sequence" and d.model == "nasty"
        for a in spec.attacks for d in defences)
    need = [v.normal] + ([v.nasty] if used & {"nasty", "nasty-es"} or sequence else []) + (
        [*v.sequence, v.release] if sequence else [])
    results = executor.run(list({c.run_id: c for c in need}.values()), runtime)
    models: dict[Model, RunConfig] = {"normal": v.normal, "nasty": v.nasty, "scm-release": v.release}
    if "nasty-es" in used:
        # as the suites build it (Table 6): stopped at the release's best validation accuracy;
        # the nasty teacher itself where its training never reaches it (the same weights)
        models["nasty-es"] = nasty_es(v, results[v.release.run_id].best_acc,
                                      results[v.nasty.run_id].best_acc)
        if models["nasty-es"] is not v.nasty:
            executor.run([models["nasty-es"]], runtime)
    return v, models


def val_accuracy(cfg: RunConfig, runs_dir: Path, data_root: Path | None = None,
                 device: torch.device | str = "cpu", which: str = "auto") -> float:
    """A finished run's accuracy (%) on its data's validation split (true labels), of one
    checkpoint: how a board that holds the labels compares query-budgeted thieves, whose own
    evaluation split is their held-out paid answers (agreement with the teacher, not accuracy)."""
    cfg = bind_data(cfg, data_root)
    if cfg.data.val_fraction <= 0:
        raise ValueError(f"run {cfg.run_id}: data.val_fraction is 0, there is no validation split")
    ds = get_dataset(cfg.data.name, data_root, cfg.data.resize)
    _, val_idx = split_validation(ds.train_labels, cfg.data.val_fraction, cfg.data.val_seed)
    model = load_run_model(cfg, runs_dir, data_root, which=which, device=device)
    with torch.no_grad():
        z = predict_logits(model, ds.train_images[val_idx], ds.mean, ds.std, device=device)
    return 100.0 * float((z.argmax(1) == ds.train_labels[val_idx]).double().mean())


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
    nll = float(-p.gather(1, y[:, None]).clamp_min(1e-6).log().mean())
    return {"utility_acc": 100.0 * float((pred == y).float().mean()),
            "agreement": 100.0 * float((pred == ref).float().mean()), "ece": ece(r, y, bins),
            "nll": nll}


def _ci(values: list[float]) -> dict[str, float]:
    """Mean and 95 % Student-t interval over seeds (``lo = hi = mean`` for one seed)."""
    m = mean_ci(values)
    half = m.ci or 0.0
    return {"mean": m.mean, "lo": m.mean - half, "hi": m.mean + half, "n": m.n}


def run_leaderboard(spec: LeaderboardSpec, runtime: Runtime, out_dir: Path, log: Any = print,
                    executor: Executor | None = None) -> dict[str, Any]:
    """Train everything through ``executor`` (default: one run after another in this process;
    finished runs are read back), write the results to ``out_dir``.

    The outputs are rewritten after every defence, so an interrupted run leaves the defences done
    so far on disk; running it again resumes (runs are content-addressed)."""
    t0, c0 = time.perf_counter(), time.process_time()
    executor = executor or LocalExecutor()
    check_budget(spec, runtime.data_root)  # before anything trains
    v, models = victims(spec, runtime, executor, [d for d in spec.defences if d.name == spec.reference])
    log(f"normal teacher ready ({time.perf_counter() - t0:.0f} s)")
    attacks = {a.name: a for a in spec.attacks}
    vanilla = attacks[spec.vanilla]

    def students(cfgs: list[RunConfig]) -> list[dict[str, Any]]:
        """Train a stage's students in one executor call; each final model's val and test accuracy."""
        res = executor.run(cfgs, runtime)  # last_acc: the final model on val
        rd, root = runtime.runs_dir, runtime.data_root
        # a thief's student is its checkpoint chosen on its held-out paid answers (as the audit's),
        # scored on the validation split here (its own evaluation split is those answers)
        return [{"val": val_accuracy(c, rd, root) if c.thief else res[c.run_id].last_acc,
                 "test": test_accuracy(c, rd, root, which="auto" if c.thief else "last"),  # once
                 "run_id": c.run_id} for c in cfgs]

    floor = dict(zip(spec.seeds, students([attack_config(spec, v, models, None, vanilla, vanilla.grid[0], s)
                                           for s in spec.seeds]), strict=True))
    out: dict[str, Any] = {"name": spec.name, "title": spec.title, "seeds": spec.seeds,
                           "vanilla": _ci([floor[s]["test"] for s in spec.seeds]),
                           "rows": [], "cells": [], "notes": spec.notes}
    best_by_seed: dict[str, dict[int, float]] = {}  # defence -> seed -> its best attack's test acc
    # the reference first, then the defences of the normal teacher (no other victim to train),
    # then the others in the spec's order, each victim trained when its first defence is reached
    ordered = sorted(spec.defences, key=lambda d: (d.name != spec.reference, d.model != "normal"))
    for d in ordered:
        if d.model != "normal":
            _, more = victims(spec, runtime, executor, [d])
            models.update(more)
            log(f"{d.model} ready ({time.perf_counter() - t0:.0f} s)")
        model_cfg = models[d.model]
        row: dict[str, Any] = {"defence": d.name, "model": d.model,
                               "params": d.output.model_dump(mode="json") if d.output else None,
                               "teacher_acc": test_accuracy(model_cfg, runtime.runs_dir, runtime.data_root,
                                                             which="auto"),  # as released
                               **utility(model_cfg, v.normal, d.output, runtime)}
        run = [a for a in spec.attacks if a.name != spec.vanilla and applicable(a, d)]
        # hyper-parameters: the candidate with the best validation accuracy on select_seed
        trials = iter(students([attack_config(spec, v, models, d, a, g, spec.select_seed)
                                for a in run for g in a.grid]))
        grid_val = {a.name: [next(trials)["val"] for _ in a.grid] for a in run}
        chosen = {a.name: a.grid[max(range(len(a.grid)), key=grid_val[a.name].__getitem__)] for a in run}
        seeds = iter(students([attack_config(spec, v, models, d, a, chosen[a.name], s)
                               for a in run for s in spec.seeds]))
        results = {}
        for a in run:
            per_seed = {s: next(seeds) for s in spec.seeds}
            results[a.name] = {
                "params": chosen[a.name], "grid_val": grid_val[a.name],
                "val": _ci([r["val"] for r in per_seed.values()]),
                "test": _ci([r["test"] for r in per_seed.values()]),
                "vs_vanilla": _ci([floor[s]["test"] - per_seed[s]["test"] for s in spec.seeds]),
                "seeds": {str(s): r for s, r in per_seed.items()}}
            out["cells"].append({"defence": d.name, "attack": a.name, **results[a.name]})
            log(f"{d.name:>16} <- {a.name:<14} val {results[a.name]['val']['mean']:6.2f} "
                f"test {results[a.name]['test']['mean']:6.2f} ({time.perf_counter() - t0:.0f} s)")
        best_attack = max(results, key=lambda k: results[k]["val"]["mean"])  # chosen on validation
        b = results[best_attack]
        best_by_seed[d.name] = {s: b["seeds"][str(s)]["test"] for s in spec.seeds}
        ref, mine = list(best_by_seed[spec.reference].values()), list(best_by_seed[d.name].values())
        p_ci = [0.0, 0.0] if d.name == spec.reference else welch_interval(ref, mine)
        protection = 0.0 if d.name == spec.reference else mean_ci(ref).mean - mean_ci(mine).mean
        row.update(best_attack=best_attack, best_attack_params=b["params"],
                   best_attack_acc=b["test"]["mean"], best_attack_ci=[b["test"]["lo"], b["test"]["hi"]],
                   protection=protection, protection_ci=p_ci or [protection, protection],
                   vs_vanilla=b["vs_vanilla"]["mean"],
                   vs_vanilla_ci=[b["vs_vanilla"]["lo"], b["vs_vanilla"]["hi"]])
        if d.name == spec.reference:
            out["stolen"] = stolen_regime(spec, b["test"]["mean"], row["teacher_acc"])
        out["rows"].append(row)
        out["rows"].sort(key=lambda r: -r["protection"])
        out.update(wall_time_s=time.perf_counter() - t0, cpu_time_s=time.process_time() - c0,
                   complete=d is ordered[-1])
        write_outputs(out, out_dir)
    return out


def stolen_regime(spec: LeaderboardSpec, best_acc: float, teacher_acc: float) -> dict[str, Any]:
    """Is the undefended teacher actually stolen in this thief setting? (best attack on the
    reference at least ``stolen_fraction`` of the teacher's test accuracy)"""
    fraction = best_acc / teacher_acc if teacher_acc > 0 else 0.0
    return {"fraction_of_teacher": fraction, "threshold": spec.stolen_fraction,
            "stolen": fraction >= spec.stolen_fraction, "labels": spec.student.labels,
            "reference": spec.reference}


def _stolen_line(out: dict[str, Any]) -> list[str]:
    st = out.get("stolen")
    if st is None:
        return []
    thief = "a thief with labels" if st["labels"] else "a thief without labels"
    verdict = ("**stolen**: the board can tell defences apart" if st["stolen"] else
               f"**not stolen** (below {100 * st['threshold']:.0f} %): the thief barely profits "
               "from any teacher here, so small protections mean little")
    return [f"Thief setting ({thief}): the best attack on the undefended release `{st['reference']}` "
            f"reaches {100 * st['fraction_of_teacher']:.1f} % of the normal teacher's test accuracy: "
            f"{verdict}.", ""]


def markdown(out: dict[str, Any]) -> str:
    v = out["vanilla"]
    lines = [f"# {out['title'] or out['name']}", ""]
    if not out.get("complete", True):
        lines += ["**Incomplete**: the run was interrupted; the defences below are those finished.", ""]
    lines += _stolen_line(out)
    lines += [f"Vanilla student (true labels, no teacher; a reference): {v['mean']:.2f} % test "
              f"accuracy [{v['lo']:.2f}, {v['hi']:.2f}] (mean and 95 % CI over seeds {out['seeds']}).",
              "", "Sorted by protection: the best attack's student against the undefended release "
              "minus the best attack's student against the defence, with a 95 % Welch t interval over "
              "their per-seed accuracies, as the audit's (higher protects more; an interval above "
              "zero is a measured protection). Utility columns are the "
              "released answers on the test split; each best attack and its hyper-parameters are "
              "chosen on a validation split.", "",
              "| Defence | Model | Utility acc (%) | Agreement (%) | ECE | NLL | Best attack | "
              "Best attack acc (%) [95 % CI] | Protection (points) [95 % CI] | "
              "Vanilla minus best attack (points) [95 % CI] |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in out["rows"]:
        lines.append(f"| {r['defence']} | {r['model']} | {r['utility_acc']:.2f} | {r['agreement']:.2f} | "
                     f"{r['ece']:.3f} | {r['nll']:.3f} | {r['best_attack']} | {r['best_attack_acc']:.2f} "
                     f"[{r['best_attack_ci'][0]:.2f}, {r['best_attack_ci'][1]:.2f}] | "
                     f"{_pm(r['protection'], r['protection_ci'])} | "
                     f"{_pm(r['vs_vanilla'], r['vs_vanilla_ci'])} |")
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


def _pm(mean: float, ci: list[float]) -> str:
    return f"{mean:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def write_outputs(out: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = ("defence", "params", "utility_acc", "agreement", "best_attack", "best_attack_acc",
            "protection", "protection_ci", "vs_vanilla")
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
    ax.set_ylabel("protection: best attack, undefended - defended (points, 95 % CI)")
    ax.legend(fontsize=8)
    _save(fig, path)
