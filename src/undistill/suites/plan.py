"""From a suite to runs: normal teachers -> nasty teachers -> SCM sequences -> students.

Planning is pure: it builds run configs (content-addressed, so shared teachers appear once) and
the cells of the tables they fill. Nasty-ES is planned in a second stage, because its target
accuracy is the SCM-defence teacher's, known only once that teacher is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from undistill import recipes
from undistill.config import RunConfig
from undistill.methods import METHODS, data_free_form
from undistill.presets import optim_preset, with_epochs
from undistill.suites.paper import TABLE1_KD_COLUMNS
from undistill.suites.spec import ScaleSpec, StudentSpec, SuiteSpec, TeacherSpec


def column_method(column: str) -> tuple[str, str]:
    """A Table 1 column's (method, the teacher it learns from: none, normal, nasty or scm)."""
    if column in TABLE1_KD_COLUMNS:
        return "kd", TABLE1_KD_COLUMNS[column]
    cls = METHODS.get(column)
    kind = "none" if not cls.needs_teacher() else "scm" if cls.uses_sequence else "nasty"
    return column, kind


@dataclass
class Cell:
    """One number of a table: a student run and what it learned from."""

    table: str  # "table1" or "table6"
    column: str  # Table 1 column, or Table 6 teacher kind
    teacher_arch: str
    teacher_kind: str  # none, normal, nasty, scm (the sequence from the nasty), nasty-es, scm-defence
    student_arch: str
    method: str
    seed: int
    run: RunConfig
    teacher_run: RunConfig | None  # the teacher whose accuracy is reported
    ablation: str | None = None
    x: Any = None


@dataclass
class TeacherGroup:
    """The teachers grown from one normal teacher."""

    spec: TeacherSpec
    normal: RunConfig
    nasty: RunConfig
    sequence: list[RunConfig]
    defence: RunConfig | None


@dataclass
class Plan:
    suite: SuiteSpec
    scale: str
    groups: list[TeacherGroup]
    cells: list[Cell]
    pending: list[str] = field(default_factory=list)  # described, not yet plannable

    def runs(self) -> list[RunConfig]:
        """Every run of the plan, teachers first, each once."""
        from undistill.executor import plan as order

        return order([c.run for c in self.cells] +
                     [r for g in self.groups for r in (g.normal, g.nasty, *g.sequence)] +
                     [g.defence for g in self.groups if g.defence is not None])


def _optim(dataset: str, arch: str, scale: ScaleSpec, epochs: int | None,
           extra: dict[str, Any]) -> dict[str, Any]:
    """The protocol's optimiser for (dataset, arch), then the suite's epochs, then the scale's."""
    return with_epochs({**optim_preset(dataset, arch), **extra}, scale.epochs or epochs)


def _data(suite: SuiteSpec, scale: ScaleSpec, student: bool = False) -> dict[str, Any]:
    d = dict(suite.data)
    fraction = scale.student_fraction if student and scale.student_fraction else scale.fraction
    if fraction is not None:
        d["fraction"] = fraction
    if scale.resize is not None:
        d["resize"] = scale.resize
    return d


def scale_of(suite: SuiteSpec, scale: str | None) -> tuple[str, ScaleSpec]:
    name = scale or suite.default_scale
    if name not in suite.scales:
        raise ValueError(f"suite {suite.name!r} has no scale {name!r}; scales: "
                         f"{', '.join(sorted(suite.scales))}")
    return name, suite.scales[name]


def teacher_group(suite: SuiteSpec, spec: TeacherSpec, scale: ScaleSpec) -> TeacherGroup:
    ds = suite.dataset
    width = spec.width * scale.width
    normal = recipes.normal_teacher(ds, spec.arch, width, data=_data(suite, scale),
                                    optim=_optim(ds, spec.arch, scale, spec.epochs, spec.optim),
                                    name=f"normal {spec.arch}")
    nasty_optim = _optim(ds, spec.arch, scale, spec.nasty.epochs or spec.epochs, spec.optim)
    nasty = recipes.nasty_teacher(normal, spec.nasty.omega, spec.nasty.temperature,
                                  optim=nasty_optim, name=f"nasty {spec.arch}")
    d = suite.defence
    defended = d.enabled and (d.teachers is None or spec.arch in d.teachers)
    k = max(suite.scm.k, d.release if defended else 1)
    chain = recipes.scm_sequence(nasty, k, omega=suite.scm.omega, optim=nasty_optim)
    defence = chain[d.release - 1] if defended else None
    return TeacherGroup(spec, normal, nasty, chain[:suite.scm.k], defence)


def _student(suite: SuiteSpec, spec: StudentSpec, scale: ScaleSpec, method: str,
             teachers: list[RunConfig], seed: int, group: str,
             params_over: dict[str, Any] | None = None,
             data_over: dict[str, Any] | None = None) -> RunConfig:
    params: dict[str, Any] = {}
    for source in (suite.params, spec.params):
        if method == "kd":
            params.update(source.get("kd", {}))
        params.update(source.get(method, {}))
    params.update(params_over or {})
    return recipes.student(
        teachers, spec.arch, method, params, width=spec.width * scale.width,
        dataset=suite.dataset, data={**_data(suite, scale, student=True), **(data_over or {})},
        optim=_optim(suite.dataset, spec.arch, scale, spec.epochs, spec.optim), seed=seed,
        name=f"{method} {spec.arch} <- {group}")


#: (teacher arch, student arch, method) -> method parameters chosen on the validation split
Chosen = dict[tuple[str, str, str], dict[str, Any]]


def column_teachers(g: TeacherGroup, kind: str) -> list[RunConfig]:
    """The teachers a Table 1 column's student learns from."""
    return {"none": [], "normal": [g.normal], "nasty": [g.nasty], "scm": g.sequence}[kind]


def search_student(suite: SuiteSpec, spec: StudentSpec, scale: ScaleSpec, method: str
                   ) -> dict[str, Any]:
    """The arguments of :func:`undistill.search.run_search` whose trials are exactly the seed-0
    student runs of the plan (same data, optimiser, width and fixed parameters)."""
    params: dict[str, Any] = {}
    for source in (suite.params, spec.params):
        params.update(source.get(method, {}))
    data = _data(suite, scale, student=True)
    return {"arch": spec.arch, "method": method, "width": spec.width * scale.width,
            "optim": _optim(suite.dataset, spec.arch, scale, spec.epochs, spec.optim),
            "data": {k: v for k, v in data.items() if k not in ("val_fraction", "val_seed")},
            "val_fraction": float(data["val_fraction"]), "val_seed": int(data.get("val_seed", 0)),
            "fixed": {k: v for k, v in params.items() if k not in (suite.search.grid if suite.search
                                                                   else {})},
            "seed": suite.seeds[0]}


def build_plan(suite: SuiteSpec, scale: str | None = None, chosen: Chosen | None = None) -> Plan:
    """The suite's runs and cells; ``chosen`` overrides method parameters per (teacher arch,
    student arch, method), as found by the suite's search on the validation split."""
    scale_name, sc = scale_of(suite, scale)
    if sc.suite is not None:  # a scale that is a suite of its own
        from undistill.suites.spec import load_suite

        return build_plan(load_suite(sc.suite), None, chosen)
    groups = [teacher_group(suite, t, sc) for t in suite.teachers]
    cells: list[Cell] = []
    for g in groups:
        reported = {"none": None, "normal": g.normal, "nasty": g.nasty, "scm": g.nasty}
        for s in suite.students:
            for seed in suite.seeds:
                for col in suite.methods:
                    method, kind = column_method(col)
                    over = (chosen or {}).get((g.spec.arch, s.arch, method))
                    run = _student(suite, s, sc, method, column_teachers(g, kind), seed, kind,
                                   params_over=over)
                    cells.append(Cell("table1", col, g.spec.arch, kind, s.arch, method, seed, run,
                                      reported[kind]))
                if g.defence is not None:
                    for kind, teacher in (("normal", g.normal), ("nasty", g.nasty),
                                          ("scm-defence", g.defence)):
                        run = _student(suite, s, sc, "kd", [teacher], seed, kind)
                        cells.append(Cell("table6", kind, g.spec.arch, kind, s.arch, "kd", seed,
                                          run, teacher))
    cells += ablation_cells(suite, groups, sc)
    pending = []
    if suite.defence.nasty_es:
        pending = [f"Nasty-ES of {g.spec.arch} (stopped at S{suite.defence.release}'s accuracy) "
                   f"and its {len(suite.students) * len(suite.seeds)} KD students" for g in groups
                   if g.defence is not None]
    return Plan(suite, scale_name, groups, cells, pending)


def nasty_es_cells(plan: Plan, defence_acc: dict[str, float],
                   nasty_acc: dict[str, float] | None = None) -> list[Cell]:
    """Stage two: Nasty-ES teachers stopped at the SCM-defence teacher's accuracy, and students.

    ``nasty_acc`` (nasty run id -> its best validation accuracy): where the nasty training never
    reaches the target, Nasty-ES is the nasty teacher itself (:func:`undistill.recipes.nasty_es`;
    its KD students are Nasty KD's)."""
    suite = plan.suite
    _, sc = scale_of(suite, plan.scale)
    cells = []
    for g in plan.groups:
        if g.defence is None or not suite.defence.nasty_es:
            continue
        es = recipes.nasty_es(g.nasty, defence_acc[g.defence.run_id], name=f"nasty-ES {g.spec.arch}",
                              nasty_best=(nasty_acc or {}).get(g.nasty.run_id))
        for s in suite.students:
            for seed in suite.seeds:
                run = _student(suite, s, sc, "kd", [es], seed, "nasty-es")
                cells.append(Cell("table6", "nasty-es", g.spec.arch, "nasty-es", s.arch, "kd",
                                  seed, run, es))
    return cells


SPECIAL = ("k", "sequence_arch", "fraction", "labels", "data_free")


def ablation_cells(suite: SuiteSpec, groups: list[TeacherGroup], sc: ScaleSpec) -> list[Cell]:
    """The runs of each ablation: a Table 1 cell with one thing changed."""
    cells = []
    for ab in suite.ablations:
        for g in groups:
            if ab.teachers is not None and g.spec.arch not in ab.teachers:
                continue
            nasty_optim = g.nasty.optim.model_dump()
            for s in suite.students:
                if ab.students is not None and s.arch not in ab.students:
                    continue
                for seed in suite.seeds:
                    for col in ab.columns:
                        method, kind = column_method(col)
                        for x in ab.values:
                            teachers = {"none": [], "normal": [g.normal], "nasty": [g.nasty],
                                        "scm": g.sequence}[kind]
                            params, data, run_method = {}, {}, method
                            if ab.param == "k":
                                teachers = recipes.scm_sequence(g.nasty, int(x), omega=suite.scm.omega,
                                                                optim=nasty_optim)
                            elif ab.param == "sequence_arch":
                                seq_optim = _optim(suite.dataset, x, sc,
                                                   g.spec.nasty.epochs or g.spec.epochs, {})
                                width = None if ab.sequence_width is None else (
                                    ab.sequence_width * sc.width)
                                teachers = recipes.scm_sequence(g.nasty, len(g.sequence), arch=x,
                                                                width=width, omega=suite.scm.omega,
                                                                optim=seq_optim)
                            elif ab.param in ("fraction", "labels"):
                                data = {ab.param: x}
                            elif ab.param == "data_free":
                                free = data_free_form(method)
                                if x and free is None:
                                    raise ValueError(f"ablation {ab.name!r}: column {col!r} has "
                                                     f"no data-free form (use nasty-kd or htc)")
                                run_method = free if x and free else method
                            else:
                                params = {ab.param: x}
                            params = {**ab.params.get(run_method, {}), **params}
                            run = _student(suite, s, sc, run_method, teachers, seed, kind, params,
                                           data)
                            cells.append(Cell("ablation", col, g.spec.arch, kind, s.arch, run_method,
                                              seed, run, teachers[0] if teachers else None,
                                              ab.name, x))
    return cells
