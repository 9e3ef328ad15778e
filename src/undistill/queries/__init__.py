"""Query strategies: which pool images a query-budgeted thief pays the teacher for, by name.

A new strategy is one class in one module of this package, registered with
``@STRATEGIES.register("name")``; every module here is imported when the package is.
See ``docs/queries.md``.
"""

import importlib
import pkgutil

from undistill.queries.base import STRATEGIES, PoolState, Strategy, fixed_order, select, strategy_names

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "PoolState", "Strategy", "fixed_order", "select", "strategy_names"]
