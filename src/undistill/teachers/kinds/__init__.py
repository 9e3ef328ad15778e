"""The built-in teacher kinds, one file each (imported here, so each registers itself).

A new kind is one module here with a ``register_kind(Kind(...))`` call (:mod:`undistill.teachers.kind`),
plus its import below -- or, outside this package, any module that registers a kind before the
source is opened (``tests/test_teacher_kinds.py`` registers one in a test).
"""

from undistill.teachers.kinds import (  # noqa: F401  (registers)
    export,
    module,
    onnx,
    run,
    state_dict,
    torchscript,
    url,
)
