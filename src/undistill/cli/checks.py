"""The command line's arguments, checked before a command does any work.

A rule applies to the option (or argument) of that Python name in every command, so a command
gets the checks of the flags it shares with the others: a bad value is a ConfigError naming the
flag (one line, exit status 2, through :mod:`undistill.errors`), raised before anything is
trained, queried or written. Numeric options without a rule are in :data:`EXEMPT` with the
reason; ``tests/test_cli_validation.py`` keeps the two tables complete. :func:`checked` puts the
rules in front of a command (:mod:`undistill.cli` does so for each one it registers).
"""

from __future__ import annotations

import functools
import inspect
import math
import os
import typing
from collections.abc import Callable
from typing import Any

import typer

from undistill.config import ConfigError, Runtime

#: a rule returns what is wrong with a value, or None
Rule = Callable[[Any], "str | None"]


def _finite(rule: Rule) -> Rule:
    return lambda v: rule(v) if math.isfinite(v) else f"must be a finite number, got {v}"


def at_least(lo: float) -> Rule:
    return _finite(lambda v: None if v >= lo else f"must be at least {lo}, got {v}")


def above(lo: float) -> Rule:
    return _finite(lambda v: None if v > lo else f"must be greater than {lo}, got {v}")


def between(lo: float, hi: float, *, open_lo: bool = False, open_hi: bool = False) -> Rule:
    text = f"{'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}"

    def rule(v: Any) -> str | None:
        ok = (v > lo if open_lo else v >= lo) and (v < hi if open_hi else v <= hi)
        return None if ok else f"must be in {text}, got {v}"
    return _finite(rule)


def one_of(*values: str) -> Rule:
    return lambda v: None if v in values else f"must be one of {', '.join(values)}, got {v!r}"


def known_device(name: str) -> str | None:
    from undistill.devices import device_problem

    return device_problem(name)


def known_dataset(name: str) -> str | None:
    from undistill.data import DatasetError, check_name

    try:
        check_name(name)
    except DatasetError as e:
        return str(e)
    return None


def url_problem(source: str) -> str | None:
    """What is wrong with an http(s) URL (None for a good one, or for a path)."""
    if not source.startswith(("http://", "https://")):
        return None
    import httpx

    try:
        host = httpx.URL(source).host
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        return f"{source!r} is not a valid URL ({e})"
    return None if host else f"{source!r} is not a valid URL (no host)"


def attacks_problem(methods: str) -> str | None:
    """What is wrong with ``audit --methods`` (comma-separated attacks)."""
    from undistill.audit import check_methods

    try:
        check_methods(split_methods(methods))
    except ConfigError as e:
        return str(e).removeprefix("methods: ")
    return None


def strategies_problem(strategies: str) -> str | None:
    """What is wrong with ``audit --strategies`` (comma-separated query strategies)."""
    from undistill.audit import check_strategies

    try:
        check_strategies([q.strip() for q in strategies.split(",") if q.strip()])
    except ConfigError as e:
        return str(e).removeprefix("strategies: ")
    return None


def query_option(spec: str | None) -> dict[str, str]:
    """``--query-data NAME[:ROOT]`` as ``thief`` settings (``query_data``, ``query_root``)."""
    if spec is None:
        return {}
    name, _, root = spec.partition(":")
    return {"query_data": name.strip(), **({"query_root": root} if root else {})}


def query_data_problem(spec: str) -> str | None:
    """What is wrong with ``audit --query-data`` (a registered dataset, NAME or NAME:ROOT)."""
    from undistill.data import DATASETS

    name = spec.partition(":")[0].strip()
    if name not in DATASETS:
        return f"unknown dataset {name!r}; known: {', '.join(DATASETS.names())}"
    return None


def local_copy_problem(source: str) -> str | None:
    """What is wrong with ``audit --score-with`` (a local copy of the model, not a URL)."""
    if source.startswith(("http://", "https://")):
        return (f"{source!r} is a URL; give a local copy of the model (a file or run directory), "
                f"so that the audited API is charged the budget alone")
    return None


def defence_problem(spec: str) -> str | None:
    """What is wrong with ``audit --defence`` (one spec; the class count is checked by the
    command, which knows the dataset)."""
    from undistill.audit_defences import parse_defences

    try:
        parse_defences([spec])
    except ConfigError as e:
        return str(e).removeprefix("--defence: ")
    return None


def split_methods(methods: str) -> list[str]:
    return [m.strip() for m in methods.split(",") if m.strip()]


def api_key_problem(env: str) -> str | None:
    if not env:
        return "give the name of the environment variable holding the API key"
    if env not in os.environ:
        return f"${env} is not set"
    if not os.environ[env].strip():
        return f"${env} is empty: an empty API key would turn authentication off"
    return None


def api_key(env: str | None) -> str | None:
    """The API key held by the variable ``env`` (None: no key); empty or unset is a ConfigError."""
    if env is None:
        return None
    if (problem := api_key_problem(env)) is not None:
        raise ConfigError(f"--api-key-env: {problem}")
    return os.environ[env]


RULES: dict[str, Rule] = {
    # serving
    "port": between(0, 65535), "max_request_mb": above(0), "max_inflight_mb": above(0),
    "body_timeout": above(0), "top_k": at_least(1),
    "decimals": at_least(0),
    # the black-box client (URL teachers)
    "rate": above(0), "concurrency": at_least(1), "timeout": above(0), "retries": at_least(0),
    "request_batch": at_least(1), "api_key_env": api_key_problem,
    # attacks and audits
    "budget": at_least(2), "curve_points": at_least(1), "temperature": above(0),
    "methods": attacks_problem, "seeds": at_least(1), "score_with": local_copy_problem,
    "defences": defence_problem, "strategies": strategies_problem, "steps": at_least(1),
    "query_data": query_data_problem,
    # input conventions of a teacher
    "input_size": at_least(1), "input_channels": at_least(1), "num_classes": at_least(2),
    "teacher_width": between(0, 4, open_lo=True), "teacher": url_problem, "reference": url_problem,
    # runs (widths and fractions within the run configs' bounds)
    "epochs": at_least(1), "width": between(0, 4, open_lo=True),
    "fraction": between(0, 1, open_lo=True), "val_fraction": between(0, 1, open_lo=True, open_hi=True),
    "trials": at_least(1), "k": at_least(1), "release": at_least(2), "tau": above(0),
    "stop_at_acc": between(0, 100, open_lo=True),
    "classes": at_least(2), "channels": at_least(1), "size": at_least(1),
    "samples": at_least(2), "examples": at_least(1),
    "device": known_device, "dataset": known_dataset,
    "precision": one_of(*typing.get_args(Runtime.model_fields["precision"].annotation)),
}

#: numeric options without a rule, and why
EXEMPT: dict[str, str] = {
    "seed": "any integer", "val_seed": "any integer", "study_seed": "any integer",
    "omega": "Eq. 5's weight: any real number",
}


def _decls(info: Any) -> list[str]:
    """The ``--long`` names given to ``typer.Option`` (in ``Annotated`` the first one arrives as
    its default)."""
    decls = list(getattr(info, "param_decls", None) or ())
    if isinstance(getattr(info, "default", None), str):
        decls.append(info.default)
    return [d for d in decls if d.startswith("--")]


def _leaves(hint: Any) -> tuple[Any, ...]:
    """The plain types in a hint: ``list[float] | None`` -> (float, NoneType)."""
    args = typing.get_args(hint)
    return tuple(leaf for a in args for leaf in _leaves(a)) if args else (hint,)


def parameters(fn: Callable[..., Any]) -> dict[str, tuple[str, tuple[Any, ...]]]:
    """A command's parameters as typer sees them (its signature, shared option groups expanded:
    :func:`undistill.cli.options.expand`): Python name -> (the flag as typed, e.g.
    ``--max-request-mb``, or the argument's name in capitals; the plain types it takes)."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except NameError:  # an annotation that does not resolve: flags from the names alone
        signature = inspect.signature(fn)
    found: dict[str, tuple[str, tuple[Any, ...]]] = {}
    for name, param in signature.parameters.items():
        hint, info = param.annotation, None
        if isinstance(hint, str) or hint is inspect.Parameter.empty:
            hint = None
        if typing.get_origin(hint) is typing.Annotated:
            hint, *meta = typing.get_args(hint)
            info = next((m for m in meta if isinstance(m, typer.models.ParameterInfo)), None)
        if isinstance(info, typer.models.ArgumentInfo):
            flag = name.upper()
        else:
            flag = max(_decls(info), key=len, default="--" + name.replace("_", "-"))
        found[name] = (flag, _leaves(hint))
    return found


def check(params: dict[str, Any], flags: dict[str, str] | None = None) -> None:
    """Apply :data:`RULES` to a command's parameters (``flags``: how each is written); the first
    bad one is a ConfigError naming its flag."""
    for name, value in params.items():
        rule = RULES.get(name)
        if rule is None or value is None:
            continue
        for v in value if isinstance(value, list | tuple) else [value]:
            if name in ("teacher", "reference") and not isinstance(v, str):
                continue
            if (problem := rule(v)) is not None:
                flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
                raise ConfigError(f"{flag}: {problem}")


def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a command) with :func:`check` applied to its parameters first."""
    if getattr(fn, "__undistill_checked__", False):
        return fn

    @functools.cache
    def flags() -> dict[str, str]:
        return {name: flag for name, (flag, _) in parameters(fn).items()}

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        check(kwargs, flags())
        return fn(*args, **kwargs)

    run.__undistill_checked__ = True  # type: ignore[attr-defined]
    return run

