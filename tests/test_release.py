"""One release path (issue #20): serve, the defended teacher a student learns from and the defence
leaderboard's utility release the same probabilities for the same teacher, defence and inputs;
``--policy`` is shorthand for the defence of the same name; ``top-k`` is ``topk`` everywhere."""

from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_teacher
from starlette.testclient import TestClient

from undistill import serve as serve_module
from undistill.config import parse_config
from undistill.data import normalize
from undistill.defences import (
    Defence,
    DefenceConfig,
    build_defence,
    parse_defence,
    release,
    released_logits,
)
from undistill.defences.output import LabelsOnly, Round, TopK
from undistill.defences.teacher import DefendedEnsemble
from undistill.serve import create_app, make_policy
from undistill.suites import leaderboard as lb
from undistill.teachers import Teacher as Source

SPEC = {"channels": 1, "image_size": 8, "num_classes": 10}
MEAN, STD = (0.5,), (0.25,)
DEFENCES = [
    None,
    {"name": "labels"},
    {"name": "round", "params": {"decimals": 2}},
    {"name": "misinformation", "params": {"tau": 0.5}},
    {"name": "chain", "params": {"steps": [{"name": "mad", "params": {"epsilon": 0.5}},
                                           {"name": "top-k", "params": {"k": 3}}]}},
]


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()


def served(teacher: Source, policy: Defence | None, x: torch.Tensor) -> torch.Tensor:
    r = TestClient(create_app(teacher, policy=policy)).post("/v2/models/model/infer", json={
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                    "data": x.flatten().tolist()}]})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return torch.tensor(out["data"], dtype=torch.float32).reshape(out["shape"])


def utility_release(m: torch.nn.Module, pixels: torch.Tensor, cfg: dict | None,
                    monkeypatch: pytest.MonkeyPatch) -> torch.Tensor:
    """What the leaderboard's utility measures for model ``m`` on the test images ``pixels``."""
    ds = SimpleNamespace(test_images=pixels, test_labels=torch.zeros(len(pixels), dtype=torch.long),
                         mean=MEAN, std=STD, num_classes=10)
    seen: list[torch.Tensor] = []

    def spy(*args, **kwargs):
        seen.append(lb_released(*args, **kwargs))
        return seen[-1]

    lb_released = lb.released_answers
    monkeypatch.setattr(lb, "get_dataset", lambda *a: ds)
    monkeypatch.setattr(lb, "load_run_model", lambda *a: m)
    monkeypatch.setattr(lb, "released_answers", spy)
    run = SimpleNamespace(data=SimpleNamespace(name="digits", resize=None))
    out = lb.utility(run, run, DefenceConfig.model_validate(cfg) if cfg else None,
                     SimpleNamespace(runs_dir=None, data_root=None))
    assert set(out) == {"utility_acc", "agreement", "ece", "nll"}
    assert len(seen) == 1
    return seen[0]


@pytest.mark.parametrize("cfg", DEFENCES, ids=lambda c: c["name"] if c else "none")
def test_serve_the_defended_teacher_and_the_leaderboard_release_the_same(
        cfg: dict | None, monkeypatch: pytest.MonkeyPatch) -> None:
    m = model()
    pixels = torch.randint(0, 256, (12, 1, 8, 8), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    x = normalize(pixels, MEAN, STD)  # the leaderboard's test images, as the model is asked

    def fresh() -> Defence | None:  # each consumer builds its own, as in practice
        return build_defence(cfg, 10) if cfg else None

    want = release(m, x, fresh())
    assert want.dtype == torch.float32 and want.shape == (12, 10)
    over_http = served(Source.from_module(m, SPEC), fresh(), x)
    assert torch.equal(over_http, want)
    if cfg is not None:  # what a student learns from: the log of the same release
        student_sees = DefendedEnsemble([m], fresh()).logits(x)
        assert torch.equal(student_sees, released_logits(want))
        assert torch.equal(DefendedEnsemble([m], fresh()).all_logits(x)[0], student_sees)
    assert torch.equal(utility_release(m, pixels, cfg, monkeypatch), want)


class _Recording(Defence):
    """Records the inputs it is given; ``needs_inputs`` set per test."""

    seen: list[torch.Tensor | None]

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        self.seen.append(inputs)
        return probs


@pytest.mark.parametrize("needs", [False, True])
def test_inputs_reach_a_defence_by_its_contract_only(needs: bool) -> None:
    d = type("D", (_Recording,), {"needs_inputs": needs})(Defence.Params())
    d.seen = []
    x = torch.randn(3, 1, 8, 8)
    served(Source.from_module(model(), SPEC), d, x)
    DefendedEnsemble([model()], d).logits(x)
    assert len(d.seen) == 2
    for got in d.seen:
        assert torch.equal(got, x) if needs else got is None


def test_serve_answers_through_the_public_raw_answer_and_takes_defences_only() -> None:
    source = inspect.getsource(serve_module)
    assert "_answer(" not in source and "uses_inputs" not in source
    t = Source.from_module(model(), SPEC)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(t.raw_answer(x), t._answer(x))
    with pytest.raises(TypeError, match="^policy: expected an output defence"):
        create_app(t, policy=lambda p: p)
    with pytest.raises(ValueError, match=re.escape("policy: params.k: 11 is larger than the 10 classes")):
        create_app(t, policy=make_policy("top-k", k=11))


@pytest.mark.parametrize(("name", "kind", "params"), [
    ("top-k", TopK, {"k": 3}), ("topk", TopK, {"k": 3}), ("round", Round, {"decimals": 1}),
    ("labels", LabelsOnly, {})])
def test_make_policy_is_the_defence_of_that_name(name: str, kind: type, params: dict) -> None:
    policy = make_policy(name, k=3, decimals=1)
    named = build_defence({"name": name, "params": params})
    assert type(policy) is kind is type(named) and policy.params == named.params
    p = torch.softmax(torch.randn(8, 10, generator=torch.Generator().manual_seed(0)) * 3, 1)
    assert torch.equal(policy(p), named(p))


def test_policy_shorthand_behaviour_is_the_defences() -> None:
    assert make_policy("full") is None
    p = torch.tensor([[0.5, 0.3, 0.2]])
    assert torch.allclose(make_policy("top-k", k=2)(p), torch.tensor([[0.625, 0.375, 0.0]]))  # renormalised
    assert torch.equal(make_policy("round", decimals=1)(torch.tensor([[1.06, -0.06]])),
                       torch.tensor([[1.0, 0.0]]))  # clamped to [0, 1]
    with pytest.raises(ValueError, match="unknown output policy 'noise'"):
        make_policy("noise")
    with pytest.raises(ValueError, match="params.k"):
        make_policy("top-k", k=0)
    with pytest.raises(ValueError, match="params.k: 11 is larger"):
        make_policy("top-k", k=11, num_classes=10)


def test_top_k_is_an_alias_of_topk_that_leaves_configs_and_run_ids_unchanged() -> None:
    alias = DefenceConfig(name="top-k", params={"k": 2})
    assert alias == DefenceConfig(name="topk", params={"k": 2})
    assert alias.model_dump(mode="json") == {"name": "topk", "params": {"k": 2}}
    chain = DefenceConfig(name="chain", params={"steps": [{"name": "top-k"}]})
    assert chain.params["steps"][0]["name"] == "topk"

    def run_id(name: str) -> str:
        d = tiny_teacher(epochs=1).model_dump()
        d.update(method={"name": "kd", "params": {}}, teachers=[tiny_teacher(epochs=1).model_dump()],
                 defence={"name": name, "params": {"k": 2}})
        return parse_config(d).run_id

    assert run_id("top-k") == run_id("topk")


def test_defence_option_accepts_top_k() -> None:
    d = parse_defence("{name: top-k, params: {k: 2}}", 10)
    assert isinstance(d, TopK) and d.params.k == 2
    with pytest.raises(ValueError, match=re.escape("--defence: params.k: 11 is larger")):
        parse_defence("{name: top-k, params: {k: 11}}", 10)
    with pytest.raises(ValueError, match=re.escape("top-k (= topk)")):
        parse_defence("{name: blur}", 10)  # the error lists the alias
