"""The defence contract: a small object mapping a batch of teacher probabilities to released ones.

A defence is what a model owner puts between the model and whoever queries it: ``defence(probs,
inputs) -> released`` on ``[N, C]`` probabilities (``inputs``: the ``[N, ...]`` batch the
probabilities answer, read only by defences that need it: MAD's surrogate). Defences are pure
tensor code, registered by name with typed parameters (:class:`DefenceConfig`), and compose
(``chain``). Randomised defences draw from the global torch generator, which the engine reseeds
at every epoch, so a resumed run sees the same noise.

Released rows are probabilities (non-negative; rows sum to one except after ``round``, whose
rows are the rounded numbers an API would print). :func:`released_logits` turns them into the
logits every attack reads (``log(max(p, RELEASE_FLOOR))``; see ``docs/defences.md``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from undistill.registry import Registry

#: Probability floor before the log in :func:`released_logits`: zeros (truncated, rounded or
#: label-only outputs) become logits of log(1e-6) ~ -13.8 instead of -inf.
RELEASE_FLOOR = 1e-6

#: Other spellings of defence names, read as the registered name (so a config, and its run id, is
#: the same however the name is spelt): ``top-k`` is ``--policy top-k``'s spelling of ``topk``.
ALIASES = {"top-k": "topk"}


class DefenceParams(BaseModel):
    """Base of every defence's parameters (validated, no unknown fields)."""

    model_config = ConfigDict(extra="forbid")


class Defence:
    """Base of every output defence: ``__call__(probs [N, C], inputs [N, ...] | None) -> [N, C]``."""

    Params: ClassVar[type[DefenceParams]] = DefenceParams
    description: ClassVar[str] = ""
    needs_inputs: ClassVar[bool] = False

    def __init__(self, params: DefenceParams) -> None:
        self.params = params

    @classmethod
    def check_classes(cls, params: DefenceParams, num_classes: int) -> None:
        """Raise ValueError ``"params.<field>: ..."`` when ``params`` cannot serve ``num_classes``."""

    def __call__(self, probs: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        _check_probs(probs)
        if self.uses_inputs() and (inputs is None or inputs.shape[0] != probs.shape[0]):
            raise ValueError(f"{type(self).__name__} needs the batch of inputs the probabilities "
                             f"answer ({probs.shape[0]} rows)")
        return self.release(probs, inputs)

    def uses_inputs(self) -> bool:
        """Whether :meth:`__call__` reads ``inputs`` (then they are required)."""
        return self.needs_inputs

    def check(self, num_classes: int) -> None:
        """Raise ValueError ``"params.<field>: ..."`` when this defence cannot serve ``num_classes``."""
        self.check_classes(self.params, num_classes)

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def to(self, device: torch.device | str) -> Defence:
        """Move any model the defence holds (MAD's surrogate); stateless defences return self."""
        return self


DEFENCES: Registry[type[Defence]] = Registry("defence")


class DefenceConfig(BaseModel):
    """A defence by name with its parameters (defaults filled in, so the identity is explicit)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    name: str
    params: dict[str, Any] = {}

    @field_validator("name", mode="before")
    @classmethod
    def _canonical_name(cls, v: Any) -> Any:
        return ALIASES.get(v, v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _validate_params(self) -> DefenceConfig:
        if self.name not in DEFENCES:
            aliases = "".join(f", {a} (= {n})" for a, n in ALIASES.items())
            raise ValueError(f"name: unknown defence {self.name!r}; known: {', '.join(DEFENCES.names())}"
                             f"{aliases}")
        try:
            full = DEFENCES.get(self.name).Params(**self.params).model_dump(mode="json")
        except ValidationError as e:
            raise ValueError("; ".join(f"params.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                                       for err in e.errors())) from None
        if full != self.params:
            object.__setattr__(self, "params", full)
        return self

    def check_classes(self, num_classes: int) -> None:
        """Raise ValueError naming the field when the defence cannot serve ``num_classes``."""
        cls = DEFENCES.get(self.name)
        cls.check_classes(cls.Params(**self.params), num_classes)

    def label(self) -> str:
        """A short human label, e.g. ``topk(k=2)``."""
        cls = DEFENCES.get(self.name)
        if hasattr(cls, "label"):
            return cls.label(cls.Params(**self.params))
        args = ",".join(f"{k}={v}" for k, v in self.params.items() if not isinstance(v, dict | list))
        return f"{self.name}({args})" if args else self.name


def build_defence(cfg: DefenceConfig | dict[str, Any], num_classes: int | None = None) -> Defence:
    """The defence object of a config (a dict is validated first); checks ``num_classes`` if given."""
    if not isinstance(cfg, DefenceConfig):
        cfg = DefenceConfig.model_validate(cfg)
    if num_classes is not None:
        cfg.check_classes(num_classes)
    cls = DEFENCES.get(cfg.name)
    return cls(cls.Params(**cfg.params))


def parse_defence(text: str, num_classes: int | None = None) -> Defence:
    """A defence from a YAML/JSON mapping (``"{name: topk, params: {k: 2}}"``), e.g. a command-line
    option; a bad one raises ValueError ``"--defence: <field>: ..."``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"--defence: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--defence: expected a mapping such as '{{name: topk, params: {{k: 2}}}}', "
                         f"got {text!r}")
    try:
        return build_defence(DefenceConfig.model_validate(data), num_classes)
    except ValidationError as e:
        raise ValueError("--defence: " + "; ".join(str(err["msg"]).removeprefix("Value error, ")
                                                   for err in e.errors())) from None
    except ValueError as e:
        raise ValueError(f"--defence: {e}") from None


def released_logits(released: torch.Tensor, floor: float = RELEASE_FLOOR) -> torch.Tensor:
    """What every attack reads of released probabilities: ``log(max(p, floor))``.

    ``softmax(released_logits(p) / T)`` is ``max(p, floor)^(1/T)``, renormalised: T = 1 gives back
    the released distribution (renormalised), a high T flattens it, zeros count as ``floor``.
    """
    return released.clamp_min(floor).log()


def renormalise(p: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum to one; a row with no mass left becomes uniform."""
    total = p.sum(1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(total > 0, p / total.clamp_min(torch.finfo(p.dtype).tiny), uniform)


def one_hot_argmax(p: torch.Tensor) -> torch.Tensor:
    """Per row, 1 at that row's own largest entry and 0 elsewhere."""
    return torch.zeros_like(p).scatter_(1, p.argmax(1, keepdim=True), 1.0)


def _check_probs(probs: torch.Tensor) -> None:
    if probs.dim() != 2 or probs.shape[1] < 2:
        raise ValueError(f"a defence maps [N, C] probabilities (C >= 2), got shape {tuple(probs.shape)}")
    if not probs.is_floating_point():
        raise ValueError(f"probabilities must be floating point, got {probs.dtype}")

