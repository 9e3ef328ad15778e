"""Commands on runs: ``train``, ``eval``, ``config``, ``nasty``, ``scm``, ``steal``, ``defend``."""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from undistill import api
from undistill.cli.options import (
    DataRoot,
    Device,
    Json,
    Place,
    RunsPlace,
    Sets,
    SpecFile,
    StudentArch,
    StudentWidth,
    Width,
    client,
    conventions,
    expand,
    out,
    teacher_model,
)
from undistill.config import ConfigError


def print_result(label: str, res: Any) -> None:
    out.print(f"{label}: best {res.best_acc:.2f}% (epoch {res.best_epoch + 1}), last "
              f"{res.last_acc:.2f}% [{res.status}] -> {res.run_dir}", markup=False)


@expand(place=RunsPlace)
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML run config")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset (without a config file)")] = None,
    arch: Annotated[str | None, typer.Option(help="architecture (without a config file)")] = None,
    width: Width = 1.0,
    epochs: Annotated[int | None, typer.Option(help="override the preset's epochs")] = None,
    seed: int = 0,
    sets: Sets = None,
    *,
    place: RunsPlace,
    precision: Annotated[str, typer.Option(help="auto (bf16 on GPU; on CPU per machine, "
                                           "docs/performance.md), fp32, bf16")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the step")] = False,
) -> None:
    """Train a run from a YAML config, or a normal teacher with the protocol's preset."""
    result = api.train(config, dataset=dataset, arch=arch, width=width, epochs=epochs, seed=seed,
                       sets=sets, runtime=place.runtime(precision=precision, compile=compile_))
    out.print(f"run {result.run_id}: best {result.best_acc:.2f}% (epoch {result.best_epoch + 1}),"
              f" last {result.last_acc:.2f}% on {result.eval_split}"
              f"{' (already trained)' if result.cached else ''} -> {result.run_dir}")


def evaluate(
    run: Annotated[Path, typer.Argument(help="a run directory")],
    which: Annotated[str, typer.Option(help="auto (best on a validation split, else last), best "
                                       "or last checkpoint")] = "auto",
    runs_dir: Annotated[Path | None, typer.Option(help="runs dir (default: RUN's parent)")] = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    as_json: Json = False,
) -> None:
    """Evaluate a trained run's checkpoint on its evaluation split (accuracy = correct / total)."""
    rec = api.evaluate(run, which, runs_dir, data_root, device)
    if as_json:
        print(json.dumps(rec))
    else:
        out.print(f"{rec['run_id']} [{which}] {rec['split']}: accuracy {rec['accuracy']:.2f}% "
                  f"({rec['samples']} images), loss {rec['loss']:.4f}", markup=False)


def config(
    config_file: Annotated[Path | None, typer.Argument(help="YAML run config")] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    arch: Annotated[str | None, typer.Option()] = None,
    sets: Sets = None,
    data_root: DataRoot = None,
) -> None:
    """Print a validated config (with every default filled in) and its run id."""
    import yaml

    cfg, bound = api.bound_config(config_file, dataset=dataset, arch=arch, sets=sets,
                                  data_root=data_root)
    note = "" if bound else ("  (no data at the default location: pass --data-root for the id of "
                             "a real run)")
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# run_id: {cfg.run_id}{note}")


@expand(place=Place)
def nasty(
    teacher: Annotated[Path, typer.Argument(help="run directory of the normal teacher (adversary)")],
    omega: Annotated[float | None, typer.Option(help="Eq. 5 weight (default: dataset's)")] = None,
    tau: Annotated[float | None, typer.Option(help="tau_A (default: dataset's)")] = None,
    stop_at_acc: Annotated[float | None, typer.Option(help="early stop at this accuracy (%): "
                                                      "Nasty-ES")] = None,
    sets: Sets = None,
    *,
    place: Place,
) -> None:
    """Train a Nasty Teacher (Eq. 5) against a trained normal teacher."""
    res = api.nasty(teacher, omega=omega, tau=tau, stop_at_acc=stop_at_acc, sets=sets,
                    runtime=place.runtime(teacher))
    print_result("nasty teacher", res)


NastyRun = Annotated[Path, typer.Argument(help="run directory of the nasty teacher (S^1)")]


@expand(place=Place)
def scm(
    nasty_run: NastyRun,
    k: Annotated[int, typer.Option(help="sequence length (S^1..S^k)")] = 3,
    arch: Annotated[str | None, typer.Option(help="architecture of S^2..S^k "
                                             "(default: the nasty teacher's)")] = None,
    width: Annotated[float | None, typer.Option(help="width of S^2..S^k")] = None,
    sets: Sets = None,
    *,
    place: Place,
) -> None:
    """Train the SCM sequence (Eq. 10): S^i by Eq. 5 against S^(i-1), starting from the nasty teacher."""
    res = api.scm_sequence(nasty_run, k=k, arch=arch, width=width, sets=sets,
                           runtime=place.runtime(nasty_run))
    for i, r in enumerate(res, 1):
        print_result(f"S{i}", r)


def _stealing_methods() -> str:
    with_data, free = api.stealing_methods()
    return ", ".join(with_data) + "; data-free (no data at all, Table 4): " + ", ".join(free)


@expand(place=Place, model=teacher_model, client=client)
def steal(
    teachers: Annotated[list[Path] | None, typer.Argument(help="teacher run directories (several: "
                                                          "ensembled, e.g. an SCM sequence)")] = None,
    arch: StudentArch = "cnn",
    method: Annotated[str, typer.Option(help=_stealing_methods())] = "kd",
    width: StudentWidth = 1.0,
    fraction: Annotated[float, typer.Option(help="limited data: share of the training set")] = 1.0,
    labels: Annotated[bool, typer.Option(help="--no-labels: the student never sees labels")] = True,
    seed: int = 0,
    sets: Sets = None,
    *,
    place: Place,
    teacher: Annotated[str | None, typer.Option("--teacher", help="instead of run directories: a "
                                                "model file or URL (docs/teachers.md)")] = None,
    dataset: Annotated[str | None, typer.Option(help="with --teacher: the dataset to steal with")
                       ] = None,
    budget: Annotated[int | None, typer.Option(help="with --teacher: images the teacher may be "
                                               "asked about (probe included)")] = None,
    spec_file: SpecFile = None,
    model: dict[str, Any],
    client: dict[str, Any],
) -> None:
    """Train a stealing student from one teacher or an ensemble (every method of Table 1)."""
    if (teacher is None) == (not teachers):
        raise ConfigError("give teacher run directories, or one --teacher model file or URL")
    if teacher is not None:
        res = api.steal_from(teacher, dataset, arch=arch, method=method, budget=budget, width=width,
                             labels=labels, seed=seed, sets=sets, runtime=place.runtime(),
                             spec=conventions(spec_file), **model, **client)
    else:
        res = api.steal(teachers, arch=arch, method=method, width=width, fraction=fraction,
                        labels=labels, seed=seed, sets=sets, runtime=place.runtime(teachers[0]))
    print_result(f"{method} student {arch}", res)


@expand(place=Place)
def defend(
    nasty_run: NastyRun,
    release: Annotated[int, typer.Option(help="release S^i of the SCM sequence (2 or 3)")] = 2,
    compare_es: Annotated[bool, typer.Option(help="also train Nasty-ES at S^i's accuracy")] = True,
    *,
    place: Place,
) -> None:
    """The SCM defence (release an early sequence model) and Nasty-ES at equal accuracy."""
    res = api.defend(nasty_run, release=release, compare_es=compare_es,
                     runtime=place.runtime(nasty_run))
    print_result(f"SCM defence (S{release})", res["scm-defence"])
    if "nasty-es" in res:
        print_result("Nasty-ES", res["nasty-es"])
