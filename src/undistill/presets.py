"""Protocol defaults per dataset and architecture (reference/protocol.md), as config dicts.

Paper datasets (CIFAR-10/100, Tiny-ImageNet) get the reference protocol exactly. The small real
datasets available offline (digits, MNIST, Fashion-MNIST) get a short schedule sized for a CPU;
every value can be overridden with ``--set field=value``. A method's own defaults per dataset or
student live with the method (``Method.defaults_for``).
"""

from __future__ import annotations

from typing import Any

from undistill.optim import scaled_milestones

PAPER_DATASETS = ("cifar10", "cifar100", "tinyimagenet")


def optim_preset(dataset: str, arch: str, epochs: int | None = None) -> dict[str, Any]:
    """Optimiser and schedule of the reference protocol for a dataset and architecture
    (``epochs``: the same schedule shortened or lengthened, see :func:`with_epochs`)."""
    if arch == "cnn":
        n = 100 if dataset in PAPER_DATASETS else 15
        optim = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "schedule": "constant",
                 "milestones": [], "epochs": n, "batch_size": 128}
    elif dataset == "cifar10":
        optim = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                 "schedule": "multistep", "milestones": [80, 120], "gamma": 0.1, "epochs": 160,
                 "batch_size": 128}
    elif dataset in ("cifar100", "tinyimagenet"):
        optim = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4,
                 "schedule": "multistep", "milestones": [60, 120, 160], "gamma": 0.2,
                 "epochs": 200, "batch_size": 128}
    else:
        # small offline datasets: a short one-cycle schedule that converges in minutes on a CPU
        optim = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                 "schedule": "onecycle", "milestones": [], "epochs": 15, "batch_size": 128}
    return with_epochs(optim, epochs)


def with_epochs(optim: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    """An optimiser dict trained for ``epochs`` instead (``None``: unchanged); its milestones
    keep their share of training (:func:`undistill.optim.scaled_milestones`)."""
    if epochs is None or epochs == optim["epochs"]:
        return optim
    return {**optim, "epochs": epochs,
            "milestones": scaled_milestones(optim.get("milestones", []), optim["epochs"], epochs)}


def teacher_config(dataset: str, arch: str, width: float = 1.0, seed: int = 0,
                   epochs: int | None = None) -> dict[str, Any]:
    """A normal teacher (cross-entropy) with the protocol's optimisation for its dataset."""
    return {"data": {"name": dataset}, "model": {"arch": arch, "width": width},
            "optim": optim_preset(dataset, arch, epochs), "method": {"name": "vanilla", "params": {}},
            "seed": seed}
