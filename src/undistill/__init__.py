"""undistill: knowledge-distillation model stealing, its defences and its measurement.

The Python API for teachers from anywhere (docs/teachers.md): ``undistill.Teacher``
(``Teacher.open(path_or_url)``, ``Teacher.from_onnx(...)``, ...), ``undistill.steal(...)``,
``undistill.audit(...)`` and ``undistill.serve(...)``. They are imported here, after the
submodules of the same name, so ``undistill.audit`` is the function (its module stays
``sys.modules["undistill.audit"]``).
"""

from undistill.api import steal  # noqa: E402
from undistill.audit import audit  # noqa: E402
from undistill.exceptions import UndistillError  # noqa: E402
from undistill.serve import serve  # noqa: E402
from undistill.teachers import Teacher, TeacherError  # noqa: E402
from undistill.version import __version__  # noqa: E402

__all__ = ["Teacher", "TeacherError", "UndistillError", "__version__", "audit", "serve", "steal"]
