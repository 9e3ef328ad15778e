"""The one base class of the package's expected errors (the bottom layer: imports nothing).

An :class:`UndistillError` is a user's situation (a bad config, flag or file, missing data, a
diverged run, a teacher that does not answer as it should), never a bug: its message is one line
naming what to change. Every module's error class derives from it (``class ConfigError(UndistillError,
ValueError)``), so callers catch one class, and the command line's error boundary
(:mod:`undistill.errors`) is the only place that turns it into ``error: ...`` and exit status 2.
"""

from __future__ import annotations

__all__ = ["UndistillError"]


class UndistillError(Exception):
    """An expected failure with a one-line message that names what to change."""
