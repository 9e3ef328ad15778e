""""Can my model be stolen?": attacks at a query budget against any teacher, and a verdict.

``audit(teacher, dataset, arch, budget, out)`` runs KD, HTC, the Skeptical student and the
hard-label attack (by default) against the teacher, each with ``budget`` images (one probe plus
``budget - 1`` training images, no labels: the attacker only has the teacher's answers), plus an
accuracy-vs-queries curve (the first method at several smaller budgets), and writes:

* ``out/audit.json``: ``teacher`` (its accuracy on the test set, identity), ``attacks`` (a list of
  ``{method, arch, accuracy, agreement, queries, run_id, run_dir}``; accuracy of the student's
  *last* checkpoint on the test set, agreement = top-1 agreement with the teacher on the test set,
  queries = images the attack may send, ``run_dir`` the student's run folder, named ``run_id``),
  ``curve`` (the same per budget) and the ``verdict``;
* ``out/report.md`` with the verdict, the table and the curve (``out/curve.png``).

The smaller budgets' transfer sets are prefixes of the larger one's (one fixed permutation), and
every answer goes through one answer cache, so the whole audit sends at most ``budget`` images to a
URL teacher. Scoring the teacher on the test set is the owner's own evaluation: those queries are
outside the budget (and cached too).

Verdict: *stealable* when the best attack's accuracy is within ``margin`` points (default 5) of the
teacher's, else *not stolen at this budget*.

Every argument is checked before the teacher is opened (:func:`check_arguments`): a bad one is a
ConfigError naming it, and nothing is queried, trained or written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from undistill.checkpoint import atomic_write_json
from undistill.config import ConfigError, InputSpec, Runtime
from undistill.teachers import Teacher

DEFAULT_METHODS = ("kd", "htc", "skeptical", "hard-label")


def label_free(method: str) -> dict[str, Any] | None:
    """What ``method`` needs to run without labels (its ``label_free_params``), or None."""
    from undistill.methods import METHODS

    return dict(METHODS.get(method).label_free_params) or None


def curve_budgets(budget: int, points: int = 4) -> list[int]:
    """``budget``, ``budget/2``, ``budget/4`` ... (``points`` of them, each at least 2), ascending."""
    return sorted({max(2, budget // (2 ** i)) for i in range(points)})


def attack_methods() -> list[str]:
    """The registered methods an audit can run: they learn from one teacher, without labels."""
    from undistill.methods import method_names

    return method_names(lambda cls: cls.needs_teacher() and not cls.makes_teacher
                        and not cls.needs_labels)


def check_methods(methods: list[str]) -> None:
    """A ConfigError unless ``methods`` are attacks (:func:`attack_methods`), each once."""
    known = attack_methods()
    if not methods:
        raise ConfigError("methods: give at least one attack")
    for i, m in enumerate(methods):
        if m not in known:
            raise ConfigError(f"methods: {m!r} is not an attack (one that learns from the "
                              f"teacher's answers, without labels); known: {', '.join(known)}")
        if m in methods[:i]:
            raise ConfigError(f"methods: {m!r} is given twice")


def check_arguments(budget: int, curve_points: int, methods: list[str], epochs: int | None,
                    width: float, margin: float, device: str, client: dict[str, Any]) -> None:
    """A ConfigError naming the first bad argument of :func:`audit`, before any work."""
    from undistill.devices import select_device

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(budget >= 2, f"budget: must be at least 2 (one image goes to the probe), got {budget}")
    need(curve_points >= 1, f"curve_points: must be at least 1, got {curve_points}")
    need(epochs is None or epochs >= 1, f"epochs: must be at least 1, got {epochs}")
    need(0 < width <= 4, f"width: must be in (0, 4] (as a run config's), got {width}")
    need(margin >= 0, f"margin: must be at least 0 (accuracy points), got {margin}")
    check_methods(methods)
    need(client.get("api_key") != "", "api_key: empty; an empty key would send no "
         "credentials (give None for a teacher without authentication)")
    select_device(device)  # a ConfigError for a device this machine lacks


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * (a.argmax(1) == b.argmax(1)).float().mean().item()


def audit(teacher: Teacher | str | Path, dataset: str, arch: str = "cnn", budget: int = 1000,
          out: Path = Path("audit"), *, data_root: Path | None = None,
          methods: tuple[str, ...] | list[str] = DEFAULT_METHODS, curve_points: int = 4,
          epochs: int | None = None, width: float = 1.0, seed: int = 0,
          sets: list[str] | None = None, margin: float = 5.0, device: str = "auto",
          progress: bool = False, runs_dir: Path | None = None,
          spec: InputSpec | dict[str, Any] | None = None, teacher_arch: str | None = None,
          teacher_width: float = 1.0, trust_factory: bool = False, **client: Any) -> dict[str, Any]:
    """Run the audit and write ``out/audit.json``, ``out/report.md``, ``out/curve.png``.

    ``trust_factory``: a YAML file beside a state_dict may name a factory
    ``package.module:function`` as its architecture (that code runs); ``client``: options of a
    URL teacher (:class:`~undistill.teachers.remote.RemoteTeacher`)."""
    from undistill.analysis import predict_logits
    from undistill.devices import select_device
    from undistill.executor import LocalExecutor
    from undistill.progress import Reporter
    from undistill.runs import get_dataset, load_run_model
    from undistill.stealing import open_teacher, opener_for, student_config
    from undistill.teachers.measure import test_logits

    out = Path(out)
    runs_dir = Path(runs_dir or out / "runs")
    methods = list(methods)
    check_arguments(budget, curve_points, methods, epochs, width, margin, device, client)
    opener = opener_for(runs_dir, budget, data_root, trust_factory, **client)
    t = open_teacher(teacher, dataset, data_root, runs_dir, spec, teacher_arch, teacher_width,
                     budget=budget, opener=opener)
    ds = get_dataset(dataset, data_root)
    budgets = curve_budgets(budget, curve_points)
    curve_method = methods[0]
    plans: dict[tuple[str, int], Any] = {}
    for m in methods:
        plans[(m, budget)] = student_config(t, dataset, arch, m, budget, width, labels=False,
                                            epochs=epochs, params=label_free(m),
                                            seed=seed, sets=sets,
                                            name=f"audit {m} {arch} @{budget}")
    for b in budgets:
        plans.setdefault((curve_method, b), student_config(
            t, dataset, arch, curve_method, b, width, labels=False, epochs=epochs,
            params=label_free(curve_method), seed=seed,
            sets=sets, name=f"audit {curve_method} {arch} @{b}"))
    runtime = Runtime(runs_dir=runs_dir, data_root=data_root, device=device, progress=progress,
                      opener=opener)
    # the largest budget first: smaller transfer sets are its prefixes, answered from the cache
    order = sorted(plans, key=lambda k: -k[1])
    results = LocalExecutor(Reporter(enabled=progress)).run([plans[k] for k in order], runtime)

    def where(cfg: Any) -> dict[str, str]:  # the folder the run was trained in (data bound)
        res = results[cfg.run_id]
        return {"run_id": res.run_id, "run_dir": str(res.run_dir)}

    dev = select_device(device)
    t_logits = test_logits(t.unbudgeted(), ds, dev)  # the owner's evaluation: outside the budget
    labels = ds.test_labels
    t_acc = 100.0 * (t_logits.argmax(1) == labels).float().mean().item()

    def score(cfg: Any) -> tuple[float, float]:
        model = load_run_model(cfg, runs_dir, data_root, which="last", device=dev)
        with torch.no_grad():
            s = predict_logits(model, ds.test_images, ds.mean, ds.std, device=dev)
        return 100.0 * (s.argmax(1) == labels).float().mean().item(), _agreement(s, t_logits)

    attacks = []
    for m in methods:
        acc, agr = score(plans[(m, budget)])
        attacks.append({"method": m, "arch": arch, "accuracy": acc, "agreement": agr,
                        "queries": budget, **where(plans[(m, budget)])})
    curve = []
    for b in budgets:
        acc, agr = score(plans[(curve_method, b)])
        curve.append({"method": curve_method, "queries": b, "accuracy": acc, "agreement": agr,
                      **where(plans[(curve_method, b)])})
    best = max(attacks, key=lambda a: a["accuracy"])
    stolen = best["accuracy"] >= t_acc - margin
    verdict = (f"stealable: with {budget} queries, {best['method']} reaches "
               f"{best['accuracy']:.2f}% (teacher {t_acc:.2f}%, {best['agreement']:.1f}% "
               f"agreement)" if stolen else
               f"not stolen at {budget} queries: the best attack ({best['method']}) reaches "
               f"{best['accuracy']:.2f}% against the teacher's {t_acc:.2f}% "
               f"(more than {margin:g} points below)")
    doc = {"teacher": {"accuracy": t_acc, **t.describe()}, "dataset": dataset, "budget": budget,
           "split": "test", "attacks": attacks, "curve": curve, "stealable": stolen,
           "margin": margin, "verdict": verdict}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "audit.json", doc)
    _report(doc, out)
    return doc


def _report(doc: dict[str, Any], out: Path) -> None:
    from undistill.plots import line_plot

    curve = doc["curve"]
    line_plot([c["queries"] for c in curve],
              {f"{curve[0]['method']} student": [c["accuracy"] for c in curve],
               "teacher": [doc["teacher"]["accuracy"]] * len(curve)},
              "queries (images sent to the teacher)", "test accuracy (%)",
              f"accuracy vs queries on {doc['dataset']}", out / "curve.png", logx=True)
    lines = ["# Audit: can this model be stolen?", "",
             f"Teacher `{doc['teacher']['source']}` ({doc['teacher']['kind']}, identity "
             f"`{doc['teacher']['identity']}`): {doc['teacher']['accuracy']:.2f}% on the "
             f"{doc['dataset']} test set.", "",
             f"**Verdict: {doc['verdict']}.**", "",
             "| attack | student | accuracy (%) | agreement with teacher (%) | queries |",
             "|---|---|---|---|---|"]
    lines += [f"| {a['method']} | {a['arch']} | {a['accuracy']:.2f} | {a['agreement']:.2f} | "
              f"{a['queries']} |" for a in doc["attacks"]]
    lines += ["", f"## Accuracy vs queries ({curve[0]['method']})", "",
              "| queries | accuracy (%) | agreement (%) |", "|---|---|---|"]
    lines += [f"| {c['queries']} | {c['accuracy']:.2f} | {c['agreement']:.2f} |" for c in curve]
    lines += ["", "![accuracy vs queries](curve.png)", "",
              "Accuracy: the student's last checkpoint on the test set; agreement: top-1 agreement "
              "with the teacher on the test set; queries: images the attack may send (one probe "
              "plus its training images). Students learn from the teacher's answers only (no "
              "labels).", ""]
    (out / "report.md").write_text("\n".join(lines))
