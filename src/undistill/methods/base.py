"""The method contract: a small module that turns a batch into named losses.

The engine sums the returned losses, logs each by name and never asks which method it runs.
A method owns the student (and any extra trainable parts, e.g. auxiliary heads); the frozen
teacher is held outside the module's parameters and state, so checkpoints carry only what learns.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from undistill.losses import ensemble_logits
from undistill.models import ZooModel
from undistill.registry import Registry

if TYPE_CHECKING:
    from undistill.data.unpaid import UnpaidPool
    from undistill.optim import OptimConfig


class Params(BaseModel):
    """Base of every method's hyperparameters (validated, no unknown fields)."""

    model_config = ConfigDict(extra="forbid")


def _signature(model: nn.Module) -> tuple[object, ...]:
    """What must agree for models to be evaluated as one stacked (vmapped) module."""
    return (type(model),
            tuple((n, p.shape, p.dtype, p.device) for n, p in model.named_parameters()),
            tuple((n, b.shape, b.dtype, b.device) for n, b in model.named_buffers()),
            tuple((n, type(m)) for n, m in model.named_modules()))


class Ensemble:
    """The frozen teachers a run learns from: one model, or several whose logits are averaged (the
    ensemble of Eq. 10). Its members are zoo models (runs) and any
    :class:`undistill.teachers.Teacher` (models from files or URLs, wrapped or not).

    Always in eval mode and evaluated without autograd state (except
    :meth:`forward_features_grad`, for a gradient into the input); never trained, never saved.

    Fast paths (see ``docs/performance.md``):

    * ``inference_mode``: members run under :func:`torch.inference_mode` instead of
      :func:`torch.no_grad` (no version counters, no view tracking). The result is cloned once
      outside inference mode, so losses may save it for backward like any constant tensor.
    * ``vmap``: when every member has the same architecture and shapes, their weights are stacked
      once (:func:`torch.func.stack_module_state`) and all members run as one batched call
      (:func:`torch.func.functional_call` under :func:`torch.vmap`; BatchNorm in eval mode reads
      its running statistics, which vmap handles). ``None`` (the default) uses it on CUDA only;
      ``True``/``False`` force it on/off. Mixed architectures always take the loop. The stacked
      copy is taken on first use and dropped by :meth:`to`; members are frozen, so it never goes
      stale unless someone edits a member's weights in place (then call :meth:`to` again).
    """

    def __init__(self, models: list[nn.Module], *, vmap: bool | None = None,
                 inference_mode: bool = False) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = models
        for m in models:
            m.eval()
            m.requires_grad_(False)
        self.vmap = vmap
        self.inference_mode = inference_mode
        self._stacked: tuple[nn.Module, dict[str, torch.Tensor], dict[str, torch.Tensor]] | None = None
        self._stackable: bool | None = None

    def __len__(self) -> int:
        return len(self.models)

    def to(self, device: torch.device | str, memory_format: torch.memory_format | None = None
           ) -> Ensemble:
        for m in self.models:
            m.to(device)
            if memory_format is not None:
                m.to(memory_format=memory_format)
        self._stacked, self._stackable = None, None
        return self

    @property
    def stackable(self) -> bool:
        """Whether the members can run as one vmapped module (same architecture and shapes)."""
        if self._stackable is None:
            first = _signature(self.models[0])
            self._stackable = (len(self.models) > 1
                               and all(isinstance(m, ZooModel) for m in self.models)
                               and all(_signature(m) == first for m in self.models[1:]))
        return self._stackable

    def uses_vmap(self, device: torch.device | str) -> bool:
        """Whether :meth:`all_logits` takes the vmapped path for inputs on ``device``."""
        want = torch.device(device).type == "cuda" if self.vmap is None else self.vmap
        return bool(want) and self.stackable

    def _grad_off(self) -> contextlib.AbstractContextManager[object]:
        return torch.inference_mode() if self.inference_mode else torch.no_grad()

    def _vmapped(self, x: torch.Tensor) -> torch.Tensor:
        if self._stacked is None:
            params, buffers = torch.func.stack_module_state(self.models)
            base = copy.deepcopy(self.models[0]).to("meta")  # structure only, no storage
            self._stacked = (base, params, buffers)
        base, params, buffers = self._stacked

        def member(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inp: torch.Tensor
                   ) -> torch.Tensor:
            return torch.func.functional_call(base, (p, b), (inp,))

        return torch.vmap(member, in_dims=(0, 0, None))(params, buffers, x)

    def _run(self, x: torch.Tensor, ensemble: bool) -> torch.Tensor:
        with self._grad_off():
            if len(self.models) == 1:
                out = self.models[0](x)
                out = out.unsqueeze(0) if not ensemble else out
            elif self.uses_vmap(x.device):
                out = self._vmapped(x)
                out = ensemble_logits(out) if ensemble else out
            else:
                out = torch.stack([m(x) for m in self.models])
                out = ensemble_logits(out) if ensemble else out
        # an inference tensor cannot be saved for backward: hand out an ordinary one
        return out.clone() if out.is_inference() else out

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, stacked: [k, N, C]."""
        return self._run(x, ensemble=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's logits (mean over members); a single model's own logits."""
        return self._run(x, ensemble=True)

    def forward_features_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and penultimate features *with autograd*, for a gradient into the input ``x``.

        The members stay frozen (eval mode, ``requires_grad=False``, so no gradient reaches their
        weights) but run outside ``no_grad``, so a loss on the outputs differentiates back into
        ``x`` (the DAFL generator's images). Returns the ensemble's logits (mean over members,
        ``[N, C]``) and the members' ``ModelOutput.features`` concatenated along the feature axis
        (``[N, sum_k D_k]``; a single model's own features). Always the plain loop (no vmap,
        no inference mode).
        """
        outs = [m.forward_features(x) for m in self.models]
        if len(outs) == 1:
            return outs[0].logits, outs[0].features
        logits = ensemble_logits([o.logits for o in outs])
        return logits, torch.cat([o.features.flatten(1) for o in outs], dim=1)


class Method(nn.Module):
    """Base of every training method.

    A method's file is the one home of what is known about it: subclasses set ``Params`` (their
    hyperparameters and defaults), the traits below, :meth:`defaults_for` where the protocol's
    defaults depend on the dataset or the student, and implement :meth:`forward_train`. Recipes,
    suites, the search and the command line read these traits; none of them lists methods.
    """

    Params: ClassVar[type[Params]] = Params
    #: one line for listings and help texts
    description: ClassVar[str] = ""
    #: short column title in tables ("HTC", "Skep.+SCM")
    title: ClassVar[str] = ""
    #: how many frozen teachers it takes (``max_teachers=None``: any number, ensembled)
    min_teachers: ClassVar[int] = 0
    max_teachers: ClassVar[int | None] = 0
    #: cannot train without labels (the ``data.labels=false`` setting rejects it)
    needs_labels: ClassVar[bool] = False
    #: learns from an SCM sequence S^1..S^k (Eq. 10) rather than from the nasty teacher alone
    uses_sequence: ClassVar[bool] = False
    #: trains a model to be released as a teacher (a training defence), not a stealing student
    makes_teacher: ClassVar[bool] = False
    #: data-free (never reads the dataset's images): the method whose loss its student learns by
    data_free_of: ClassVar[str | None] = None
    #: the grid the paper searches for this method (Sec. 4.1); empty: not searched
    search_space: ClassVar[dict[str, list[float]]] = {}
    #: parameters a run without labels needs (e.g. no label-only warm-up), over the defaults
    label_free_params: ClassVar[dict[str, Any]] = {}
    #: its place among the attacks ``undistill audit`` runs by default (None: not run by default)
    audit_order: ClassVar[int | None] = None

    @classmethod
    def defaults_for(cls, dataset: str, arch: str) -> dict[str, Any]:
        """The protocol's parameter values for a dataset and (student) architecture, over the
        ``Params`` defaults (which hold for every dataset when this is empty)."""
        return {}

    @classmethod
    def needs_teacher(cls) -> bool:
        return cls.min_teachers > 0

    def __init__(self, student: ZooModel, teacher: Ensemble | None, params: Params) -> None:
        super().__init__()
        self.student = student
        self.params = params
        self.__dict__["teacher"] = teacher  # kept out of parameters() and state_dict()
        self.epoch = 0

    teacher: Ensemble | None

    def start_epoch(self, epoch: int) -> None:
        """Called by the engine before each training epoch (epochs count from 0)."""
        self.epoch = epoch

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the student's logits (for training accuracy) and a dict of named losses."""
        raise NotImplementedError

    def extra_optimizers(self, optim: OptimConfig
                         ) -> dict[str, tuple[torch.optim.Optimizer, bool]]:
        """Optimizers of the method's own, over parameters the engine's optimizer must leave alone.

        ``{name: (optimizer, follows_schedule)}``; none by default. Called once by the engine,
        after the method is on its device and before any checkpoint is loaded. The engine's main
        optimizer (``optim``, the run's config) gets every other trainable parameter. Each step
        zeroes every optimizer's gradients, backpropagates the summed losses once and steps every
        optimizer; so a loss must reach only the parameters meant to learn from it (detach).
        ``follows_schedule``: the optimizer's learning rates are its initial ones times the
        schedule's factor (``learning_rate(...) / optim.lr``) at every step; otherwise they stay
        as built. Every optimizer's state is checkpointed under ``optim.<name>.``, so resuming is
        exact. Names are identifiers (not all digits). Used by the data-free methods
        (``dafl.py``: the generator's Adam).
        """
        return {}

    def attach_unpaid(self, pool: UnpaidPool) -> None:
        """Images a query-budgeted thief holds but did not pay for (:class:`~undistill.data.unpaid.
        UnpaidPool`), handed over by the engine before training; a semi-supervised scheme learns
        from them (``methods/semi.py``). Ignored by default."""

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits the run is evaluated on (the student's own head by default)."""
        return self.student(images)

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        if self.teacher is None:
            raise RuntimeError(f"{type(self).__name__} needs a teacher")
        return self.teacher.logits(images)


METHODS: Registry[type[Method]] = Registry("method")


def method_names(test: Callable[[type[Method]], bool] = lambda cls: True) -> list[str]:
    """Registered method names whose class passes ``test`` (a trait), sorted."""
    return [name for name in METHODS if test(METHODS.get(name))]


def stealing_methods() -> list[str]:
    """Methods that train a student (every method but the training defences)."""
    return method_names(lambda cls: not cls.makes_teacher)


def data_free_form(method: str) -> str | None:
    """The data-free method whose student learns by ``method``'s loss (``kd`` -> ``dafl-kd``)."""
    return next((n for n in method_names(lambda cls: cls.data_free_of == method)), None)
