"""Issue #20: one command-line package over shared options, every command calling undistill.api,
one error base class handled only by the error boundary, --debug honoured everywhere."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import undistill
from undistill import api, errors
from undistill.cli import COMMANDS, app
from undistill.config import ConfigError
from undistill.exceptions import UndistillError

SRC = Path(undistill.__file__).parent
OWN = [*sorted((SRC / "cli").glob("*.py")), *sorted((SRC / "api").glob("*.py")),
       SRC / "errors.py", SRC / "exceptions.py"]
COMMAND_MODULES = [SRC / "cli" / f"{m}.py" for m in ("runs", "suites", "teachers", "info")]
NAMES = ["train", "eval", "models", "datasets", "methods", "config", "nasty", "scm", "steal",
         "defend", "leaderboard", "reproduce", "demo", "report", "analyze", "search", "serve",
         "inspect", "audit"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def top_level_imports(path: Path) -> set[str]:
    """The undistill modules a file imports when it is imported (not inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return {m for m in found if m.startswith("undistill")}


def test_help_lists_every_command_in_order() -> None:
    assert [name for name, _ in COMMANDS] == NAMES
    assert [info.name for info in app.registered_commands] == NAMES
    text = CliRunner().invoke(app, ["--help"], terminal_width=200).output
    positions = [text.find(f"│ {name} ") for name in NAMES]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), text


def test_modules_are_small_and_the_old_ones_are_gone() -> None:
    for path in OWN:
        assert len(path.read_text().splitlines()) <= 350, path
    for old in ("cli.py", "cli_teachers.py", "cli_checks.py", "api.py"):
        assert not (SRC / old).exists(), old


def test_no_import_cycle_through_the_cli_the_api_or_the_errors() -> None:
    own = {module_name(p) for p in OWN}
    graph = {module_name(p): {m for m in top_level_imports(p)
                              if m in own and m != module_name(p)} for p in OWN}

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m, set())]
    assert top_level_imports(SRC / "exceptions.py") == set()  # the bottom layer
    for path in [*COMMAND_MODULES, SRC / "cli" / "options.py", SRC / "cli" / "checks.py"]:
        assert "undistill.cli" not in top_level_imports(path), path  # no import of the package


def test_no_error_lists_looked_up_in_sys_modules_and_no_catching_in_commands() -> None:
    for path in OWN:
        assert "sys.modules" not in path.read_text(), path
    for path in COMMAND_MODULES:
        tree = ast.parse(path.read_text())
        assert not [n for n in ast.walk(tree) if isinstance(n, ast.Try)], path


def test_every_command_calls_the_api() -> None:
    for name, command in COMMANDS:
        source = inspect.getsource(inspect.unwrap(command))
        assert "api." in source, name


def test_the_api_and_the_boundary_know_one_base_class() -> None:
    assert UndistillError in api.USER_ERRORS
    assert set(api.USER_ERRORS) <= set(errors.EXPECTED)

    class Mine(UndistillError):
        pass

    def fails() -> None:
        raise Mine("the one line")

    with pytest.raises(typer.Exit) as stop:
        errors.boundary(fails)()
    assert stop.value.exit_code == errors.EXIT_ERROR


@pytest.mark.parametrize("argv", [
    ["steal"],  # neither run directories nor --teacher
    ["search", "runs/x", "--param", "no-equals-sign"],
    ["train", "--dataset", "digits", "--arch", "cnn", "--precision", "fp16"],
])
def test_debug_is_honoured_by_the_commands_own_errors(argv: list[str], monkeypatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(errors, "_debug", False)
    with pytest.raises(SystemExit) as stop:
        errors.main(app, argv)
    assert stop.value.code == errors.EXIT_ERROR
    with pytest.raises(ConfigError):
        errors.main(app, [*argv, "--debug"])
    assert list(tmp_path.iterdir()) == []
