"""Adaptive Knockoff Nets (Orekondy et al., CVPR 2019): a gradient bandit over clusters of the pool."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F

from undistill.queries.base import STRATEGIES, PoolState, Strategy

CHUNK = 4096  # images per block when the pool is downsampled


def tiny_features(pool: torch.Tensor) -> torch.Tensor:
    """The cheap feature space of the arms: each image scaled to [0, 1] and area-averaged to 8x8,
    flattened, float [N, C*64]."""
    n = pool.shape[0]
    out = [F.adaptive_avg_pool2d(pool[i:i + CHUNK].float(), 8).flatten(1) for i in range(0, n, CHUNK)]
    return torch.cat(out).div_(255.0) if out else torch.empty(0, 0)


def kmeans(x: torch.Tensor, clusters: int, generator: torch.Generator, iterations: int = 10,
           fit_rows: int = 8192) -> torch.Tensor:
    """Deterministic k-means of the rows of ``x``: fitted on at most ``fit_rows`` rows drawn from
    ``generator`` (k-means++ init from the generator, then a fixed number of Lloyd iterations), then
    every row assigned to its nearest center. Returns compact labels ``0..A-1`` (A <= ``clusters``:
    fewer when the rows have fewer distinct points or a cluster empties)."""
    n = x.shape[0]
    fit = x[torch.randperm(n, generator=generator)[:fit_rows]] if n > fit_rows else x

    def dist(rows: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # squared L2 [len(rows), len(c)]
        return ((rows * rows).sum(dim=1)[:, None] + (c * c).sum(dim=1)[None, :]
                - 2.0 * (rows @ c.T)).clamp_(min=0)

    first = int(torch.randint(fit.shape[0], (1,), generator=generator))
    centers = [fit[first]]
    mind = ((fit - fit[first]) ** 2).sum(dim=1)  # exact zeros for copies of a center
    while len(centers) < min(clusters, fit.shape[0]) and mind.sum() > 0:
        nxt = int(torch.multinomial(mind.double(), 1, generator=generator))
        centers.append(fit[nxt])
        mind = torch.minimum(mind, ((fit - fit[nxt]) ** 2).sum(dim=1))
    c = torch.stack(centers)
    for _ in range(iterations):
        label = dist(fit, c).argmin(dim=1)
        count = torch.bincount(label, minlength=len(c)).to(x.dtype)
        total = torch.zeros_like(c).index_add_(0, label, fit)
        c = torch.where(count[:, None] > 0, total / count.clamp(min=1)[:, None], c)
    label = torch.cat([dist(x[i:i + CHUNK], c).argmin(dim=1) for i in range(0, n, CHUNK)])
    return torch.unique(label, return_inverse=True)[1]


def rewards(arm: torch.Tensor, answers: torch.Tensor, student_probs: torch.Tensor | None) -> torch.Tensor:
    """Per-query reward of the replayed queries (in query order), each term in [0, 1]:
    certainty (top-1 minus top-2 answer probability) + diversity (L2 distance of the answer from the
    mean of the earlier answers of the same arm, zero before any, clipped to [0, 1]) + loss (when the
    student's probabilities are given: its cross-entropy against the answer's top class, divided by
    log K and clipped to [0, 1])."""
    y = answers.double()
    top = y.topk(min(2, y.shape[1]), dim=1).values
    certainty = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    diversity = torch.zeros_like(certainty)
    for a in arm.unique():
        at = (arm == a).nonzero().squeeze(1)
        ya = y[at]
        before = ya.cumsum(dim=0) - ya
        mean = before / torch.arange(len(at), dtype=y.dtype).clamp(min=1)[:, None]
        diversity[at] = (ya - mean).norm(dim=1).clamp(0, 1)
    total = certainty + diversity
    if student_probs is not None and y.shape[1] > 1:
        p = student_probs.double().gather(1, y.argmax(dim=1, keepdim=True)).squeeze(1)
        total = total + (-p.clamp_min(1e-12).log() / math.log(y.shape[1])).clamp(0, 1)
    return total


def policy(arm: list[int], reward: list[float], arms: int, lr: float) -> torch.Tensor:
    """pi = softmax(H) after the gradient-bandit updates (Sutton & Barto, 2.8) for the replayed
    (arm, reward) pairs in order: ``H[a] += lr (r - b) (1[a = a_t] - pi[a])``, the baseline ``b``
    the mean of the earlier rewards (the first reward its own baseline). Uniform with no replay."""
    h = [0.0] * arms
    baseline = 0.0
    for t, (a_t, r) in enumerate(zip(arm, reward, strict=True)):
        if t == 0:
            baseline = r
        top = max(h)
        e = [math.exp(v - top) for v in h]
        z = sum(e)
        step = lr * (r - baseline)
        h = [v + step * ((1.0 if a == a_t else 0.0) - e[a] / z) for a, v in enumerate(h)]
        baseline += (r - baseline) / (t + 1)
    return torch.softmax(torch.tensor(h, dtype=torch.float64), dim=0)


def share(k: int, pi: torch.Tensor, room: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Images per arm: ``k`` draws from ``pi``; what exceeds an arm's ``room`` goes to the arms with
    room left, in proportion to ``pi`` (largest remainder), until all ``k`` are placed."""
    counts = torch.bincount(torch.multinomial(pi, k, replacement=True, generator=generator),
                            minlength=len(pi))
    while True:
        extra = int((counts - room).clamp(min=0).sum())
        counts = torch.minimum(counts, room)
        if extra == 0:
            return counts
        open_ = counts < room
        w = torch.where(open_, pi, torch.zeros_like(pi))
        w = w / w.sum() if w.sum() > 0 else open_.double() / open_.sum()
        exact = w * extra
        add = exact.floor().long()
        left = extra - int(add.sum())
        if left:
            add[torch.sort(exact - add, descending=True, stable=True).indices[:left]] += 1
        counts = counts + add


@STRATEGIES.register("knockoff")
class KnockoffStrategy(Strategy):
    """Adaptive Knockoff Nets (Orekondy et al., CVPR 2019): a gradient bandit over ``arms`` clusters
    of the pool (k-means of the images area-averaged to 8x8; the paper's arms are class labels of
    the pool, which a thief without labels replaces by clusters).

    Every earlier round is replayed, in order, to learn the preferences H (learning rate ``lr``)
    from each query's reward: certainty + diversity + loss (see :func:`rewards`). The next ``k``
    images are then drawn: arm counts from ``pi = softmax(H)`` (uniform in the first round), and
    within each arm the unpaid images earliest in a fixed seeded permutation of the pool.
    """

    name = "knockoff"
    description = "adaptive Knockoff: gradient bandit over k-means clusters of the pool"
    arms: ClassVar[int] = 16
    lr: ClassVar[float] = 0.1
    kmeans_iterations: ClassVar[int] = 10

    def select(self, k: int, state: PoolState, generator: torch.Generator) -> torch.Tensor:
        perm = torch.randperm(state.size, generator=generator)
        arm = kmeans(tiny_features(state.pool.cpu()), self.arms, generator, self.kmeans_iterations)
        n_arms = int(arm.max()) + 1
        pi = torch.full((n_arms,), 1.0 / n_arms, dtype=torch.float64)
        paid = state.paid
        if paid.numel():
            answers = torch.cat([a.detach().cpu() for a in state.answers])
            probs = state.student_probs
            probs = None if probs is None else probs.detach().cpu()[paid]
            r = rewards(arm[paid], answers, probs)
            pi = policy(arm[paid].tolist(), r.tolist(), n_arms, self.lr)
        order = perm[~state.paid_mask()[perm]]
        order_arm = arm[order]
        room = torch.bincount(order_arm, minlength=n_arms)
        counts = share(k, pi, room, generator)
        # rank of each unpaid image within its arm, along the permutation
        rank = torch.empty_like(order)
        for a in range(n_arms):
            at = (order_arm == a).nonzero().squeeze(1)
            rank[at] = torch.arange(at.numel())
        return order[rank < counts[order_arm]]
