"""Training methods by name. A new method is one module in this package: every module here is
imported (so its ``@METHODS.register`` runs) when the package is."""

import importlib
import pkgutil

from undistill.methods.base import (
    METHODS,
    Method,
    Params,
    Teacher,
    data_free_form,
    method_names,
    stealing_methods,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "Params", "Teacher", "data_free_form", "method_names",
           "stealing_methods"]
