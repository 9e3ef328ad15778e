"""Side by side with IBM's Adversarial Robustness Toolbox (ART): model extraction of one teacher file.

One run, one machine, one TorchScript teacher, one dataset, one student architecture of undistill's
zoo (``--arch``, ``--width``), at each of ``--budgets`` and for ``--seeds`` seeds:

* ART (``adversarial-robustness-toolbox``, a benchmark-only dependency): ``KnockoffNets`` with
  ``sampling_strategy="random"`` and ``"adaptive"`` (reward ``"all"``) and ``CopycatCNN``. The
  victim is the loaded TorchScript wrapped as an ART ``PyTorchClassifier``; the thieved classifier
  is a fresh zoo student (same arch and width as undistill's) wrapped the same way; the query pool
  is the dataset's training split (normalised float32 numpy, NCHW); ``nb_stolen`` = the budget;
  the student is trained by ART's own ``fit`` and scored on the test split. ART's settings are
  its defaults (top-1 one-hot answers: ``use_probability=False``) except those below. In ART
  1.20.1 ``CopycatCNN.extract`` is the random ``KnockoffNets`` line for line (the same
  ``np.random.choice`` draw, top-1 answers, one ``fit``), so with the same seed it gives the same
  student: ``--art-attacks knockoff-random,knockoff-adaptive`` saves a third of ART's time.
* undistill: ``undistill.audit`` on the same teacher file, student arch, width and budget
  (``curve_points=1``), with ``--methods`` and ``--strategies`` (each strategy with each method),
  ``--seeds`` students per attack.

What is matched and what is not (recorded in the JSON under ``settings``):

* optimisation steps: undistill's thief trains ``--steps`` steps (default 3000, its default) at
  batch 128 (with a 10 % paid holdout for early stopping, patience 8 evaluations, so it may stop
  sooner). ART's ``fit`` counts epochs, so ART gets ``nb_epochs = max(1, round(steps /
  ceil(budget / batch)))`` epochs of ``--batch-size`` (128), about the same number of steps, on all
  paid images (``--art-epochs N`` overrides). ART's adaptive KnockoffNets also takes one
  single-image step per query while it samples (``budget`` extra steps), as ART implements it.
* optimiser: ART's attacks call ``fit`` without a scheduler, so the ART student trains at the
  constant learning rate of undistill's preset optimiser for this dataset and arch
  (:func:`undistill.presets.optim_preset`: Adam 1e-3 for ``cnn``; SGD 0.05, momentum 0.9, weight
  decay 5e-4 otherwise -- undistill itself runs that preset's schedule). No augmentation (ART's
  ``fit`` has none); undistill augments the paid images (its default, no extra queries).
* answers: ART's attacks learn from the teacher's top-1 label (its default); undistill's attacks
  from what each method uses (``kd``: the soft answers; ``hard-label``: the top-1 label).
* labels: ART's adaptive KnockoffNets needs the pool's labels (its arms are the classes), so it is
  given the training split's true labels; undistill's attacks never see a label (its
  ``knockoff`` strategy's arms are k-means clusters of the pool).
* seeds: ART seeds NumPy and torch per seed (the paid images, the student's initialisation and the
  batch order all change); undistill's seeds change the student's initialisation and batch order
  on one fixed transfer set.

ART workaround (no behaviour change otherwise): the thieved classifier's ``fit`` trains a
one-image batch with the model in eval mode (ART's adaptive KnockoffNets fits one image per query,
and a zoo student's BatchNorm cannot train on one value per channel: ART raises), and drops a last
batch of a single image; and its adaptive sampler copies the image it samples instead of keeping
a view that pins a copy of a tenth of the pool per query (:func:`lean_knockoff`). ART imports no
torchvision for these classes.

Order: budget by budget (ART's attacks, then undistill's audit), and ``--out`` is rewritten after
each budget (``"complete": false`` until the last), so an interrupted run keeps what it measured.

Output: a markdown table (tool, attack, budget, accuracy mean [95 % t-interval], fraction of the
teacher's accuracy, wall time) and, per budget and overall, the claim "undistill's best attack is
ahead of ART's best": a one-sided Welch t-test (:func:`undistill.stats.judge`) on the per-seed
accuracies of the two attacks with the highest means -- PASS (p < 0.05), FAIL (ART significantly
ahead), else INCONCLUSIVE; overall PASS only if every budget passes, FAIL if any fails. (Picking
each tool's best by its mean before the test favours both sides alike.) ``--out`` writes the JSON:
per tool, attack and budget the per-seed accuracies, mean, interval, wall time and queries, the
versions (torch, ART, undistill), the settings and the command.

    .venv/bin/python benchmarks/bench_art.py --teacher benchmarks/victim-cifar10.ts \\
        --dataset cifar10-jpeg --data-root ../shared/data/cifar10-jpeg.tar.gz \\
        --arch resnet18 --width 0.5 --budgets 1000,5000,10000 --seeds 3 \\
        --out benchmarks/results-art-cifar10-jpeg.json
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

import undistill
from undistill.audit import DEFAULT_METHODS
from undistill.audit_summary import interval
from undistill.models import build_model
from undistill.presets import optim_preset
from undistill.runs import get_dataset
from undistill.stats import judge

ART_ATTACKS = ("knockoff-random", "knockoff-adaptive", "copycat")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True, help="TorchScript file (normalised input, logits)")
    p.add_argument("--dataset", default="cifar10-jpeg")
    p.add_argument("--data-root", type=Path, default=None)
    p.add_argument("--arch", default="cnn", help="student architecture of undistill's zoo")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--budgets", default="1000,5000,10000", help="comma-separated query budgets")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--steps", type=int, default=3000,
                   help="undistill's thief.steps; ART's epochs are matched to it (see --art-epochs)")
    p.add_argument("--batch-size", type=int, default=128, help="ART's fit batch (undistill: 128)")
    p.add_argument("--art-epochs", type=int, default=0,
                   help="ART's nb_epochs (0: matched to --steps at --batch-size, per budget)")
    p.add_argument("--art-attacks", default=",".join(ART_ATTACKS))
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="undistill's attacks")
    p.add_argument("--strategies", default="random,knockoff", help="undistill's query strategies")
    p.add_argument("--tools", default="art,undistill")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both tools)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--work", type=Path, default=Path("bench-art-work"),
                   help="undistill's audit folders and runs (kept: the audit.json files)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON results (e.g. benchmarks/results-art-<dataset>.json)")
    return p.parse_args(argv)


def split_list(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def matched_epochs(budget: int, steps: int, batch: int) -> int:
    """ART epochs of ``batch`` over ``budget`` images that make about ``steps`` steps."""
    return max(1, round(steps / math.ceil(budget / batch)))


def summary(values: list[float], teacher_acc: float | None) -> dict[str, Any]:
    mean, ci = interval(values)
    return {"accuracy": values, "accuracy_mean": mean, "accuracy_ci": ci,
            "fraction_of_teacher": None if not teacher_acc else mean / teacher_acc}


# ---------------------------------------------------------------------------------------- ART --

def art_classes() -> tuple[Any, Any, Any]:
    """ART's classes, imported late (a missing benchmark dependency says how to install it)."""
    try:
        from art.attacks.extraction import CopycatCNN, KnockoffNets
        from art.estimators.classification import PyTorchClassifier
    except ImportError as e:
        raise SystemExit(f"ART is not installed ({e}): .venv/bin/pip install "
                         f"adversarial-robustness-toolbox") from None
    return PyTorchClassifier, lean_knockoff(KnockoffNets), CopycatCNN


def lean_knockoff(base: Any) -> type:
    """ART's KnockoffNets with one memory fix: its adaptive sampler returns a *view* into a fresh
    copy of the query pool's images of the chosen class (``x[y == action][i]``), and keeps every
    sampled image, so each query pins a copy of a tenth of the pool (5,000 CIFAR images, 61 MB):
    1,000 queries asked for 61 GB and were OOM-killed at 24 GiB. Here the sampled image is copied
    out; the random draw is the same (``np.random.choice`` over the class's members)."""

    class LeanKnockoffNets(base):  # type: ignore[misc, valid-type]
        @staticmethod
        def _sample_data(x: np.ndarray, y: np.ndarray, action: int) -> np.ndarray:
            members = np.flatnonzero((np.argmax(y, axis=1) if y.ndim == 2 else y) == action)
            return x[members[np.random.choice(len(members))]].copy()

    return LeanKnockoffNets


def art_wrappers(base: Any) -> tuple[type, type]:
    class Victim(base):  # type: ignore[misc, valid-type]
        """The victim: counts the images it is asked about."""

        queries = 0

        def predict(self, x: np.ndarray, batch_size: int = 128, **kw: Any) -> np.ndarray:
            type(self).queries += len(x)
            return super().predict(x, batch_size=batch_size, **kw)

    class Thieved(base):  # type: ignore[misc, valid-type]
        """The student: ART's fit, except that a one-image batch trains in eval mode (BatchNorm
        cannot train on one value per channel) and a last batch of one image is dropped."""

        def fit(self, x: np.ndarray, y: np.ndarray, batch_size: int = 128, nb_epochs: int = 10,
                **kw: Any) -> None:
            if len(x) == 1:
                kw["training_mode"] = False
            elif len(x) % batch_size == 1:
                kw["drop_last"] = True
            super().fit(x, y, batch_size=batch_size, nb_epochs=nb_epochs, **kw)

    return Victim, Thieved


def make_optimizer(model: torch.nn.Module, preset: dict[str, Any]) -> torch.optim.Optimizer:
    if preset["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=preset["lr"],
                                weight_decay=preset.get("weight_decay", 0.0))
    return torch.optim.SGD(model.parameters(), lr=preset["lr"], momentum=preset.get("momentum", 0.9),
                           weight_decay=preset.get("weight_decay", 0.0))


def normalised(images: torch.Tensor, ds: Any) -> np.ndarray:
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    return ((images.float() / 255.0 - mean) / std).numpy().astype(np.float32)


def run_art(args: argparse.Namespace, ds: Any, budgets: list[int], seeds: list[int]
            ) -> Iterator[tuple[list[dict[str, Any]], float, dict[str, Any]]]:
    """Per budget (the victim, pool and teacher score set up once): its rows, wall time, info."""
    pytorch_classifier, knockoff, copycat = art_classes()
    victim_cls, thieved_cls = art_wrappers(pytorch_classifier)
    device_type = "gpu" if args.device.startswith("cuda") else "cpu"
    shape = tuple(ds.train_images.shape[1:])
    k = ds.num_classes
    x_pool, y_pool = normalised(ds.train_images, ds), ds.train_labels.numpy()
    x_test, y_test = normalised(ds.test_images, ds), ds.test_labels.numpy()
    model = torch.jit.load(str(args.teacher), map_location=args.device).eval()
    victim = victim_cls(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=shape,
                        nb_classes=k, device_type=device_type)
    teacher_acc = 100.0 * float((victim.predict(x_test, batch_size=512).argmax(1) == y_test).mean())
    victim_cls.queries = 0
    preset = optim_preset(args.dataset, args.arch)
    optimizer = {k: preset[k] for k in ("name", "lr", "momentum", "weight_decay") if k in preset}
    info = {"teacher_accuracy": teacher_acc, "optimizer": {**optimizer, "schedule": "constant (ART's "
            "attacks call fit without a scheduler)", "batch_size": args.batch_size}}
    for b in budgets:
        rows, start = [], time.perf_counter()
        epochs = args.art_epochs or matched_epochs(b, args.steps, args.batch_size)
        for name in split_list(args.art_attacks):
            accs, t0, q0 = [], time.perf_counter(), victim_cls.queries
            for s in seeds:
                np.random.seed(s)
                torch.manual_seed(s)
                student = build_model(args.arch, num_classes=k, in_channels=shape[0],
                                      width=args.width, image_size=shape[1])
                thief = thieved_cls(model=student, loss=torch.nn.CrossEntropyLoss(),
                                    optimizer=make_optimizer(student, preset), input_shape=shape,
                                    nb_classes=k, device_type=device_type)
                common = {"batch_size_fit": args.batch_size, "batch_size_query": 256,
                          "nb_epochs": epochs, "nb_stolen": b}
                if name == "copycat":
                    attack = copycat(victim, **common)
                    y = None
                else:
                    strategy = name.removeprefix("knockoff-")
                    attack = knockoff(victim, sampling_strategy=strategy, verbose=False, **common)
                    y = y_pool if strategy == "adaptive" else None
                stolen = attack.extract(x_pool, y, thieved_classifier=thief)
                pred = stolen.predict(x_test, batch_size=512).argmax(1)
                accs.append(100.0 * float((pred == y_test).mean()))
                print(f"art {name} @{b} seed {s}: {accs[-1]:.2f} % "
                      f"({time.perf_counter() - t0:.1f} s so far)", file=sys.stderr, flush=True)
            rows.append({"tool": "art", "attack": name, "budget": b, "seeds": seeds,
                         **summary(accs, teacher_acc), "wall_s": time.perf_counter() - t0,
                         "wall_s_covers": "this attack, all seeds, scoring included",
                         "queries": (victim_cls.queries - q0) // len(seeds), "nb_epochs": epochs})
        yield rows, time.perf_counter() - start, info


# ---------------------------------------------------------------------------------- undistill --

def run_undistill(args: argparse.Namespace, budgets: list[int], seeds: list[int]
                  ) -> tuple[list[dict[str, Any]], float, dict[str, Any]]:
    rows, start, teacher_acc, audits = [], time.perf_counter(), None, []
    for b in budgets:
        t0 = time.perf_counter()
        doc = undistill.audit(str(args.teacher), args.dataset, arch=args.arch, budget=b,
                              out=args.work / "undistill" / f"b{b}", data_root=args.data_root,
                              methods=split_list(args.methods),
                              strategies=split_list(args.strategies), curve_points=1,
                              seed=seeds[0], seeds=len(seeds), thief={"steps": args.steps},
                              width=args.width, device=args.device, progress=False,
                              runs_dir=args.work / "undistill" / "runs")
        wall = time.perf_counter() - t0
        teacher_acc = doc["teacher"]["accuracy"]
        audits.append({"budget": b, "audit_json": str(args.work / "undistill" / f"b{b}" / "audit.json"),
                       "wall_s": wall, "queries_total": doc.get("queries_total"), "best": doc["best"]})
        for a in doc["attacks"]:
            rows.append({"tool": "undistill", "attack": a["attack"], "budget": b, "seeds": a["seeds"],
                         **summary(list(a["accuracy"]), teacher_acc),
                         "wall_s": train_wall(a["run_dirs"]), "audit_wall_s": wall,
                         "wall_s_covers": "the students' training, all seeds (the runs' wall_time_s; "
                                          "not a knockoff thief's selector students, nor querying "
                                          "and scoring: audit_wall_s is the whole audit at this "
                                          "budget, every attack and seed)",
                         "queries": b, "method": a["method"], "strategy": a.get("strategy"),
                         "run_ids": a.get("run_ids")})
        print(f"undistill audit @{b}: best {doc['best']} ({wall:.1f} s)", file=sys.stderr, flush=True)
    first = rows[0]["run_ids"][0] if rows and rows[0].get("run_ids") else None
    cfg = run_config(args.work / "undistill" / "runs" / first) if first else {}
    return rows, time.perf_counter() - start, {
        "teacher_accuracy": teacher_acc, "audits": audits,
        "first_student": {"run_id": first, "optim": cfg.get("optim"), "thief": cfg.get("thief")}}


def run_config(run_dir: Path) -> dict[str, Any]:
    """A run's config (``config.json``: ``{config, run_id}``), or {} when unreadable."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get("config") or {}
    except (OSError, ValueError):
        return {}


def train_wall(run_dirs: list[str]) -> float | None:
    """Seconds the runs trained (their ``result.json`` ``wall_time_s``), summed; None if unknown."""
    total = 0.0
    for d in run_dirs:
        try:
            total += float(json.loads((Path(d) / "result.json").read_text())["result"]["wall_time_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return total


# ------------------------------------------------------------------------------------ report --

def compare(rows: list[dict[str, Any]], budgets: list[int]) -> tuple[list[dict[str, Any]], str]:
    per_budget = []
    for b in budgets:
        u = [r for r in rows if r["tool"] == "undistill" and r["budget"] == b]
        a = [r for r in rows if r["tool"] == "art" and r["budget"] == b]
        if not u or not a:
            continue
        bu = max(u, key=lambda r: r["accuracy_mean"])
        ba = max(a, key=lambda r: r["accuracy_mean"])
        claim = judge(f"undistill {bu['attack']} > ART {ba['attack']} @{b}",
                      bu["accuracy"], ba["accuracy"], ">")
        per_budget.append({"budget": b, "undistill_best": bu["attack"], "art_best": ba["attack"],
                           "difference": bu["accuracy_mean"] - ba["accuracy_mean"], **claim.as_dict()})
    verdicts = [c["verdict"] for c in per_budget]
    overall = ("INCONCLUSIVE" if not verdicts else "FAIL" if "FAIL" in verdicts
               else "PASS" if all(v == "PASS" for v in verdicts) else "INCONCLUSIVE")
    return per_budget, overall


def fmt_ci(r: dict[str, Any]) -> str:
    ci = r["accuracy_ci"]
    return f"{r['accuracy_mean']:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| tool | attack | budget | accuracy % mean [95 % CI] | x teacher | wall s (all seeds) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows, key=lambda r: (r["budget"], r["tool"], -r["accuracy_mean"])):
        frac = "n/a" if r["fraction_of_teacher"] is None else f"{r['fraction_of_teacher']:.3f}"
        wall = "n/a" if r["wall_s"] is None else f"{r['wall_s']:.1f}"
        lines.append(f"| {r['tool']} | {r['attack']} | {r['budget']} | {fmt_ci(r)} | {frac} | {wall} |")
    return lines


def versions() -> dict[str, str | None]:
    def ver(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    art = "adversarial-robustness-toolbox"
    return {"torch": torch.__version__, art: ver(art),
            "undistill": undistill.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    budgets = sorted(int(b) for b in split_list(args.budgets))
    seeds = list(range(args.seed, args.seed + args.seeds))
    tools = split_list(args.tools)
    work = args.work / "undistill"
    if "undistill" in tools and work.exists() and any(work.iterdir()):
        raise SystemExit(f"{work} is not empty: the audit would reuse its trained students and "
                         f"time nothing; remove it or give another --work")
    ds = get_dataset(args.dataset, args.data_root)
    rows: list[dict[str, Any]] = []
    wall: dict[str, float] = {}
    info: dict[str, Any] = {}
    art = run_art(args, ds, budgets, seeds) if "art" in tools else None
    for i, b in enumerate(budgets):
        if art is not None:
            r, w, info["art"] = next(art)
            rows, wall["art"] = rows + r, wall.get("art", 0.0) + w
        if "undistill" in tools:
            r, w, u = run_undistill(args, [b], seeds)
            rows, wall["undistill"] = rows + r, wall.get("undistill", 0.0) + w
            audits = info.get("undistill", {}).get("audits", []) + u["audits"]
            info["undistill"] = {**info.get("undistill", u), "audits": audits,
                                 "teacher_accuracy": u["teacher_accuracy"]}
        done = budgets[: i + 1]
        per_budget, overall = compare(rows, done)
        if args.out is not None:
            write(args, rows, info, wall, per_budget, overall, done, seeds, complete=i == len(budgets) - 1)

    lines = table(rows)
    audits = {a["budget"]: round(a["wall_s"], 1) for a in info.get("undistill", {}).get("audits", [])}
    lines += ["", "wall s: ART, the attack end to end (queries, training, scoring); undistill, the "
              "students' training (the runs' wall_time_s)",
              f"undistill audit wall s per budget (every attack, selectors, queries, scoring): {audits}",
              f"Teacher accuracy: {json.dumps({k: v['teacher_accuracy'] for k, v in info.items()})}",
              f"Wall time per tool (s): {json.dumps({k: round(v, 1) for k, v in wall.items()})}", ""]
    for c in per_budget:
        p = "n/a" if c["p"] is None else f"{c['p']:.3g}"
        lines.append(f"@{c['budget']}: {c['claim']}: {c['verdict']} (diff {c['difference']:+.2f} "
                     f"points, one-sided Welch p = {p})")
    lines.append(f"best undistill attack ahead of ART's best at every budget? {overall}")
    print("\n".join(lines))
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def write(args: argparse.Namespace, rows: list[dict[str, Any]], info: dict[str, Any],
          wall: dict[str, float], per_budget: list[dict[str, Any]], overall: str, budgets: list[int],
          seeds: list[int], complete: bool) -> None:
    """Write ``--out`` (atomically: a temporary file renamed over it)."""
    doc = {"benchmark": "bench_art", "complete": complete, "teacher": str(args.teacher),
           "dataset": args.dataset, "data_root": None if args.data_root is None else str(args.data_root),
           "arch": args.arch, "width": args.width, "budgets": budgets, "seeds": seeds,
           "device": args.device, "threads": torch.get_num_threads(),
           "machine": {"platform": platform.platform(), "processor": platform.processor()},
           "settings": {"steps": args.steps, "art_batch_size": args.batch_size,
                        "art_epochs": args.art_epochs or "matched to steps",
                        "art_attacks": split_list(args.art_attacks),
                        "undistill_methods": split_list(args.methods),
                        "undistill_strategies": split_list(args.strategies)},
           "tools": info, "results": rows, "wall_s": wall, "comparison": per_budget,
           "verdict": overall, "versions": versions(),
           "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(args.out)


if __name__ == "__main__":
    raise SystemExit(main())
