"""The analyses of any teacher on a dataset's test split: accuracy, output statistics, KL.

Numbers only (from :mod:`undistill.analysis`); ``undistill inspect`` prints them.
"""

from __future__ import annotations

from typing import Any

import torch

from undistill.teachers.base import Teacher


def test_logits(teacher: Teacher, ds: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """The teacher's logits over the dataset's test images, in order (CPU)."""
    from undistill.analysis import predict_logits

    return predict_logits(teacher.to(device).logits, ds.test_images, ds.mean, ds.std, device=device)


def measure(teacher: Teacher, ds: Any, reference: Teacher | None = None, threshold: float = 0.1,
            temperatures: tuple[float, ...] = (1.0,), device: torch.device | str = "cpu"
            ) -> dict[str, Any]:
    """Accuracy (%), peaks above ``threshold``, entropy, max/target probability on the test split;
    with a ``reference`` also KL(teacher || reference) at each temperature and top-1 agreement."""
    from undistill.analysis import kl_to_reference, output_stats

    z = test_logits(teacher, ds, device)
    row: dict[str, Any] = {"teacher": teacher.describe(), "split": "test",
                           **output_stats(z, ds.test_labels, threshold)}
    if reference is not None:
        ref = test_logits(reference, ds, device)
        row["reference"] = reference.describe()
        row["agreement"] = 100.0 * float((z.argmax(1) == ref.argmax(1)).double().mean())
        for t in temperatures:
            row[f"kl_T{t:g}"] = kl_to_reference(z, ref, t)
    return row
