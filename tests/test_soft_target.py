"""The soft-target method: KD's KL term alone, labels unread; registered like every method."""

from __future__ import annotations

import json

import torch
from conftest import tiny_teacher

from undistill import recipes
from undistill.executor import ensure_trained
from undistill.losses import kl_divergence
from undistill.methods import METHODS, Ensemble, stealing_methods
from undistill.models import build_model
from undistill.runs import run_dir
from undistill.suites.spec import param_groups, table_columns


def test_loss_is_the_softened_kl_times_t_squared_and_ignores_labels() -> None:
    torch.manual_seed(0)
    student = build_model("cnn", num_classes=10, width=0.25, in_channels=1, image_size=8)
    teacher = build_model("cnn", num_classes=10, width=0.25, in_channels=1, image_size=8)
    cls = METHODS.get("soft-target")
    m = cls(student, Ensemble([teacher]), cls.Params(temperature=3.0))
    x = torch.randn(16, 1, 8, 8)
    logits, losses = m.forward_train(x, None)
    assert set(losses) == {"kd"}
    expected = 9.0 * kl_divergence(m.teacher.logits(x), logits, 3.0)
    assert torch.allclose(losses["kd"], expected)
    _, with_labels = m.forward_train(x, torch.randint(0, 10, (16,)))
    assert torch.equal(with_labels["kd"], losses["kd"])  # the labels are not read


def test_declared_traits_reach_recipes_suites_and_the_command_line() -> None:
    cls = METHODS.get("soft-target")
    assert cls.needs_teacher() and not cls.needs_labels
    assert cls.defaults_for("cifar10", "cnn") == {"temperature": 4.0}
    assert cls.defaults_for("cifar10", "resnet18") == {"temperature": 20.0}
    assert "soft-target" in stealing_methods() and "soft-target" in table_columns()
    assert "soft-target" in param_groups()


def test_a_student_learns_from_soft_targets_without_labels(runtime) -> None:
    teacher = tiny_teacher(epochs=3)
    cfg = recipes.student(teacher, "cnn", "soft-target", width=0.25, data={"labels": False},
                          optim={"epochs": 2, "batch_size": 256})
    assert cfg.method.params == {"temperature": 4.0}  # KD's for the CNN student
    res = ensure_trained(cfg, runtime)
    rows = [json.loads(line) for line in
            (run_dir(cfg, runtime.runs_dir) / "metrics.jsonl").read_text().splitlines()]
    assert all("train/kd" in r and "train/ce" not in r for r in rows)
    assert rows[-1]["train/kd"] < rows[0]["train/kd"]
    assert res.epochs_run == 2
