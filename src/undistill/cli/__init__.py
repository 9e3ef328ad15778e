"""The ``undistill`` command line: parses arguments, calls :mod:`undistill.api`, prints.

One module per group of commands (:mod:`~undistill.cli.runs`, :mod:`~undistill.cli.suites`,
:mod:`~undistill.cli.teachers`, :mod:`~undistill.cli.info`) over shared options
(:mod:`~undistill.cli.options`). Each command is registered here behind the argument checks
(:mod:`undistill.cli.checks`) and the one error boundary (:mod:`undistill.errors`), which is the
only place expected errors are caught: commands let them through.
"""

from collections.abc import Callable
from typing import Any

import typer

from undistill import errors
from undistill.cli import info, runs, suites, teachers
from undistill.cli.checks import checked
from undistill.cli.options import cli_words

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Knowledge-distillation model stealing: nasty teachers, attacks, defences. "
                  "Errors are one line (exit status 2); add --debug to any command for the traceback.")

#: the commands in the order ``undistill --help`` lists them
COMMANDS: tuple[tuple[str, Callable[..., Any]], ...] = (
    ("train", runs.train), ("eval", runs.evaluate), ("models", info.models),
    ("datasets", info.datasets), ("methods", info.methods), ("config", runs.config),
    ("nasty", runs.nasty), ("scm", runs.scm), ("steal", runs.steal), ("defend", runs.defend),
    ("leaderboard", suites.leaderboard), ("reproduce", suites.reproduce), ("demo", suites.demo),
    ("report", suites.report), ("analyze", suites.analyze), ("search", suites.search),
    ("serve", teachers.serve), ("inspect", teachers.inspect), ("audit", teachers.audit),
)
#: commands whose errors may name a teacher's options in the library's words (``arch:``)
TEACHER_COMMANDS = frozenset({"steal", "serve", "inspect", "audit"})

for _name, _command in COMMANDS:
    app.command(_name)(errors.boundary(checked(_command),
                                       cli_words if _name in TEACHER_COMMANDS else str))


def main() -> None:
    errors.main(app)


__all__ = ["app", "main"]
