"""The API's teachers from anywhere (docs/teachers.md): a model file, a run directory or the URL of
an Open Inference Protocol model, served, measured, audited or stolen from.

Each function takes the teacher's input conventions (``spec``: the fields of
:class:`~undistill.config.InputSpec` to set), the architecture of a state_dict (``teacher_arch``,
``teacher_width``), ``trust_factory`` (a YAML file beside a state_dict may name a factory
``package.module:function``, and that code runs) and, for a URL teacher, the client's options
(``client``: :class:`~undistill.teachers.remote.RemoteTeacher`'s ``api_key``, ``concurrency``,
``rate``, ``timeout``, ``retries``, ``batch_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from undistill.audit import DEFAULT_METHODS
from undistill.config import ConfigError, Runtime
from undistill.run_result import RunResult

#: the attacks ``audit`` runs by default (the methods that declare an ``audit_order``)
DEFAULT_ATTACKS = DEFAULT_METHODS


def serve(teacher: str, *, host: str = "127.0.0.1", port: int = 8000, name: str = "model",
          dataset: str | None = None, policy: str = "full", top_k: int = 1, decimals: int = 2,
          defence: str | None = None, api_key: str | None = None,
          max_request_bytes: int = 16 << 20, max_inflight_bytes: int | None = None,
          body_timeout: float = 60.0, data_root: Path | None = None,
          spec: dict[str, Any] | None = None, teacher_arch: str | None = None,
          teacher_width: float = 1.0, trust_factory: bool = False,
          log: Callable[[str], Any] = print) -> None:
    """Serve a teacher over the Open Inference Protocol (KServe v2) at
    ``http://HOST:PORT/v2/models/NAME`` behind an output ``policy`` (``full``, ``top-k``, ``round``,
    ``labels``) or an output ``defence`` given as YAML (``'{name: mad, params: {epsilon: 1}}'``),
    until interrupted. ``dataset``: whose conventions fill the unset ones. ``log`` gets one line
    naming what is served, before serving. Limits: ``max_request_bytes`` per body,
    ``max_inflight_bytes`` (default 4 x the former) of bodies being read or answered at once,
    ``body_timeout`` seconds for a body to arrive (docs/security.md)."""
    import importlib.util

    from undistill.runs import get_dataset
    from undistill.serve import make_policy
    from undistill.serve import serve as run_server
    from undistill.teachers import open_source
    from undistill.teachers.kinds.run import RunTeacher

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"serve needs {' and '.join(missing)}: pip install 'undistill[serve]'")
    t = open_source(teacher, spec, arch=teacher_arch, width=teacher_width, data_root=data_root,
                    trust_factory=trust_factory)
    if dataset is not None and t.find(RunTeacher) is None:
        t.bind_dataset(get_dataset(dataset, data_root))
    t.probe()
    if defence is not None:
        from undistill.defences import parse_defence

        pol = parse_defence(defence, t.spec.num_classes)
        policy = f"defence {defence}"
    else:
        pol = make_policy(policy, top_k, decimals, num_classes=t.spec.num_classes)
    log(f"serving {t.kind} teacher {t.identity} at http://{host}:{port}/v2/models/{name} "
        f"(policy {policy})")
    run_server(t, host, port, name=name, policy=pol, api_key=api_key,
               max_request_bytes=max_request_bytes, max_inflight_bytes=max_inflight_bytes,
               body_timeout=body_timeout)


def inspect(teacher: str, dataset: str, *, reference: str | None = None,
            temperatures: Sequence[float] = (1.0,), data_root: Path | None = None,
            device: str = "auto", spec: dict[str, Any] | None = None,
            teacher_arch: str | None = None, teacher_width: float = 1.0,
            trust_factory: bool = False, **client: Any) -> dict[str, Any]:
    """Accuracy, softmax peaks, entropy and max probability of any teacher on ``dataset``'s test
    split; with a ``reference`` teacher (e.g. the normal one) also the KL to it at each of
    ``temperatures`` (``kl_T1``, ...) and the top-1 ``agreement``."""
    from undistill.devices import select_device
    from undistill.runs import get_dataset
    from undistill.stealing import open_teacher
    from undistill.teachers.measure import measure

    client = {**client, "trust_factory": trust_factory}
    t = open_teacher(teacher, dataset, data_root, spec=spec, arch=teacher_arch, width=teacher_width,
                     **client)
    ref = open_teacher(reference, dataset, data_root, **client) if reference is not None else None
    return measure(t, get_dataset(dataset, data_root), ref, temperatures=tuple(temperatures),
                   device=select_device(device))


def audit(teacher: str, dataset: str, *, arch: str = "cnn", budget: int = 1000,
          out_dir: Path = Path("audit"), runs_dir: Path | None = None,
          methods: Sequence[str] = DEFAULT_METHODS, curve_points: int = 4,
          strategies: Sequence[str] = ("random",), thief: dict[str, Any] | None = None,
          width: float = 1.0, seed: int = 0, seeds: int = 3,
          score: bool = True, score_with: str | Path | None = None,
          sets: list[str] | None = None, data_root: Path | None = None, device: str = "auto",
          progress: bool = False, spec: dict[str, Any] | None = None,
          teacher_arch: str | None = None, teacher_width: float = 1.0,
          trust_factory: bool = False, defences: Sequence[Any] | None = None,
          **client: Any) -> dict[str, Any]:
    """Can this model be stolen? The ``methods`` attacks at a query ``budget``, each at every
    budget of an accuracy-vs-queries curve and for ``seeds`` seeds (mean and 95 % interval), and
    a verdict; writes audit.json, report.md and curve.png to ``out_dir`` (students and the answer
    cache in ``runs_dir``, default OUT/runs) and returns audit.json's document
    (:func:`undistill.audit.audit`). ``strategies``: query strategies (:mod:`undistill.queries`),
    each with every method; ``thief``: :class:`~undistill.config.ThiefConfig` settings (``steps``,
    ``augment``, ``holdout``, ``patience``, ``rounds``). ``score=False`` does not score the
    teacher on the test set; ``score_with`` scores a local copy of it instead (a paid API is
    then charged the budget alone); ``defences`` (``--defence`` specs or defence configs) are
    audited too: utility against protection, one row each (audit.json's ``defences``)."""
    from undistill.audit import audit as run_audit

    return run_audit(teacher, dataset, arch, budget, out_dir, data_root=data_root,
                     methods=list(methods), curve_points=curve_points,
                     strategies=list(strategies), thief=thief, width=width,
                     seed=seed, seeds=seeds, score=score, score_with=score_with, sets=sets,
                     device=device, progress=progress, runs_dir=runs_dir, spec=spec,
                     teacher_arch=teacher_arch, teacher_width=teacher_width,
                     trust_factory=trust_factory,
                     defences=None if defences is None else list(defences), **client)


def steal_from(teacher: str, dataset: str | None, *, arch: str = "cnn", method: str = "kd",
               budget: int | None = None, width: float = 1.0, labels: bool = True, seed: int = 0,
               epochs: int | None = None, params: dict[str, Any] | None = None,
               sets: list[str] | None = None, runtime: Runtime | None = None,
               spec: dict[str, Any] | None = None, teacher_arch: str | None = None,
               teacher_width: float = 1.0, trust_factory: bool = False,
               **client: Any) -> RunResult:
    """Train a ``method`` student of architecture ``arch`` against a model file or URL (open,
    probe, train: :func:`undistill.stealing.steal_external`), asking it about at most ``budget`` images of
    ``dataset``; returns the run's result."""
    from undistill.stealing import steal_external

    if dataset is None:
        raise ConfigError("--dataset: a teacher from a file or URL needs the dataset to steal with")
    rt = runtime or Runtime()
    return steal_external(teacher, dataset, arch, method, budget=budget, data_root=rt.data_root,
                          runs_dir=rt.runs_dir, width=width, labels=labels, epochs=epochs,
                          params=params, seed=seed, sets=sets, device=rt.device,
                          progress=rt.progress, spec=spec, teacher_arch=teacher_arch,
                          teacher_width=teacher_width, trust_factory=trust_factory, **client)
