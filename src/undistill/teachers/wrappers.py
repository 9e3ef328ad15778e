"""Wrappers that compose around any teacher: a query budget, an answer cache, an output defence.

``Cached(Budgeted(t, 500), "answers.sqlite")``: the cache answers what it holds (free), the rest
is asked within the budget. A wrapper is a :class:`~undistill.teachers.Teacher` with the
conventions, identity and config of the teacher it wraps; an answer travels down the chain as
:meth:`Teacher.answer` with an :class:`~undistill.teachers.base.Ask` (the meter that pays for
images, the sink that takes answers as they arrive), so a transport that sends requests in chunks
and retries (a URL teacher) pays every attempt from the budget and has every checked chunk stored
as soon as it arrives. Attributes a wrapper lacks are read from the teacher it wraps
(``t.sent``, ``t.close()``); ``t.budget`` is the outermost budget's :class:`QueryBudget`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from undistill.config import ExternalTeacherConfig, InputSpec
from undistill.teachers.answer_cache import AnswerCache, QueryBudget, input_key
from undistill.teachers.base import Ask, Meter, Teacher, TeacherError


class Wrapper(Teacher):
    """A teacher around another (``inner``): everything but what it changes is the inner's."""

    def __init__(self, inner: Teacher) -> None:
        if not isinstance(inner, Teacher):
            raise TeacherError(f"{type(self).__name__} wraps a Teacher, not a {type(inner).__name__}")
        nn.Module.__init__(self)
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("inner")
            if inner is None or name.startswith("__"):
                raise
            return getattr(inner, name)

    # the inner teacher's conventions and identity
    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def source(self) -> str:
        return self.inner.source

    @property
    def spec(self) -> InputSpec:
        return self.inner.spec

    @spec.setter
    def spec(self, value: InputSpec) -> None:
        self.inner.spec = value

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def needs_probe(self) -> bool:
        return self.inner.needs_probe

    def bind(self, *args: Any, **kwargs: Any) -> Wrapper:
        self.inner.bind(*args, **kwargs)
        return self

    def _model_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner._model_input(x)

    def probe_input(self) -> torch.Tensor:
        return self.inner.probe_input()

    def check_answer(self, out: torch.Tensor, n: int) -> None:
        self.inner.check_answer(out, n)

    def forward_features(self, x: torch.Tensor) -> Any:
        return self.inner.forward_features(x)

    def config(self) -> ExternalTeacherConfig:
        return self.inner.config()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def layers(self) -> Iterator[Teacher]:
        yield self
        yield from self.inner.layers()

    # answers: through the inner teacher
    def answer(self, x: torch.Tensor, ask: Ask | None = None) -> torch.Tensor:
        return self.inner.answer(x, ask)

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        return self.answer(x)

    def probe(self, meter: Meter | None = None) -> torch.Tensor:
        return self.inner.probe(meter)

    def unbudgeted(self) -> Teacher:
        inner = self.inner.unbudgeted()
        return self if inner is self.inner else self._rewrap(inner)

    def _rewrap(self, inner: Teacher) -> Teacher:
        raise NotImplementedError

    def close(self) -> None:
        if callable(getattr(self.inner, "close", None)):
            self.inner.close()


class Budgeted(Wrapper):
    """At most ``limit`` images reach the teacher (``None``: counted, unlimited), the probe
    included; a request that would exceed it is not sent (:class:`BudgetExhausted`). A transport
    that retries pays every attempt (``docs/teachers.md``)."""

    def __init__(self, inner: Teacher, limit: int | QueryBudget | None) -> None:
        super().__init__(inner)
        self.__dict__["budget"] = limit if isinstance(limit, QueryBudget) else QueryBudget(limit)

    budget: QueryBudget

    def answer(self, x: torch.Tensor, ask: Ask | None = None) -> torch.Tensor:
        return self.inner.answer(x, replace(ask or Ask(), meter=self.budget))

    def probe(self, meter: Meter | None = None) -> torch.Tensor:
        return self.inner.probe(self.budget)

    def unbudgeted(self) -> Teacher:
        return self.inner.unbudgeted()

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "budget": self.budget.limit}


class Cached(Wrapper):
    """Answers stored in an :class:`AnswerCache` keyed by the teacher's identity and a hash of the
    input image (in the model's conventions): a stored answer is never asked again, every checked
    answer is stored as it arrives. The probe is never answered from the cache."""

    def __init__(self, inner: Teacher, cache: AnswerCache | Path | str) -> None:
        super().__init__(inner)
        self.__dict__["cache"] = cache if isinstance(cache, AnswerCache) else AnswerCache(Path(cache))

    cache: AnswerCache

    def answer(self, x: torch.Tensor, ask: Ask | None = None) -> torch.Tensor:
        ask = ask or Ask()
        if self.needs_probe:
            self.probe(ask.meter)
        identity = self.identity
        arr = x.detach().cpu().float().numpy()
        keys = [input_key(row) for row in arr]
        known = self.cache.get_many(identity, list(set(keys)), self.spec.num_classes)
        missing = list(dict.fromkeys(k for k in keys if k not in known))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            rows = [first[k] for k in missing]

            def store(idx: list[int], out: torch.Tensor) -> None:
                got = {missing[i]: np.asarray(out[j].detach().cpu(), dtype=np.float32)
                       for j, i in enumerate(idx)}
                self.cache.put_many(identity, got)  # committed: a kill loses nothing paid
                known.update(got)

            self.inner.answer(x[rows], replace(ask, on_rows=store))
        out = torch.from_numpy(np.stack([known[k] for k in keys]))
        if ask.on_rows is not None:
            ask.on_rows(list(range(len(keys))), out)
        return out

    def _rewrap(self, inner: Teacher) -> Teacher:
        return Cached(inner, self.cache)

    def close(self) -> None:
        super().close()
        self.cache.close()


class Defended(Wrapper):
    """The teacher behind an output defence (:func:`undistill.defences.release`): its logits are
    the :func:`~undistill.defences.released_logits` of the released probabilities, its raw answer
    the released probabilities (``spec.outputs`` is ``probs``), so a defended teacher is stolen
    from, measured and served as its users would see it."""

    def __init__(self, inner: Teacher, defence: Any) -> None:
        super().__init__(inner)
        self.defence = defence

    @property
    def spec(self) -> InputSpec:
        return self.inner.spec.model_copy(update={"outputs": "probs"})

    @spec.setter
    def spec(self, value: InputSpec) -> None:
        self.inner.spec = value

    @property
    def identity(self) -> str:
        params = getattr(self.defence, "params", None)
        what = json.dumps([type(self.defence).__name__,
                           params.model_dump(mode="json") if hasattr(params, "model_dump") else None],
                          sort_keys=True)
        return f"{self.inner.identity}+defended:{hashlib.sha256(what.encode()).hexdigest()[:12]}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from undistill.defences import release, released_logits

        return released_logits(release(self.inner.logits, x, self.defence))

    def answer(self, x: torch.Tensor, ask: Ask | None = None) -> torch.Tensor:
        from undistill.defences import release_answer

        ask = ask or Ask()
        out = release_answer(self.inner.answer(x, replace(ask, on_rows=None)), x, self.defence,
                             outputs=self.inner.spec.outputs)
        if ask.on_rows is not None:
            ask.on_rows(list(range(int(x.shape[0]))), out)
        return out

    def forward_features(self, x: torch.Tensor) -> Any:
        raise TeacherError(f"{self.source}: a defended teacher releases probabilities only")

    def config(self) -> ExternalTeacherConfig:
        raise TeacherError(f"{self.source}: a defended teacher goes into a run config as the "
                           f"teacher plus the run's `defence:`")

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "identity": self.identity,
                "defence": type(self.defence).__name__}

    def _rewrap(self, inner: Teacher) -> Teacher:
        return Defended(inner, self.defence)


def wrap(teacher: Teacher, *, cache: AnswerCache | Path | str | None = None,
         budget: int | QueryBudget | None = None, metered: bool = True) -> Teacher:
    """``teacher`` within ``budget`` (with ``metered``, a budget of None still counts what is
    sent), behind ``cache``: ``Cached(Budgeted(teacher, budget), cache)``."""
    if budget is not None or metered:
        teacher = Budgeted(teacher, budget)
    if cache is not None:
        teacher = Cached(teacher, cache)
    return teacher
