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


#: (omega, tau_A) of Eq. 5 per dataset. Paper datasets: the reference protocol. Small sets:
#: calibrated at the small scale (see docs/calibration.md for the evidence).
NASTY_DEFAULTS: dict[str, tuple[float, float]] = {
    "cifar10": (0.04, 4.0),
    "cifar100": (0.005, 20.0),
    "tinyimagenet": (0.01, 20.0),
    "fashion-mnist": (0.04, 4.0),
    "mnist": (0.04, 4.0),
    "digits": (0.04, 4.0),
    "folder": (0.04, 4.0),
}


def kd_defaults(dataset: str, arch: str) -> dict[str, float]:
    """(alpha, T) of Eq. 2 as the protocol sets them: (0.9, 4) for the CNN, (0.9, 20) otherwise."""
    return {"alpha": 0.9, "temperature": 4.0 if arch == "cnn" else 20.0}


#: DAFL generator-loss weights (oh, a, ie) per dataset (protocol.md / the DAFL code's README):
#: CIFAR-10 0.05/0.01/5, CIFAR-100 0.5/0.1/20. Other datasets take CIFAR-10's.
DAFL_WEIGHTS: dict[str, dict[str, float]] = {
    "cifar10": {"oh": 0.05, "a": 0.01, "ie": 5.0},
    "cifar100": {"oh": 0.5, "a": 0.1, "ie": 20.0},
}


def dafl_defaults(dataset: str) -> dict[str, float]:
    """The DAFL generator's loss weights for a dataset (CIFAR-10's where the paper has none)."""
    return dict(DAFL_WEIGHTS.get(dataset, DAFL_WEIGHTS["cifar10"]))
