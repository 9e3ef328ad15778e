"""The compute path: chosen per machine (flags, probe, cache), recorded per run; the CUDA path's
code (bf16 autocast, channels_last, the vmapped ensemble, torch.compile) run on the CPU.

Nothing here times anything: the probe's timings are replaced by fixed numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_teacher

from undistill import precision
from undistill.config import Runtime
from undistill.engine import runtime_formats, train_run
from undistill.methods import Ensemble
from undistill.precision import ComputePath, PrecisionError
from undistill.recipes import student
from undistill.runs import read_result, run_dir

AVX2_ONLY = {"sse4_2", "avx", "avx2", "fma"}
SAPPHIRE = AVX2_ONLY | {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}


@pytest.fixture
def unpinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No forced path (conftest pins fp32) and a private cache directory."""
    monkeypatch.delenv(precision.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "undistill" / "compute-path.json"


def test_path_names_round_trip_and_bad_names_fail_naming_the_variable() -> None:
    for name in ("fp32", "fp32+channels_last", "bf16", "bf16+channels_last"):
        assert ComputePath.parse(name).name == name
    assert ComputePath.parse("bf16+channels_last") == ComputePath(bf16=True, channels_last=True)
    with pytest.raises(PrecisionError, match="UNDISTILL_COMPUTE_PATH.*'fp16'"):
        ComputePath.parse("fp16")


def test_bf16_is_a_candidate_only_with_native_bf16_instructions() -> None:
    assert precision.candidates(AVX2_ONLY) == ["fp32", "fp32+channels_last"]
    assert precision.candidates(SAPPHIRE) == list(precision.PATHS)
    assert precision.candidates({"avx512_bf16"})[-1] == "bf16+channels_last"


def test_pick_keeps_fp32_unless_another_path_is_clearly_faster() -> None:
    assert precision.pick({"fp32": 1.0, "fp32+channels_last": 0.95}) == "fp32"  # 5 %: noise
    assert precision.pick({"fp32": 1.0, "fp32+channels_last": 0.8, "bf16+channels_last": 0.5}) == (
        "bf16+channels_last")
    assert precision.pick({"fp32": 1.0, "fp32+channels_last": 0.8}) == "fp32+channels_last"


def test_the_probe_runs_once_per_machine_and_is_cached(unpinned: Path, monkeypatch) -> None:
    calls: list[list[str]] = []

    def fake_probe(paths: list[str]) -> dict[str, float]:
        calls.append(paths)
        times = {"fp32": 1.0, "fp32+channels_last": 0.8, "bf16+channels_last": 0.5}
        return {p: times[p] for p in paths}

    monkeypatch.setattr(precision, "probe", fake_probe)
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(AVX2_ONLY))
    # AVX2 only: bf16 is never probed, channels_last wins
    assert precision.cpu_path().name == "fp32+channels_last"
    assert calls == [["fp32", "fp32+channels_last"]]
    doc = json.loads(unpinned.read_text())
    assert doc["path"] == "fp32+channels_last" and doc["native_bf16"] is False
    assert precision.cpu_path().name == "fp32+channels_last" and len(calls) == 1  # from the cache
    # a corrupt cache is probed again, not an error
    unpinned.write_text("{not json")
    assert precision.cpu_path().name == "fp32+channels_last" and len(calls) == 2
    # another machine, with native bf16: the flags decide, no probe
    monkeypatch.setattr(precision, "cpu_flags", lambda: set(SAPPHIRE))
    assert precision.cpu_path().name == "bf16+channels_last" and len(calls) == 2
    assert json.loads(unpinned.read_text())["how"] == "cpu flags (native bf16)"
    # a noisy probe where channels_last is barely faster keeps fp32
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(precision, "probe", lambda paths: {"fp32": 1.0, "fp32+channels_last": 0.97})
    assert precision.cpu_path().name == "fp32"


def test_the_real_probe_returns_a_time_per_candidate() -> None:
    times = precision.probe(["fp32", "fp32+channels_last"], steps=1, repeats=1, batch=4)
    assert set(times) == {"fp32", "fp32+channels_last"}
    assert all(0 < t < float("inf") for t in times.values())


def test_resolve_device_defaults_and_explicit_choices(monkeypatch) -> None:
    monkeypatch.setenv(precision.ENV, "bf16+channels_last")
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    assert runtime_formats(Runtime(), cpu) == (True, True)  # the machine's path
    assert runtime_formats(Runtime(precision="fp32"), cpu) == (False, True)
    assert runtime_formats(Runtime(precision="fp32", channels_last=False), cpu) == (False, False)
    assert runtime_formats(Runtime(), cuda) == (True, True)
    assert runtime_formats(Runtime(precision="fp32"), cuda) == (False, True)
    assert runtime_formats(Runtime(), mps) == (False, False)
    monkeypatch.setenv(precision.ENV, "fp32")
    assert runtime_formats(Runtime(channels_last=True), cpu) == (False, True)
    monkeypatch.setenv(precision.ENV, "int8")
    with pytest.raises(PrecisionError):
        runtime_formats(Runtime(), cpu)


def test_each_run_records_the_path_that_trained_it(runtime: Runtime, monkeypatch) -> None:
    cfg = tiny_teacher(epochs=2)
    monkeypatch.setenv(precision.ENV, "fp32+channels_last")
    res = train_run(cfg, runtime)
    assert res.compute == "fp32+channels_last"
    out = run_dir(cfg, runtime.runs_dir)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["compute"] for r in rows] == ["fp32+channels_last"] * 2
    assert read_result(out)["result"]["compute"] == "fp32+channels_last"
    # the path is not part of the identity: another path finds the run done
    monkeypatch.setenv(precision.ENV, "fp32")
    again = train_run(cfg, runtime)
    assert again.cached and again.compute == "fp32+channels_last"


def test_the_cuda_path_trains_on_the_cpu(runtime: Runtime, monkeypatch) -> None:
    """bf16 autocast + channels_last + the ensemble's teachers in one vmapped call: the engine's
    CUDA defaults, run on the CPU."""
    teachers = [tiny_teacher(epochs=1, seed=s) for s in (0, 1)]
    for t in teachers:
        train_run(t, runtime)
    vmapped = {"n": 0}

    def uses_vmap_as_on_cuda(self: Ensemble, device: torch.device | str) -> bool:
        vmapped["n"] += self.stackable
        return self.stackable

    monkeypatch.setattr(Ensemble, "uses_vmap", uses_vmap_as_on_cuda)
    cfg = student(teachers, "cnn", "scm", {"alpha": 0.9, "temperature": 4.0, "multiplier": 10.0},
                  width=0.25, optim={"epochs": 1, "batch_size": 256, "milestones": []})
    rt = runtime.model_copy(update={"precision": "bf16", "channels_last": True})
    res = train_run(cfg, rt)
    assert res.compute == "bf16+channels_last" and vmapped["n"] > 0
    assert 10.0 < res.best_acc <= 100.0  # digits: better than chance after one epoch
    rows = [json.loads(x) for x in (run_dir(cfg, rt.runs_dir) / "metrics.jsonl").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(v)) for r in rows for k, v in r.items()
               if k.startswith("train/"))


def test_compiled_steps_train_like_eager_ones(runtime: Runtime, monkeypatch) -> None:
    """``Runtime.compile``: the step and the prediction go through torch.compile (here with the
    aot_eager backend: the same graph capture, no C++ toolchain needed) and reach the eager run's
    accuracy."""
    real_compile = torch.compile
    compiled: list[object] = []

    def compile_aot_eager(fn, **kwargs):
        compiled.append(fn)
        return real_compile(fn, backend="aot_eager", dynamic=False)

    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    cfg = tiny_teacher(epochs=1)
    eager = train_run(cfg, runtime)
    rt = runtime.model_copy(update={"compile": True, "runs_dir": runtime.runs_dir.parent / "compiled"})
    res = train_run(cfg, rt)
    assert len(compiled) == 2  # the step and the prediction
    assert abs(res.best_acc - eager.best_acc) < 1.0


def test_a_bf16_channels_last_run_resumes_to_the_same_weights(tmp_path: Path, monkeypatch) -> None:
    from test_engine import CrashAt, assert_same_run

    monkeypatch.setenv(precision.ENV, "bf16+channels_last")
    cfg = tiny_teacher(epochs=3, optim={"name": "sgd", "lr": 0.05, "schedule": "onecycle",
                                        "milestones": [], "epochs": 3, "batch_size": 128})
    ref = Runtime(runs_dir=tmp_path / "ref", device="cpu", progress=False)
    assert train_run(cfg, ref).compute == "bf16+channels_last"
    rt = Runtime(runs_dir=tmp_path / "crash", device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, rt, CrashAt(epoch_steps_before_crash=2))  # in the second epoch
    train_run(cfg, rt)
    assert_same_run(run_dir(cfg, ref.runs_dir), run_dir(cfg, rt.runs_dir))
