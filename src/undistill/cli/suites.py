"""Commands on many runs: ``leaderboard``, ``reproduce``, ``demo``, ``report``, ``analyze``,
``search``."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from undistill import api
from undistill.cli.options import (
    Address,
    DataRoot,
    Device,
    ExecutorName,
    Place,
    Progress,
    RunsDir,
    RunsPlace,
    StudentArch,
    StudentEpochs,
    StudentWidth,
    expand,
    figure_options,
    out,
)
from undistill.config import ConfigError, Runtime


def leaderboard(
    spec: Annotated[str, typer.Argument(help="a built-in leaderboard (defences-demo, "
                                        "defences-cifar10-cpu) or a YAML path")] = "defences-demo",
    out_dir: Annotated[Path | None, typer.Option("--out", help="where results go "
                                                 "(default: results/NAME)")] = None,
    runs_dir: RunsDir = Path("runs"),
    data_root: DataRoot = None,
    device: Device = "auto",
    executor: ExecutorName = "local",
    address: Address = None,
) -> None:
    """Rank defences against every attack: utility, and protection against the strongest attack
    (chosen on a validation split), with 95 % intervals over seeds (docs/defences.md)."""
    doc = api.leaderboard(spec, out_dir=out_dir,
                          runtime=Runtime(runs_dir=runs_dir, data_root=data_root, device=device,
                                          progress=False),
                          log=lambda line: out.print(line, markup=False),
                          executor=api.make_executor(executor, address))
    table = Table(title=f"{doc['name']}: vanilla {doc['vanilla']['mean']:.2f} %")
    for col in ("defence", "utility acc (%)", "best attack", "its acc (%)", "protection"):
        table.add_column(col)
    for r in doc["rows"]:
        table.add_row(r["defence"], f"{r['utility_acc']:.2f}", r["best_attack"],
                      f"{r['best_attack_acc']:.2f}", f"{r['protection']:+.2f}")
    out.print(table)
    out.print(f"results: {out_dir or Path('results') / doc['name']}/leaderboard.md", markup=False)


@expand(place=RunsPlace)
def reproduce(
    suite: Annotated[str, typer.Argument(help="a built-in suite (demo, fashion-mnist, cifar10, "
                                         "cifar100, tinyimagenet) or a YAML path")],
    scale: Annotated[str | None, typer.Option(help="scale preset (default: the suite's)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where results go "
                                                 "(default: results/SUITE-SCALE)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and its cost only")] = False,
    *,
    place: RunsPlace,
    executor: ExecutorName = "local",
    address: Address = None,
) -> None:
    """Reproduce a table of the paper: plan the runs, train what is missing, write the results."""
    runtime = place.runtime()
    spec = api.load_suite(suite)
    plan = api.plan(spec, scale)
    if dry_run:
        print("\n".join(api.dry_run(plan, runtime=runtime).lines))
        return
    out_dir = out_dir or api.results_dir(spec.name, plan.scale)
    api.reproduce(plan, out_dir=out_dir, runtime=runtime,
                  executor=api.make_executor(executor, address))
    out.print(f"results: {out_dir}/results.json, results.csv, tables.md", markup=False)


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="where results go")] = Path("results/demo"),
    runs_dir: RunsDir = Path("runs"),
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """The main job: every method of Table 1 and the KL of Table 3 on the embedded Fashion-MNIST
    subset, in minutes on a laptop CPU (Table 6's defences: reproduce demo-ablations)."""
    api.reproduce("demo", out_dir=out_dir,
                  runtime=Runtime(runs_dir=runs_dir, device=device, progress=progress))
    out.print(f"results: {out_dir}/results.json, results.csv, tables.md", markup=False)
    print((out_dir / "tables.md").read_text())


@expand(figure_options=figure_options)
def report(
    results_dir: Annotated[Path, typer.Argument(help="a suite's output directory (with "
                                                "results.json)")],
    runs_dir: RunsDir = Path("runs"),
    suite: Annotated[str | None, typer.Option(help="the suite (name or YAML) for the tables "
                                              "(default: rebuilt from results.json)")] = None,
    html: Annotated[bool, typer.Option("--html", help="also write report.html with the figures "
                                       "inlined")] = False,
    figures: Annotated[bool, typer.Option(help="--no-figures: tables and ablations only")] = True,
    *,
    figure_options: dict[str, Any],
) -> None:
    """Write one Markdown report of a finished suite: its tables, Fig. 1, 2, 5 and ablations."""
    path = api.report(results_dir, runs_dir=runs_dir, suite=suite, html=html, figures=figures,
                      **figure_options)
    out.print(f"report: {path}" + (f", {path.with_suffix('.html')}" if html else ""),
              markup=False)


@expand(figure_options=figure_options)
def analyze(
    runs: Annotated[list[Path], typer.Argument(help="run directories to analyse (e.g. the nasty "
                                               "teacher and its sequence S2, S3)")],
    reference: Annotated[Path, typer.Option(help="run directory of the normal teacher")],
    out_dir: Annotated[Path, typer.Option("--out", help="where the PNG and JSON go")] = Path(
        "analysis"),
    runs_dir: Annotated[Path | None, typer.Option(help="runs dir (default: each run's parent)")
                        ] = None,
    ensemble: Annotated[bool, typer.Option(help="also analyse the logit ensemble of the runs "
                                           "(SCM's teacher)")] = True,
    tsne: Annotated[bool, typer.Option(help="--no-tsne: skip Fig. 5")] = True,
    *,
    figure_options: dict[str, Any],
) -> None:
    """KL to the normal teacher, output statistics, Fig. 1, 2 and 5 for trained runs."""
    doc = api.analyze(runs, reference, out_dir=out_dir, runs_dir=runs_dir, ensemble=ensemble,
                      tsne=tsne, **figure_options)
    table = Table(title=f"KL to {doc['reference']['name']} on the {doc['split']} split")
    for col in ("model", "accuracy (%)", "KL T=1", "peaks > 0.1", "entropy"):
        table.add_column(col)
    for r in doc["kl"]:
        table.add_row(r["model"], f"{r['accuracy']:.2f}", f"{r['kl_t1']:.4f}", f"{r['peaks']:.2f}",
                      f"{r['entropy']:.3f}")
    out.print(table)
    out.print(f"written: {out_dir}/analysis.json, " + ", ".join(doc["figures"].values()),
              markup=False)


def fixed_params(items: list[str]) -> dict[str, Any]:
    """``--param KEY=VALUE`` options as a dict (each VALUE read as YAML)."""
    import yaml

    fixed: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} is not of the form KEY=VALUE")
        fixed[key] = yaml.safe_load(raw)
    return fixed


@expand(place=Place)
def search(
    teachers: Annotated[list[Path], typer.Argument(help="teacher run directories (several: "
                                                   "ensembled, e.g. an SCM sequence)")],
    arch: StudentArch = "cnn",
    method: Annotated[str, typer.Option(help=", ".join(api.search_methods()))] = "htc",
    grid: Annotated[str, typer.Option(help="paper (m x tau x alpha = 144 runs) or small (8)")
                    ] = "paper",
    sampler: Annotated[str, typer.Option(help="grid (optuna GridSampler) or tpe (TPESampler)")
                       ] = "grid",
    trials: Annotated[int | None, typer.Option(help="trial budget (default: the whole grid; "
                                               "required for tpe)")] = None,
    val_fraction: Annotated[float, typer.Option(help="validation share carved from the "
                                                "training set")] = 0.1,
    val_seed: int = 0,
    width: StudentWidth = 1.0,
    epochs: StudentEpochs = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="fixed method parameter "
                                                    "KEY=VALUE (e.g. kd_delay=1)")] = None,
    final: Annotated[bool, typer.Option(help="train the chosen values on the full training set "
                                        "and evaluate on test")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where search.json goes "
                                                 "(default: results/search-METHOD-ARCH)")] = None,
    seed: int = 0,
    study_seed: Annotated[int, typer.Option(help="seed of the sampler")] = 0,
    *,
    place: Place,
    executor: ExecutorName = "local",
    address: Address = None,
) -> None:
    """Search HTC/SCM's (m, tau, alpha) on a validation split, never on the test set."""
    fixed = fixed_params(param or [])
    out_dir = out_dir or api.search_dir(method, arch)
    doc = api.search(teachers, arch=arch, method=method, grid=grid, sampler=sampler, trials=trials,
                     val_fraction=val_fraction, val_seed=val_seed, width=width, epochs=epochs,
                     fixed=fixed, final=final, out_dir=out_dir, seed=seed, study_seed=study_seed,
                     executor=api.make_executor(executor, address),
                     runtime=place.runtime(teachers[0]))
    b = doc["best"]
    out.print(f"{len(doc['trials'])} trials; best on val: {b['val_acc']:.2f}% with "
              f"{b['params']} (run {b['run_id']})", markup=False)
    if doc["final"]:
        fin = doc["final"]
        out.print(f"final run {fin['run_id']} on the full training set: {fin['best_acc']:.2f}% "
                  f"best, {fin['last_acc']:.2f}% last on {fin['eval_split']}", markup=False)
    out.print(f"written: {out_dir}/search.json", markup=False)
