"""Objectives and the schemes that take them: the registry, the pairs, and unchanged numerics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field, ValidationError

from undistill import losses
from undistill.methods import METHODS, OBJECTIVES, Ensemble, Objective, Params, Plain, Scheme
from undistill.methods.dafl import DAFL
from undistill.methods.skeptical import Skeptical
from undistill.models import build_model

C, S = 5, 8

# --------------------------------------------------------------------------------------------
# the registry and the built-in pairs
# --------------------------------------------------------------------------------------------

#: every built-in method that learns from a teacher, and the objective it learns by
PAIRS = {"kd": "kd", "htc": "htc", "scm": "scm", "hard-label": "hard-label",
         "soft-target": "soft-target", "nasty": "nasty", "skeptical": "kd",
         "skeptical+htc": "htc", "skeptical+scm": "scm", "dafl-kd": "soft-target",
         "dafl-htc": "htc"}


def test_every_teacher_method_is_a_scheme_with_a_registered_objective() -> None:
    assert set(PAIRS.values()) <= set(OBJECTIVES.names())
    for method, objective in PAIRS.items():
        cls = METHODS.get(method)
        assert issubclass(cls, Scheme) and cls.objective is OBJECTIVES.get(objective), method
    assert not issubclass(METHODS.get("vanilla"), Scheme)  # no teacher, no objective


def test_pairs_take_the_objectives_traits_unless_the_scheme_says_otherwise() -> None:
    htc, scm = OBJECTIVES.get("htc"), OBJECTIVES.get("scm")
    for name in ("htc", "skeptical+htc"):
        assert METHODS.get(name).search_space == htc.search_space != {}
    assert METHODS.get("dafl-htc").search_space == {}  # the data-free scheme is not searched
    assert METHODS.get("scm").uses_sequence and METHODS.get("skeptical+scm").uses_sequence
    assert scm.uses_sequence and not htc.uses_sequence
    assert METHODS.get("nasty").needs_labels and OBJECTIVES.get("nasty").needs_labels
    assert METHODS.get("skeptical").defaults_for("cifar10", "cnn") == (
        OBJECTIVES.get("kd").defaults_for("cifar10", "cnn"))
    # DAFL's own protocol values, not its objective's (dafl-kd keeps T = 1)
    assert METHODS.get("dafl-kd").defaults_for("cifar10", "cnn") == {"oh": 0.05, "a": 0.01, "ie": 5.0}


@pytest.mark.parametrize(("name", "fn", "extra"), [
    ("kd", losses.kd_loss, ()), ("htc", losses.htc_loss, (50.0,)), ("scm", losses.scm_loss, (16.0,))])
def test_objective_loss_is_its_equation(name: str, fn, extra: tuple[float, ...]) -> None:
    g = torch.Generator().manual_seed(3)
    zs, zt = torch.randn(6, C, generator=g), torch.randn(6, C, generator=g)
    y = torch.randint(0, C, (6,), generator=g)
    obj = OBJECTIVES.get(name)
    p = obj.Params(alpha=0.7, temperature=4.0, **({"multiplier": extra[0]} if extra else {}))
    for labels in (y, None):
        want = fn(zs, zt, labels, 0.7, 4.0, *extra)
        assert torch.equal(obj.loss(p, zs, zt, labels), want)
        assert torch.equal(sum(obj.terms(p, zs, zt, labels).values()), want)
    assert set(obj.terms(p, zs, zt, y)) == ({"kd", "ce"} if name == "kd" else {name})


# --------------------------------------------------------------------------------------------
# a new objective is one class, usable by every scheme
# --------------------------------------------------------------------------------------------

class LogitParams(Params):
    weight: float = Field(1.0, ge=0.0)


class LogitMatching(Objective):
    """A made-up objective for the test: ``mse`` = weight * MSE(z_s, z_t) (never registered, so
    no suite or listing sees it)."""

    Params = LogitParams

    @classmethod
    def terms(cls, p: LogitParams, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"mse": p.weight * F.mse_loss(student_logits, teacher_logits.detach())}


def _models(k: int = 1) -> tuple[torch.nn.Module, Ensemble]:
    torch.manual_seed(0)
    student = build_model("cnn", C, in_channels=1, width=0.25, image_size=S)
    teachers = [build_model("cnn", C, in_channels=1, width=0.125, image_size=S) for _ in range(k)]
    return student, Ensemble(teachers)


def test_a_new_objective_plugs_into_every_scheme() -> None:
    x, y = torch.randn(4, 1, S, S), torch.randint(0, C, (4,))
    plain = Plain.using(LogitMatching, title="Logits", description="logit matching")
    assert plain.Params is LogitParams and plain.__name__ == "Plain[LogitMatching]"
    student, teacher = _models(2)
    m = plain(student, teacher, LogitParams(weight=2.0))
    logits, terms = m.forward_train(x, y)
    assert set(terms) == {"mse"}
    torch.testing.assert_close(terms["mse"], 2.0 * F.mse_loss(logits, teacher.logits(x)))

    skep = Skeptical.using(LogitMatching, title="Skep.+Logits", description="...")
    assert set(skep.Params.model_fields) == {"weight", "loc", "kd_delay", "sd_temperature",
                                             "detach_final"}
    student, teacher = _models()
    m = skep(student, teacher, skep.Params(kd_delay=-1, loc=1))
    assert m.sd_temperature == 4.0  # a plain Skeptical CNN's T: the objective has no KD T
    _, terms = m.forward_train(x, y)
    assert set(terms) == {"teacher", "self"}
    l3 = m.head_logits(x)[1]
    torch.testing.assert_close(terms["teacher"], F.mse_loss(l3, teacher.logits(x)))

    free = DAFL.using(LogitMatching, title="DAFL+Logits", description="...")
    student, teacher = _models()
    m = free(student, teacher, free.Params(image_size=S, channels=1, latent_dim=8))
    _, terms = m.forward_train(x, y)
    assert set(terms) == {"generator", "student"} and free.search_space == {}


def test_using_takes_a_registered_name_and_rejects_unknown_traits() -> None:
    assert Plain.using("htc", title="t", description="d").objective is OBJECTIVES.get("htc")
    with pytest.raises(KeyError, match="unknown objective"):
        Plain.using("nope", title="t", description="d")
    with pytest.raises(TypeError, match="max_teacher"):
        Plain.using("htc", title="t", description="d", max_teacher=1)


def test_pair_params_hold_both_sides_and_validate() -> None:
    p = METHODS.get("dafl-htc").Params(image_size=8, channels=1)
    assert (p.alpha, p.temperature, p.multiplier, p.latent_dim) == (0.9, 50.0, 50.0, 1000)
    with pytest.raises(ValidationError):
        METHODS.get("skeptical+scm").Params(alpha=2.0)
    with pytest.raises(ValidationError):
        METHODS.get("dafl-kd").Params(image_size=8, channels=1, alpha=0.5)  # T only, no alpha


# --------------------------------------------------------------------------------------------
# numerics: every method's loss dict, frozen from the code before the objective refactor
# --------------------------------------------------------------------------------------------

#: (method, teachers, params, epoch, labels?, {term: value}, sum |grad| over the method's
#: parameters after one backward of the summed terms), in float64, seed 0 for the models and
#: the batch, seed 1 for the step; computed by the methods as they were before objectives (the
#: float32 values were also identical to the last bit). The label-free Skeptical rows' ``self``
#: term changed on purpose at stop 6: its cross-entropies take the teacher's top-1 (docs/skeptical.md).
FROZEN = [
    ("vanilla", 0, {}, 0, True, {"ce": 1.6925157035272707}, 596.5308098961694),
    ("kd", 1, {}, 0, True, {"kd": 0.0635096662176398, "ce": 0.1449289642339397}, 88.39245528344233),
    ("kd", 2, {"alpha": 0.7, "temperature": 3.0}, 0, True,
     {"kd": 0.06751217988084973, "ce": 0.4385770921412798}, 175.25565756797394),
    ("kd", 1, {}, 0, False, {"kd": 0.0635096662176398}, 77.40270629137443),
    ("nasty", 1, {}, 0, True, {"nasty": 1.4464583930909656}, 582.5724073840936),
    ("htc", 1, {}, 0, True, {"htc": 4.385482501792413}, 4702.847151473246),
    ("htc", 2, {}, 0, False, {"htc": 4.617950943026111}, 6242.977608479526),
    ("scm", 3, {}, 0, True, {"scm": 0.2389337327179636}, 84.66782680804306),
    ("scm", 2, {"alpha": 0.5, "temperature": 2.0, "multiplier": 3.0}, 0, False,
     {"scm": 0.03647747736063035}, 50.73209236246004),
    ("hard-label", 2, {}, 0, True, {"hard_label": 1.4066016574593845}, 215.41449852820537),
    ("soft-target", 1, {}, 0, True, {"kd": 0.07056629579737755}, 86.00300699041607),
    ("soft-target", 2, {"temperature": 2.5}, 0, False, {"kd": 0.09679924415648021},
     133.99758204720348),
    ("skeptical", 1, {}, 0, True, {"ce": 1.55127994162812}, 616.6015610365637),
    ("skeptical", 2, {"loc": 1}, 5, True,
     {"teacher": 0.24535745625831623, "self": 2.912016862314254}, 683.3435850132412),
    ("skeptical", 1, {"kd_delay": -1}, 0, False,
     {"teacher": 0.05221964885670254, "self": 2.6991828301772856}, 351.4287813807723),
    ("skeptical+htc", 1, {}, 5, True,
     {"teacher": 1.4802132942470505, "self": 2.7218028391783964}, 1878.7289945792973),
    ("skeptical+htc", 2, {"loc": 1, "kd_delay": -1}, 0, False,
     {"teacher": 2.845180137860069, "self": 2.7842748436119056}, 1028.576352253807),
    ("skeptical+scm", 3, {}, 5, True,
     {"teacher": 0.2071172318976745, "self": 2.9428818582861855}, 596.2882232313959),
    ("skeptical+scm", 2, {"sd_temperature": 3.0}, 5, False,
     {"teacher": 0.12864226502548504, "self": 2.786907796102964}, 371.4618136917824),
    ("dafl-kd", 1, {"latent_dim": 16}, 0, True,
     {"generator": -3.3944161221590035, "student": 0.03434250136390213}, 92.64865383830507),
    ("dafl-kd", 2, {"latent_dim": 16, "temperature": 2.0}, 0, True,
     {"generator": -3.41044808805899, "student": 0.06128603338132595}, 88.05494919327606),
    ("dafl-htc", 1, {"latent_dim": 16, "ie_log": "ln"}, 0, True,
     {"generator": -7.9073481788220565, "student": 2.4493551970438507}, 2793.379242273704),
    ("dafl-htc", 2, {"latent_dim": 16}, 0, True,
     {"generator": -3.41044808805899, "student": 2.8757641275669172}, 3498.149298605048),
]


@pytest.fixture
def float64() -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # no reduction-order noise across machines
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize(("name", "k", "params", "epoch", "with_labels", "terms", "grad"), FROZEN,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(FROZEN)])
def test_loss_dicts_are_unchanged(float64: None, name: str, k: int, params: dict, epoch: int,
                                  with_labels: bool, terms: dict[str, float], grad: float) -> None:
    torch.manual_seed(0)
    student = build_model("cnn", C, in_channels=1, width=0.25, image_size=S)
    teachers = [build_model("cnn", C, in_channels=1, width=0.125, image_size=S) for _ in range(k)]
    cls = METHODS.get(name)
    if name.startswith("dafl"):
        params = {"image_size": S, "channels": 1, **params}
    m = cls(student, Ensemble(teachers) if teachers else None, cls.Params(**params))
    m.train()
    m.start_epoch(epoch)
    x, y = torch.randn(4, 1, S, S), torch.randint(0, C, (4,))
    torch.manual_seed(1)
    _, got = m.forward_train(x, y if with_labels else None)
    assert list(got) == list(terms)
    assert {t: v.item() for t, v in got.items()} == pytest.approx(terms, rel=1e-7, abs=1e-12)
    sum(got.values()).backward()
    g = sum(float(p.grad.abs().sum()) for p in m.parameters() if p.grad is not None)
    assert g == pytest.approx(grad, rel=1e-7)
