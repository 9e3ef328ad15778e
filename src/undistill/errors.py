"""One error boundary for every command of the ``undistill`` CLI.

An expected failure (an :class:`~undistill.exceptions.UndistillError`: bad config, flag or data,
a missing or unreadable checkpoint, a diverged run, ...; or a runs directory that is read-only or
full) prints one line naming the file or field, ``error: ...`` on stderr, and exits with status 2.
``--debug`` anywhere on the command line (or ``UNDISTILL_DEBUG=1``) lets the exception through
with its traceback instead. Anything else is a bug and keeps its traceback. Ctrl-C prints how to
resume and exits with status 130. This is the only place that catches expected errors: commands
let them through.

:func:`boundary` wraps each registered command's function (so the boundary also holds under
``typer.testing.CliRunner``); :func:`main` is the console-script entry point.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from safetensors import SafetensorError

from undistill.api import USER_ERRORS

DEBUG_FLAG = "--debug"
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
INTERRUPTED = ("interrupted: finished epochs are checkpointed; rerun the same command to resume")
#: A user's situation, not a bug: the package's errors (:data:`undistill.api.USER_ERRORS`, which
#: is ``UndistillError``), and the file system's and safetensors' errors (a read-only or full disk).
EXPECTED: tuple[type[BaseException], ...] = (*USER_ERRORS, OSError, SafetensorError)
_debug = False


_OS_HINTS = {
    errno.EROFS: "the file system is read-only; pass --runs-dir DIR on a writable disk",
    errno.EACCES: "permission denied; pass --runs-dir DIR where you may write",
    errno.EPERM: "operation not permitted; pass --runs-dir DIR where you may write",
    errno.ENOSPC: "no space left on the device; free some space or pass --runs-dir DIR elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or pass --runs-dir DIR elsewhere",
}


def describe(e: BaseException) -> str:
    """The one line shown for an expected error."""
    if isinstance(e, OSError) and not type(e).__module__.startswith("undistill"):
        where = e.filename if e.filename is not None else "a file"
        hint = _OS_HINTS.get(e.errno or -1, e.strerror or str(e))
        return f"{where}: {hint}"
    text = str(e).strip() or type(e).__name__
    return " ".join(text.splitlines())


def print_error(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False,
                                               markup=True)


def debugging() -> bool:
    return _debug or os.environ.get("UNDISTILL_DEBUG", "") not in ("", "0")


def boundary(fn: Callable[..., Any], reword: Callable[[str], str] = str) -> Callable[..., Any]:
    """``fn`` with expected errors turned into one line (``reword``-ed: e.g. the library's option
    names spelt as the command's flags) and exit 2, Ctrl-C into exit 130."""
    if getattr(fn, "__undistill_guarded__", False):
        return fn

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            Console(stderr=True).print(INTERRUPTED, markup=False, highlight=False)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except EXPECTED as e:
            if debugging():
                raise
            print_error(escape(reword(describe(e))))
            raise typer.Exit(EXIT_ERROR) from None

    guarded.__undistill_guarded__ = True  # type: ignore[attr-defined]
    return guarded


def guard(app: typer.Typer) -> typer.Typer:
    """Put every command registered on ``app`` (so far) behind :func:`boundary` (a command already
    behind it keeps its own)."""
    for info in app.registered_commands:
        if info.callback is not None:
            info.callback = boundary(info.callback)
    return app


def main(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run ``app`` on ``argv`` (default: ``sys.argv[1:]``), taking ``--debug`` out first."""
    global _debug
    args = list(sys.argv[1:] if argv is None else argv)
    if DEBUG_FLAG in args:
        _debug = True
        args = [a for a in args if a != DEBUG_FLAG]
    guard(app)
    app(args=args, prog_name="undistill")
