"""An ensemble whose answers pass through a defence: what a student stealing from a defended API sees.

Every method reads its teachers through :meth:`Ensemble.logits` (``Method.teacher_logits``), so
defending the ensemble is the whole integration: the methods are unchanged. The ensemble's answer
on the batch goes through the one release path (:func:`~undistill.defences.release`:
``softmax(z)`` in float32, then the defence, which gets the batch itself when it reads the
queries: MAD), and the methods get :func:`~undistill.defences.base.released_logits` of the
released probabilities, ``log(max(p, 1e-6))``: KD, HTC and SCM then soften these at their
temperature, so ``softmax(z'/T) = max(p, 1e-6)^(1/T)`` renormalised (``docs/defences.md``).
One teacher from anywhere behind a defence is :class:`undistill.teachers.Defended`.
"""

from __future__ import annotations

import torch
from torch import nn

from undistill.defences.base import Defence, released_logits
from undistill.defences.release_path import release, release_answer
from undistill.methods.base import Ensemble


class DefendedEnsemble(Ensemble):
    """An :class:`Ensemble` whose :meth:`logits` (and :meth:`all_logits`, per member) are defended.

    Released logits are float32 whatever the teacher's precision: cast back to bf16 (8 bits of
    mantissa), the near-ties some defences release on purpose (MAD-argmax keeps the top-1 by a
    hair, rounding makes exact ties) would flip or tie the released top-1 class."""

    def __init__(self, models: list[nn.Module], defence: Defence, **kwargs: object) -> None:
        super().__init__(models, **kwargs)  # type: ignore[arg-type]
        self.defence = defence

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None
           ) -> DefendedEnsemble:
        super().to(device, memory_format)
        self.defence.to(device)
        return self

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return released_logits(release(super().logits, x, self.defence))

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([released_logits(release_answer(z, x, self.defence))
                            for z in super().all_logits(x)])

    def forward_features_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError("a defended teacher releases probabilities only: data-free "
                                  "methods, which need gradients and features of the teacher, "
                                  "cannot run against it")


#: Deprecated name of :class:`DefendedEnsemble`.
