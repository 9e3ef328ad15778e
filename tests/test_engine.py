"""The engine: exact accuracy, caching, exact resumption after a crash or kill -9, divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_teacher

from undistill import checkpoint as ckpt_mod
from undistill import engine as engine_mod
from undistill.checkpoint import load_checkpoint
from undistill.config import Runtime
from undistill.engine import TIMING_KEYS, TrainingDiverged, learning_rate, train_run
from undistill.losses import cross_entropy
from undistill.methods import METHODS, Method
from undistill.progress import Reporter
from undistill.runs import load_run_model, run_dir


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_same_run(a: Path, b: Path) -> None:
    for name in ("last.safetensors", "best.safetensors"):
        wa, wb = weights(a / name), weights(b / name)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}:{k} differs"
    assert metrics(a) == metrics(b)
    ra, rb = (json.loads((p / "result.json").read_text())["result"] for p in (a, b))
    for k in ("best_acc", "best_epoch", "last_acc", "epochs_run", "status"):
        assert ra[k] == rb[k]


def test_train_writes_checkpoints_metrics_and_exact_accuracy(runtime: Runtime) -> None:
    cfg = tiny_teacher(epochs=2)
    res = train_run(cfg, runtime)
    out = Path(res.run_dir)
    assert out == run_dir(cfg, runtime.runs_dir)
    assert {p.name for p in out.iterdir()} >= {"config.json", "best.safetensors", "best.json",
                                             "last.safetensors", "last.json", "metrics.jsonl",
                                             "result.json"}
    rows = metrics(out)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert res.last_acc == rows[-1]["eval/acc"]
    # accuracy is correct / total over the whole test set, recomputed here independently
    from undistill.runs import data_views

    views = data_views(cfg.data, None)
    model = load_run_model(cfg, runtime.runs_dir, which="last")
    x = (views.eval_images.float() / 255 - views.dataset.mean[0]) / views.dataset.std[0]
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert res.last_acc == pytest.approx(100.0 * (pred == views.eval_labels).sum().item() / len(pred))
    meta = json.loads((out / "last.json").read_text())
    assert meta["run_id"] == cfg.run_id and meta["epoch"] == 1 and "code_version" in meta
    full = json.loads((out / "result.json").read_text())["config"]
    assert full["optim"]["epochs"] == 2  # the full config travels with the results


def test_finished_run_is_not_retrained(runtime: Runtime, monkeypatch) -> None:
    cfg = tiny_teacher(epochs=1)
    first = train_run(cfg, runtime)
    monkeypatch.setattr(engine_mod, "build_method", lambda *a, **k: pytest.fail("retrained"))
    again = train_run(cfg, runtime)
    assert again.cached and again.best_acc == first.best_acc


class CrashAt(Reporter):
    """Simulates a crash in the middle of an epoch's steps."""

    def __init__(self, epoch_steps_before_crash: int) -> None:
        super().__init__(enabled=True, live=True)
        self.left = epoch_steps_before_crash

    def start_run(self, label: str, total_steps: int, done_steps: int = 0) -> None:
        pass

    def step(self, advance: int, info: str = "") -> None:
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt("simulated crash")

    def epoch(self, record, epochs) -> None:
        pass


def test_crash_mid_epoch_resumes_to_identical_result(tmp_path: Path) -> None:
    cfg = tiny_teacher(epochs=4, optim={"name": "sgd", "lr": 0.05, "schedule": "onecycle",
                                        "milestones": [], "epochs": 4, "batch_size": 128})
    ref = Runtime(runs_dir=tmp_path / "ref", device="cpu", progress=False)
    train_run(cfg, ref)
    rt = Runtime(runs_dir=tmp_path / "crash", device="cpu", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, rt, CrashAt(epoch_steps_before_crash=2 * 11 // 20 + 2))
    assert not (run_dir(cfg, rt.runs_dir) / "result.json").exists()
    train_run(cfg, rt)
    assert_same_run(run_dir(cfg, ref.runs_dir), run_dir(cfg, rt.runs_dir))


def test_crash_between_best_and_last_checkpoint(tmp_path: Path, monkeypatch) -> None:
    cfg = tiny_teacher(epochs=3)
    ref = Runtime(runs_dir=tmp_path / "ref", device="cpu", progress=False)
    train_run(cfg, ref)
    rt = Runtime(runs_dir=tmp_path / "crash", device="cpu", progress=False)
    calls = {"n": 0}
    real = ckpt_mod.save_checkpoint

    def flaky(path, tensors, meta):
        calls["n"] += 1
        if path.name == "last.safetensors" and meta["epoch"] == 1:
            raise KeyboardInterrupt("killed after best, before last")
        return real(path, tensors, meta)

    monkeypatch.setattr(engine_mod, "save_checkpoint", flaky)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, rt)
    monkeypatch.setattr(engine_mod, "save_checkpoint", real)
    train_run(cfg, rt)
    assert_same_run(run_dir(cfg, ref.runs_dir), run_dir(cfg, rt.runs_dir))


def _cli(runs: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "undistill", "train", "--dataset", "digits", "--arch", "cnn",
            "--width", "0.25", "--epochs", str(epochs), "--set", "optim.batch_size=64",
            "--runs-dir", str(runs), "--device", "cpu", "--no-progress"]


def test_kill_9_and_resume_gives_the_same_weights_and_metrics(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    epochs = 8
    subprocess.run(_cli(tmp_path / "ref", epochs), env=env, check=True, capture_output=True)
    runs = tmp_path / "killed"
    proc = subprocess.Popen(_cli(runs, epochs), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_after = None
    while time.time() < deadline:
        m = list(runs.glob("*/metrics.jsonl"))
        if m and len(m[0].read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            killed_after = len(m[0].read_text().splitlines())
            break
        time.sleep(0.02)
    proc.wait()
    assert killed_after is not None and killed_after < epochs, "the run ended before the kill"
    (run,) = [p for p in runs.iterdir() if not p.name.startswith(".")]  # not .locks
    assert not (run / "result.json").exists()
    subprocess.run(_cli(runs, epochs), env=env, check=True, capture_output=True)
    (ref,) = [p for p in (tmp_path / "ref").iterdir() if not p.name.startswith(".")]
    assert ref.name == run.name
    assert_same_run(ref, run)


@METHODS.register("test-diverge")
class Diverge(Method):
    """Cross-entropy that turns to NaN in its second epoch (to test divergence handling)."""

    needs_labels = True

    def forward_train(self, images, labels):
        logits = self.student(images)
        loss = cross_entropy(logits, labels)
        if self.epoch >= 1:
            loss = loss * float("nan")
        return logits, {"ce": loss}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(runtime: Runtime) -> None:
    cfg = tiny_teacher(epochs=3, method={"name": "test-diverge", "params": {}})
    with pytest.raises(TrainingDiverged, match=r"non-finite loss in epoch 2 .*checkpoint \(after "
                       r"epoch 1\) is kept"):
        train_run(cfg, runtime)
    out = run_dir(cfg, runtime.runs_dir)
    assert not (out / "result.json").exists()
    meta = json.loads((out / "last.json").read_text())
    assert meta["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in weights(out / "last.safetensors").values()
               if v.is_floating_point())


def test_stop_at_accuracy(runtime: Runtime) -> None:
    cfg = tiny_teacher(epochs=10, stop_at_acc=50.0)
    res = train_run(cfg, runtime)
    assert res.status == "stopped_at_acc"
    assert res.last_acc >= 50.0 and res.epochs_run < 10
    rows = metrics(Path(res.run_dir))
    assert all(r["eval/acc"] < 50.0 for r in rows[:-1])


def test_learning_rate_schedules() -> None:
    cfg = tiny_teacher().optim.model_copy(update={"schedule": "multistep", "lr": 0.1,
                                                  "milestones": [2, 4], "gamma": 0.1, "epochs": 6})
    assert [round(learning_rate(cfg, e, 0, 10), 6) for e in range(6)] == [
        0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    one = cfg.model_copy(update={"schedule": "onecycle", "milestones": []})
    lrs = [learning_rate(one, e, s, 10) for e in range(6) for s in range(10)]
    assert max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[0] == 0.0 and lrs[-1] < 0.01


def test_headline_is_the_final_model_on_test_never_selected_there(runtime: Runtime) -> None:
    """With a validation split the epochs are judged on it and training never reads the test
    split; the final model is scored on it once, afterwards. Without one the headline is the last
    epoch (not the best) on test."""
    from undistill.analysis import test_accuracy
    from undistill.runs import data_views

    cfg = tiny_teacher(epochs=3, data={"name": "digits", "val_fraction": 0.2})
    res = train_run(cfg, runtime)
    assert res.eval_split == "val"
    out = Path(res.run_dir)
    assert not (out / "test.json").exists()
    score = test_accuracy(cfg, runtime.runs_dir)
    model = load_run_model(cfg, runtime.runs_dir, which="last")
    ds = data_views(cfg.data, None).dataset
    x = (ds.test_images.float() / 255 - torch.tensor(ds.mean).view(1, -1, 1, 1)) / torch.tensor(
        ds.std).view(1, -1, 1, 1)
    with torch.no_grad():
        acc = 100.0 * (model(x).argmax(1) == ds.test_labels).float().mean().item()
    assert score == pytest.approx(acc, abs=1e-3)
    assert json.loads((out / "test.json").read_text())["checkpoint"] == "last"
    assert test_accuracy(cfg, runtime.runs_dir) == score  # read back, not recomputed
    # "auto" loads the best-on-validation checkpoint here ...
    auto = load_run_model(cfg, runtime.runs_dir)
    best = load_run_model(cfg, runtime.runs_dir, which="best")
    assert all(torch.equal(a, b) for a, b in zip(auto.state_dict().values(), best.state_dict().values(),
                                                 strict=True))
    # a teacher is scored as released (which="auto": that best checkpoint), beside the final model
    with torch.no_grad():
        best_acc = 100.0 * (best(x).argmax(1) == ds.test_labels).float().mean().item()
    assert test_accuracy(cfg, runtime.runs_dir, which="auto") == pytest.approx(best_acc, abs=1e-3)
    saved = json.loads((out / "test.json").read_text())
    assert saved["test_acc"] == score and set(saved["scores"]) == {"last", "best"}
    with pytest.raises(ValueError, match="which"):
        test_accuracy(cfg, runtime.runs_dir, which="first")
    # ... and the last checkpoint when epochs were evaluated on the test set
    plain = tiny_teacher(epochs=2)
    r2 = train_run(plain, runtime)
    assert r2.eval_split == "test" and test_accuracy(plain, runtime.runs_dir) == r2.last_acc
    auto2, last2 = load_run_model(plain, runtime.runs_dir), load_run_model(plain, runtime.runs_dir,
                                                                           which="last")
    assert all(torch.equal(a, b) for a, b in zip(auto2.state_dict().values(),
                                                 last2.state_dict().values(), strict=True))
