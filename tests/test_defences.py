"""Output defences: each release, parameter validation at config time, the defended teacher."""

from __future__ import annotations

import math
import re

import pytest
import torch
from conftest import tiny_teacher

from undistill.config import ConfigError, load_config, parse_config
from undistill.defences import (
    DEFENCES,
    RELEASE_FLOOR,
    DefenceConfig,
    build_defence,
    parse_defence,
    released_logits,
)
from undistill.defences.mad import mad_targets
from undistill.defences.misinformation import misinformation_mix
from undistill.defences.teacher import DefendedEnsemble
from undistill.engine import train_run
from undistill.losses import cross_entropy
from undistill.methods import METHODS
from undistill.methods.base import Ensemble
from undistill.runs import data_views, get_dataset, load_run_model, load_teacher


def probs(n: int = 64, c: int = 10, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, c, generator=g) * scale, 1)


def defence(name: str, **params: object):
    return build_defence({"name": name, "params": params}, num_classes=10)


def student_config(teacher, method: str = "kd", defence: dict | None = None, epochs: int = 1, **extra):
    d = tiny_teacher(epochs=epochs).model_dump()
    d["method"] = {"name": method, "params": {}}
    d["teachers"] = [teacher.model_dump()]
    if defence is not None:
        d["defence"] = defence
    d.update(extra)
    return parse_config(d)


def test_every_defence_is_registered() -> None:
    assert set(DEFENCES.names()) >= {"topk", "round", "noise", "reverse-sigmoid", "labels", "mad",
                                     "misinformation", "chain"}


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": "topk", "params": {"k": 11}}, "defence.params.k"),
    ({"name": "topk", "params": {"k": 0}}, "defence.params.k"),
    ({"name": "top-k", "params": {"k": 11}}, "defence.params.k"),  # the alias is checked alike
    ({"name": "round", "params": {"decimals": -1}}, "defence.params.decimals"),
    ({"name": "noise", "params": {"scale": -0.1}}, "defence.params.scale"),
    ({"name": "noise", "params": {"kind": "uniform"}}, "defence.params.kind"),
    ({"name": "mad", "params": {"epsilon": -1}}, "defence.params.epsilon"),
    ({"name": "mad", "params": {"arch": "nope"}}, "defence.params.arch"),
    ({"name": "misinformation", "params": {"tau": 1.5}}, "defence.params.tau"),
    ({"name": "chain", "params": {"steps": [{"name": "labels"}, {"name": "topk", "params": {"k": 12}}]}},
     "defence.params.steps.1.params.k"),
    ({"name": "blur"}, "defence.name"),
])
def test_bad_parameters_are_rejected_when_the_config_is_read(spec: dict, field: str) -> None:
    head, _, rest = field.partition(".")  # "defence: Value error, params.k: ..." or "defence.params.k"
    with pytest.raises(ConfigError, match=rf"{head}\b.*{rest}: "):
        student_config(tiny_teacher(epochs=1), defence=spec)


def test_a_defence_from_command_line_overrides_is_validated() -> None:
    base = student_config(tiny_teacher(epochs=1)).model_dump()
    cfg = load_config(None, ["defence.name=topk", "defence.params.k=3"], base=base)
    assert cfg.defence == DefenceConfig(name="topk", params={"k": 3})
    with pytest.raises(ConfigError, match=r"defence\b.*params.k: 11 is larger than the 10 classes"):
        load_config(None, ["defence.name=topk", "defence.params.k=11"], base=base)
    with pytest.raises(ConfigError, match=r"defence\b.*params.decimals"):
        load_config(None, ["defence.name=round", "defence.params.decimals=-2"], base=base)
    alias = load_config(None, ["defence.name=top-k", "defence.params.k=3"], base=base)
    assert alias.defence == cfg.defence and alias.run_id == cfg.run_id  # top-k is topk


def test_a_defence_needs_teachers() -> None:
    d = tiny_teacher(epochs=1).model_dump()
    d["defence"] = {"name": "labels"}
    with pytest.raises(ConfigError, match="defence: .*no teachers"):
        parse_config(d)


def test_run_identity_counts_the_defence_only_when_set() -> None:
    t = tiny_teacher(epochs=1)
    plain = student_config(t)
    assert "defence" not in plain.identity()
    topk = student_config(t, defence={"name": "topk", "params": {"k": 2}})
    assert topk.run_id != plain.run_id
    assert topk.identity()["defence"] == {"name": "topk", "params": {"k": 2}}
    # defaults are filled in, so writing a default out is the same run
    assert student_config(t, defence={"name": "topk", "params": {"k": 1}}).run_id == \
        student_config(t, defence={"name": "topk"}).run_id


def test_topk_keeps_the_k_largest_and_renormalises() -> None:
    p = probs()
    out = defence("topk", k=3)(p)
    assert torch.equal((out > 0).sum(1), torch.full((64,), 3))
    assert torch.allclose(out.sum(1), torch.ones(64))
    top = p.topk(3, 1)
    kept = out.gather(1, top.indices)
    assert torch.allclose(kept, top.values / top.values.sum(1, keepdim=True))


def test_round_releases_d_decimal_numbers() -> None:
    out = defence("round", decimals=1)(probs())
    assert torch.allclose(out * 10, (out * 10).round(), atol=1e-5)
    assert torch.equal(defence("round", decimals=0)(torch.tensor([[0.6, 0.4], [0.3, 0.7]])),
                       torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("kind", ["gaussian", "laplace"])
def test_noise_keeps_top1_and_stays_a_distribution(kind: str) -> None:
    p = probs(512, scale=1.0)
    torch.manual_seed(7)
    out = defence("noise", kind=kind, scale=0.2, keep_top1=True)(p)
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(512))
    assert torch.equal(out.argmax(1), p.argmax(1))
    assert (out - p).abs().mean() > 0.02  # it is perturbed
    torch.manual_seed(7)
    flips = defence("noise", kind=kind, scale=0.2, keep_top1=False)(p)
    assert (flips.argmax(1) != p.argmax(1)).any()  # without keep_top1 some answers change
    torch.manual_seed(7)
    assert torch.equal(defence("noise", kind=kind, scale=0.2, keep_top1=False)(p), flips)  # seeded


def test_laplace_noise_has_the_requested_scale() -> None:
    torch.manual_seed(0)
    p = torch.full((20000, 2), 0.5)
    out = defence("noise", kind="laplace", scale=0.01, keep_top1=False)(p)
    # renormalising two entries 0.5 + e1, 0.5 + e2 gives 0.5 + (e1 - e2) / 2 / (1 + ...): about
    # E|e1 - e2| / 2, and for Laplace(b) E|e1 - e2| = 1.5 b
    assert abs((out[:, 0] - 0.5).abs().mean().item() - 0.75 * 0.01) < 0.0005


def test_reverse_sigmoid_follows_the_formula() -> None:
    p = torch.tensor([[0.9, 0.1]])
    beta, gamma = 1.0, 0.5

    def r(x: float) -> float:
        return beta * (1 / (1 + math.exp(-gamma * math.log(x / (1 - x)))) - 0.5)

    raw = [0.9 - r(0.9), 0.1 - r(0.1)]
    want = torch.tensor([[raw[0] / sum(raw), raw[1] / sum(raw)]])
    out = defence("reverse-sigmoid", beta=beta, gamma=gamma)(p)
    assert torch.allclose(out, want, atol=1e-6)
    assert out[0, 0] < 0.9 and out[0, 1] > 0.1  # large ones shrink, small ones grow


def test_labels_only_marks_each_rows_own_winner() -> None:
    p = torch.eye(4)[[2, 0, 3, 1]] * 0.7 + 0.075  # four rows, four different winners
    out = defence("labels")(p)
    assert torch.equal(out, torch.eye(4)[[2, 0, 3, 1]])
    assert torch.equal(out.sum(1), torch.ones(4))  # one mark per row, not every row's winner


def _vertex_deviation(y: torch.Tensor, s: torch.Tensor, v: torch.Tensor, h: torch.Tensor) -> float:
    """2 (1 - cos(G^T v, G^T y)) with G the true gradient of a linear layer's log-softmax."""

    def grad(target: torch.Tensor) -> torch.Tensor:
        w = torch.zeros(len(s), len(h), requires_grad=True)
        logits = s.log() + w @ h  # a linear last layer at W = 0 whose softmax is s
        (target * torch.log_softmax(logits, 0)).sum().backward()
        return w.grad.flatten()

    gy, gv = grad(y), grad(v)
    return float(2 * (1 - torch.nn.functional.cosine_similarity(gv, gy, dim=0)))


def test_mad_picks_the_vertex_of_largest_gradient_deviation_within_budget() -> None:
    y, s = probs(8, seed=1), probs(8, seed=2, scale=1.0)
    out = mad_targets(y, s, epsilon=0.4)
    assert ((out - y).abs().sum(1) <= 0.4 + 1e-5).all()
    assert torch.allclose(out.sum(1), torch.ones(8)) and (out >= 0).all()
    h = torch.randn(5)
    for i in range(8):
        devs = [_vertex_deviation(y[i], s[i], torch.eye(10)[k], h) for k in range(10)]
        chosen = int((out[i] - y[i]).argmax())  # the vertex the release moved towards
        assert devs[chosen] == pytest.approx(max(devs), rel=1e-4)
    assert torch.equal(mad_targets(y, s, epsilon=0.0), y)


def test_mad_argmax_keeps_top1_and_the_defence_needs_inputs() -> None:
    y, s = probs(256, seed=3, scale=1.0), probs(256, seed=4, scale=1.0)
    out = mad_targets(y, s, epsilon=2.0, keep_top1=True)
    assert torch.equal(out.argmax(1), y.argmax(1))
    assert (mad_targets(y, s, epsilon=2.0).argmax(1) != y.argmax(1)).any()
    mad = defence("mad", epsilon=0.5)
    with pytest.raises(ValueError, match="needs the batch of inputs"):
        mad(y[:4])
    x = torch.randn(4, 1, 8, 8)
    a, b = mad(y[:4], x), defence("mad", epsilon=0.5)(y[:4], x)
    assert torch.equal(a, b)  # the seeded surrogate is the same in every instance
    assert not torch.equal(a, y[:4])


def test_misinformation_answers_unsure_queries_with_misinformation() -> None:
    sure = torch.tensor([[0.97] + [0.03 / 9] * 9])
    unsure = torch.tensor([[0.2, 0.15] + [0.65 / 8] * 8])
    am = defence("misinformation", tau=0.5, nu=50.0)
    assert torch.allclose(am(sure), sure, atol=1e-3)
    out = am(unsure)
    assert out[0, 0] < 0.05 and out.argmax() != 0  # the top class is buried
    assert torch.allclose(out.sum(1), torch.ones(1))
    mix = misinformation_mix(unsure, torch.full_like(unsure, 0.1), tau=0.2, nu=1e6)
    assert torch.allclose(mix, 0.5 * unsure + 0.05)  # s == tau: an even mix


def test_chain_applies_its_steps_in_order() -> None:
    p = probs()
    torch.manual_seed(1)
    chained = build_defence({"name": "chain", "params": {"steps": [
        {"name": "noise", "params": {"scale": 0.05}}, {"name": "topk", "params": {"k": 2}}]}})(p)
    torch.manual_seed(1)
    by_hand = defence("topk", k=2)(defence("noise", scale=0.05)(p))
    assert torch.equal(chained, by_hand)
    assert DefenceConfig(name="chain", params={"steps": [{"name": "labels"}, {"name": "topk"}]}
                         ).label() == "labels+topk(k=1)"


def test_released_logits_are_log_probabilities_with_a_floor() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0]])
    z = released_logits(p)
    assert torch.allclose(z, torch.tensor([[math.log(0.5), math.log(0.5), math.log(RELEASE_FLOOR)]]))
    assert torch.allclose(torch.softmax(z, 1), p, atol=1e-5)


def test_defended_teacher_gives_methods_the_released_outputs(runtime) -> None:
    t = tiny_teacher(epochs=1)
    train_run(t, runtime)
    cfg = student_config(t, defence={"name": "topk", "params": {"k": 2}})
    teacher = load_teacher(cfg, runtime.runs_dir, None)
    assert isinstance(teacher, DefendedEnsemble)
    x = torch.randn(6, 1, 8, 8)
    raw = Ensemble([load_run_model(t, runtime.runs_dir)]).logits(x)
    want = released_logits(defence("topk", k=2)(torch.softmax(raw, 1)))
    assert torch.allclose(teacher.logits(x), want)
    assert torch.equal((torch.softmax(teacher.logits(x), 1) > 1e-3).sum(1), torch.full((6,), 2))
    with pytest.raises(NotImplementedError, match="data-free"):
        teacher.forward_features_grad(x)
    assert type(load_teacher(student_config(t), runtime.runs_dir, None)) is Ensemble


class _Bf16Logits(torch.nn.Module):
    """A teacher computing in bf16 (as under autocast): fixed logits, one row per input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.z = logits.bfloat16()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z[: len(x)]


def test_released_outputs_keep_their_top1_when_the_teacher_computes_in_bf16() -> None:
    # MAD-argmax keeps each row's top-1 by a hair: the released logits must stay float32, or
    # bf16 rounding ties the top-1 with the poisoned class and argmax picks the lower index
    torch.manual_seed(0)
    z = torch.randn(512, 10) * 2
    teacher = DefendedEnsemble([_Bf16Logits(z)], defence("mad", epsilon=1.0, keep_top1=True))
    released = teacher.logits(torch.randn(512, 1, 8, 8))
    assert released.dtype == torch.float32
    top1 = _Bf16Logits(z).z.float().argmax(1)
    assert torch.equal(released.argmax(1), top1)


def test_a_student_learns_from_a_labels_only_teacher(runtime) -> None:
    t = tiny_teacher(epochs=6)
    assert train_run(t, runtime).best_acc > 60.0
    for method in ("kd", "hard-label"):
        res = train_run(student_config(t, method=method, defence={"name": "labels"}, epochs=4), runtime)
        assert res.best_acc > 30.0  # digits: well above chance (10 %)


def test_hard_label_loss_is_cross_entropy_on_the_teachers_winner() -> None:
    torch.manual_seed(0)
    t_logits = torch.randn(5, 10)

    class Fixed:
        def logits(self, x: torch.Tensor) -> torch.Tensor:
            return t_logits

    cls = METHODS.get("hard-label")
    method = cls(torch.nn.Linear(3, 10), Fixed(), cls.Params())
    x, y = torch.randn(5, 3), torch.randint(0, 10, (5,))
    logits, losses = method.forward_train(x, y)
    assert torch.allclose(sum(losses.values()), cross_entropy(logits, t_logits.argmax(1)))
    _, without = method.forward_train(x, None)  # the labels are never read
    assert torch.allclose(sum(without.values()), sum(losses.values()))


def test_data_classes_keep_only_those_training_images() -> None:
    d = tiny_teacher(epochs=1).model_dump()
    d["data"]["classes"] = [0, 2, 4]
    views = data_views(parse_config(d).data, None)
    assert set(views.train_labels.unique().tolist()) == {0, 2, 4}
    assert set(views.eval_labels.unique().tolist()) == set(range(10))  # evaluation keeps all
    d["data"]["classes"] = [1, 1]
    with pytest.raises(ConfigError, match="data.classes"):
        parse_config(d)


def test_parse_defence_names_the_bad_field() -> None:
    assert torch.equal(parse_defence("{name: labels}", 10)(torch.tensor([[0.2, 0.8]])),
                       torch.tensor([[0.0, 1.0]]))
    for text, msg in [("{name: topk, params: {k: 11}}", "--defence: params.k: 11 is larger"),
                      ("{name: noise, params: {scale: -1}}", "--defence: params.scale"),
                      ("{name: blur}", "--defence: name: unknown defence 'blur'"),
                      ("topk", "--defence: expected a mapping"), ("{name: [", "--defence: not valid YAML")]:
        with pytest.raises(ValueError, match=re.escape(msg)):
            parse_defence(text, 10)


def test_serve_answers_through_a_defence(tmp_path) -> None:
    from starlette.testclient import TestClient

    from undistill.serve import create_app
    from undistill.teachers import Teacher as Source

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    torch.jit.save(torch.jit.trace(m, torch.randn(2, 1, 8, 8)), tmp_path / "t.ts")
    teacher = Source.open(tmp_path / "t.ts").bind_dataset(get_dataset("digits", None))
    x = torch.randn(5, 1, 8, 8)

    def ask(policy) -> torch.Tensor:
        r = TestClient(create_app(teacher, policy=policy)).post("/v2/models/model/infer", json={
            "inputs": [{"name": "input", "shape": [5, 1, 8, 8], "datatype": "FP32",
                        "data": x.flatten().tolist()}]})
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        return torch.tensor(out["data"]).reshape(out["shape"])

    full = ask(None)
    assert torch.equal(ask(parse_defence("{name: labels}", 10)), defence("labels")(full))
    mad = ask(parse_defence("{name: mad, params: {epsilon: 0.5}}", 10))  # reads the queries too
    assert torch.allclose(mad, defence("mad", epsilon=0.5)(full, x), atol=1e-6)
    assert not torch.allclose(mad, full)
