"""The semi-supervised thief (FixMatch on unpaid images): registration, Plain without a pool,
the unpaid term, checkpoints, determinism and the strong view."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import tiny_teacher
from torch import nn

from undistill import recipes
from undistill.data.base import AugmentSpec
from undistill.data.unpaid import UnpaidPool
from undistill.methods import METHODS, OBJECTIVES, Ensemble
from undistill.methods.semi import SemiSupervised, strong_view
from undistill.models import build_model

C, S = 10, 8


class SizeRecorder(nn.Module):
    """A teacher that records the batch sizes it is asked about."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.sizes = model, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[0]))
        return self.model(x)


def make(name: str = "semi-kd", **params) -> tuple[SemiSupervised, SizeRecorder]:
    torch.manual_seed(0)
    student = build_model("cnn", C, in_channels=1, width=0.25, image_size=S)
    teacher = SizeRecorder(build_model("cnn", C, in_channels=1, width=0.25, image_size=S))
    cls = METHODS.get(name)
    return cls(student, Ensemble([teacher]), cls.Params(**params)), teacher


def pool(n: int = 32, augment: AugmentSpec | None = AugmentSpec(crop_padding=1, flip=True)
         ) -> UnpaidPool:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 1, S, S), generator=g, dtype=torch.uint8)
    return UnpaidPool(images, mean=(0.5,), std=(0.25,), augment=augment)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(8, 1, S, S, generator=g), torch.randint(0, C, (8,), generator=g)


def train_step(method: SemiSupervised, seed: int = 3) -> dict[str, torch.Tensor]:
    x, y = batch()
    method.train()
    torch.manual_seed(seed)
    return method.forward_train(x, y)[1]


@pytest.mark.parametrize(("name", "objective"), [("semi-kd", "kd"),
                                                  ("semi-soft-target", "soft-target")])
def test_registered_label_free_attacks_with_a_budgeted_config(name: str, objective: str) -> None:
    cls = METHODS.get(name)
    assert issubclass(cls, SemiSupervised) and cls.objective is OBJECTIVES.get(objective)
    assert cls.needs_teacher() and not cls.needs_labels and cls.audit_order is None
    assert cls.title and cls.description
    assert cls.label_free_params == METHODS.get(objective).label_free_params
    p = cls.Params()
    assert (p.unpaid_weight, p.threshold, p.unpaid_ratio) == (1.0, 0.95, 1)
    for bad in ({"threshold": 0.0}, {"threshold": 1.5}, {"unpaid_ratio": 0},
                {"unpaid_weight": -1.0}):
        with pytest.raises(ValueError):
            cls.Params(**bad)
    cfg = recipes.student(tiny_teacher(), "cnn", name, width=0.25, data={"labels": False},
                          budget=64)
    assert cfg.method.name == name and not cfg.data.labels
    assert cfg.method.params == {**METHODS.get(objective).defaults_for("digits", "cnn"),
                                 "unpaid_weight": 1.0, "threshold": 0.95, "unpaid_ratio": 1}


def test_without_a_pool_it_is_plain_kd() -> None:
    semi, _ = make(unpaid_weight=2.0, threshold=0.5)
    kd_cls = METHODS.get("kd")
    kd = kd_cls(copy.deepcopy(semi.student), semi.teacher, kd_cls.Params())
    kd.train()
    expected = train_step(kd)
    got = train_step(semi)
    assert set(got) == set(expected) == {"kd", "ce"}
    for k in expected:
        assert torch.equal(got[k], expected[k])
    semi.attach_unpaid(pool(0))  # an empty pool: still plain
    assert semi.pool is None
    assert all(torch.equal(train_step(semi)[k], expected[k]) for k in expected)


def test_the_unpaid_term_and_its_weight_and_threshold() -> None:
    terms = {}
    for key, params in {"all": {"threshold": 1e-6}, "double": {"threshold": 1e-6,
                                                               "unpaid_weight": 2.0},
                        "none": {"threshold": 1.0}, "off": {"unpaid_weight": 0.0,
                                                            "threshold": 1e-6},
                        "ratio": {"threshold": 1e-6, "unpaid_ratio": 3}}.items():
        method, teacher = make(**params)
        method.attach_unpaid(pool())
        terms[key] = train_step(method)
        assert set(terms[key]) == {"kd", "ce", "unpaid"}
        assert all(torch.isfinite(v) and v.ndim == 0 for v in terms[key].values())
        assert teacher.sizes == [8]  # the teacher is asked about the paid images only
    assert terms["all"]["unpaid"].item() > 0  # every pseudo-label counts: plain CE
    torch.testing.assert_close(terms["double"]["unpaid"], 2 * terms["all"]["unpaid"])
    assert terms["none"]["unpaid"].item() == 0.0  # an untrained student is never certain
    assert terms["off"]["unpaid"].item() == 0.0
    assert terms["ratio"]["unpaid"].item() > 0


def test_the_unpaid_term_trains_the_student() -> None:
    method, _ = make(threshold=1e-6)
    method.attach_unpaid(pool(augment=None))
    train_step(method)["unpaid"].backward()
    grads = [p.grad for p in method.student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_the_pool_stays_out_of_the_checkpoint() -> None:
    method, _ = make()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.attach_unpaid(pool())
    state = method.state_dict()
    assert set(state) == set(before) and all(k.startswith("student.") for k in state)
    assert not any(t is method.pool.images for t in (*method.parameters(), *method.buffers()))
    kd_cls = METHODS.get("kd")
    plain = kd_cls(build_model("cnn", C, in_channels=1, width=0.25, image_size=S),
                   method.teacher, kd_cls.Params())
    assert set(plain.state_dict()) == set(state)
    plain.load_state_dict(state)  # a semi checkpoint loads as a plain one


def test_one_seed_one_result() -> None:
    a, _ = make(threshold=0.1)
    b, _ = make(threshold=0.1)
    a.attach_unpaid(pool())
    b.attach_unpaid(pool())
    first, second = train_step(a, seed=5), train_step(b, seed=5)
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = train_step(a, seed=6)
    assert not torch.equal(other["unpaid"], first["unpaid"])
    torch.manual_seed(7)
    u1 = a.pool.sample(16)
    torch.manual_seed(7)
    assert torch.equal(u1, a.pool.sample(16)) and u1.dtype == torch.uint8


def test_paid_and_unpaid_shapes_must_agree() -> None:
    method, _ = make()
    method.attach_unpaid(pool())
    with pytest.raises(ValueError, match="unpaid images are"):
        method.forward_train(torch.randn(4, 1, S + 2, S + 2), None)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_the_strong_view_perturbs_and_keeps_shape_and_dtype(dtype: torch.dtype) -> None:
    x = torch.randint(0, 256, (16, 3, 12, 12), generator=torch.Generator().manual_seed(0))
    x = x.to(dtype)
    out = strong_view(x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.float().min()) >= 0.0 and float(out.float().max()) <= 255.0
    changed = (out != x).flatten(1).any(1)
    assert bool(changed.all())  # every image differs from its weak view
    again = strong_view(x, torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    # the cutout alone: a grey square somewhere in each image, the rest untouched
    cut = strong_view(x, torch.Generator().manual_seed(2), brightness=0.0, contrast=0.0)
    grey = 128 if dtype == torch.uint8 else 127.5
    boxed = (cut != x) | (cut == grey)
    assert bool(boxed.flatten(1).any(1).all())
    assert bool(((cut == x) | (cut == grey)).all())
