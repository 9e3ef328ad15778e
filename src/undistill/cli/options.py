"""The command line's shared options, each defined once, and the groups of them that commands
share (:func:`expand`): where runs go (:class:`Place`), a teacher's input conventions, its
architecture, the black-box client, the figures' images.

Values are range-checked before a command runs (:mod:`undistill.cli.checks`, by parameter name).
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from undistill.cli.checks import api_key
from undistill.config import ConfigError, Runtime

out = Console(soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])

# ----------------------------------------------------------------------------------- runs
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="where runs are stored")]
TeacherRunsDir = Annotated[Path | None, typer.Option(
    "--runs-dir", help="where runs are stored (default: the parent of the first run directory, or "
    "runs with --teacher); teacher runs missing from it are trained there")]
DataRoot = Annotated[Path | None, typer.Option("--data-root", help="directory of the dataset files")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps")]
Progress = Annotated[bool, typer.Option(help="show progress")]
Sets = Annotated[list[str] | None, typer.Option("--set", "-s",
                                                help="override a config field: path.to.field=value")]
ExecutorName = Annotated[str, typer.Option("--executor", help="local (this process) or ray (Ray "
                                           "tasks; needs undistill[ray]; docs/suites.md)")]
Address = Annotated[str | None, typer.Option("--address", help="Ray cluster to join (default with "
                                             "--executor ray: start Ray on this machine)")]
Width = Annotated[float, typer.Option(help="channel multiplier")]
Json = Annotated[bool, typer.Option("--json", help="print JSON")]
StudentArch = Annotated[str, typer.Option(help="student architecture")]
StudentWidth = Annotated[float, typer.Option(help="student width")]
StudentEpochs = Annotated[int | None, typer.Option(help="student epochs (default: the preset's)")]
# -------------------------------------------------------------------------------- figures
Samples = Annotated[int, typer.Option(help="evaluation images for the figures' statistics and "
                                      "t-SNE")]
Examples = Annotated[int, typer.Option(help="inputs shown in Fig. 1")]
FigureSeed = Annotated[int, typer.Option(help="seed of the image subset and of t-SNE")]
# ------------------------------------------------------------------ teachers from anywhere
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
TrustFactory = Annotated[bool, typer.Option("--trust-factory", help="allow a YAML file beside the "
                                            "model to name a factory package.module:function as "
                                            "its architecture (this runs that code)")]
ApiKeyEnv = Annotated[str | None, typer.Option("--api-key-env", help="environment variable holding "
                                               "the API key")]
Concurrency = Annotated[int, typer.Option(help="requests in flight at once (URL teachers)")]
Rate = Annotated[float | None, typer.Option(help="requests per second at most (URL teachers)")]
Timeout = Annotated[float, typer.Option(help="seconds per request (URL teachers)")]
Retries = Annotated[int, typer.Option(help="retries per failed request (URL teachers)")]
RequestBatch = Annotated[int, typer.Option("--request-batch", help="images per request")]

#: the library's words for a teacher's options -> this command line's flags
CLI_WORDS = {"(--arch:": "(--teacher-arch:", "(arch:": "(--teacher-arch:"}


def cli_words(message: str) -> str:
    """``message`` with the library's option names as this command line spells them."""
    for lib, cli in CLI_WORDS.items():
        message = message.replace(lib, cli)
    return message


# --------------------------------------------------------------------------------- groups
def expand(**groups: Callable[..., Any]) -> Callable[[F], F]:
    """A command's parameter ``NAME`` filled by ``groups[NAME]``, a function (or dataclass) of
    shared options: on the command line (and to typer and :mod:`undistill.cli.checks`) its options
    stand in NAME's place; the command gets the value it returns."""
    def decorate(fn: F) -> F:
        members: dict[str, list[str]] = {}
        params: list[inspect.Parameter] = []
        for p in inspect.signature(fn, eval_str=True).parameters.values():
            if p.name not in groups:
                params.append(p)
                continue
            own = inspect.signature(groups[p.name], eval_str=True).parameters.values()
            members[p.name] = [q.name for q in own]
            params += own
        if set(members) != set(groups):
            raise TypeError(f"{fn.__name__} has no parameter {sorted(set(groups) - set(members))}")
        signature = inspect.Signature([p.replace(kind=p.KEYWORD_ONLY) for p in params])

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            for name, names in members.items():
                kwargs[name] = groups[name](**{k: kwargs.pop(k) for k in names})
            return fn(**kwargs)

        command.__signature__ = signature  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return command  # type: ignore[return-value]
    return decorate


@dataclass(frozen=True)
class Place:
    """Where runs are stored (by default beside the run they start from) and how they train."""

    runs_dir: TeacherRunsDir = None
    data_root: DataRoot = None
    device: Device = "auto"
    progress: Progress = True

    def runtime(self, near: Path | None = None, **extra: Any) -> Runtime:
        """The runtime; without --runs-dir runs are stored beside the run directory ``near`` (with
        none: in runs/). ``extra``: other Runtime fields."""
        default = near.parent if near is not None else Path("runs")
        return Runtime(runs_dir=self.runs_dir or default, data_root=self.data_root,
                       device=self.device, progress=self.progress, **extra)


@dataclass(frozen=True)
class RunsPlace(Place):
    """Where runs are stored (runs/ by default) and how they train."""

    runs_dir: RunsDir = Path("runs")


def conventions(spec_file: SpecFile = None, input_size: ImageSize = None,
                input_channels: Channels = None, channel_order: Order = None, mean: Mean = None,
                std: Std = None, num_classes: Classes = None, outputs: Outputs = None
                ) -> dict[str, Any]:
    """A teacher's input conventions (InputSpec fields): the --spec YAML, then the flags given."""
    from undistill.teachers.sources import read_spec_yaml

    def floats(name: str, v: str) -> list[float]:
        try:
            return [float(x) for x in v.split(",")]
        except ValueError:
            raise ConfigError(f"--{name}: {v!r} is not comma-separated numbers") from None

    spec: dict[str, Any] = read_spec_yaml(spec_file) if spec_file is not None else {}
    flags = {"image_size": input_size, "channels": input_channels, "channel_order": channel_order,
             "mean": floats("mean", mean) if mean else None,
             "std": floats("std", std) if std else None, "num_classes": num_classes,
             "outputs": outputs}
    spec.update({k: v for k, v in flags.items() if v is not None})
    return spec


def teacher_model(teacher_arch: TeacherArch = None, teacher_width: TeacherWidth = 1.0,
                  trust_factory: TrustFactory = False) -> dict[str, Any]:
    """How a teacher's model is built: the API's ``teacher_arch``, ``teacher_width``,
    ``trust_factory``."""
    return {"teacher_arch": teacher_arch, "teacher_width": teacher_width,
            "trust_factory": trust_factory}


def client(api_key_env: ApiKeyEnv = None, concurrency: Concurrency = 4, rate: Rate = None,
           timeout: Timeout = 30.0, retries: Retries = 5, request_batch: RequestBatch = 64
           ) -> dict[str, Any]:
    """The black-box client's options (URL teachers), with the API key read from its variable."""
    c: dict[str, Any] = {"concurrency": concurrency, "rate": rate, "timeout": timeout,
                         "retries": retries, "batch_size": request_batch}
    if (key := api_key(api_key_env)) is not None:
        c["api_key"] = key
    return c


def figure_options(samples: Samples = 1000, examples: Examples = 4, seed: FigureSeed = 0,
                   data_root: DataRoot = None, device: Device = "auto") -> dict[str, Any]:
    """What the figures are drawn from and on: the API's ``samples``, ``examples``, ``seed``,
    ``data_root``, ``device``."""
    return {"samples": samples, "examples": examples, "seed": seed, "data_root": data_root,
            "device": device}
