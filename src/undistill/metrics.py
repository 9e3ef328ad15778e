"""Metrics of released answers that more than one report needs (the audit, the leaderboard)."""

from __future__ import annotations

import torch


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error of released probabilities ``[N, C]`` (rows renormalised, as a
    client reads rounded ones): over ``bins`` equal-width bins of the top-1 confidence ``(lo, hi]``,
    the mean of ``|accuracy - mean confidence|`` weighted by the bin's share of the rows; a
    fraction in [0, 1]."""
    p = probs.float() / probs.float().sum(1, keepdim=True).clamp_min(1e-12)
    conf, pred = p.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += float(m.float().mean() * (correct[m].mean() - conf[m].mean()).abs())
    return total
