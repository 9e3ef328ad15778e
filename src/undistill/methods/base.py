"""The method contract: a small module that turns a batch into named losses.

The engine sums the returned losses, logs each by name and never asks which method it runs.
A method owns the student (and any extra trainable parts, e.g. auxiliary heads); the frozen
teacher is held outside the module's parameters and state, so checkpoints carry only what learns.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from undistill.models import ZooModel
from undistill.registry import Registry


class Params(BaseModel):
    """Base of every method's hyperparameters (validated, no unknown fields)."""

    model_config = ConfigDict(extra="forbid")


class Teacher:
    """One frozen model, or several whose logits are averaged (the ensemble of Eq. 10).

    Always in eval mode and evaluated without autograd state; never trained, never saved.
    """

    def __init__(self, models: list[nn.Module]) -> None:
        if not models:
            raise ValueError("a teacher needs at least one model")
        self.models = models
        for m in models:
            m.eval()
            m.requires_grad_(False)

    def __len__(self) -> int:
        return len(self.models)

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None
           ) -> Teacher:
        for m in self.models:
            m.to(device)
            if memory_format is not None:
                m.to(memory_format=memory_format)
        return self

    @torch.no_grad()
    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, stacked: [k, N, C]."""
        return torch.stack([m(x) for m in self.models])

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's logits (mean over members); a single model's own logits."""
        if len(self.models) == 1:
            return self.models[0](x)
        return self.all_logits(x).mean(0)


class Method(nn.Module):
    """Base of every training method.

    Subclasses set ``Params`` (their hyperparameters), the teacher count they accept, whether they
    need labels, and implement :meth:`forward_train`.
    """

    Params: ClassVar[type[Params]] = Params
    min_teachers: ClassVar[int] = 0
    max_teachers: ClassVar[int | None] = 0
    needs_labels: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, student: ZooModel, teacher: Teacher | None, params: Params) -> None:
        super().__init__()
        self.student = student
        self.params = params
        self.__dict__["teacher"] = teacher  # kept out of parameters() and state_dict()
        self.epoch = 0

    teacher: Teacher | None

    def start_epoch(self, epoch: int) -> None:
        """Called by the engine before each training epoch (epochs count from 0)."""
        self.epoch = epoch

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the student's logits (for training accuracy) and a dict of named losses."""
        raise NotImplementedError

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits the run is evaluated on (the student's own head by default)."""
        return self.student(images)

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} needs a teacher")
        return self.teacher.logits(images)


METHODS: Registry[type[Method]] = Registry("method")
