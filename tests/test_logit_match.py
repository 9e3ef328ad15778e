"""The logit-matching attack: its loss, its registration, and a student that learns by it."""

from __future__ import annotations

import torch

from undistill.methods import METHODS, OBJECTIVES, stealing_methods
from undistill.methods.logit_match import logit_match_loss
from undistill.models import build_model


def test_the_loss_ignores_a_constant_shift_and_is_zero_on_a_match() -> None:
    z = torch.randn(4, 10)
    assert logit_match_loss(z, z + 3.0).item() < 1e-10
    assert logit_match_loss(z, 2 * z).item() > 0.1


def test_it_is_a_registered_label_free_attack() -> None:
    cls = METHODS.get("logit-match")
    assert cls.objective is OBJECTIVES.get("logit-match")
    assert not cls.needs_labels and cls.needs_teacher()
    assert "logit-match" in stealing_methods()


def test_floored_log_zeros_are_clipped() -> None:
    obj = OBJECTIVES.get("logit-match")
    teacher = torch.full((2, 10), -1e8)
    teacher[:, 0] = 0.0  # log of a one-hot answer, zeros floored far below
    terms = obj.terms(obj.Params(clip=5.0), torch.zeros(2, 10), teacher, None)
    assert set(terms) == {"logit_match"} and terms["logit_match"].item() <= 25.0


def test_a_student_copies_a_teacher_by_logit_matching() -> None:
    torch.manual_seed(0)
    teacher = build_model("cnn", num_classes=10, width=0.25, in_channels=1, image_size=8).eval()
    stud = build_model("cnn", num_classes=10, width=0.25, in_channels=1, image_size=8)
    obj, params = OBJECTIVES.get("logit-match"), OBJECTIVES.get("logit-match").Params()
    x = torch.randn(256, 1, 8, 8)
    with torch.no_grad():
        target = teacher(x) * 5  # a confident teacher
    opt = torch.optim.Adam(stud.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = obj.loss(params, stud(x), target, None)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        agree = (stud(x).argmax(1) == target.argmax(1)).float().mean().item()
    assert loss.item() < 0.2 * first and agree > 0.7
