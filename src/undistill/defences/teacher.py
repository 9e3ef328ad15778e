"""A teacher whose answers pass through a defence: what a student stealing from a defended API sees.

Every method reads its teacher through :meth:`Teacher.logits` (``Method.teacher_logits``), so
wrapping the teacher is the whole integration: the methods are unchanged. The defence maps the
ensemble's probabilities ``softmax(z)`` on the batch (and the batch itself, for MAD) to released
probabilities, and the methods get :func:`~undistill.defences.base.released_logits` of them,
``log(max(p, 1e-6))``: KD, HTC and SCM then soften these at their temperature, so
``softmax(z'/T) = max(p, 1e-6)^(1/T)`` renormalised (``docs/defences.md``).
"""

from __future__ import annotations

import torch
from torch import nn

from undistill.defences.base import Defence, released_logits
from undistill.methods.base import Teacher


class DefendedTeacher(Teacher):
    """A :class:`Teacher` whose :meth:`logits` (and :meth:`all_logits`, per member) are defended."""

    def __init__(self, models: list[nn.Module], defence: Defence, **kwargs: object) -> None:
        super().__init__(models, **kwargs)  # type: ignore[arg-type]
        self.defence = defence

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None
           ) -> DefendedTeacher:
        super().to(device, memory_format)
        self.defence.to(device)
        return self

    def _defend(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Released logits in float32 whatever the teacher's precision: cast back to bf16 (8 bits
        of mantissa), the near-ties some defences release on purpose (MAD-argmax keeps the top-1
        by a hair, rounding makes exact ties) would flip or tie the released top-1 class."""
        with torch.no_grad():
            probs = torch.softmax(logits.float(), dim=-1)
            return released_logits(self.defence(probs, x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._defend(super().logits(x), x)

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self._defend(z, x) for z in super().all_logits(x)])

    def forward_features_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("a defended teacher releases probabilities only: data-free "
                                  "methods, which need gradients and features of the teacher, "
                                  "cannot run against it")
