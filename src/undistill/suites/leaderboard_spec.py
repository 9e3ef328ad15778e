"""A defence leaderboard's spec and plan: which attacks against which defences, and the run config
of each student; nothing here trains (:mod:`undistill.suites.leaderboard` runs them).

The built-in leaderboards are the YAMLs of :mod:`undistill.suites.leaderboards`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from undistill import recipes
from undistill.config import ConfigError, RunConfig, StrictModel, builtin_specs, load_spec
from undistill.defences.base import DefenceConfig
from undistill.methods import METHODS
from undistill.suites.plan import scale_of, teacher_group
from undistill.suites.spec import load_suite

#: the package whose YAMLs are the built-in leaderboards
BUILTIN = "undistill.suites.leaderboards"

Model = Literal["normal", "nasty", "nasty-es", "scm-release"]
#: what each released ``model`` is (docs/defences.md)
MODELS: dict[str, str] = {
    "normal": "the suite's normal teacher",
    "nasty": "its nasty version (Eq. 5)",
    "nasty-es": "Nasty KD ES: the nasty training stopped at the SCM release's validation accuracy",
    "scm-release": "the SCM defence: S^r of the nasty teacher's sequence (Eq. 10)",
}


class AttackSpec(StrictModel):
    name: str
    method: str
    grid: list[dict[str, Any]] = Field(default_factory=lambda: [{}], min_length=1,
                                       description="candidate method parameters, chosen on validation")
    data: dict[str, Any] = Field(default_factory=dict, description="data-config fields of this "
                                 "attack (e.g. classes: out-of-distribution queries)")
    teachers: Literal["released", "sequence"] = Field(
        "released", description="sequence: the SCM sequence S^1..S^k of the nasty teacher (only "
        "for the undefended nasty teacher, where that sequence exists)")
    defences: list[str] | None = Field(None, description="only against these defences (by name; "
                                       "None: every one it applies to), e.g. an attack made "
                                       "for nasty teachers on a CPU budget")


class DefenceEntry(StrictModel):
    name: str
    model: Model = "normal"
    output: DefenceConfig | None = None


class StudentSpec(StrictModel):
    arch: str = "cnn"
    width: float = Field(0.5, gt=0.0)
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(128, ge=1)
    fraction: float = Field(1.0, gt=0.0, le=1.0, description="share of the training split")
    labels: bool = Field(True, description="false: the thief has no labels (the threat that "
                         "matters): every attack but the vanilla reference learns from the "
                         "teacher's answers alone, with its method's label-free parameters")
    budget: int | None = Field(None, ge=2, description="with labels false: every attack but the "
                               "vanilla reference is a query-budgeted thief (undistill.thief): it "
                               "pays for budget - 1 images of the training split once, learns "
                               "from the stored answers and chooses its checkpoint on a held-out "
                               "part of them; vanilla keeps fraction and epochs")
    thief: dict[str, Any] = Field(default_factory=dict, description="the thief's settings "
                                  "(undistill.config.ThiefConfig: steps, augment, holdout, ...)")

    @model_validator(mode="after")
    def _thief(self) -> StudentSpec:
        if self.budget is not None and self.labels:
            raise ValueError("budget: a query-budgeted thief has no labels; set labels: false")
        if self.thief and self.budget is None:
            raise ValueError("thief: give a budget (the thief's settings need one)")
        if self.thief:
            from undistill.config import ThiefConfig

            ThiefConfig(**self.thief)
        return self


class LeaderboardSpec(StrictModel):
    name: str
    title: str = ""
    suite: str = Field("demo", description="victim teachers: this suite's first teacher group")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    select_seed: int = Field(0, description="seed on which grid candidates are compared")
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    student: StudentSpec = Field(default_factory=StudentSpec)
    vanilla: str = Field("vanilla", description="the reference column: a student of the true "
                         "labels, no teacher")
    reference: str = Field("none", description="the undefended release (model normal, no output "
                           "defence): protection = its best attack minus a defence's best attack")
    stolen_fraction: float = Field(0.85, gt=0.0, le=1.0, description="the thief setting counts as "
                                   "'stolen' when the best attack on the reference reaches this "
                                   "fraction of the normal teacher's test accuracy")
    attacks: list[AttackSpec] = Field(min_length=1)
    defences: list[DefenceEntry] = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _names(self) -> LeaderboardSpec:
        for what, names in (("attacks", [a.name for a in self.attacks]),
                            ("defences", [d.name for d in self.defences])):
            if len(set(names)) != len(names):
                raise ValueError(f"{what}: names repeat: {names}")
        if self.vanilla not in [a.name for a in self.attacks]:
            raise ValueError(f"vanilla: {self.vanilla!r} is not among the attacks")
        ref = next((d for d in self.defences if d.name == self.reference), None)
        if ref is None or ref.model != "normal" or ref.output is not None:
            raise ValueError(f"reference: {self.reference!r} must name a defence entry with model "
                             "normal and no output defence (the undefended release)")
        known = {d.name for d in self.defences}
        for a in self.attacks:
            if a.defences is not None and not set(a.defences) <= known:
                raise ValueError(f"attacks.{a.name}.defences: {sorted(set(a.defences) - known)} "
                                 f"are not among the defences {sorted(known)}")
        if self.select_seed not in self.seeds:
            raise ValueError(f"select_seed: {self.select_seed} is not among the seeds {self.seeds}")
        return self


def builtin_leaderboards() -> list[str]:
    return builtin_specs(BUILTIN)


def load_leaderboard(name_or_path: str | Path) -> LeaderboardSpec:
    """A built-in leaderboard (``defences-demo``, ``defences-cifar10-cpu``) by name, or a YAML
    file by path."""
    return load_spec(name_or_path, BUILTIN, "leaderboard", LeaderboardSpec)


@dataclass
class Victims:
    normal: RunConfig
    nasty: RunConfig
    sequence: list[RunConfig]
    release: RunConfig
    data: dict[str, Any]


def victim_plan(spec: LeaderboardSpec) -> Victims:
    """The suite's teachers the leaderboard attacks: normal, nasty, the SCM release S^r and the
    attacker's sequence S^1..S^r (the nasty teacher up to the release: no model beyond it).
    The release is the suite's ``defence.release`` even where the suite's own tables leave the
    defence out (``defence.enabled: false``, as the demo does to keep within its time)."""
    suite = load_suite(spec.suite)
    if not suite.defence.enabled:
        suite = suite.model_copy(update={"defence": suite.defence.model_copy(
            update={"enabled": True})})
    _, scale = scale_of(suite, None)
    g = teacher_group(suite, suite.teachers[0], scale)
    if g.defence is None:
        raise ConfigError(f"suite: {spec.suite!r} releases no SCM defence")
    return Victims(g.normal, g.nasty, g.sequence[:suite.defence.release], g.defence,
                   g.normal.data.model_dump())


def nasty_es(v: Victims, target: float, nasty_best: float | None = None) -> RunConfig:
    """Nasty KD ES as the suites build it (Table 6): the nasty training stopped at ``target``, the
    SCM release's best validation accuracy (the nasty teacher itself when ``nasty_best``, its
    best validation accuracy, falls short of it: :func:`undistill.recipes.nasty_es`)."""
    return recipes.nasty_es(v.nasty, target, name=f"nasty-ES {v.normal.model.arch}",
                            nasty_best=nasty_best)


def attack_config(spec: LeaderboardSpec, v: Victims, models: dict[Model, RunConfig],
                  d: DefenceEntry | None, a: AttackSpec, params: dict[str, Any], seed: int) -> RunConfig:
    """The student run of attack ``a`` with ``params`` against defence ``d`` (None: vanilla)."""
    teachers: list[RunConfig] = []
    if d is not None:
        teachers = v.sequence if a.teachers == "sequence" else [models[d.model]]
    s = spec.student
    label_free = not s.labels and a.name != spec.vanilla
    if label_free:
        params = {**params, **METHODS.get(a.method).label_free_params}  # these must hold
    cfg = recipes.student(
        teachers, s.arch, a.method, params, width=s.width, dataset=v.normal.data.name,
        data={**v.data, "val_fraction": spec.val_fraction, "fraction": s.fraction,
              **({"labels": False} if label_free else {}), **a.data},
        optim={"epochs": s.epochs, "batch_size": s.batch_size}, seed=seed,
        name=f"{a.name} <- {d.name if d else 'none'} (seed {seed})",
        **({"budget": s.budget, "thief": s.thief} if label_free and s.budget else {}))
    if d is not None and d.output is not None:
        cfg = cfg.model_copy(update={"defence": d.output})
        cfg = RunConfig.model_validate(cfg.model_dump())
    return cfg


def applicable(a: AttackSpec, d: DefenceEntry) -> bool:
    """SCM's sequence exists for the undefended nasty teacher only (docs/defences.md); an attack
    with ``defences`` runs against those alone."""
    if a.defences is not None and d.name not in a.defences:
        return False
    return a.teachers == "released" or (d.model == "nasty" and d.output is None)


def check_budget(spec: LeaderboardSpec, data_root: Path | None) -> None:
    """A ConfigError when ``student.budget`` asks for more images than the thief's pool holds
    (the training split after the validation split, or ``student.thief.query_data``)."""
    from undistill.audit_plan import check_pool, query_pool_size, thief_pool

    budget = spec.student.budget
    if budget is None:
        return
    a = next(a for a in spec.attacks if a.name != spec.vanilla)
    v = victim_plan(spec)
    cfg = attack_config(spec, v, {"normal": v.normal}, spec.defences[0], a, a.grid[0], spec.select_seed)
    if query_data := spec.student.thief.get("query_data"):
        check_pool(budget, query_pool_size(spec.student.thief), str(query_data), "student.budget")
    else:
        check_pool(budget, thief_pool(cfg.data, data_root), cfg.data.name, "student.budget")
