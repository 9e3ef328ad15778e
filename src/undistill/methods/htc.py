"""HTC (Eq. 6-9): learn from the teacher softened at a high temperature, composed with labels.

Its objective is also SCM's (``scm.py``: Eq. 11, other defaults) and the one Skeptical+HTC and
DAFL+HTC learn by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field

from undistill.losses import htc_loss
from undistill.methods.base import METHODS, Params
from undistill.methods.objective import OBJECTIVES, Objective, Plain

#: HTC's defaults wherever its loss is used (plain, Skeptical+HTC, data-free): the paper's
#: ablation values.
ALPHA, TEMPERATURE, MULTIPLIER = 0.9, 50.0, 50.0

#: The paper's search space for HTC and SCM (Sec. 4.1): m, tau and alpha.
PAPER_SEARCH_SPACE: dict[str, list[float]] = {
    "multiplier": [1.0, 5.0, 10.0, 50.0],
    "temperature": [4.0, 20.0, 50.0, 100.0],
    "alpha": [round(0.1 * i, 1) for i in range(1, 10)],
}


class HTCParams(Params):
    alpha: float = Field(ALPHA, ge=0.0, le=1.0)
    temperature: float = Field(TEMPERATURE, gt=0.0, description="tau, high (the paper's "
                               "ablations: 50)")
    multiplier: float = Field(MULTIPLIER, ge=0.0, description="m")


@OBJECTIVES.register("htc")
class HTC(Objective):
    """One term, ``(1 - alpha) CE + alpha m KL(teacher at tau || student)``: HTC's Eq. 9
    (:func:`~undistill.losses.htc_loss`), or another equation of that form (SCM's Eq. 11)."""

    Params = HTCParams
    search_space = PAPER_SEARCH_SPACE
    #: the term's name and its equation, ``f(z_s, z_t, y, alpha, tau, m)``
    term: ClassVar[str] = "htc"
    equation: ClassVar[Callable[..., torch.Tensor]] = staticmethod(htc_loss)

    @classmethod
    def terms(cls, p: HTCParams, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {cls.term: cls.equation(student_logits, teacher_logits, labels, p.alpha,
                                       p.temperature, p.multiplier)}


METHODS.register("htc")(Plain.using(HTC, title="HTC", audit_order=2,
                                    description="high-temperature composition (Eq. 9)"))
