""""Can my model be stolen?": attacks at a query budget against any teacher, and a verdict.

``audit(teacher, dataset, arch, budget, out)`` runs KD, HTC, the Skeptical student and the
hard-label attack (by default) against the teacher, each with ``budget`` images (one probe plus
``budget - 1`` training images, no labels: the attacker only has the teacher's answers), each at
the budgets of an accuracy-vs-queries curve (``budget``, ``budget/2``, ...: ``curve_points`` of
them), each trained for ``seeds`` seeds (``seed``, ``seed + 1``, ...: the run config's seed, so the
students' initialisation and batch order differ while the transfer set -- the same paid images --
does not: seeds cost no queries). It writes:

* ``out/audit.json``: ``teacher`` (``accuracy`` on the test set or None when not scored,
  ``scored_with``, source, kind, identity), ``queries_total`` (every image sent to the teacher by
  this call: the probe, the attacks' training images, scoring on the test split) and ``queries``
  (``attacks``, ``scoring``, ``counted``: how), ``attacks`` (one entry per method at ``budget``),
  ``curve`` (one entry per method and budget), ``plateau``, ``stealable``, ``verdict``,
  ``defences`` (empty unless ``defences`` are given: then the undefended teacher, ``label``
  ``none``, and one row per defence, :func:`undistill.audit_defences.defence_entry`: ``defence``
  ``{name, params}``, ``label``, ``utility`` ``{accuracy, agreement, ece}``, ``best_attack``,
  ``best_attack_accuracy_mean``/``_ci``, ``protection_mean``/``_ci``, ``attacks``); an entry
  is :func:`undistill.audit_summary.summarise`'s ``{method, arch, budget, seeds, accuracy_mean,
  accuracy_ci, accuracy_half_width, accuracy, agreement_mean, agreement_ci, agreement, fraction_of_teacher,
  fraction_of_teacher_ci, run_ids, run_dirs}`` (percent, except the fractions; the run folders
  exist, named by the run ids);
* ``out/report.md`` with the verdict, the tables and the curve (``out/curve.png``, every attack).

Defences on the user's own model: each of ``defences`` is audited with every attack and seed at
``budget`` (not the smaller budgets of the curve), the run's ``defence:`` standing between the
teacher and the student, so the defended answers are the raw answers (through the same answer
cache and budget) released through the defence: a URL teacher is not asked again for images
already paid, and ``queries_total`` counts each distinct image once whatever the defences.

The smaller budgets' transfer sets are prefixes of the larger one's (one fixed permutation), and
every answer goes through one answer cache, so the attacks send at most ``budget`` images to a URL
teacher. Scoring the teacher on the test set sends the test split too (counted in
``queries_total``); ``score=False`` skips it (no teacher accuracy, agreement or fraction: the
verdict is in absolute accuracy) and ``score_with`` scores a local copy of the model instead, so a
paid API is charged the budget alone. ``queries_total`` of a URL teacher is its client's count of
images the server answered; of any other teacher, one per distinct image asked (what a URL would
have been sent through the cache).

Verdict: *stealable* when the best attack's (highest mean accuracy at ``budget``) mean accuracy is
within ``margin`` points (default 5) of the teacher's, else *not stolen at this budget*; unknown
(None) when the teacher is not scored.

Every argument is checked before the teacher is opened (:func:`check_arguments`, and the budget
against the thief's pool: :func:`thief_pool`): a bad one is a ConfigError naming it, and nothing is
queried, trained or written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from undistill.audit_plan import (  # noqa: F401 (the audit's checks, importable from here)
    attack_methods,
    check_arguments,
    check_budget,
    check_methods,
    check_pool,
    check_strategies,
    check_thief,
    curve_budgets,
    is_url,
    label_free,
    query_cap,
    query_pool_size,
    thief_pool,
    thief_settings,
)
from undistill.checkpoint import atomic_write_json
from undistill.config import InputSpec, Runtime
from undistill.methods import METHODS
from undistill.teachers import Teacher

#: the attacks run by default: the methods that declare an ``audit_order``, in that order
DEFAULT_METHODS = tuple(sorted((n for n in METHODS.names() if METHODS.get(n).audit_order is not None),
                               key=lambda n: METHODS.get(n).audit_order))


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return 100.0 * (a.argmax(1) == b.argmax(1)).float().mean().item()


def audit(teacher: Teacher | str | Path, dataset: str, arch: str = "cnn", budget: int = 1000,
          out: Path = Path("audit"), *, data_root: Path | None = None,
          methods: tuple[str, ...] | list[str] = DEFAULT_METHODS, curve_points: int = 4,
          strategies: tuple[str, ...] | list[str] = ("random",),
          thief: dict[str, Any] | None = None, width: float = 1.0, seed: int = 0, seeds: int = 3,
          score: bool = True, score_with: str | Path | None = None,
          sets: list[str] | None = None, margin: float = 5.0, device: str = "auto",
          progress: bool = False, runs_dir: Path | None = None,
          defences: list[Any] | None = None, spec: InputSpec | dict[str, Any] | None = None,
          teacher_arch: str | None = None,
          teacher_width: float = 1.0, trust_factory: bool = False, **client: Any) -> dict[str, Any]:
    """Run the audit and write ``out/audit.json``, ``out/report.md``, ``out/curve.png``.

    ``seeds``: students per attack and budget (seeds ``seed`` .. ``seed + seeds - 1``);
    ``strategies``: query strategies (:mod:`undistill.queries`), each run with every method;
    ``thief``: settings of :class:`~undistill.config.ThiefConfig` (steps, augment, holdout,
    patience, rounds, ...) for every student;
    ``score``: score the teacher on the test set (False: teacher accuracy, agreement and fractions
    unknown); ``score_with``: a local copy of the model (file or run directory) scored instead of
    the queried teacher; ``defences``: output defences (``--defence`` specs or
    :class:`~undistill.defences.DefenceConfig`), each audited with the same attacks and seeds at
    ``budget`` (:mod:`undistill.audit_defences`); ``trust_factory``: a YAML file beside a
    state_dict may name a factory ``package.module:function`` as its architecture (that code
    runs); ``client``: options of a
    URL teacher (:class:`~undistill.teachers.remote.RemoteTeacher`)."""
    from undistill.analysis import predict_logits
    from undistill.audit_defences import defence_entry, parse_defences, released_test, utility
    from undistill.audit_summary import (
        attack_label,
        plateau,
        summarise,
        verdict_text,
        write_report,
    )
    from undistill.data import CLASS_COUNTS
    from undistill.devices import select_device
    from undistill.executor import LocalExecutor
    from undistill.progress import Reporter
    from undistill.runs import get_dataset, load_run_model
    from undistill.stealing import open_teacher, opener_for, student_config
    from undistill.teachers.kinds.run import RunTeacher
    from undistill.teachers.measure import test_logits

    out = Path(out)
    t0 = time.perf_counter()
    runs_dir = Path(runs_dir or out / "runs")
    methods, strategies = list(methods), list(strategies)
    check_arguments(budget, curve_points, methods, thief, width, margin, device, client,
                    seeds=seeds, score=score, score_with=score_with, strategies=strategies)
    if (thief or {}).get("query_data"):  # the thief's own images: its pool is theirs
        check_pool(budget, query_pool_size(thief or {}), str(thief["query_data"]))
    else:
        check_budget(budget, dataset, sets, data_root)
    defended = parse_defences(defences, CLASS_COUNTS.get(dataset))
    sent_before = getattr(teacher, "sent", 0) if isinstance(teacher, Teacher) else 0
    opener = opener_for(runs_dir, query_cap(budget, strategies, len(defended)), data_root,
                        trust_factory, **client)
    t = open_teacher(teacher, dataset, data_root, runs_dir, spec, teacher_arch, teacher_width,
                     budget=budget, opener=opener)
    copy = None
    if score_with is not None:  # opened (and probed) before any training: a bad copy fails fast
        copy = open_teacher(score_with, dataset, data_root, runs_dir, spec, teacher_arch,
                            teacher_width, opener=opener_for(runs_dir, None, data_root,
                                                             trust_factory))
    ds = get_dataset(dataset, data_root)
    defended = parse_defences(defended, ds.num_classes)  # a dataset CLASS_COUNTS lacks, too
    budgets = curve_budgets(budget, curve_points)
    seed_list = list(range(seed, seed + seeds))
    attacks_ = [(m, q) for q in strategies for m in methods]
    plans: dict[tuple[Any, ...], Any] = {
        ((m, q), b, s): student_config(
            t, dataset, arch, m, b, width, labels=False, params=label_free(m), seed=s, sets=sets,
            thief=thief_settings(q, budget, len(budgets) - 1 - j, len(budgets), thief),
            name=f"audit {attack_label(m, q)} {arch} @{b} seed {s}")
        for m, q in attacks_ for j, b in enumerate(budgets) for s in seed_list}
    # every attack again at the budget behind each defence: the run's `defence:` puts it between
    # the teacher (through the same answer cache and budget) and the student
    plans.update({(a, budget, s, i): plans[(a, budget, s)].model_copy(update={
        "defence": d, "name": f"audit {attack_label(*a)} {arch} @{budget} seed {s} vs "
                              f"{d.label()}"})
        for i, d in enumerate(defended) for a in attacks_ for s in seed_list})
    first = plans[(attacks_[0], budget, seed)]
    if first.thief is None or first.thief.query_data is None:  # a run teacher's students
        check_pool(budget, thief_pool(first.data, data_root), dataset)  # inherit its data
    runtime = Runtime(runs_dir=runs_dir, data_root=data_root, device=device, progress=progress,
                      opener=opener)
    # the largest budget first: smaller transfer sets are its prefixes, answered from the cache
    order = sorted(plans, key=lambda k: (-k[1], len(k), attacks_.index(k[0]), k[2]))
    results = LocalExecutor(Reporter(enabled=progress)).run([plans[k] for k in order], runtime)

    dev = select_device(device)
    sent_attacks = getattr(t, "sent", None)
    scorer = copy if copy is not None else t.unbudgeted() if score else None
    t_logits = test_logits(scorer, ds, dev) if scorer is not None else None
    labels = ds.test_labels
    t_acc = (None if t_logits is None else
             100.0 * (t_logits.argmax(1) == labels).float().mean().item())
    queries = _queries(t, sent_before, sent_attacks,
                       _distinct_paid(plans.values(), runs_dir, data_root),
                       probed=t.find(RunTeacher) is None,
                       scored=0 if copy is not None or not score else int(labels.numel()))

    def score_run(cfg: Any) -> tuple[float, float | None]:  # chosen on held-out paid answers
        model = load_run_model(cfg, runs_dir, data_root, which="auto", device=dev)
        with torch.no_grad():
            s = predict_logits(model, ds.test_images, ds.mean, ds.std, device=dev)
        acc = 100.0 * (s.argmax(1) == labels).float().mean().item()
        return acc, None if t_logits is None else _agreement(s, t_logits)

    def entry(a: tuple[str, str], b: int, *defence: int) -> dict[str, Any]:
        cfgs = [plans[(a, b, s, *defence)] for s in seed_list]
        scores = [score_run(c) for c in cfgs]
        done = [results[c.run_id] for c in cfgs]
        e = summarise(a[0], arch, b, seed_list, [x for x, _ in scores],
                      None if t_logits is None else [g for _, g in scores], t_acc,
                      [r.run_id for r in done], [str(r.run_dir) for r in done], strategy=a[1])
        # students that used every step without stopping early may still have been improving
        return {**e, "stopped_early": sum(r.status == "early_stopped" for r in done)}

    curve = [entry(a, b) for a in attacks_ for b in budgets]
    attacks = [c for c in curve if c["budget"] == budget]
    best = max(attacks, key=lambda a: a["accuracy_mean"])
    rows = []
    for i, d in enumerate([None, *defended]):
        entries = attacks if d is None else [entry(a, budget, i - 1) for a in attacks_]
        util = (None if t_logits is None else
                utility(released_test(t_logits, ds, d, seed), t_logits, labels))
        rows.append(defence_entry(d, entries, util, best))
    stolen = None if t_acc is None else best["accuracy_mean"] >= t_acc - margin
    doc = {"teacher": {**t.describe(), "accuracy": t_acc,
                       "scored_with": None if score_with is None else str(score_with)},
           "dataset": dataset, "budget": budget, "split": "test", "seeds": seed_list,
           "queries_total": queries["total"], "queries": {k: v for k, v in queries.items()
                                                          if k != "total"},
           "attacks": attacks, "curve": curve, "defences": rows if defended else [],
           "best": best["attack"], "strategies": strategies,
           "plateau": plateau([c for c in curve if c["attack"] == best["attack"]]),
           "stealable": stolen, "margin": margin,
           "verdict": verdict_text(best, t_acc, stolen, margin),
           "wall_time_s": time.perf_counter() - t0}  # this invocation (finished runs read back)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "audit.json", doc)
    write_report(doc, out)
    return doc


def _distinct_paid(plans: Any, runs_dir: Path, data_root: Path | None) -> int:
    """Distinct images the plans' thieves paid for (their ``transfer.json``, probe excluded)."""
    from undistill.thief import read_transfer

    paid: set[int] = set()
    for cfg in plans:
        for r in read_transfer(cfg, runs_dir, data_root)["rounds"]:
            paid.update(r)
    return len(paid)


def _queries(t: Teacher, sent_before: int, sent_attacks: int | None, paid: int,
             probed: bool, scored: int) -> dict[str, Any]:
    """Images sent to the teacher: ``attacks`` (probe and training images), ``scoring`` (the test
    split, when the teacher itself is scored) and their ``total``. A URL teacher's are its
    client's count of images the server answered (``t.sent``, before and after scoring); any
    other teacher's are one per distinct image (the probe, the largest transfer set, the test
    split): what a URL would have been sent through the answer cache."""
    sent_total = getattr(t, "sent", None)
    if sent_attacks is not None and sent_total is not None:
        attacks = sent_attacks - sent_before
        return {"total": sent_total - sent_before, "attacks": attacks,
                "scoring": sent_total - sent_attacks,
                "counted": "images the server answered to this audit (answers already in the "
                           "cache are not sent again)"}
    attacks = int(probed) + paid
    return {"total": attacks + scored, "attacks": attacks, "scoring": scored,
            "counted": "one per distinct image asked (probe, paid images, test split)"}
