"""The Python API: everything the command line does, as plain functions.

Each function takes run directories (or run configs), builds the runs with
:mod:`undistill.recipes`, trains what is missing and returns the results; the command line
(:mod:`undistill.cli`) only parses arguments, calls one of these and prints. A request that
cannot be done as asked raises an :class:`~undistill.exceptions.UndistillError` (see
:data:`USER_ERRORS`) with a one-line message naming what to change.

Teachers are given as run directories (``Path``) or :class:`~undistill.config.RunConfig`; without
a ``runtime``, runs are stored next to the first teacher given as a directory (or in ``runs/``).
Teachers from anywhere (model files, URLs) are in :mod:`undistill.api.teachers`.
"""

from __future__ import annotations

from undistill.api.info import datasets, methods, models, search_methods, stealing_methods
from undistill.api.runs import (
    TeacherRef,
    bound_config,
    defend,
    evaluate,
    make_config,
    nasty,
    run_config,
    scm_sequence,
    steal,
    student_config,
    teacher_config,
    train,
)
from undistill.api.suites import (
    analyze,
    dry_run,
    leaderboard,
    load_suite,
    make_executor,
    plan,
    report,
    reproduce,
    results_dir,
    search,
    search_dir,
)
from undistill.api.teachers import DEFAULT_ATTACKS, audit, inspect, serve, steal_from
from undistill.exceptions import UndistillError

#: The errors a caller made (a bad config, flag or file, missing data or run, a diverged run, a
#: search, report or teacher that cannot work as asked), as opposed to bugs: ``UndistillError``.
#: ValueError stays until the plain ValueErrors that user input can still raise (suite scales,
#: parse_defence, model factories, recipes) are ConfigErrors; then this is ``(UndistillError,)``.
USER_ERRORS: tuple[type[Exception], ...] = (UndistillError, ValueError)

__all__ = ["DEFAULT_ATTACKS", "USER_ERRORS", "TeacherRef", "UndistillError", "analyze", "audit",
           "bound_config",
           "datasets", "defend", "dry_run", "evaluate", "inspect", "leaderboard", "load_suite",
           "make_config", "make_executor", "methods", "models", "nasty", "plan", "report",
           "reproduce", "results_dir", "run_config", "scm_sequence", "search", "search_dir",
           "search_methods", "serve", "steal", "steal_from", "stealing_methods", "student_config",
           "teacher_config", "train"]
