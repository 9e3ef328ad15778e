"""A suite describes one paper table (or a demo of all of them) as YAML, validated here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, model_validator

from undistill.config import StrictModel, builtin_specs, load_spec
from undistill.methods import method_names, stealing_methods
from undistill.suites.paper import TABLE1_COLUMNS


def table_columns() -> list[str]:
    """Columns a suite's table may have: Table 1's (:data:`undistill.suites.paper.TABLE1_COLUMNS`),
    then every other stealing method by its name (a new method is a column without more code)."""
    extra = [m for m in stealing_methods() if m not in TABLE1_COLUMNS and m != "kd"]
    return list(TABLE1_COLUMNS) + extra


def _known_column(v: str) -> str:
    if v not in table_columns():
        raise ValueError(f"unknown column {v!r}; known: {', '.join(table_columns())}")
    return v


#: A column of Table 1 (or another stealing method's), validated against :func:`table_columns`.
Column = Annotated[str, AfterValidator(_known_column)]


def _searchable(v: str) -> str:
    known = method_names(lambda cls: bool(cls.search_space))
    if v not in known:
        raise ValueError(f"method {v!r} has no search space; searchable: {', '.join(known)}")
    return v


#: A method with a search space (``Method.search_space``: HTC, SCM and their Skeptical forms).
SearchMethod = Annotated[str, AfterValidator(_searchable)]


def param_groups() -> list[str]:
    """Method-parameter groups a suite may set: every stealing method with parameters ("kd"
    covers both KD columns)."""
    return method_names(lambda cls: not cls.makes_teacher and bool(cls.Params.model_fields))


def _known_groups(v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    known = param_groups()
    bad = sorted(set(v) - set(known))
    if bad:
        raise ValueError(f"unknown method group(s) {bad}; known: {known}")
    return v


#: method-parameter group -> parameters, e.g. {"htc": {"temperature": 50}}
MethodParams = Annotated[dict[str, dict[str, Any]], AfterValidator(_known_groups)]


class NastySpec(StrictModel):
    omega: float | None = Field(None, ge=0.0)
    temperature: float | None = Field(None, gt=0.0)
    epochs: int | None = Field(None, ge=1, description="epochs of nasty/sequence training")


class TeacherSpec(StrictModel):
    arch: str
    width: float = Field(1.0, gt=0.0)
    epochs: int | None = Field(None, ge=1)
    optim: dict[str, Any] = Field(default_factory=dict)
    nasty: NastySpec = Field(default_factory=NastySpec)


class StudentSpec(StrictModel):
    arch: str
    width: float = Field(1.0, gt=0.0)
    epochs: int | None = Field(None, ge=1)
    optim: dict[str, Any] = Field(default_factory=dict)
    params: MethodParams = Field(default_factory=dict, description="method parameters for this "
                                 "student, over the suite's")


class ScaleSpec(StrictModel):
    """A scale preset: multiplies every width, replaces every epoch count, shrinks the data."""

    description: str = ""
    width: float = Field(1.0, gt=0.0, description="multiplier of every model width")
    epochs: int | None = Field(None, ge=1, description="epochs of every run (milestones scaled)")
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    student_fraction: float | None = Field(None, gt=0.0, le=1.0, description="the students' share "
                                           "of the training set (default: fraction); teachers "
                                           "use fraction")
    resize: int | None = Field(None, ge=4)
    suite: str | None = Field(None, description="this scale is another suite (a built-in name or "
                              "a YAML path) with its own teachers, students, data and choices")


class SCMSpec(StrictModel):
    k: int = Field(4, ge=1, le=16, description="sequence length S^1..S^k")
    omega: float | None = Field(None, ge=0.0, description="omega of G (Eq. 10) for S^2..S^k "
                                "(default: the nasty teacher's)")


class DefenceSpec(StrictModel):
    enabled: bool = True
    release: int = Field(2, ge=2, description="the SCM defence releases S^release")
    nasty_es: bool = True
    teachers: list[str] | None = Field(None, description="teacher architectures to defend "
                                       "(default: all)")


class SearchSpec(StrictModel):
    """Choose method hyper-parameters inside the suite, on the validation split (never the test
    set): for each teacher, student and method, a grid search (``undistill.search``) whose trials
    are the seed-0 student runs themselves, so the chosen trial is reused as that cell."""

    methods: list[SearchMethod] = Field(min_length=1)
    grid: dict[str, list[float]] = Field(min_length=1, description="method parameter -> values")
    trials: int | None = Field(None, ge=1, description="trials per search (a seeded random part "
                               "of the grid); default: the whole grid")
    study_seed: int = 0


class PreflightSpec(StrictModel):
    """What the scale must show before its numbers mean anything (checked on the validation
    split once teachers and vanilla students are trained; a miss is a warning in the report)."""

    teacher_margin: float = Field(8.0, ge=0.0, description="normal teacher at least this many "
                                  "points above every vanilla student")
    nasty_drop: float = Field(2.0, ge=0.0, description="nasty teacher at most this many points "
                              "below the normal teacher")


class AblationSpec(StrictModel):
    """Vary one thing of some Table 1 columns: a method parameter, or one of the special knobs
    ``k`` (SCM sequence length), ``sequence_arch`` (architecture of S^2..S^k), ``fraction``
    (the student's share of the training data), ``labels`` (false: no labels) or ``data_free``
    (true: the student never sees data and learns from a DAFL generator; KD columns become
    ``dafl-kd``, HTC ``dafl-htc``)."""

    name: str
    columns: list[Column] = Field(min_length=1)
    param: str
    values: list[Any] = Field(min_length=1)
    x_label: str = ""
    students: list[str] | None = None
    teachers: list[str] | None = None
    sequence_width: float | None = Field(None, gt=0.0, description="width of S^2..S^k for "
                                         "sequence_arch (default: the teacher's)")
    params: MethodParams = Field(default_factory=dict, description="method parameters of this "
                                 "ablation's runs, over the suite's (e.g. HTC's values chosen on "
                                 "validation in the ablation's own setting)")


class SuiteSpec(StrictModel):
    name: str
    title: str = ""
    description: str = ""
    dataset: str
    data: dict[str, Any] = Field(default_factory=dict, description="data-config fields for all runs")
    teachers: list[TeacherSpec] = Field(min_length=1)
    students: list[StudentSpec] = Field(min_length=1)
    methods: list[Column] = Field(default_factory=lambda: list(TABLE1_COLUMNS))
    params: MethodParams = Field(default_factory=dict)
    scm: SCMSpec = Field(default_factory=SCMSpec)
    defence: DefenceSpec = Field(default_factory=DefenceSpec)
    kl: bool = True
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    search: SearchSpec | None = None
    preflight: PreflightSpec = Field(default_factory=PreflightSpec)
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="significance level of the claims")
    ablations: list[AblationSpec] = Field(default_factory=list)
    scales: dict[str, ScaleSpec] = Field(default_factory=lambda: {"paper": ScaleSpec()})
    default_scale: str = "paper"
    notes: list[str] = Field(default_factory=list, description="choices shown beside the results")

    @model_validator(mode="after")
    def _scales(self) -> SuiteSpec:
        if self.default_scale not in self.scales:
            raise ValueError(f"default_scale {self.default_scale!r} is not among scales "
                             f"{sorted(self.scales)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat: {self.seeds}")
        if self.search is not None and not float(self.data.get("val_fraction", 0.0)) > 0.0:
            raise ValueError("search: needs a validation split, set data.val_fraction > 0 "
                             "(hyper-parameters are never chosen on the test set)")
        return self


def builtin_suites() -> list[str]:
    return builtin_specs("undistill.suites")


def load_suite(name_or_path: str | Path) -> SuiteSpec:
    """A built-in suite by name, or a YAML file by path."""
    return load_spec(name_or_path, "undistill.suites", "suite", SuiteSpec)
