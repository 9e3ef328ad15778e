"""A user's own architecture: a factory ``package.module:function`` returning an ``nn.Module``.

The factory is called with those of ``num_classes``, ``in_channels``, ``image_size`` and ``width``
that its signature accepts (by keyword); the module it returns maps ``[N, C, H, W]`` images to
``[N, num_classes]`` logits. Such a model trains like a zoo one (a student, a nasty teacher, an
SCM sequence member) as long as the method only needs its logits (the Skeptical student's
auxiliary heads and the data-free methods need a zoo model). A factory is identified by its name:
change the name when its code changes what it builds.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

from torch import nn


def is_factory(name: str) -> bool:
    return ":" in name



def load_factory(name: str) -> Callable[..., nn.Module]:
    """The callable named ``package.module:function``; ValueError naming what is missing."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ValueError(f"factory {name!r} is not of the form package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"factory {name!r}: cannot import {module_name!r} ({e})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ValueError(f"factory {name!r}: {module_name!r} has no {attr!r}")
    if not callable(fn):
        raise ValueError(f"factory {name!r} is not callable")
    return fn  # type: ignore[return-value]


def build_from_factory(name: str, num_classes: int, in_channels: int, width: float,
                       image_size: int) -> nn.Module:
    fn = load_factory(name)
    offered = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size,
               "width": width}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if takes_all or k in params}
    model = fn(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"factory {name!r} returned {type(model).__name__}, not a torch nn.Module")
    return model
