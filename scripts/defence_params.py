"""The defender's side of the leaderboard: utility of candidate defence parameters on a validation
split (never the test set), for a leaderboard's normal teacher.

    python scripts/defence_params.py --runs-dir runs/defences-demo  # prints a table; needs the teacher
    python scripts/defence_params.py defences-cifar10-cpu --runs-dir runs/cal-cifar \
        --data-root ../shared/data/cifar10-jpeg.tar.gz

For each candidate: top-1 accuracy of the released answers on the 10 % validation split of the
training set, their agreement with the undefended teacher, and the mean L1 change of the answers.
The leaderboards' defence parameters were set from this table (docs/defences.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from undistill.config import Runtime
from undistill.data import normalize, split_validation
from undistill.defences import build_defence
from undistill.executor import ensure_trained
from undistill.runs import get_dataset, load_run_model
from undistill.suites.leaderboard_spec import load_leaderboard, victim_plan

CANDIDATES = [
    {"name": "topk", "params": {"k": 2}},
    {"name": "round", "params": {"decimals": 1}},
    {"name": "noise", "params": {"kind": "gaussian", "scale": 0.2, "keep_top1": True}},
    {"name": "reverse-sigmoid", "params": {"beta": 1.0, "gamma": 0.1}},
    {"name": "reverse-sigmoid", "params": {"beta": 0.7, "gamma": 0.4}},
    {"name": "reverse-sigmoid", "params": {"beta": 1.0, "gamma": 0.4}},
    {"name": "mad", "params": {"epsilon": 0.5}},
    {"name": "mad", "params": {"epsilon": 1.0, "keep_top1": True}},
    {"name": "misinformation", "params": {"tau": 0.3, "nu": 30}},
    {"name": "misinformation", "params": {"tau": 0.4, "nu": 30}},
    {"name": "misinformation", "params": {"tau": 0.5, "nu": 30}},
    {"name": "misinformation", "params": {"tau": 0.6, "nu": 30}},
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default="defences-demo", help="leaderboard name or YAML")
    ap.add_argument("--runs-dir", type=Path, default=Path("runs/defences-demo"))
    ap.add_argument("--data-root", type=Path, default=None)
    args = ap.parse_args()
    runtime = Runtime(runs_dir=args.runs_dir, data_root=args.data_root, device="cpu",
                      progress=False)
    spec = load_leaderboard(args.spec)
    normal = victim_plan(spec).normal
    ensure_trained(normal, runtime)  # read back when the leaderboard trained it
    model = load_run_model(normal, args.runs_dir, args.data_root)
    torch.set_grad_enabled(False)  # inference from here on
    ds = get_dataset(normal.data.name, args.data_root, normal.data.resize)
    _, val = split_validation(ds.train_labels, spec.val_fraction, 0)
    x, y = normalize(ds.train_images[val], ds.mean, ds.std), ds.train_labels[val]
    p = torch.cat([torch.softmax(model(b).float(), 1) for b in x.split(1000)])
    print(f"teacher: {100 * (p.argmax(1) == y).float().mean():.2f} % on {len(y)} validation images")
    print("| defence | val acc (%) | agreement (%) | mean L1 change |\n| --- | --- | --- | --- |")
    for c in CANDIDATES:
        torch.manual_seed(0)
        r = build_defence(c, ds.num_classes)(p, x)
        change = (r / r.sum(1, keepdim=True) - p).abs().sum(1).mean()
        label = f"{c['name']} {c['params']}"
        print(f"| {label} | {100 * (r.argmax(1) == y).float().mean():.2f} | "
              f"{100 * (r.argmax(1) == p.argmax(1)).float().mean():.2f} | {change:.3f} |")


if __name__ == "__main__":
    main()
