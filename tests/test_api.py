"""The Python API: the command line's functions, called directly; bad requests fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import tiny_teacher

from undistill import api
from undistill.config import ConfigError, RunConfig, Runtime


def test_configs_and_plans_without_training(tmp_path: Path) -> None:
    cfg = api.teacher_config("digits", "cnn", width=0.25, epochs=2, sets=["seed=3"])
    assert isinstance(cfg, RunConfig) and cfg.seed == 3 and cfg.optim.epochs == 2
    teacher = tiny_teacher()
    student = api.student_config([teacher], arch="cnn", method="kd", width=0.25, fraction=0.5)
    assert student.teachers == [teacher] and student.data.fraction == 0.5
    assert api.student_config([teacher], method="vanilla").teachers == []  # needs no teacher
    p = api.plan("demo")
    assert api.results_dir("demo", p.scale) == Path("results") / f"demo-{p.scale}"
    dry = api.dry_run(p, runtime=Runtime(runs_dir=tmp_path, device="cpu"))
    assert dry.runs == len(p.runs()) and dry.done == 0


def test_bad_requests_raise_user_errors(tmp_path: Path, runtime: Runtime) -> None:
    teacher = tiny_teacher()
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        api.steal([teacher], method="nope", runtime=runtime)
    with pytest.raises(ConfigError, match="S\\^1 must be a nasty teacher"):
        api.defend(teacher, runtime=runtime)
    with pytest.raises(ConfigError, match="CONFIG"):
        api.train(runtime=runtime)
    with pytest.raises(api.USER_ERRORS, match="does not exist|not a run"):
        api.nasty(tmp_path / "missing", runtime=runtime)
    with pytest.raises(ValueError, match="--which"):
        api.evaluate(tmp_path, which="first")
    assert not runtime.runs_dir.exists()  # nothing was trained


def test_train_steal_and_defend(runtime: Runtime) -> None:
    teacher = api.train(tiny_teacher(epochs=2), runtime=runtime)
    nasty = api.nasty(Path(teacher.run_dir), runtime=runtime, sets=["optim.epochs=2"])
    assert nasty.run_id.startswith("digits-cnn-nasty-")
    student = api.steal([Path(nasty.run_dir)], method="kd", width=0.25,
                        sets=["optim.epochs=1", "optim.batch_size=256"], runtime=runtime)
    assert student.epochs_run == 1
    rec = api.evaluate(Path(student.run_dir), "last")
    assert rec["run_id"] == student.run_id and rec["accuracy"] == pytest.approx(student.last_acc)
    out = api.defend(Path(nasty.run_dir), release=2, runtime=runtime)
    assert set(out) == {"scm-defence", "nasty-es"}
    assert out["nasty-es"].status in ("stopped_at_acc", "complete")
