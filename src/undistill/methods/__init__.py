"""Training methods by name. A new method is one module here plus its import below."""

from undistill.methods import dafl, hardlabel, htc, kd, nasty, scm, skeptical, vanilla  # noqa: F401, E501
from undistill.methods.base import METHODS, Method, Params, Teacher

__all__ = ["METHODS", "Method", "Params", "Teacher"]
