"""The query-strategy contract: which of the thief's pool images the next round pays for.

A strategy is one class registered by name in :data:`STRATEGIES`. It sees a :class:`PoolState`
(the pool, the images already paid and the teacher's answers to them, and optionally the current
student's outputs over the pool) and returns ``k`` new indices. :func:`select` is what the engine
calls: it checks the request, seeds a generator and checks the strategy's answer.

Every strategy is a pure function of (pool, rounds, answers, student outputs, seed): the only
randomness is the generator :func:`select` seeds, and nothing is cached between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from undistill.registry import Registry


@dataclass
class PoolState:
    """What a strategy sees when it picks the next round's images."""

    pool: torch.Tensor  # uint8 images [N, C, H, W]: the thief's whole pool
    rounds: list[torch.Tensor]  # long indices into pool paid in each earlier round, in order (disjoint)
    answers: list[torch.Tensor]  # teacher's answers (probabilities, float [len(round_i), K]) per round
    student_probs: torch.Tensor | None = None  # float [N, K]: previous student softmax (None before any)
    student_features: torch.Tensor | None = None  # float [N, D]: its penultimate features

    @property
    def size(self) -> int:
        """N, the number of images in the pool."""
        return int(self.pool.shape[0])

    @property
    def paid(self) -> torch.Tensor:
        """Every index paid so far (the rounds concatenated); an empty long tensor when none."""
        if not self.rounds:
            return torch.empty(0, dtype=torch.long)
        return torch.cat([r.reshape(-1).long().cpu() for r in self.rounds])

    def paid_mask(self) -> torch.Tensor:
        """Bool [N]: True where the image is already paid."""
        mask = torch.zeros(self.size, dtype=torch.bool)
        mask[self.paid] = True
        return mask


class Strategy:
    """One way to pick a round's images. Subclasses set ``name`` (the registry key), say whether they
    read the student's outputs (``needs_student``) and implement :meth:`select`."""

    name: ClassVar[str]
    needs_student: ClassVar[bool] = False  # True: uses student_probs/features (active learning)
    description: ClassVar[str] = ""

    def select(self, k: int, state: PoolState, generator: torch.Generator) -> torch.Tensor:
        """k distinct long indices into state.pool, none already paid, deterministic given the generator."""
        raise NotImplementedError


STRATEGIES: Registry[type[Strategy]] = Registry("query strategy")


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def fixed_order(state: PoolState, generator: torch.Generator) -> torch.Tensor:
    """The pool's unpaid indices in the order of one fixed permutation of the pool.

    The permutation is the generator's first draw, ``torch.randperm(N, generator=generator)``, so with
    a generator seeded by ``seed`` it is the same permutation in every round (the paid images are
    dropped from it, the rest keep their order). Strategies use it for random picks and to break ties.
    """
    perm = torch.randperm(state.size, generator=generator)
    return perm[~state.paid_mask()[perm]]


def _check_state(state: PoolState) -> None:
    n = state.size
    if len(state.rounds) != len(state.answers):
        raise ValueError(f"{len(state.rounds)} rounds but {len(state.answers)} answer sets")
    for i, (r, a) in enumerate(zip(state.rounds, state.answers, strict=True)):
        if r.dim() != 1 or a.dim() != 2 or a.shape[0] != r.shape[0]:
            raise ValueError(f"round {i}: indices {tuple(r.shape)} and answers {tuple(a.shape)} "
                             "must be [m] and [m, K]")
    paid = state.paid
    if paid.numel() and (paid.min() < 0 or paid.max() >= n):
        raise ValueError(f"paid indices must lie in [0, {n})")
    if paid.unique().numel() != paid.numel():
        raise ValueError("earlier rounds repeat an index (rounds must be disjoint)")
    for label, t in (("student_probs", state.student_probs), ("student_features", state.student_features)):
        if t is not None and (t.dim() != 2 or t.shape[0] != n):
            raise ValueError(f"{label} must be [N={n}, *], got {tuple(t.shape)}")


def _check_output(name: str, out: object, k: int, state: PoolState) -> torch.Tensor:
    def fail(why: str) -> RuntimeError:
        return RuntimeError(f"query strategy {name!r} returned a bad selection: {why}")

    if not isinstance(out, torch.Tensor):
        raise fail(f"expected a tensor, got {type(out).__name__}")
    if out.dtype != torch.long or out.dim() != 1:
        raise fail(f"expected a 1-D long tensor, got {out.dtype} {tuple(out.shape)}")
    out = out.cpu()
    if out.numel() != k:
        raise fail(f"{out.numel()} indices, asked for k={k}")
    if out.min() < 0 or out.max() >= state.size:
        raise fail(f"indices outside [0, {state.size})")
    if out.unique().numel() != k:
        raise fail("repeated indices")
    if state.paid_mask()[out].any():
        raise fail("indices already paid in an earlier round")
    return out


def select(name: str, k: int, state: PoolState, seed: int) -> torch.Tensor:
    """The next round's ``k`` pool indices by strategy ``name``.

    Checks k (1 <= k <= unpaid count, else ValueError naming k and the unpaid count), builds a
    torch.Generator seeded with ``seed``, runs the strategy, checks its output (distinct, unpaid, in
    range, length k; else RuntimeError naming the strategy) and returns it (long, CPU).
    An unknown ``name`` raises the registry's KeyError, which lists the known names.
    """
    cls = STRATEGIES.get(name)
    _check_state(state)
    unpaid = state.size - int(state.paid.numel())
    if not 1 <= k <= unpaid:
        raise ValueError(f"cannot pick k={k} images: need 1 <= k <= {unpaid} (the unpaid images in a "
                         f"pool of {state.size})")
    generator = torch.Generator().manual_seed(int(seed))
    out = cls().select(k, state, generator)
    return _check_output(name, out, k, state)
