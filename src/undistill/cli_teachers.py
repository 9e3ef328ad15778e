"""Command line for teachers from anywhere: ``steal --teacher``, ``serve`` and ``audit``.

Registered on the main app by :func:`register` (no postponed annotations here: typer reads the
nested commands' annotations at registration); the options describing a teacher (its input
conventions, its architecture for a state_dict, the black-box client) are shared by all three.
Their values are range-checked before a command runs (:mod:`undistill.cli_checks`); errors are
one line through ``undistill.cli.user_errors`` (``--debug``: the traceback).
"""


from pathlib import Path
from typing import Annotated, Any

import typer

TeacherSource = Annotated[str, typer.Argument(help="a model file (.pt/.ts TorchScript, .pt2 "
                                              "torch.export, .onnx, .safetensors/.pt state_dict "
                                              "with --teacher-arch), a run directory, or an "
                                              "http(s) URL of an Open Inference Protocol model")]
SpecFile = Annotated[Path | None, typer.Option("--spec", help="YAML of input conventions (default: "
                                               "MODEL.yaml beside the model file)")]
ImageSize = Annotated[int | None, typer.Option("--input-size", help="input size the model expects")]
Channels = Annotated[int | None, typer.Option("--input-channels", help="input channels")]
Order = Annotated[str | None, typer.Option("--channel-order", help="rgb or bgr")]
Mean = Annotated[str | None, typer.Option("--mean", help="per-channel mean, comma-separated")]
Std = Annotated[str | None, typer.Option("--std", help="per-channel std, comma-separated")]
Classes = Annotated[int | None, typer.Option("--num-classes", help="classes the model answers")]
Outputs = Annotated[str | None, typer.Option("--outputs", help="auto, logits or probs")]
TeacherArch = Annotated[str | None, typer.Option("--teacher-arch", help="architecture of a "
                                                 "state_dict: zoo name or package.module:function")]
TeacherWidth = Annotated[float, typer.Option("--teacher-width", help="width of that architecture")]
ApiKeyEnv = Annotated[str | None, typer.Option("--api-key-env", help="environment variable holding "
                                               "the API key")]
Concurrency = Annotated[int, typer.Option(help="requests in flight at once (URL teachers)")]
Rate = Annotated[float | None, typer.Option(help="requests per second at most (URL teachers)")]
Timeout = Annotated[float, typer.Option(help="seconds per request (URL teachers)")]
Retries = Annotated[int, typer.Option(help="retries per failed request (URL teachers)")]
RequestBatch = Annotated[int, typer.Option("--request-batch", help="images per request")]
TrustFactory = Annotated[bool, typer.Option("--trust-factory", help="allow a YAML file beside the "
                                            "model to name a factory package.module:function as "
                                            "its architecture (this runs that code)")]

#: the library's words for a teacher's options -> this command line's flags
CLI_WORDS = {"(--arch:": "(--teacher-arch:", "(arch:": "(--teacher-arch:"}


def cli_words(message: str) -> str:
    """``message`` with the library's option names as this command line spells them."""
    for lib, cli in CLI_WORDS.items():
        message = message.replace(lib, cli)
    return message


def spec_from(spec_file: Path | None, input_size: int | None, input_channels: int | None,
              channel_order: str | None, mean: str | None, std: str | None,
              num_classes: int | None, outputs: str | None) -> dict[str, Any]:
    from undistill.teachers.sources import read_spec_yaml

    d: dict[str, Any] = read_spec_yaml(spec_file) if spec_file is not None else {}

    def floats(name: str, v: str) -> list[float]:
        from undistill.config import ConfigError

        try:
            return [float(x) for x in v.split(",")]
        except ValueError:
            raise ConfigError(f"--{name}: {v!r} is not comma-separated numbers") from None

    flags = {"image_size": input_size, "channels": input_channels, "channel_order": channel_order,
             "mean": floats("mean", mean) if mean else None,
             "std": floats("std", std) if std else None, "num_classes": num_classes,
             "outputs": outputs}
    d.update({k: v for k, v in flags.items() if v is not None})
    return d


def client_from(api_key_env: str | None, concurrency: int, rate: float | None, timeout: float,
                retries: int, request_batch: int) -> dict[str, Any]:
    from undistill.cli_checks import api_key

    c: dict[str, Any] = {"concurrency": concurrency, "rate": rate, "timeout": timeout,
                         "retries": retries, "batch_size": request_batch}
    if (key := api_key(api_key_env)) is not None:
        c["api_key"] = key
    return c


def register(app: typer.Typer) -> None:
    from undistill.cli import DataRoot, Device, Sets, out, user_errors

    @app.command()
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
        spec_file: SpecFile = None, input_size: ImageSize = None, input_channels: Channels = None,
        channel_order: Order = None, mean: Mean = None, std: Std = None,
        num_classes: Classes = None, outputs: Outputs = None,
        teacher_arch: TeacherArch = None, teacher_width: TeacherWidth = 1.0,
        data_root: DataRoot = None, trust_factory: TrustFactory = False,
    ) -> None:
        """Serve a teacher over the Open Inference Protocol (KServe v2) behind an output policy."""
        from undistill.cli_checks import api_key
        from undistill.runs import get_dataset
        from undistill.serve import make_policy
        from undistill.serve import serve as run_server
        from undistill.teachers import open_source

        with user_errors(cli_words):
            key = api_key(api_key_env)
            spec = spec_from(spec_file, input_size, input_channels, channel_order, mean, std,
                             num_classes, outputs)
            t = open_source(teacher, spec, arch=teacher_arch, width=teacher_width,
                            data_root=data_root, trust_factory=trust_factory)
            if dataset is not None and t.kind != "run":
                t.bind_dataset(get_dataset(dataset, data_root))
            t.probe()
            if defence is not None:
                from undistill.defences import parse_defence

                pol = parse_defence(defence, t.spec.num_classes)
                policy = f"defence {defence}"
            else:
                pol = make_policy(policy, top_k, decimals)
        out.print(f"serving {t.kind} teacher {t.identity} at http://{host}:{port}/v2/models/{name} "
                  f"(policy {policy})", markup=False)
        run_server(t, host, port, name=name, policy=pol, api_key=key,
                   max_request_bytes=int(max_request_mb * (1 << 20)))

    @app.command()
    def inspect(
        teacher: TeacherSource,
        dataset: Annotated[str, typer.Option(help="dataset whose test split is measured")],
        reference: Annotated[str | None, typer.Option(help="another teacher (e.g. the normal "
                                                      "one): KL to it and top-1 agreement")] = None,
        temperature: Annotated[list[float] | None, typer.Option(help="KL temperatures")] = None,
        spec_file: SpecFile = None, input_size: ImageSize = None, input_channels: Channels = None,
        channel_order: Order = None, mean: Mean = None, std: Std = None,
        num_classes: Classes = None, outputs: Outputs = None,
        teacher_arch: TeacherArch = None, teacher_width: TeacherWidth = 1.0,
        api_key_env: ApiKeyEnv = None,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
        data_root: DataRoot = None,
        device: Device = "auto",
        trust_factory: TrustFactory = False,
    ) -> None:
        """Accuracy, softmax peaks, entropy (and KL to a reference) of any teacher on a test split."""
        import json

        from undistill.engine import select_device
        from undistill.runs import get_dataset
        from undistill.stealing import open_teacher
        from undistill.teachers.measure import measure

        with user_errors(cli_words):
            spec = spec_from(spec_file, input_size, input_channels, channel_order, mean, std,
                             num_classes, outputs)
            client = {**client_from(api_key_env, 4, None, 30.0, 5, 64),
                      "trust_factory": trust_factory}
            t = open_teacher(teacher, dataset, data_root, spec=spec, arch=teacher_arch,
                             width=teacher_width, **client)
            ref = (open_teacher(reference, dataset, data_root, **client)
                   if reference is not None else None)
            row = measure(t, get_dataset(dataset, data_root), ref,
                          temperatures=tuple(temperature or [1.0]), device=select_device(device))
        if as_json:
            print(json.dumps(row))
            return
        out.print(f"{row['teacher']['kind']} teacher {row['teacher']['identity']} on the {dataset} "
                  f"test split: accuracy {row['accuracy']:.2f}%, peaks>0.1 {row['peaks']:.2f}, "
                  f"entropy {row['entropy']:.3f}, max prob {row['max_prob']:.3f}", markup=False)
        if ref is not None:
            kls = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("kl_T"))
            out.print(f"vs {reference}: agreement {row['agreement']:.2f}%, {kls}", markup=False)

    @app.command()
    def audit(
        teacher: TeacherSource,
        dataset: Annotated[str, typer.Option(help="dataset the attacks draw their queries from")],
        arch: Annotated[str, typer.Option(help="student architecture")] = "cnn",
        budget: Annotated[int, typer.Option(help="images each attack may send (probe included)")
                          ] = 1000,
        out_dir: Annotated[Path, typer.Option("--out", help="where audit.json and report.md go")
                           ] = Path("audit"),
        runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="where the students and "
                                                      "the answer cache go (default: OUT/runs)")
                            ] = None,
        methods: Annotated[str, typer.Option(help="attacks, comma-separated")
                           ] = "kd,htc,skeptical,hard-label",
        curve_points: Annotated[int, typer.Option(help="budgets on the accuracy-vs-queries curve")
                                ] = 4,
        epochs: Annotated[int | None, typer.Option(help="student epochs (default: the preset's)")
                          ] = None,
        width: Annotated[float, typer.Option(help="student width")] = 1.0,
        seed: int = 0,
        sets: Sets = None,
        spec_file: SpecFile = None, input_size: ImageSize = None, input_channels: Channels = None,
        channel_order: Order = None, mean: Mean = None, std: Std = None,
        num_classes: Classes = None, outputs: Outputs = None,
        teacher_arch: TeacherArch = None, teacher_width: TeacherWidth = 1.0,
        api_key_env: ApiKeyEnv = None, concurrency: Concurrency = 4, rate: Rate = None,
        timeout: Timeout = 30.0, retries: Retries = 5, request_batch: RequestBatch = 64,
        data_root: DataRoot = None,
        device: Device = "auto",
        progress: Annotated[bool, typer.Option(help="show progress")] = True,
        trust_factory: TrustFactory = False,
    ) -> None:
        """Can this model be stolen? KD, HTC, Skeptical and hard-label attacks at a query budget."""
        from undistill.audit import audit as run_audit
        from undistill.cli_checks import split_methods

        with user_errors(cli_words):
            spec = spec_from(spec_file, input_size, input_channels, channel_order, mean, std,
                             num_classes, outputs)
            client = client_from(api_key_env, concurrency, rate, timeout, retries, request_batch)
            doc = run_audit(teacher, dataset, arch, budget, out_dir, data_root=data_root,
                            methods=split_methods(methods),
                            curve_points=curve_points, epochs=epochs, width=width, seed=seed,
                            sets=sets, device=device, progress=progress, runs_dir=runs_dir, spec=spec,
                            teacher_arch=teacher_arch, teacher_width=teacher_width,
                            trust_factory=trust_factory, **client)
        out.print(f"teacher: {doc['teacher']['accuracy']:.2f}%", markup=False)
        for a in doc["attacks"]:
            out.print(f"{a['method']:>10} {a['arch']}: {a['accuracy']:.2f}% accuracy, "
                      f"{a['agreement']:.2f}% agreement, {a['queries']} queries", markup=False)
        out.print(f"verdict: {doc['verdict']}", markup=False)
        out.print(f"written: {out_dir}/audit.json, {out_dir}/report.md, {out_dir}/curve.png",
                  markup=False)


def steal_external(source: str, dataset: str | None, arch: str, method: str, budget: int | None,
                   width: float, labels: bool, seed: int, sets: list[str] | None, runs_dir: Path,
                   data_root: Path | None, device: str, progress: bool, spec: dict[str, Any],
                   teacher_arch: str | None, teacher_width: float, client: dict[str, Any],
                   trust_factory: bool = False) -> Any:
    """``undistill steal --teacher SOURCE``: open, probe, train; returns the RunResult.
    ``trust_factory`` goes, with the client options, through :func:`undistill.stealing.steal` and
    ``open_teacher`` to :func:`undistill.teachers.open_source`."""
    from undistill.stealing import steal

    if dataset is None:
        raise ValueError("--dataset: a teacher from a file or URL needs the dataset to steal with")
    return steal(source, dataset, arch, method, budget=budget, data_root=data_root,
                 runs_dir=runs_dir, width=width, labels=labels, seed=seed, sets=sets,
                 device=device, progress=progress, spec=spec, teacher_arch=teacher_arch,
                 teacher_width=teacher_width, trust_factory=trust_factory, **client)
