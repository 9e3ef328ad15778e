"""The Ray executor: a tiny suite and a search on a local Ray with 2 CPUs give exactly the local
executor's results; the shared-runs-directory check; choosing an executor by name."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from undistill.api import make_executor
from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.executor import LocalExecutor
from undistill.ray_executor import MARKER_DIR, RayExecutor, SharedDirError, check_marker
from undistill.runs import run_dir
from undistill.search import run_search
from undistill.suites import build_plan, load_suite, reproduce

# teacher -> nasty -> S2 (the SCM sequence) -> students: every kind of dependency, 6 runs
SUITE = {
    "name": "tiny-ray", "dataset": "digits",
    "teachers": [{"arch": "cnn", "width": 0.25, "epochs": 1,
                  "nasty": {"omega": 0.04, "temperature": 4}}],
    "students": [{"arch": "cnn", "width": 0.5, "epochs": 1}],
    "methods": ["vanilla", "nasty-kd", "scm"],
    "scm": {"k": 2}, "defence": {"enabled": False}, "kl": False,
}
TINY_OPTIM = {"epochs": 1, "batch_size": 256, "milestones": []}


def test_a_tiny_suite_and_search_on_ray_match_the_local_executor(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    f = tmp_path / "tiny-ray.yaml"
    f.write_text(yaml.safe_dump(SUITE))
    spec = load_suite(f)
    runs = build_plan(spec).runs()
    assert len(runs) == 6

    def runtime(name: str) -> Runtime:
        return Runtime(runs_dir=tmp_path / name, device="cpu", progress=False, num_threads=1)

    local = reproduce(spec, runtime("local"), tmp_path / "out-local", executor=LocalExecutor())
    ex = RayExecutor(num_cpus=2)
    try:
        remote = reproduce(spec, runtime("ray"), tmp_path / "out-ray", executor=ex)
        # every run was trained by a Ray worker process, none in this one
        assert set(ex.hosts) == {r.run_id for r in runs}
        assert all(int(h.rpartition(":")[2]) != os.getpid() for h in ex.hosts.values())
        assert ex.slots == 2
        # a second pass reads every run back: no task
        ex.hosts.clear()
        again = reproduce(spec, runtime("ray"), tmp_path / "out-ray2", executor=ex)
        assert ex.hosts == {} and again["records"] == remote["records"]

        # a search: its trials as Ray tasks, asked and told in batches of the 2 slots
        teacher = build_plan(spec).groups[0].normal  # trained already, in both runs dirs
        grid = {"multiplier": [1.0, 5.0], "temperature": [4.0], "alpha": [0.5]}
        kw = {"grid": grid, "val_fraction": 0.2, "width": 0.25, "optim": TINY_OPTIM, "final": False}
        s_ray = run_search([teacher], "cnn", "htc", runtime("ray"), executor=ex, **kw)
        # a task's own exception reaches the caller as itself (the CLI catches it by type)
        with pytest.raises(json.JSONDecodeError):
            RayExecutor._get(ray, ray.remote(json.loads).remote("{not json"))
    finally:
        ray.shutdown()
    s_local = run_search([teacher], "cnn", "htc", runtime("local"), **kw)
    assert s_ray["trials"] == s_local["trials"] and s_ray["best"] == s_local["best"]

    assert remote["records"] == local["records"]
    assert {m["kind"] for m in remote["teachers"]} >= {"normal", "nasty", "S2"}
    for cfg in runs:  # bit for bit the same weights
        a, _ = load_checkpoint(run_dir(cfg, tmp_path / "local") / "last.safetensors")
        b, _ = load_checkpoint(run_dir(cfg, tmp_path / "ray") / "last.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any((tmp_path / "ray" / MARKER_DIR).iterdir())  # the markers are removed


def test_a_node_that_does_not_see_the_runs_dir_stops_the_suite(tmp_path: Path) -> None:
    (tmp_path / MARKER_DIR).mkdir()
    (tmp_path / MARKER_DIR / "abc").write_text("abc\n")
    assert check_marker(str(tmp_path), "abc")["ok"]
    seen = check_marker(str(tmp_path / "elsewhere"), "abc")
    assert not seen["ok"] and seen["seen"].startswith("unreadable")
    from undistill.ray_executor import _fail_unshared

    with pytest.raises(SharedDirError, match="does not see the runs directory.*elsewhere"):
        _fail_unshared(seen)
    (tmp_path / MARKER_DIR / "abc").write_text("another suite's token\n")
    with pytest.raises(SharedDirError, match="another suite's token"):
        _fail_unshared(check_marker(str(tmp_path), "abc"))


def test_executors_are_chosen_by_name_and_bad_choices_fail_clearly() -> None:
    assert isinstance(make_executor("local"), LocalExecutor)
    assert isinstance(make_executor("ray", "10.0.0.1:6379"), RayExecutor)  # nothing started yet
    with pytest.raises(ValueError, match="executor: unknown 'slurm'; known: local, ray"):
        make_executor("slurm")
    with pytest.raises(ValueError, match="address: only the ray executor"):
        make_executor("local", "10.0.0.1:6379")
    with pytest.raises(ValueError, match="cpus_per_run"):
        RayExecutor(cpus_per_run=0)


def test_the_cli_rejects_an_unknown_executor_or_an_address_without_ray(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from undistill.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["reproduce", "demo", "--executor", "slurm", "--runs-dir", str(tmp_path)])
    assert r.exit_code == 2 and "executor: unknown 'slurm'" in r.output
    r = runner.invoke(app, ["reproduce", "demo", "--address", "10.0.0.1:6379", "--runs-dir",
                            str(tmp_path)])
    assert r.exit_code == 2 and "only the ray executor" in r.output
    assert not any(tmp_path.iterdir())  # refused before any work
