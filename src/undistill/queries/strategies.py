"""The plain strategies: ``random`` (Knockoff) and the active-learning ones of ActiveThief
(``uncertainty``, ``k-center``). The adaptive Knockoff bandit lives in :mod:`.knockoff`."""

from __future__ import annotations

import torch

from undistill.queries.base import STRATEGIES, PoolState, Strategy, fixed_order

CHUNK = 4096  # rows per block when distances to many centers are computed at once


def student_output(state: PoolState, name: str, *, features: bool) -> torch.Tensor | None:
    """The student's features (``features=True``, falling back to its probabilities) or probabilities.

    ``None`` in the first round (no earlier rounds and no student yet): ActiveThief starts from a
    seed set picked uniformly at random, so the active strategies then pick exactly as ``random``.
    Once rounds were paid the student's outputs are required.
    """
    out = state.student_features if features else None
    if out is None:
        out = state.student_probs
    if out is None and state.rounds:
        what = "student_features or student_probs" if features else "student_probs"
        raise ValueError(f"query strategy {name!r} needs the previous round's {what} once rounds were paid")
    return out


@STRATEGIES.register("random")
class RandomStrategy(Strategy):
    """Uniform among the unpaid images: the "random" strategy of Knockoff Nets (Orekondy et al.,
    CVPR 2019).

    Defined as the first ``k`` unpaid images in the order of one fixed permutation of the pool,
    ``torch.randperm(N, generator=torch.Generator().manual_seed(seed))``. So with no earlier rounds
    it returns ``perm[:k]`` (a smaller budget is a prefix of a larger one), and round after round,
    with the same seed, it continues along the same permutation.
    """

    name = "random"
    description = "uniform among unpaid images; the first k unpaid of one fixed seeded permutation"

    def select(self, k: int, state: PoolState, generator: torch.Generator) -> torch.Tensor:
        return fixed_order(state, generator)[:k]


@STRATEGIES.register("uncertainty")
class UncertaintyStrategy(Strategy):
    """The ``k`` unpaid images whose student prediction has the highest entropy: the uncertainty
    strategy of ActiveThief (Pal et al., AAAI 2020). Ties keep the fixed permutation's order (as
    ``random``); in the first round, before any student, it picks exactly as ``random``."""

    name = "uncertainty"
    needs_student = True
    description = "highest-entropy student predictions among unpaid images (ActiveThief)"

    def select(self, k: int, state: PoolState, generator: torch.Generator) -> torch.Tensor:
        order = fixed_order(state, generator)
        probs = student_output(state, self.name, features=False)
        if probs is None:
            return order[:k]
        p = probs[order.to(probs.device)].detach().double().clamp_min(0)
        entropy = torch.special.entr(p).sum(dim=1).cpu()
        rank = torch.sort(entropy, descending=True, stable=True).indices
        return order[rank[:k]]


@STRATEGIES.register("k-center")
class KCenterStrategy(Strategy):
    """Greedy k-center over the student's penultimate features (its probabilities when no features
    are given): the core-set strategy of Sener & Savarese (ICLR 2018), as used by ActiveThief
    (Pal et al., AAAI 2020). Each pick is the unpaid image farthest (L2) from its nearest center,
    the centers being the paid images and the images picked so far.

    Memory stays O(N + CHUNK^2) beyond the features: the initial distances of the unpaid images to
    the paid ones are computed in ``CHUNK x CHUNK`` blocks, then a running min-distance vector over
    the unpaid images is updated once per pick by one matrix-vector product
    (``|x - c|^2 = |x|^2 - 2 x.c + |c|^2`` on mean-centred features). Time is O(N (P + k) D) for
    P paid images. Ties (e.g. the very first pick when nothing is paid) go to the earliest image
    of the fixed permutation; in the first round, before any student, it picks exactly as ``random``.
    """

    name = "k-center"
    needs_student = True
    description = "greedy k-center (core-set) over student features (ActiveThief)"

    def select(self, k: int, state: PoolState, generator: torch.Generator) -> torch.Tensor:
        order = fixed_order(state, generator)
        feats = student_output(state, self.name, features=True)
        if feats is None:
            return order[:k]
        x = feats.detach().float()
        x = x - x.mean(dim=0, keepdim=True)
        c = x[state.paid.to(x.device)]  # the paid images: the initial centers
        x = x[order.to(x.device)]  # candidates: the unpaid images, in the permutation's order
        sq, csq = (x * x).sum(dim=1), (c * c).sum(dim=1)
        mind = torch.full_like(sq, float("inf"))
        for i in range(0, x.shape[0], CHUNK):
            rows = x[i:i + CHUNK]
            for j in range(0, c.shape[0], CHUNK):
                d = torch.addmm(sq[i:i + CHUNK, None] + csq[None, j:j + CHUNK], rows, c[j:j + CHUNK].T,
                                alpha=-2.0)
                torch.minimum(mind[i:i + CHUNK], d.min(dim=1).values, out=mind[i:i + CHUNK])
        mind.clamp_(min=0)
        picks = torch.empty(k, dtype=torch.long, device=x.device)
        for t in range(k):
            best = torch.argmax(mind)  # the first maximum: earliest in the permutation
            picks[t] = best
            d = torch.addmv(sq + sq[best], x, x[best], alpha=-2.0).clamp_(min=0)
            torch.minimum(mind, d, out=mind)
            mind[best] = float("-inf")
        return order[picks.cpu()]
