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
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from undistill.config_teachers import ClientConfig, ExternalTeacherConfig, InputSpec, StrictModel
from undistill.config_thief import ThiefConfig
from undistill.defences.base import DefenceConfig
from undistill.exceptions import UndistillError
from undistill.optim import OptimConfig

M = TypeVar("M", bound=BaseModel)
__all__ = ["ClientConfig", "ConfigError", "DataConfig", "ExternalTeacherConfig", "InputSpec",
           "MethodConfig", "ModelConfig", "RunConfig", "Runtime", "ThiefConfig", "apply_overrides",
           "builtin_specs", "load_config", "load_spec", "parse_config"]


class ConfigError(UndistillError, ValueError):
    """An invalid configuration; the message names each offending field."""


class DataConfig(StrictModel):
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
    fingerprint: str = Field("", pattern=r"^([0-9a-f]{16})?$", description="content fingerprint of "
                             "the data files, filled in from the data root when a run is launched "
                             "(undistill.data.fingerprint); empty for data shipped at its default "
                             "location")
    classes: list[int] | None = Field(None, min_length=1, description="train only on images of "
                                      "these classes (evaluation keeps all): a held-back class "
                                      "subset as out-of-distribution queries (Knockoff-style)")

    @field_validator("classes")
    @classmethod
    def _class_ids(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (min(v) < 0 or len(set(v)) != len(v)):
            raise ValueError(f"classes must be distinct non-negative class indices, got {v}")
        return v

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        from undistill.data import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; known: {', '.join(DATASETS.names())}")
        return v


class ModelConfig(StrictModel):
    arch: str = Field(description="a zoo architecture, or a factory `package.module:function`")
    width: float = Field(1.0, gt=0.0, le=4.0, description="channel multiplier")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        from undistill.models import check_arch

        return check_arch(v)


class MethodConfig(StrictModel):
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


def _teacher_tag(v: Any) -> str:
    """A teacher entry is a run (a nested run config) or a teacher from a file or URL."""
    if isinstance(v, dict):
        return "external" if "source" in v or "kind" in v or "identity" in v else "run"
    return "external" if isinstance(v, ExternalTeacherConfig) else "run"


TeacherEntry = Annotated[
    Annotated["RunConfig", Tag("run")] | Annotated[ExternalTeacherConfig, Tag("external")],
    Discriminator(_teacher_tag)]


class RunConfig(StrictModel):
    """Everything that decides what a run learns."""

    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = Field(default_factory=OptimConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    teachers: list[TeacherEntry] = Field(
        default_factory=list, description="frozen models the method learns from (or against); "
        "several are ensembled: runs of this toolkit (nested run configs) and teachers from model "
        "files or URLs (entries with `source`, `kind`, `identity`; the old key "
        "`external_teachers` is still read, into this list)")
    budget: int | None = Field(None, ge=2, description="images the teacher may be asked about: "
                               "one probe plus the first budget-1 training images, the student's "
                               "whole training set (augmentation off)")
    thief: ThiefConfig | None = Field(None, description="with a budget: the thief (undistill.thief)")
    seed: int = 0
    stop_at_acc: float | None = Field(None, gt=0.0, le=100.0, description="stop at the first epoch "
                                      "whose evaluation accuracy (%) reaches this (Nasty-ES)")
    defence: DefenceConfig | None = Field(None, description="output defence between the teachers "
                                          "and this run: the method reads defended outputs "
                                          "(docs/defences.md)")
    name: str = Field("", description="a label for humans; not part of the identity")

    @model_validator(mode="before")
    @classmethod
    def _one_teacher_list(cls, data: Any) -> Any:
        """A config written with two lists (``teachers`` runs, ``external_teachers``) is read
        into the one list, runs first."""
        if isinstance(data, dict) and "external_teachers" in data:
            data = dict(data)
            external = data.pop("external_teachers") or []
            data["teachers"] = [*(data.get("teachers") or []), *external]
        return data

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
        if self.defence is not None:
            if n == 0:
                raise ValueError("defence: a defence stands between teachers and the student; "
                                 "this run has no teachers")
            from undistill.data import CLASS_COUNTS

            if (classes := CLASS_COUNTS.get(self.data.name)) is not None:
                try:
                    self.defence.check_classes(classes)
                except ValueError as e:
                    raise ValueError(f"defence.{e}") from None
        for i, t in enumerate(self.teachers):
            if isinstance(t, RunConfig) and t.data.name != self.data.name:
                raise ValueError(f"teachers.{i}: trained on {t.data.name!r} but this run uses "
                                 f"{self.data.name!r}")
        if self.budget is not None:
            if n == 0:
                raise ValueError("budget: a query budget needs a teacher to query")
            if self.data.augment:
                raise ValueError("data.augment: a budgeted attack asks about each image once; "
                                 "set data.augment=false (thief.augment augments paid images)")
        if self.thief is not None and (self.budget is None or self.data.labels):
            raise ValueError("thief: a thief spends a budget without labels; give budget, data.labels=false")
        return self

    @property
    def run_teachers(self) -> list[RunConfig]:
        """The teachers that are runs of this toolkit (nested run configs), in order."""
        return [t for t in self.teachers if isinstance(t, RunConfig)]

    @property
    def external_teachers(self) -> list[ExternalTeacherConfig]:
        """The teachers from model files or URLs, in order (the run's ensemble: runs, then these)."""
        return [t for t in self.teachers if isinstance(t, ExternalTeacherConfig)]

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is learned, teachers by their run id.

        ``name`` is left out, and so is every field at its default value: a field added to the
        config in a later version (with a default that keeps the old behaviour) leaves the ids of
        existing runs unchanged. Changing a default value is therefore a breaking change.
        Method parameters are stored with their defaults filled in, so they always count.
        """
        skip: Any = {"name": True, "teachers": True, "thief": {"query_root"}}  # root: not content
        d = self.model_dump(mode="json", exclude=skip, exclude_defaults=True)
        d["data"]["name"] = self.data.name
        d["model"]["arch"] = self.model.arch
        d["method"] = {"name": self.method.name, "params": self.method.params}
        # the document of the two lists the config once had: run ids stay what they were
        d["teachers"] = [t.run_id for t in self.run_teachers]
        if self.external_teachers:
            d["external_teachers"] = [t.model_dump(mode="json", exclude={"source", "client"},
                                                   exclude_defaults=True) | {"identity": t.identity}
                                      for t in self.external_teachers]
        if self.defence is not None:
            d["defence"] = self.defence.model_dump(mode="json")
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
    opener: Any = Field(None, exclude=True, repr=False, description="the "
                        "undistill.teachers.Opener of the call (steal, audit): the teachers it "
                        "opened are the ones the runs learn from; None: one per executor call. "
                        "Never serialised (another process opens its own)")


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
            if isinstance(node, dict) and node.get(p) is None:
                node[p] = {}  # an absent or null section (e.g. "defence": null in a config.json)
            node = node[int(p)] if isinstance(node, list) else node[p]
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
        data = merge(data, loaded)
    apply_overrides(data, list(overrides or []))
    return parse_config(data)


def builtin_specs(package: str) -> list[str]:
    """Names of the YAML specs shipped in ``package`` (the suites, the leaderboards)."""
    from importlib import resources

    return sorted(f.name[:-5] for f in resources.files(package).iterdir() if f.name.endswith(".yaml"))


def load_spec(name_or_path: str | Path, package: str, kind: str, model: type[M]) -> M:
    """A built-in ``kind`` of ``package`` by name, or a YAML file by path, validated into ``model``;
    a missing file, an unknown name, bad YAML and bad fields are ConfigErrors naming them."""
    from importlib import resources

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"{kind} file {path} does not exist")
        text = path.read_text()
    else:
        f = resources.files(package) / f"{name_or_path}.yaml"
        if not f.is_file():
            raise ConfigError(f"unknown {kind} {str(name_or_path)!r}; built-in: "
                              f"{', '.join(builtin_specs(package))} (or give a YAML path)")
        text = f.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{kind} {name_or_path} is not valid YAML: {e}") from None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid {kind} {name_or_path}: {_format(e)}") from None


def merge(a: dict[str, Any], b: dict[str, Any] | None) -> dict[str, Any]:
    """``a`` updated by ``b``, nested mappings merged key by key (``b`` may be None)."""
    out = dict(a)
    for k, v in (b or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
