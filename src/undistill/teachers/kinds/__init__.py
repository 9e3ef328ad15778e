"""The built-in teacher kinds, one file each: every module of this package is imported here, so
each registers itself.

A new kind is one module here with a ``register_kind(Kind(...))`` call
(:mod:`undistill.teachers.kind`) -- or, outside this package, any module that registers a kind
before the source is opened (``tests/test_teacher_kinds.py`` registers one in a test).
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
