"""The one release path: a teacher's raw probabilities, through an output defence.

Everything that hands out a teacher's answers goes through :func:`release` (or, for answers
already computed, :func:`release_answer`): the teacher a student learns from
(:class:`~undistill.defences.teacher.DefendedEnsemble`), ``undistill serve``'s infer route, and the
defence leaderboard's utility (:func:`released_answers`). So a defence releases the same
probabilities whoever asks, for the same teacher, defence and inputs.

The steps, in float32 whatever the teacher computes in (bf16 would turn the near-ties some
defences release on purpose into ties; ``docs/defences.md``):

1. the teacher's answer to ``x`` becomes probabilities: the softmax of logits, or the
   probabilities as answered (``outputs="probs"``, a model answering probabilities);
2. the defence (one, or a ``chain``) maps them to released probabilities; ``x`` is passed to a
   defence whose :meth:`~undistill.defences.base.Defence.uses_inputs` says it reads the queries
   (MAD), ``None`` to the others. No defence: the probabilities as they are.

``--policy`` of ``undistill serve`` is shorthand for a defence (:func:`policy_defence`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from undistill.defences.base import Defence, build_defence

Outputs = Literal["auto", "logits", "probs"]

#: ``--policy`` names: ``full`` (no defence) and shorthands for the defences of the same name
#: (``top-k`` is the alias of ``topk``, as in a defence config).
POLICIES = ("full", "topk", "top-k", "round", "labels")


def answer_probabilities(answer: torch.Tensor, outputs: Outputs = "logits") -> torch.Tensor:
    """Float32 probabilities of a raw answer ``[N, C]``: as answered when ``outputs`` is
    ``"probs"``, else the softmax of the logits (``"auto"`` not yet resolved reads as logits)."""
    out = answer.float()
    return out if outputs == "probs" else torch.softmax(out, dim=-1)


def release_answer(answer: torch.Tensor, x: torch.Tensor, defence: Defence | None = None,
                   outputs: Outputs = "logits") -> torch.Tensor:
    """What ``defence`` releases of a teacher's ``answer`` to the inputs ``x`` (module doc)."""
    with torch.no_grad():
        probs = answer_probabilities(answer, outputs)
        if defence is None:
            return probs
        return defence(probs, x if defence.uses_inputs() else None)


def release(teacher: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
            defence: Defence | None = None, *, outputs: Outputs = "logits") -> torch.Tensor:
    """The released probabilities ``[N, C]`` (float32) of ``teacher`` on ``x``, through ``defence``.

    ``teacher`` answers ``x``: a model or an ensemble's ``logits`` (logits), an
    :class:`undistill.teachers.Teacher` (its logits, in the bound dataset's conventions), or a
    teacher's :meth:`~undistill.teachers.Teacher.raw_answer` (its model's own answer to inputs
    already in the model's conventions, with ``outputs=teacher.spec.outputs``: what serve does).
    """
    with torch.no_grad():
        return release_answer(teacher(x), x, defence, outputs)


def released_answers(teacher: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float],
                     defence: Defence | None = None, batch_size: int = 1000) -> torch.Tensor:
    """:func:`release` over a dataset's ``images`` (pixels on the 0..255 scale, normalised here with
    ``mean``/``std``) in batches of ``batch_size``: the answers a defended model gives its users."""
    from undistill.data import normalize

    return torch.cat([release(teacher, normalize(xb, mean, std), defence)
                      for xb in images.split(batch_size)])


def policy_defence(name: str, k: int = 1, decimals: int = 2,
                   num_classes: int | None = None) -> Defence | None:
    """The defence ``--policy NAME`` stands for: ``full`` -> None (the probabilities as they are),
    ``top-k``/``topk`` -> ``topk`` with ``k``, ``round`` -> ``round`` with ``decimals``, ``labels``
    -> ``labels``. ValueError for another name or bad parameters (checked against
    ``num_classes`` when given)."""
    if name not in POLICIES:
        raise ValueError(f"unknown output policy {name!r}; known: full, top-k (topk), round, labels "
                         f"(any other defence: --defence, docs/defences.md)")
    if name == "full":
        return None
    params = {"top-k": {"k": k}, "topk": {"k": k}, "round": {"decimals": decimals}}.get(name, {})
    return build_defence({"name": name, "params": params}, num_classes)
