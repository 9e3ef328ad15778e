"""Protocol defaults per dataset and architecture (reference/protocol.md), as config dicts.

Paper datasets (CIFAR-10/100, Tiny-ImageNet) get the reference protocol exactly. The small real
datasets available offline (digits, MNIST, Fashion-MNIST) get a short schedule sized for a CPU;
every value can be overridden with ``--set field=value``.
"""

from __future__ import annotations

from typing import Any

PAPER_DATASETS = ("cifar10", "cifar100", "tinyimagenet")


def optim_preset(dataset: str, arch: str) -> dict[str, Any]:
    """Optimiser and schedule of the reference protocol for a dataset and architecture."""
    if arch == "cnn":
        epochs = 100 if dataset in PAPER_DATASETS else 15
        return {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant",
                "milestones": [], "epochs": epochs, "batch_size": 128}
    if dataset == "cifar10":
        return {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                "schedule": "multistep", "milestones": [80, 120], "gamma": 0.1, "epochs": 160,
                "batch_size": 128}
    if dataset in ("cifar100", "tinyimagenet"):
        return {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                "schedule": "multistep", "milestones": [60, 120, 160], "gamma": 0.2,
                "epochs": 200, "batch_size": 128}
    # small offline datasets: a short one-cycle schedule that converges in minutes on a CPU
    return {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
            "schedule": "onecycle", "milestones": [], "epochs": 15, "batch_size": 128}


def teacher_config(dataset: str, arch: str, width: float = 1.0, seed: int = 0,
                   epochs: int | None = None) -> dict[str, Any]:
    """A normal teacher (cross-entropy) with the protocol's optimisation for its dataset."""
    optim = optim_preset(dataset, arch)
    if epochs is not None:
        optim["epochs"] = epochs
        optim["milestones"] = [m for m in optim["milestones"] if m < epochs]
    return {"data": {"name": dataset}, "model": {"arch": arch, "width": width},
            "optim": optim, "method": {"name": "vanilla", "params": {}}, "seed": seed}
