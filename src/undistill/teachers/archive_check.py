"""Open a ``torch.export`` archive (``.pt2``) from a stranger without running any of its code.

``torch.export.load`` trusts its archive: it unpickles sample inputs (falling back to
``weights_only=False``), weights and constants marked ``use_pickle`` (``weights_only=False``) and
opaque constants (``pickle.loads``); it parses symbolic shape expressions with ``sympy.sympify``
(which evaluates Python); and it loads AOTInductor shared libraries. :func:`load_export` reads the
file once and, before torch sees it, refuses (one line naming the member) an archive that holds
compiled code, a pickled Python object, a pickle that ``torch.load(weights_only=True)`` rejects, or
a shape expression outside sympy's printed form; the load itself then runs with ``torch.load``
forced to ``weights_only=True``, ``pickle``/TorchScript-object unpickling and string sympification
outside that form refused, and torch's logs and warnings silenced; afterwards every graph node must
call a torch operator. Checked against torch 2.13's ``torch/export/pt2_archive/_package.py`` and
``torch/_export/serde/serialize.py``.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import json
import logging
import operator
import re
import threading
import types
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch

from undistill.teachers.errors import TeacherError

_LOCK = threading.Lock()  # the guards patch module attributes for the length of one load
_TOKEN = re.compile(r"\s+|(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)"
                    r"|(?P<str>'(?:[A-Za-z][A-Za-z0-9_]*|[-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)')"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[(),=-])")  # srepr's punctuation only
_SYMPY_NAMES = {
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs",
    "floor", "ceiling", "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality",
    "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "And", "Or", "Not", "Xor",
    "Piecewise", "ExprCondPair", "ITE", "Tuple", "true", "false", "True", "False", "None", "oo",
    "zoo", "nan", "Infinity", "NegativeInfinity", "NaN", "ComplexInfinity", "Zero", "One",
    "NegativeOne", "Half", "pi", "E", "I",
}


@functools.cache
def _safe_names() -> frozenset[str]:
    import sympy
    from torch.utils._sympy import functions

    torch_fns = {n for n, v in vars(functions).items()
                 if isinstance(v, type) and issubclass(v, sympy.Basic)}
    return frozenset(_SYMPY_NAMES | torch_fns)


def unsafe_expression(expr: str) -> str | None:
    """Why ``expr`` is not a plain sympy expression as torch prints it (``srepr``; None when it
    is): only known sympy and torch function names, symbol names like ``s0``, keyword names,
    numbers, simple quoted strings, ``( ) , = -``; no attribute access, subscripts, infix
    operators, lambdas or other Python."""
    import sympy

    safe, pos = _safe_names(), 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            return f"unexpected {expr[pos]!r}"
        pos = m.end()
        name = m.group("name")
        if name is None or name in safe:
            continue
        keyword = re.match(r"\s*=(?!=)", expr[pos:]) is not None
        symbol = (re.fullmatch(r"[a-z]+[0-9]+", name) is not None and not hasattr(sympy, name)
                  and not hasattr(builtins, name))
        if not (keyword or symbol):
            return f"unknown name {name!r}"
    return None


def _logical(name: str) -> str:
    """A member's name inside the archive's root folder (torch reads ``ROOT/NAME``)."""
    return name.split("/", 1)[1] if "/" in name else name


def _expressions(doc: Any) -> Iterator[str]:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "expr_str" and isinstance(v, str):
                yield v
            else:
                yield from _expressions(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _expressions(v)


def _weights_only(data: bytes) -> str | None:
    """Why ``torch.load(weights_only=True)`` refuses ``data`` (None when it loads)."""
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else "")
        return f"{type(e).__name__}: {detail[:160]}"
    return None


def check_archive(data: bytes, source: str) -> None:
    """Refuse, before torch reads it, an archive whose loading would run code (see the module)."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        members = {i.filename: z.read(i.filename) for i in z.infolist() if not i.is_dir()}
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise TeacherError(f"{source}: not a torch.export program (not a readable zip archive: "
                           f"{type(e).__name__}; truncated or damaged?)") from None
    by_logical = {_logical(n): n for n in members}
    pickled: list[str] = [n for n in members if n.endswith(".pt")]
    for name, blob in members.items():
        if "data/aotinductor/" in name:
            raise TeacherError(f"{source}: refused: member {name} is AOTInductor compiled code, "
                               f"which torch.export.load would load into this process")
        logical = _logical(name)
        if not logical.endswith(".json") or logical.startswith("extra/"):
            continue
        try:
            doc = json.loads(blob)
        except (ValueError, UnicodeDecodeError):
            raise TeacherError(f"{source}: not a torch.export program (member {name} is not valid "
                               f"JSON; damaged?)") from None
        for expr in _expressions(doc):
            if (why := unsafe_expression(expr)) is not None:
                raise TeacherError(f"{source}: refused: member {name} holds a shape expression "
                                   f"that is not plain sympy ({why}); torch would evaluate it as "
                                   f"Python")
        entries = doc.get("config") if isinstance(doc, dict) and logical.endswith("_config.json") \
            else None
        for entry in entries.values() if isinstance(entries, dict) else ():
            path = entry.get("path_name") if isinstance(entry, dict) else None
            if not isinstance(path, str):
                continue
            folder = logical.rsplit("/", 1)[0]
            if path.startswith(("custom_obj_", "opaque_obj_")):
                what = by_logical.get(f"{folder}/{path}", f"{folder}/{path}")
                raise TeacherError(f"{source}: refused: member {what} is a pickled Python object, "
                                   f"which would run code when loaded")
            if entry.get("use_pickle") and (real := by_logical.get(f"{folder}/{path}")):
                pickled.append(real)
    for name in dict.fromkeys(pickled):  # an empty member is no pickle (torch reads it as nothing)
        if members[name] and (why := _weights_only(members[name])) is not None:
            raise TeacherError(f"{source}: refused: member {name} is a pickle that weights-only "
                               f"loading rejects ({why}); loading it could run code")


def _refuse(*_: Any, **__: Any) -> Any:
    raise TeacherError("refused: the archive holds a pickled Python object")


class _GuardedSympy:
    """``sympy`` as torch's deserializer sees it: ``sympify`` of a string must be plain sympy."""

    def __getattr__(self, name: str) -> Any:
        import sympy

        return getattr(sympy, name)

    @staticmethod
    def sympify(a: Any, *args: Any, **kwargs: Any) -> Any:
        import sympy

        if isinstance(a, str) and (why := unsafe_expression(a)) is not None:
            raise TeacherError(f"refused: a shape expression is not plain sympy ({why})")
        return sympy.sympify(a, *args, **kwargs)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence torch's logs, warnings and prints (a failed load logs a whole traceback)."""
    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """While torch loads an archive: ``torch.load`` only with weights_only=True, no ``pickle``
    or TorchScript-object unpickling, ``sympify`` only of plain sympy strings; and quiet."""
    from torch._export.serde import serialize
    from torch.export.pt2_archive import _package

    real_load = torch.load

    def weights_only_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        try:
            return real_load(f, *args, **kwargs)
        except Exception:
            raise TeacherError("refused: a pickle in the archive needs more than weights-only "
                               "loading") from None

    with _LOCK, quiet(), mock.patch.object(torch, "load", weights_only_load), \
            mock.patch.object(_package, "pickle", types.SimpleNamespace(loads=_refuse, load=_refuse)), \
            mock.patch.object(torch._C, "_pickle_load_obj", _refuse), \
            mock.patch.object(serialize, "sympy", _GuardedSympy()):
        yield


def check_graph(program: torch.export.ExportedProgram, source: str) -> None:
    """Every node of every graph calls a torch operator (or a symbolic-shape builtin)."""
    from torch._export.serde.serialize import _SYM_OPS

    allowed = {operator.getitem, torch.sym_sum, *_SYM_OPS}
    for gm in program.graph_module.modules():
        if not isinstance(gm, torch.fx.GraphModule):
            continue
        for node in gm.graph.nodes:
            ok = node.op in ("placeholder", "output", "get_attr") or (
                node.op == "call_function" and (
                    isinstance(node.target, (torch._ops.OpOverload, torch._ops.HigherOrderOperator))
                    or node.target in allowed))
            if not ok:
                raise TeacherError(f"{source}: refused: graph node {node.name} calls "
                                   f"{getattr(node.target, '__name__', type(node.target).__name__)}"
                                   f", not a torch operator")


def load_export(data: bytes, source: str) -> torch.export.ExportedProgram:
    """The program in the archive ``data`` (read from ``source``), loaded without running its code."""
    check_archive(data, source)
    try:
        with guarded():
            program = torch.export.load(io.BytesIO(data))
    except TeacherError as e:
        raise TeacherError(f"{source}: {e}") from None
    except Exception as e:  # torch's own errors for damaged archives
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise TeacherError(f"{source}: not a torch.export program ({type(e).__name__}"
                           f"{': ' + lines[0][:160] if lines else ''})") from None
    check_graph(program, source)
    return program
