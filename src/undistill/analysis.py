"""Measuring models' outputs: KL to the original teacher (Table 3) and output statistics."""

from __future__ import annotations

from collections.abc import Callable

import torch

from undistill.data import normalize

Predict = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_logits(predict: Predict, images_uint8: torch.Tensor, mean: tuple[float, ...],
                   std: tuple[float, ...], batch_size: int = 1000,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits [N, C] (float32, on CPU) of a model or ensemble over uint8 images, in order."""
    outs = []
    for b in images_uint8.split(batch_size):
        outs.append(predict(normalize(b.to(device), mean, std)).float().cpu())
    return torch.cat(outs)


def kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor,
                    temperature: float = 1.0) -> float:
    """Mean over samples of KL(softmax(z/T) || softmax(z_ref/T)): how far a model's output
    distribution is from the reference (the original, normal teacher) -- Table 3.

    The model is the first argument of the KL, as the nasty teacher is in Eq. 5's KL.
    """
    if logits.shape != reference_logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and reference "
                         f"{tuple(reference_logits.shape)} differ in shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    lp = torch.log_softmax(logits.double() / temperature, 1)
    lq = torch.log_softmax(reference_logits.double() / temperature, 1)
    return float((lp.exp() * (lp - lq)).sum(1).mean())


def output_stats(logits: torch.Tensor, labels: torch.Tensor | None = None,
                 threshold: float = 0.1, temperature: float = 1.0) -> dict[str, float]:
    """Statistics of the output distributions softmax(z/T).

    peaks: mean number of classes whose probability exceeds ``threshold`` ("clear peaks");
    entropy: mean entropy in nats; target_prob: mean probability of the true class (with labels);
    max_prob: mean probability of the predicted class.
    """
    p = torch.softmax(logits.double() / temperature, 1)
    stats = {
        "peaks": float((p > threshold).sum(1).double().mean()),
        "entropy": float(-(p * torch.log(p.clamp_min(1e-300))).sum(1).mean()),
        "max_prob": float(p.max(1).values.mean()),
    }
    if labels is not None:
        stats["target_prob"] = float(p.gather(1, labels.view(-1, 1)).mean())
    return stats
