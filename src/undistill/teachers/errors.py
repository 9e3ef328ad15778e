"""The errors of teachers (a leaf module: the kind registry and the spec reader import it alone)."""

from undistill.exceptions import UndistillError


class TeacherError(UndistillError, ValueError):
    """A teacher that cannot be opened or answers wrongly; the message names the source."""


class BudgetExhausted(TeacherError):
    """The query budget would be exceeded; nothing beyond it was sent."""
