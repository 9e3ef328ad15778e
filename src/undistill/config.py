"""Typed, validated run configuration, and the content address of a run.

A run is described entirely by a :class:`RunConfig`. Its identity (``run_id``) is a hash of every
field that changes what is learned; runtime choices (device, precision, progress display) are kept
in :class:`Runtime`, outside the identity. Teachers are nested run configs, so a student's identity
includes its teachers' and a suite never trains the same teacher twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """An invalid configuration; the message names each offending field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    name: str = Field(description="dataset name: digits, fashion-mnist, mnist, cifar10, cifar100, "
                      "tinyimagenet, folder")
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="limited data: share of the training set")
    subset_seed: int = Field(230, description="seed of the fixed permutation behind `fraction`")
    labels: bool = Field(True, description="False: the training method never sees labels")
    augment: bool = True
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="carve a validation split from the "
                                "training set; evaluation then reads it instead of the test set")
    val_seed: int = 0
    resize: int | None = Field(None, ge=4, le=512, description="resample every image to this size "
                               "once at load time (area averaging), for CPU-scale runs")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from undistill.data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; known: {', '.join(DATASETS.names())}")
        return v


class ModelConfig(_Strict):
    arch: str
    width: float = Field(1.0, gt=0.0, le=4.0, description="channel multiplier")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from undistill.models import MODELS

        if v not in MODELS:
            raise ValueError(f"unknown architecture {v!r}; known: {', '.join(MODELS.names())}")
        return v


class OptimConfig(_Strict):
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    schedule: Literal["multistep", "constant", "onecycle", "cosine"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [80, 120])
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    epochs: int = Field(160, ge=1)
    batch_size: int = Field(128, ge=1)

    @model_validator(mode="after")
    def _milestones(self) -> OptimConfig:
        ms = self.milestones
        if ms != sorted(ms) or len(set(ms)) != len(ms):
            raise ValueError(f"milestones must be strictly increasing, got {ms}")
        if any(m < 1 or m >= self.epochs for m in ms):
            raise ValueError(f"milestones must lie in [1, epochs={self.epochs}), got {ms}")
        return self


class MethodConfig(_Strict):
    name: str = "vanilla"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _validate_params(self) -> MethodConfig:
        from undistill.methods import METHODS

        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r}; known: {', '.join(METHODS.names())}")
        params_model = METHODS.get(self.name).Params
        try:
            full = params_model(**self.params).model_dump()
        except ValidationError as e:
            raise ValueError(_format(e, prefix="params")) from None
        if full != self.params:
            object.__setattr__(self, "params", full)  # defaults filled in, so identity is explicit
        return self


class RunConfig(_Strict):
    """Everything that decides what a run learns."""

    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    teachers: list[RunConfig] = Field(default_factory=list, description="frozen models the method "
                                      "learns from (or against); several are ensembled")
    seed: int = 0
    stop_at_acc: float | None = Field(None, gt=0.0, le=100.0, description="stop at the first epoch "
                                      "whose evaluation accuracy (%) reaches this (Nasty-ES)")
    name: str = Field("", description="a label for humans; not part of the identity")

    @model_validator(mode="after")
    def _teacher_count(self) -> RunConfig:
        from undistill.methods import METHODS

        cls = METHODS.get(self.method.name)
        n = len(self.teachers)
        if n < cls.min_teachers or (cls.max_teachers is not None and n > cls.max_teachers):
            hi = "any number" if cls.max_teachers is None else cls.max_teachers
            raise ValueError(f"teachers: method {self.method.name!r} takes {cls.min_teachers} to "
                             f"{hi} teachers, got {n}")
        if cls.needs_labels and not self.data.labels:
            raise ValueError(f"data.labels: method {self.method.name!r} needs labels; "
                             f"use a distillation method for the no-label setting")
        for i, t in enumerate(self.teachers):
            if t.data.name != self.data.name:
                raise ValueError(f"teachers.{i}: trained on {t.data.name!r} but this run uses "
                                 f"{self.data.name!r}")
        return self

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is learned, teachers by their run id.

        ``name`` is left out, and so is every field at its default value: a field added to the
        config in a later version (with a default that keeps the old behaviour) leaves the ids of
        existing runs unchanged. Changing a default value is therefore a breaking change.
        Method parameters are stored with their defaults filled in, so they always count.
        """
        d = self.model_dump(mode="json", exclude={"name", "teachers"}, exclude_defaults=True)
        d["data"]["name"] = self.data.name
        d["model"]["arch"] = self.model.arch
        d["method"] = {"name": self.method.name, "params": self.method.params}
        d["teachers"] = [t.run_id for t in self.teachers]
        return d

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return f"{self.data.name}-{self.model.arch}-{self.method.name}-{digest}"


class Runtime(BaseModel):
    """How a run is executed; never part of its identity."""

    model_config = ConfigDict(extra="forbid")

    runs_dir: Path = Path("runs")
    data_root: Path | None = None
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    progress: bool = True
    num_threads: int | None = Field(None, ge=1)


def _format(e: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        loc = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "(config)")
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a plain dict into a RunConfig, raising ConfigError with field names."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid config: {_format(e)}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form field.path=value")
        node: Any = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        value = yaml.safe_load(raw)
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value
    return data


def load_config(path: Path | None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config (or start from ``base``), apply overrides, validate."""
    data: dict[str, Any] = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = _merge(data, loaded)
    apply_overrides(data, list(overrides or []))
    return parse_config(data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
