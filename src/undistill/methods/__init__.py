"""Training methods by name. A new method is one module here plus its import below."""

from undistill.methods import dafl, htc, kd, nasty, scm, skeptical, vanilla  # noqa: F401  (registers)
from undistill.methods.base import METHODS, Method, Params, Teacher

__all__ = ["METHODS", "Method", "Params", "Teacher"]
