"""The ``undistill`` command line: parses arguments, calls :mod:`undistill.api`, prints."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from undistill import cli_checks, errors
from undistill import cli_teachers as ct
from undistill.config import Runtime

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Knowledge-distillation model stealing: nasty teachers, attacks, defences. "
                  "Errors are one line (exit status 2); add --debug to any command for the traceback.")
out = Console(soft_wrap=True)

RunsDir = Annotated[Path, typer.Option("--runs-dir", help="where runs are stored")]
TeacherRunsDir = Annotated[Path | None, typer.Option(
    "--runs-dir", help="where runs are stored (default: the parent of the first run directory, or "
    "runs with --teacher); teacher runs missing from it are trained there")]
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="directory of the dataset files")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps")]
Progress = Annotated[bool, typer.Option(help="show progress")]
ExecutorName = Annotated[str, typer.Option("--executor", help="local (this process) or ray (Ray "
                                           "tasks; needs undistill[ray]; docs/suites.md)")]
Address = Annotated[str | None, typer.Option("--address", help="Ray cluster to join (default with "
                                             "--executor ray: start Ray on this machine)")]
Samples = Annotated[int, typer.Option(help="evaluation images for the figures' statistics and "
                                      "t-SNE")]
Examples = Annotated[int, typer.Option(help="inputs shown in Fig. 1")]
FigureSeed = Annotated[int, typer.Option(help="seed of the image subset and of t-SNE")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s",
                                                help="override a config field: path.to.field=value")]


def executor_from(name: str, address: str | None) -> Any:
    from undistill.executor import make_executor

    try:
        return make_executor(name, address)
    except (ValueError, RuntimeError) as e:
        fail(str(e))


def runtime_from(runs_dir: Path, data_root: Path | None, device: str, precision: str = "auto",
                 compile_: bool = False, progress: bool = True) -> Runtime:
    return Runtime(runs_dir=runs_dir, data_root=data_root, device=device,
                   precision=precision, compile=compile_, progress=progress)


def fail(msg: str) -> NoReturn:
    from rich.markup import escape

    errors.print_error(escape(msg))
    raise typer.Exit(errors.EXIT_ERROR)


@contextlib.contextmanager
def user_errors(reword: Callable[[str], str] = str) -> Iterator[None]:
    """A user's mistake (:data:`undistill.api.USER_ERRORS`, which adds the recipes' ValueErrors
    to what :mod:`undistill.errors` knows) -> one line (``reword``-ed), exit 2; ``--debug`` lets
    it through."""
    from undistill.api import USER_ERRORS

    shared = sys.modules.get("undistill.ray_executor")  # only a ray run can raise it
    known = USER_ERRORS + ((shared.SharedDirError,) if shared is not None else ())
    try:
        yield
    except known as e:
        if errors.debugging():
            raise
        fail(reword(errors.describe(e)))


def _stealing_methods() -> str:
    from undistill.methods import METHODS, stealing_methods

    names = stealing_methods()
    free = [n for n in names if METHODS.get(n).data_free_of]
    return (", ".join(n for n in names if n not in free) + "; data-free (no data at all, "
            "Table 4): " + ", ".join(free))


def _search_methods() -> str:
    from undistill.search import search_methods

    return ", ".join(search_methods())


@app.command()
def train(
    config: Annotated[Path | None, typer.Argument(help="YAML run config")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset (without a config file)")] = None,
    arch: Annotated[str | None, typer.Option(help="architecture (without a config file)")] = None,
    width: Annotated[float, typer.Option(help="channel multiplier")] = 1.0,
    epochs: Annotated[int | None, typer.Option(help="override the preset's epochs")] = None,
    seed: int = 0,
    sets: Sets = None,
    runs_dir: RunsDir = Path("runs"),
    data_root: DataRoot = None,
    device: Device = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on GPU; on CPU per machine, "
                                           "docs/performance.md), fp32, bf16")] = "auto",
    compile_: Annotated[bool, typer.Option("--compile", help="torch.compile the step")] = False,
    progress: Progress = True,
) -> None:
    """Train a run from a YAML config, or a normal teacher with the protocol's preset."""
    from undistill import api

    with user_errors():
        result = api.train(config, dataset=dataset, arch=arch, width=width, epochs=epochs,
                           seed=seed, sets=sets,
                           runtime=runtime_from(runs_dir, data_root, device, precision, compile_,
                                                progress))
    out.print(f"run {result.run_id}: best {result.best_acc:.2f}% (epoch {result.best_epoch + 1}),"
              f" last {result.last_acc:.2f}% on {result.eval_split}"
              f"{' (already trained)' if result.cached else ''} -> {result.run_dir}")


@app.command("eval")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="a run directory")],
    which: Annotated[str, typer.Option(help="auto (best on a validation split, else last), best "
                                       "or last checkpoint")] = "auto",
    runs_dir: Annotated[Path | None, typer.Option(help="runs dir (default: RUN's parent)")] = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Evaluate a trained run's checkpoint on its evaluation split (accuracy = correct / total)."""
    from undistill import api

    with user_errors():
        rec = api.evaluate(run, which, runs_dir, data_root, device)
    if as_json:
        print(json.dumps(rec))
    else:
        out.print(f"{rec['run_id']} [{which}] {rec['split']}: accuracy {rec['accuracy']:.2f}% "
                  f"({rec['samples']} images), loss {rec['loss']:.4f}", markup=False)


@app.command()
def models(
    classes: Annotated[int, typer.Option(help="number of classes")] = 10,
    width: Annotated[float, typer.Option(help="channel multiplier")] = 1.0,
    channels: Annotated[int, typer.Option(help="input channels")] = 3,
    size: Annotated[int, typer.Option(help="input image size")] = 32,
) -> None:
    """List the architectures with their parameter counts."""
    from undistill.models import model_table

    with user_errors():
        rows = model_table(num_classes=classes, width=width, in_channels=channels, image_size=size)
    table = Table(title=f"{classes} classes, width {width}, {channels}x{size}x{size} input")
    table.add_column("architecture")
    table.add_column("parameters", justify="right")
    for name, n in rows:
        table.add_row(name, f"{n:,}")
    out.print(table)


@app.command()
def datasets() -> None:
    """List the dataset names."""
    from undistill.data import DATASETS

    for name in DATASETS.names():
        out.print(name)


@app.command()
def methods() -> None:
    """List the training methods with their traits."""
    from undistill.methods import METHODS

    table = Table()
    for col in ("method", "teachers", "labels", "description"):
        table.add_column(col)
    for name in METHODS.names():
        cls = METHODS.get(name)
        hi = "any" if cls.max_teachers is None else str(cls.max_teachers)
        n = str(cls.min_teachers) if hi == str(cls.min_teachers) else f"{cls.min_teachers}-{hi}"
        table.add_row(name, n, "needed" if cls.needs_labels else "optional", cls.description)
    out.print(table)


@app.command()
def config(
    config_file: Annotated[Path | None, typer.Argument(help="YAML run config")] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    arch: Annotated[str | None, typer.Option()] = None,
    sets: Sets = None,
    data_root: DataRoot = None,
) -> None:
    """Print a validated config (with every default filled in) and its run id."""
    import yaml

    from undistill import api
    from undistill.config import load_config

    with user_errors():
        if config_file is not None:
            cfg = load_config(config_file, sets)
        elif dataset is None or arch is None:
            fail("give a CONFIG file, or --dataset and --arch")
        else:
            cfg = api.teacher_config(dataset, arch, sets=sets)
    from undistill.data import DatasetError
    from undistill.runs import bind_data

    note = ""
    try:  # the run id includes the fingerprint of the data the run would read
        cfg = bind_data(cfg, data_root)
    except DatasetError:
        if data_root is not None:
            raise
        note = "  (no data at the default location: pass --data-root for the id of a real run)"
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    print(f"# run_id: {cfg.run_id}{note}")


def _print_result(label: str, res: Any) -> None:
    out.print(f"{label}: best {res.best_acc:.2f}% (epoch {res.best_epoch + 1}), last "
              f"{res.last_acc:.2f}% [{res.status}] -> {res.run_dir}", markup=False)


@app.command()
def nasty(
    teacher: Annotated[Path, typer.Argument(help="run directory of the normal teacher (adversary)")],
    omega: Annotated[float | None, typer.Option(help="Eq. 5 weight (default: dataset's)")] = None,
    tau: Annotated[float | None, typer.Option(help="tau_A (default: dataset's)")] = None,
    stop_at_acc: Annotated[float | None, typer.Option(help="early stop at this accuracy (%): "
                                                      "Nasty-ES")] = None,
    sets: Sets = None,
    runs_dir: TeacherRunsDir = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """Train a Nasty Teacher (Eq. 5) against a trained normal teacher."""
    from undistill import api

    with user_errors():
        res = api.nasty(teacher, omega=omega, tau=tau, stop_at_acc=stop_at_acc, sets=sets,
                        runtime=runtime_from(runs_dir or teacher.parent, data_root, device,
                                             progress=progress))
    _print_result("nasty teacher", res)


@app.command()
def scm(
    nasty_run: Annotated[Path, typer.Argument(help="run directory of the nasty teacher (S^1)")],
    k: Annotated[int, typer.Option(help="sequence length (S^1..S^k)")] = 3,
    arch: Annotated[str | None, typer.Option(help="architecture of S^2..S^k "
                                             "(default: the nasty teacher's)")] = None,
    width: Annotated[float | None, typer.Option(help="width of S^2..S^k")] = None,
    sets: Sets = None,
    runs_dir: TeacherRunsDir = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """Train the SCM sequence (Eq. 10): S^i by Eq. 5 against S^(i-1), starting from the nasty teacher."""
    from undistill import api

    with user_errors():
        res = api.scm_sequence(nasty_run, k=k, arch=arch, width=width, sets=sets,
                               runtime=runtime_from(runs_dir or nasty_run.parent, data_root,
                                                    device, progress=progress))
    for i, r in enumerate(res, 1):
        _print_result(f"S{i}", r)


@app.command()
def steal(
    teachers: Annotated[list[Path] | None, typer.Argument(help="teacher run directories (several: "
                                                          "ensembled, e.g. an SCM sequence)")] = None,
    arch: Annotated[str, typer.Option(help="student architecture")] = "cnn",
    method: Annotated[str, typer.Option(help=_stealing_methods())] = "kd",
    width: Annotated[float, typer.Option(help="student width")] = 1.0,
    fraction: Annotated[float, typer.Option(help="limited data: share of the training set")] = 1.0,
    labels: Annotated[bool, typer.Option(help="--no-labels: the student never sees labels")] = True,
    seed: int = 0,
    sets: Sets = None,
    runs_dir: TeacherRunsDir = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
    teacher: Annotated[str | None, typer.Option("--teacher", help="instead of run directories: a "
                                                "model file or URL (docs/teachers.md)")] = None,
    dataset: Annotated[str | None, typer.Option(help="with --teacher: the dataset to steal with")
                       ] = None,
    budget: Annotated[int | None, typer.Option(help="with --teacher: images the teacher may be "
                                               "asked about (probe included)")] = None,
    spec_file: ct.SpecFile = None, teacher_arch: ct.TeacherArch = None,
    teacher_width: ct.TeacherWidth = 1.0, api_key_env: ct.ApiKeyEnv = None,
    concurrency: ct.Concurrency = 4, rate: ct.Rate = None, timeout: ct.Timeout = 30.0,
    retries: ct.Retries = 5, request_batch: ct.RequestBatch = 64,
    trust_factory: ct.TrustFactory = False,
) -> None:
    """Train a stealing student from one teacher or an ensemble (every method of Table 1)."""
    from undistill import api

    if teacher is not None or not teachers:
        if teacher is None or teachers:
            fail("give teacher run directories, or one --teacher model file or URL")
        with user_errors(ct.cli_words):
            res = ct.steal_external(
                teacher, dataset, arch, method, budget, width, labels, seed, sets,
                runs_dir or Path("runs"), data_root, device, progress,
                ct.spec_from(spec_file, *[None] * 7), teacher_arch, teacher_width,
                ct.client_from(api_key_env, concurrency, rate, timeout, retries, request_batch),
                trust_factory)
        _print_result(f"{method} student {arch}", res)
        return
    with user_errors():
        res = api.steal(teachers, arch=arch, method=method, width=width, fraction=fraction,
                        labels=labels, seed=seed, sets=sets,
                        runtime=runtime_from(runs_dir or teachers[0].parent, data_root, device,
                                             progress=progress))
    _print_result(f"{method} student {arch}", res)


@app.command()
def defend(
    nasty_run: Annotated[Path, typer.Argument(help="run directory of the nasty teacher (S^1)")],
    release: Annotated[int, typer.Option(help="release S^i of the SCM sequence (2 or 3)")] = 2,
    compare_es: Annotated[bool, typer.Option(help="also train Nasty-ES at S^i's accuracy")] = True,
    runs_dir: TeacherRunsDir = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """The SCM defence (release an early sequence model) and Nasty-ES at equal accuracy."""
    from undistill import api

    with user_errors():
        res = api.defend(nasty_run, release=release, compare_es=compare_es,
                         runtime=runtime_from(runs_dir or nasty_run.parent, data_root, device,
                                              progress=progress))
    _print_result(f"SCM defence (S{release})", res["scm-defence"])
    if "nasty-es" in res:
        _print_result("Nasty-ES", res["nasty-es"])


@app.command()
def leaderboard(
    spec: Annotated[str, typer.Argument(help="a built-in leaderboard (defences-demo, "
                                        "defences-cifar10-cpu) or a YAML path")] = "defences-demo",
    out_dir: Annotated[Path | None, typer.Option("--out", help="where results go "
                                                 "(default: results/NAME)")] = None,
    runs_dir: RunsDir = Path("runs"),
    data_root: DataRoot = None,
    device: Device = "auto",
) -> None:
    """Rank defences against every attack: utility, and protection against the strongest attack
    (chosen on a validation split), with 95 % intervals over seeds (docs/defences.md)."""
    from undistill import api

    with user_errors():
        doc = api.leaderboard(spec, out_dir=out_dir,
                              runtime=runtime_from(runs_dir, data_root, device, progress=False),
                              log=lambda line: out.print(line, markup=False))
    table = Table(title=f"{doc['name']}: vanilla {doc['vanilla']['mean']:.2f} %")
    for col in ("defence", "utility acc (%)", "best attack", "its acc (%)", "protection"):
        table.add_column(col)
    for r in doc["rows"]:
        table.add_row(r["defence"], f"{r['utility_acc']:.2f}", r["best_attack"],
                      f"{r['best_attack_acc']:.2f}", f"{r['protection']:+.2f}")
    out.print(table)
    out.print(f"results: {out_dir or Path('results') / doc['name']}/leaderboard.md", markup=False)


@app.command()
def reproduce(
    suite: Annotated[str, typer.Argument(help="a built-in suite (demo, fashion-mnist, cifar10, "
                                         "cifar100, tinyimagenet) or a YAML path")],
    scale: Annotated[str | None, typer.Option(help="scale preset (default: the suite's)")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where results go "
                                                 "(default: results/SUITE-SCALE)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and its cost only")] = False,
    runs_dir: RunsDir = Path("runs"),
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
    executor: ExecutorName = "local",
    address: Address = None,
) -> None:
    """Reproduce a table of the paper: plan the runs, train what is missing, write the results."""
    from undistill import api

    runtime = runtime_from(runs_dir, data_root, device, progress=progress)
    with user_errors():
        spec = api.load_suite(suite)
        plan = api.plan(spec, scale)
        if dry_run:
            print("\n".join(api.dry_run(plan, runtime=runtime).lines))
            return
        out_dir = out_dir or api.results_dir(spec.name, plan.scale)
        api.reproduce(plan, out_dir=out_dir, runtime=runtime,
                      executor=executor_from(executor, address))
    out.print(f"results: {out_dir}/results.json, results.csv, tables.md", markup=False)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="where results go")] = Path("results/demo"),
    runs_dir: RunsDir = Path("runs"),
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """The main job: every method of Table 1, the defences of Table 6 and the KL of Table 3 on
    the embedded Fashion-MNIST subset, in minutes on a laptop CPU."""
    reproduce("demo", None, out_dir, False, runs_dir, None, device, progress)
    print((out_dir / "tables.md").read_text())


@app.command()
def report(
    results_dir: Annotated[Path, typer.Argument(help="a suite's output directory (with "
                                                "results.json)")],
    runs_dir: RunsDir = Path("runs"),
    suite: Annotated[str | None, typer.Option(help="the suite (name or YAML) for the tables "
                                              "(default: rebuilt from results.json)")] = None,
    html: Annotated[bool, typer.Option("--html", help="also write report.html with the figures "
                                       "inlined")] = False,
    figures: Annotated[bool, typer.Option(help="--no-figures: tables and ablations only")] = True,
    samples: Samples = 1000,
    examples: Examples = 4,
    seed: FigureSeed = 0,
    data_root: DataRoot = None,
    device: Device = "auto",
) -> None:
    """Write one Markdown report of a finished suite: its tables, Fig. 1, 2, 5 and ablations."""
    from undistill import api

    with user_errors():
        path = api.report(results_dir, runs_dir=runs_dir, suite=suite, html=html, figures=figures,
                          samples=samples, examples=examples, seed=seed, data_root=data_root,
                          device=device)
    out.print(f"report: {path}" + (f", {path.with_suffix('.html')}" if html else ""),
              markup=False)


@app.command()
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
    samples: Samples = 1000,
    examples: Examples = 4,
    seed: FigureSeed = 0,
    data_root: DataRoot = None,
    device: Device = "auto",
) -> None:
    """KL to the normal teacher, output statistics, Fig. 1, 2 and 5 for trained runs."""
    from undistill import api

    with user_errors():
        doc = api.analyze(runs, reference, out_dir=out_dir, runs_dir=runs_dir,
                          data_root=data_root, device=device, samples=samples, examples=examples,
                          seed=seed, ensemble=ensemble, tsne=tsne)
    table = Table(title=f"KL to {doc['reference']['name']} on the {doc['split']} split")
    for col in ("model", "accuracy (%)", "KL T=1", "peaks > 0.1", "entropy"):
        table.add_column(col)
    for r in doc["kl"]:
        table.add_row(r["model"], f"{r['accuracy']:.2f}", f"{r['kl_t1']:.4f}", f"{r['peaks']:.2f}",
                      f"{r['entropy']:.3f}")
    out.print(table)
    out.print(f"written: {out_dir}/analysis.json, " + ", ".join(doc["figures"].values()),
              markup=False)


@app.command()
def search(
    teachers: Annotated[list[Path], typer.Argument(help="teacher run directories (several: "
                                                   "ensembled, e.g. an SCM sequence)")],
    arch: Annotated[str, typer.Option(help="student architecture")] = "cnn",
    method: Annotated[str, typer.Option(help=_search_methods())] = "htc",
    grid: Annotated[str, typer.Option(help="paper (m x tau x alpha = 144 runs) or small (8)")
                    ] = "paper",
    sampler: Annotated[str, typer.Option(help="grid (optuna GridSampler) or tpe (TPESampler)")
                       ] = "grid",
    trials: Annotated[int | None, typer.Option(help="trial budget (default: the whole grid; "
                                               "required for tpe)")] = None,
    val_fraction: Annotated[float, typer.Option(help="validation share carved from the "
                                                "training set")] = 0.1,
    val_seed: int = 0,
    width: Annotated[float, typer.Option(help="student width")] = 1.0,
    epochs: Annotated[int | None, typer.Option(help="student epochs (default: the preset's)")
                      ] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="fixed method parameter "
                                                    "KEY=VALUE (e.g. kd_delay=1)")] = None,
    final: Annotated[bool, typer.Option(help="train the chosen values on the full training set "
                                        "and evaluate on test")] = True,
    out_dir: Annotated[Path | None, typer.Option("--out", help="where search.json goes "
                                                 "(default: results/search-METHOD-ARCH)")] = None,
    seed: int = 0,
    study_seed: Annotated[int, typer.Option(help="seed of the sampler")] = 0,
    runs_dir: TeacherRunsDir = None,
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
    executor: ExecutorName = "local",
    address: Address = None,
) -> None:
    """Search HTC/SCM's (m, tau, alpha) on a validation split, never on the test set."""
    import yaml

    from undistill import api

    fixed: dict[str, Any] = {}
    for item in param or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            fail(f"--param {item!r} is not of the form KEY=VALUE")
        fixed[key] = yaml.safe_load(raw)
    out_dir = out_dir or Path("results") / f"search-{method}-{arch}"
    with user_errors():
        doc = api.search(teachers, arch=arch, method=method, grid=grid, sampler=sampler,
                         trials=trials, val_fraction=val_fraction, val_seed=val_seed, width=width,
                         epochs=epochs, fixed=fixed, final=final, out_dir=out_dir, seed=seed,
                         study_seed=study_seed, executor=executor_from(executor, address),
                         runtime=runtime_from(runs_dir or teachers[0].parent, data_root, device,
                                              progress=progress))
    b = doc["best"]
    out.print(f"{len(doc['trials'])} trials; best on val: {b['val_acc']:.2f}% with "
              f"{b['params']} (run {b['run_id']})", markup=False)
    if doc["final"]:
        fin = doc["final"]
        out.print(f"final run {fin['run_id']} on the full training set: {fin['best_acc']:.2f}% "
                  f"best, {fin['last_acc']:.2f}% last on {fin['eval_split']}", markup=False)
    out.print(f"written: {out_dir}/search.json", markup=False)


ct.register(app)
cli_checks.guard(app)  # every command's arguments checked before it runs (undistill.cli_checks)
errors.guard(app)  # one error boundary for every command (undistill.errors), registered last


def main() -> None:
    errors.main(app)
