"""Commands on teachers from anywhere (docs/teachers.md): ``serve``, ``inspect``, ``audit``.

A teacher is a model file, a run directory or a URL; the options describing it (its input
conventions, its architecture for a state_dict, the black-box client) are groups shared with
``steal --teacher`` (:mod:`undistill.cli.options`).
"""

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from undistill import api
from undistill.cli.checks import api_key, query_option, split_methods
from undistill.cli.options import (
    ApiKeyEnv,
    DataRoot,
    Device,
    Json,
    Progress,
    Sets,
    StudentArch,
    StudentWidth,
    TeacherSource,
    client,
    conventions,
    expand,
    out,
    teacher_model,
)


@expand(spec=conventions, model=teacher_model)
def serve(
    teacher: TeacherSource,
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    name: Annotated[str, typer.Option(help="model name in the URL /v2/models/NAME")] = "model",
    dataset: Annotated[str | None, typer.Option(help="dataset whose conventions fill unset "
                                                "input conventions")] = None,
    policy: Annotated[str, typer.Option(help="output policy: full, top-k, round, labels")
                      ] = "full",
    top_k: Annotated[int, typer.Option("--top-k", help="k of the top-k policy")] = 1,
    decimals: Annotated[int, typer.Option(help="decimals of the round policy")] = 2,
    defence: Annotated[str | None, typer.Option(help="an output defence instead of --policy, as "
                                                "YAML: '{name: mad, params: {epsilon: 1}}' "
                                                "(docs/defences.md)")] = None,
    api_key_env: ApiKeyEnv = None,
    max_request_mb: Annotated[float, typer.Option(help="request size limit (MiB)")] = 16.0,
    max_inflight_mb: Annotated[float | None, typer.Option(
        help="MiB of request bodies read or answered at once; beyond it 503 (default: 4 x "
             "--max-request-mb)")] = None,
    body_timeout: Annotated[float, typer.Option(help="seconds for a request body to arrive "
                                                "(408 after)")] = 60.0,
    *,
    spec: dict[str, Any],
    model: dict[str, Any],
    data_root: DataRoot = None,
) -> None:
    """Serve a teacher over the Open Inference Protocol (KServe v2) behind an output policy."""
    api.serve(teacher, host=host, port=port, name=name, dataset=dataset, policy=policy,
              top_k=top_k, decimals=decimals, defence=defence, api_key=api_key(api_key_env),
              max_request_bytes=int(max_request_mb * (1 << 20)),
              max_inflight_bytes=None if max_inflight_mb is None else int(max_inflight_mb * (1 << 20)),
              body_timeout=body_timeout, data_root=data_root, spec=spec,
              log=lambda line: out.print(line, markup=False), **model)


@expand(spec=conventions, model=teacher_model)
def inspect(
    teacher: TeacherSource,
    dataset: Annotated[str, typer.Option(help="dataset whose test split is measured")],
    reference: Annotated[str | None, typer.Option(help="another teacher (e.g. the normal "
                                                  "one): KL to it and top-1 agreement")] = None,
    temperature: Annotated[list[float] | None, typer.Option(help="KL temperatures")] = None,
    *,
    spec: dict[str, Any],
    model: dict[str, Any],
    api_key_env: ApiKeyEnv = None,
    as_json: Json = False,
    data_root: DataRoot = None,
    device: Device = "auto",
) -> None:
    """Accuracy, softmax peaks, entropy (and KL to a reference) of any teacher on a test split."""
    row = api.inspect(teacher, dataset, reference=reference, temperatures=temperature or [1.0],
                      data_root=data_root, device=device, spec=spec, **model,
                      **client(api_key_env))
    if as_json:
        print(json.dumps(row))
        return
    out.print(f"{row['teacher']['kind']} teacher {row['teacher']['identity']} on the {dataset} "
              f"test split: accuracy {row['accuracy']:.2f}%, peaks>0.1 {row['peaks']:.2f}, "
              f"entropy {row['entropy']:.3f}, max prob {row['max_prob']:.3f}", markup=False)
    if reference is not None:
        kls = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("kl_T"))
        out.print(f"vs {reference}: agreement {row['agreement']:.2f}%, {kls}", markup=False)


@expand(spec=conventions, model=teacher_model, client=client)
def audit(
    teacher: TeacherSource,
    dataset: Annotated[str, typer.Option(help="dataset the attacks draw their queries from")],
    arch: StudentArch = "cnn",
    budget: Annotated[int, typer.Option(help="images each attack may send (probe included); at "
                                        "most the training split plus one")] = 1000,
    out_dir: Annotated[Path, typer.Option("--out", help="where audit.json and report.md go")
                       ] = Path("audit"),
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="where the students and "
                                                  "the answer cache go (default: OUT/runs)")
                        ] = None,
    methods: Annotated[str, typer.Option(help="attacks, comma-separated")
                       ] = ",".join(api.DEFAULT_ATTACKS),
    curve_points: Annotated[int, typer.Option(help="budgets on the accuracy-vs-queries curve")
                            ] = 4,
    seeds: Annotated[int, typer.Option(help="students per attack and budget (seeds SEED.."
                                       "SEED+N-1): mean and 95% interval; no extra queries")
                     ] = 3,
    score: Annotated[bool, typer.Option("--score/--no-score", help="score the teacher on the "
                                        "test set (--no-score: its accuracy stays unknown and "
                                        "it is sent the budget alone)")] = True,
    score_with: Annotated[str | None, typer.Option(
        "--score-with", help="score this local copy of the model (a file or run directory) "
                             "instead of the audited teacher, which is then sent the budget "
                             "alone")] = None,
    defences: Annotated[list[str] | None, typer.Option(
        "--defence", help="also audit the model behind this output defence (repeatable), as YAML "
                          "'{name: topk, params: {k: 1}}' or a name (labels); one table: utility "
                          "against protection (docs/defences.md)")] = None,
    strategies: Annotated[str, typer.Option(
        "--strategies", help="query strategies, comma-separated (random, knockoff, uncertainty, "
                             "k-center): each with every attack")] = "random",
    steps: Annotated[int | None, typer.Option(help="optimisation steps of every student "
                                              "(default 3000; early stopping on held-out paid "
                                              "answers may end it sooner)")] = None,
    query_data: Annotated[str | None, typer.Option(
        "--query-data", help="the thief's own images instead of DATASET's training split: a "
                             "registered dataset, NAME or NAME:ROOT (e.g. folder:/my/images, "
                             "a train/<class>/ tree whose labels are never read)")] = None,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="students learn from "
                                          "augmented views of the paid images (no extra "
                                          "queries)")] = True,
    width: StudentWidth = 1.0,
    seed: int = 0,
    sets: Sets = None,
    *,
    spec: dict[str, Any],
    model: dict[str, Any],
    client: dict[str, Any],
    data_root: DataRoot = None,
    device: Device = "auto",
    progress: Progress = True,
) -> None:
    """Can this model be stolen? Label-free attacks at a query budget, with query strategies."""
    from undistill.audit import check_budget
    from undistill.audit_defences import HEADER, parse_defences, table_rows
    from undistill.config import ConfigError
    from undistill.data import CLASS_COUNTS

    if score_with is not None and not score:
        raise ConfigError("--score-with: a local copy scores the teacher and --no-score skips "
                          "scoring; give one of them")
    parse_defences(defences, CLASS_COUNTS.get(dataset))  # before the teacher opens
    check_budget(budget, dataset, sets, data_root, name="--budget")
    doc = api.audit(teacher, dataset, arch=arch, budget=budget, out_dir=out_dir, runs_dir=runs_dir,
                    methods=split_methods(methods), curve_points=curve_points,
                    strategies=[q.strip() for q in strategies.split(",") if q.strip()],
                    thief={"augment": augment, **({} if steps is None else {"steps": steps}),
                           **query_option(query_data)},
                    width=width, seed=seed, seeds=seeds, score=score, score_with=score_with,
                    sets=sets, data_root=data_root, device=device, progress=progress, spec=spec,
                    defences=defences, **model, **client)
    acc = doc["teacher"]["accuracy"]
    t_line = "not scored (--no-score)" if acc is None else f"{acc:.2f}% on the test set"
    if doc["teacher"]["scored_with"]:
        t_line += f" (scored with the local copy {doc['teacher']['scored_with']})"
    out.print(f"teacher: {t_line}", markup=False)
    for a in doc["attacks"]:
        out.print(f"{a['method']:>10} {a['arch']} @{a['budget']}: accuracy "
                  f"{_interval(a['accuracy_mean'], a['accuracy_ci'])}, agreement "
                  f"{_interval(a['agreement_mean'], a['agreement_ci'])}, "
                  f"{_interval(a['fraction_of_teacher'], a['fraction_of_teacher_ci'], 100)} of the "
                  f"teacher, over {len(a['seeds'])} seed(s)", markup=False)
    q = doc["queries"]
    out.print(f"queries sent to the teacher: {doc['queries_total']} ({q['attacks']} by the attacks, "
              f"{q['scoring']} to score it)", markup=False)
    out.print(f"verdict: {doc['verdict']}", markup=False)
    if doc["defences"]:
        rows = [HEADER, *table_rows(doc["defences"])]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        out.print(f"defences at {budget} queries (protection: best attack undefended minus "
                  f"defended, 95% Welch interval):", markup=False)
        for r in rows:
            out.print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(),
                      markup=False)
    out.print(f"written: {out_dir}/audit.json, {out_dir}/report.md, {out_dir}/curve.png",
              markup=False)


def _interval(mean: float | None, ci: list[float] | None, scale: float = 1.0) -> str:
    """``84.20% [82.10, 86.30]``, ``84.20%`` (one seed) or ``n/a`` (teacher not scored)."""
    if mean is None:
        return "n/a"
    text = f"{mean * scale:.2f}%"
    return text if ci is None else f"{text} [{ci[0] * scale:.2f}, {ci[1] * scale:.2f}]"
