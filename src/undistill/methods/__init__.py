"""Training methods and objectives by name. A new method or objective is one module in this
package: every module here is imported (so its ``METHODS.register``/``OBJECTIVES.register``
runs) when the package is."""

import importlib
import pkgutil

from undistill.methods.base import (
    METHODS,
    Ensemble,
    Method,
    Params,
    data_free_form,
    method_names,
    stealing_methods,
)
from undistill.methods.objective import OBJECTIVES, Objective, Plain, Scheme

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "objective"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "OBJECTIVES", "Method", "Objective", "Params", "Plain", "Scheme", "Ensemble",
           "data_free_form", "method_names", "stealing_methods"]
