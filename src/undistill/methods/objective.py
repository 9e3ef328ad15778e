"""Objectives and the training schemes that take one: what a student learns, and from which logits.

An :class:`Objective` is what a student learns from its teachers' logits on a batch: KD (Eq. 2),
HTC (Eq. 6-9), SCM (Eq. 10-11), the hard or soft targets, the nasty teacher's Eq. 5. It wires
its hyperparameters to the pure functions of :mod:`undistill.losses` and returns named loss
terms; it is registered by name in :data:`OBJECTIVES`, next to its plain method.

A :class:`Scheme` is how a method gets the logits it hands an objective: :class:`Plain` (the
trained model's own logits on the batch), ``skeptical.Skeptical`` (a shallow auxiliary head),
``dafl.DAFL`` (images a generator makes, no labels). A scheme takes the objective as a
parameter: ``Scheme.using(objective, title=..., description=...)`` is the method class of that
pair, which a method file registers by name, e.g.
``METHODS.register("skeptical+htc")(Skeptical.using(HTC, ...))``. The pair's ``Params`` are the
objective's and the scheme's together; its search space, protocol defaults and traits are the
objective's unless the scheme or the call says otherwise. Nothing here knows a method by name.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, ClassVar

import torch

from undistill.methods.base import Method, Params
from undistill.registry import Registry


class Objective:
    """Base of every objective: ``Params``, traits and :meth:`terms` (never instantiated)."""

    #: its hyperparameters and their defaults
    Params: ClassVar[type[Params]] = Params
    #: the grid the paper searches for it (Sec. 4.1); empty: not searched
    search_space: ClassVar[dict[str, list[float]]] = {}
    #: meant for the ensemble of an SCM sequence S^1..S^k (Eq. 10), not the nasty teacher alone
    uses_sequence: ClassVar[bool] = False
    #: cannot be computed without labels
    needs_labels: ClassVar[bool] = False

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        """The protocol's values for a dataset and student architecture, over ``Params``'."""
        return {}

    @classmethod
    def terms(cls, p: Any, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The named loss terms (logged as named) of ``p`` (a ``Params``) on one batch."""
        raise NotImplementedError

    @classmethod
    def loss(cls, p: Any, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
             labels: torch.Tensor | None) -> torch.Tensor:
        """The sum of :meth:`terms`, in their order (for a scheme that logs it as one term)."""
        return functools.reduce(operator.add, cls.terms(p, student_logits, teacher_logits,
                                                        labels).values())


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def merged_params(name: str, *parts: type[Params]) -> type[Params]:
    """One ``Params`` class with the fields of every part (the first part's default wins a field
    they share); a part is left out where another one already holds it."""
    bases = tuple(p for p in dict.fromkeys(parts)
                  if not any(q is not p and issubclass(q, p) for q in parts))
    if len(bases) == 1:
        return bases[0]
    return type(name, bases, {"__module__": bases[0].__module__, "__qualname__": name,
                              "__doc__": "The fields of " + ", ".join(b.__name__ for b in bases)})


class Scheme(Method):
    """A method made of a way to get logits and the :class:`Objective` it learns them by.

    Subclasses set ``SchemeParams`` (their own hyperparameters) and implement
    :meth:`~undistill.methods.base.Method.forward_train` with ``self.objective``; the method
    classes are made by :meth:`using`.
    """

    #: the objective a method class of this scheme learns by (set by :meth:`using`)
    objective: ClassVar[type[Objective]]
    #: the scheme's own hyperparameters, next to its objective's
    SchemeParams: ClassVar[type[Params]] = Params
    #: whether its methods are searched over their objective's grid
    searched: ClassVar[bool] = True
    min_teachers, max_teachers = 1, None

    @classmethod
    def using(cls, objective: type[Objective] | str, *, title: str, description: str,
              **traits: Any) -> type[Scheme]:
        """The method class that learns by ``objective`` (a class or its registered name) this
        way. ``traits`` set what the pair declares otherwise: ``Params`` with other defaults,
        ``data_free_of``, teacher counts, ..."""
        obj = OBJECTIVES.get(objective) if isinstance(objective, str) else objective
        unknown = sorted(set(traits) - set(dir(cls)))
        if unknown:
            raise TypeError(f"{cls.__name__}.using: unknown traits {unknown}")
        name = f"{cls.__name__}[{obj.__name__}]"
        if "Params" not in traits:
            traits["Params"] = merged_params(f"{name}.Params", obj.Params, cls.SchemeParams)
        attrs: dict[str, Any] = {
            "__module__": cls.__module__, "__qualname__": name, "__doc__": description,
            "objective": obj, "title": title, "description": description,
            "search_space": obj.search_space if cls.searched else {},
            "uses_sequence": obj.uses_sequence, "needs_labels": obj.needs_labels, **traits}
        return type(name, (cls,), attrs)

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        return cls.objective.defaults_for(dataset, arch)


class Plain(Scheme):
    """Plain distillation: the trained model's own logits learn the objective's terms from the
    teachers' (logit-averaged) ones, logged as the objective names them. Also the nasty teacher,
    which trains against its frozen adversary this way."""

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(images)
        return logits, self.objective.terms(self.params, logits, self.teacher_logits(images),
                                            labels)
