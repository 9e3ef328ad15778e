"""The API's catalogue: the architectures, datasets and methods this package knows."""

from __future__ import annotations

from typing import Any


def models(classes: int = 10, width: float = 1.0, channels: int = 3,
           size: int = 32) -> list[tuple[str, int]]:
    """(architecture, trainable parameter count) of every architecture, built for ``classes``
    classes at ``width`` on ``channels`` x ``size`` x ``size`` inputs."""
    from undistill.models import model_table

    return model_table(num_classes=classes, width=width, in_channels=channels, image_size=size)


def datasets() -> list[str]:
    """The dataset names."""
    from undistill.data import DATASETS

    return list(DATASETS.names())


def methods() -> list[dict[str, Any]]:
    """Every training method's traits: ``name``, ``min_teachers``, ``max_teachers`` (None: any),
    ``needs_labels``, ``description``."""
    from undistill.methods import METHODS

    return [{"name": name, "min_teachers": cls.min_teachers, "max_teachers": cls.max_teachers,
             "needs_labels": cls.needs_labels, "description": cls.description}
            for name, cls in ((n, METHODS.get(n)) for n in METHODS.names())]


def stealing_methods() -> tuple[list[str], list[str]]:
    """The methods that train a student: (those that read the dataset, the data-free ones)."""
    from undistill.methods import METHODS
    from undistill.methods import stealing_methods as names

    all_names = names()
    free = [n for n in all_names if METHODS.get(n).data_free_of]
    return [n for n in all_names if n not in free], free


def search_methods() -> list[str]:
    """The methods whose parameters :func:`undistill.api.search` can search."""
    from undistill.search import search_methods as names

    return names()
