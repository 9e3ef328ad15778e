"""The thief's transfer set (undistill.thief): what it pays for, round by round, the stored
answers its student learns from (augmented views answered by their clean image's answer), the
held-out paid answers it stops on, the unpaid pool it hands a semi-supervised method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import digits_torchscript

from undistill.config import ConfigError, Runtime, ThiefConfig
from undistill.data import DeviceLoader
from undistill.engine import train_run
from undistill.runs import get_dataset, read_result, run_dir
from undistill.stealing import open_teacher, opener_for, student_config
from undistill.thief import (
    HOLDOUT_SPLIT,
    TRANSFER,
    PaidAnswers,
    holdout_size,
    loader_repeat,
    out_of_patience,
    round_sizes,
    selector_config,
    thief_optim,
)

FAST = ["optim.batch_size=32"]


def test_round_sizes_double_and_end_at_the_budget() -> None:
    assert round_sizes(1001, 4) == [125, 250, 500, 1000]
    assert round_sizes(1001, 1) == [1000]
    assert round_sizes(3, 4) == [1, 2]  # too small to halve four times: fewer rounds
    assert holdout_size(1000, 0.1) == 100 and holdout_size(9, 0.1) == 0
    assert holdout_size(12, 0.4) == 5 and holdout_size(100, 0.0) == 0


def test_the_student_trains_for_its_steps_whatever_the_budget() -> None:
    optim = {"name": "adam", "lr": 1e-3, "schedule": "constant", "milestones": [], "epochs": 15,
             "batch_size": 128}
    for budget in (101, 1001, 10001):
        o = thief_optim(optim, {"steps": 3000, "eval_every": 100}, budget)
        n = budget - 1 - holdout_size(budget - 1, 0.1)
        steps_per_epoch = -(-n * loader_repeat(n, 128, 100) // 128)
        assert abs(o["epochs"] * steps_per_epoch - 3000) <= steps_per_epoch


def test_paid_answers_follow_the_loaders_batch_whatever_the_view() -> None:
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 1, 4, 4).contiguous()
    answers = torch.eye(6)
    loader = DeviceLoader(images, torch.zeros(6, dtype=torch.long), batch_size=4, mean=[0.0],
                          std=[1.0], augment=None, shuffle=True, drop_last=True, seed=3, repeat=2)
    teacher = PaidAnswers(answers)
    with pytest.raises(RuntimeError, match="train loader"):
        teacher.logits(torch.zeros(4, 1, 4, 4))
    teacher.follow(loader)
    assert len(loader) == 3  # two passes over 6 images, full batches of 4
    for x, _ in loader.epoch(0):
        # the answer is the one of the image the batch holds (its pixel value is its index)
        assert torch.equal(teacher.logits(x).argmax(1), (x[:, 0, 0, 0] * 255).round().long())


def test_a_thief_needs_a_budget_and_no_labels() -> None:
    from undistill.config import parse_config

    base = {"data": {"name": "digits", "augment": False, "labels": False},
            "model": {"arch": "cnn", "width": 0.25}, "method": {"name": "kd"},
            "teachers": [{"data": {"name": "digits"}, "model": {"arch": "cnn"}}],
            "thief": {"strategy": "random"}}
    with pytest.raises(ConfigError, match="thief"):
        parse_config(base)
    with pytest.raises(ConfigError, match="thief"):
        parse_config({**base, "budget": 50, "data": {**base["data"], "labels": True}})
    with pytest.raises(ConfigError, match="unknown query strategy 'psychic'"):
        parse_config({**base, "budget": 50, "thief": {"strategy": "psychic"}})
    assert parse_config({**base, "budget": 50}).thief == ThiefConfig()


def test_patience_counts_evaluations_since_the_first_best() -> None:
    from undistill.config import parse_config

    cfg = parse_config({"data": {"name": "digits", "augment": False, "labels": False},
                        "model": {"arch": "cnn"}, "method": {"name": "kd"}, "budget": 50,
                        "teachers": [{"data": {"name": "digits"}, "model": {"arch": "cnn"}}],
                        "thief": {"patience": 2}})
    h = [{"eval/acc": a} for a in (50, 60, 60, 55)]
    assert not out_of_patience(cfg, h[:3]) and out_of_patience(cfg, h)
    assert not out_of_patience(cfg.model_copy(update={"thief": None}), h)
    # a tie in agreement goes to the lower held-out cross-entropy (small held-out sets tie often)
    tied = [{"eval/acc": 60, "eval/loss": v} for v in (1.0, 0.8, 0.9, 0.95)]
    assert not out_of_patience(cfg, tied[:3]) and out_of_patience(cfg, tied)
    assert out_of_patience(cfg, [{"eval/acc": 60, "eval/loss": 0.8}, *tied[2:]])


@pytest.fixture
def thief_setup(tmp_path: Path):
    model = digits_torchscript(tmp_path / "teacher.ts")
    runs = tmp_path / "runs"
    opener = opener_for(runs, None)
    t = open_teacher(model, "digits", runs_dir=runs, opener=opener)
    runtime = Runtime(runs_dir=runs, device="cpu", progress=False, opener=opener)

    def config(strategy: str = "random", budget: int = 121, rounds: int = 1, method: str = "kd",
               **thief):
        return student_config(t, "digits", "cnn", method, budget, 0.25, labels=False, sets=FAST,
                              thief={"strategy": strategy, "rounds": rounds, "steps": 6,
                                     "eval_every": 2, **thief})
    return config, runtime


def test_a_random_thief_pays_for_budget_minus_one_images_and_holds_some_back(thief_setup) -> None:
    config, runtime = thief_setup
    cfg = config()
    result = train_run(cfg, runtime)
    out = Path(result.run_dir)
    transfer = json.loads((out / TRANSFER).read_text())
    paid = [i for r in transfer["rounds"] for i in r]
    assert len(paid) == len(set(paid)) == 120
    assert len(transfer["holdout"]) == 12 and set(transfer["holdout"]) <= set(paid)
    assert result.eval_split == HOLDOUT_SPLIT
    # a smaller budget's images are the first ones of the larger (one fixed order)
    small = train_run(config(budget=61), runtime)
    small_paid = json.loads((Path(small.run_dir) / TRANSFER).read_text())["rounds"][0]
    assert small_paid == paid[:60]


def test_an_active_thief_pays_for_its_selectors_rounds_then_its_own(thief_setup) -> None:
    config, runtime = thief_setup
    cfg = config("uncertainty", budget=121, rounds=2)
    selector = selector_config(cfg)
    assert selector.method.name == "kd" and selector.budget == 61
    assert selector.thief.rounds == 1 and selector.thief.strategy == "random"
    assert selector.seed == cfg.data.subset_seed
    train_run(cfg, runtime)
    mine = json.loads((run_dir(cfg, runtime.runs_dir) / TRANSFER).read_text())["rounds"]
    theirs = json.loads((run_dir(selector, runtime.runs_dir) / TRANSFER).read_text())["rounds"]
    assert [len(r) for r in mine] == [60, 60] and mine[0] == theirs[0]
    assert not set(mine[0]) & set(mine[1])
    # the second round is the selector student's most uncertain unpaid images, not random ones
    random_next = json.loads((Path(train_run(config(budget=121), runtime).run_dir) / TRANSFER
                              ).read_text())["rounds"][0][60:]
    assert set(mine[1]) != set(random_next)
    assert read_result(run_dir(selector, runtime.runs_dir))["result"]["status"] in (
        "complete", "early_stopped")


def test_a_semi_supervised_thief_gets_the_images_it_did_not_pay_for(thief_setup, monkeypatch
                                                                     ) -> None:
    from undistill.methods.semi import SemiSupervised

    seen = {}
    original = SemiSupervised.attach_unpaid

    def spy(self, pool):
        seen["n"] = len(pool)
        original(self, pool)

    monkeypatch.setattr(SemiSupervised, "attach_unpaid", spy)
    config, runtime = thief_setup
    result = train_run(config(method="semi-kd"), runtime)
    pool = get_dataset("digits", None).train_labels.numel()
    assert seen["n"] == pool - 120
    assert "train/unpaid" in json.loads(
        (Path(result.run_dir) / "metrics.jsonl").read_text().splitlines()[0])


def test_the_thiefs_own_query_data_is_its_pool(thief_setup) -> None:
    from undistill.thief_pool import convert, register_arrays

    config, runtime = thief_setup
    rng = torch.Generator().manual_seed(0)
    mine = torch.randint(0, 256, (300, 16, 16, 3), generator=rng, dtype=torch.uint8)  # NHWC, RGB
    name = register_arrays(mine.numpy())
    assert name.startswith("arrays-") and register_arrays(mine) == name
    cfg = config(budget=101, query_data=name)
    other = config(budget=101, query_data=register_arrays(mine[:200]))
    assert cfg.run_id != other.run_id != config(budget=101).run_id
    # where the data lives is not its identity; its contents are
    assert config(budget=101, query_data=name, query_root="/elsewhere").run_id == cfg.run_id
    seen = {}
    from undistill import thief as thief_mod

    original = thief_mod.ask

    def spy(teacher, images, *args, **kwargs):
        seen.setdefault("asked", []).append(images.clone())
        return original(teacher, images, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(thief_mod, "ask", spy)
        result = train_run(cfg, runtime)
    paid = json.loads((Path(result.run_dir) / TRANSFER).read_text())["rounds"][0]
    pool = convert(mine.permute(0, 3, 1, 2), 1, 8)  # digits: grey 8x8
    assert torch.equal(seen["asked"][-1], pool[torch.tensor(paid)])
    assert max(paid) < 300 and len(paid) == 100


def test_query_data_errors_are_one_line() -> None:
    from undistill.thief_pool import register_arrays

    with pytest.raises(ValueError, match="uint8"):
        register_arrays(torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match="unknown dataset 'nowhere'"):
        ThiefConfig(query_data="nowhere")


def test_paid_answers_of_an_ensemble_keep_each_members_answer() -> None:
    """The SCM sequence asked by a thief: [k, N, C] stored, each member's answer looked up, the
    ensemble's logits their mean (Eq. 10-11)."""
    images = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    answers = torch.stack([torch.eye(4), 3 * torch.eye(4).flip(1)])
    loader = DeviceLoader(images, torch.zeros(4, dtype=torch.long), batch_size=2, mean=[0.0],
                          std=[1.0], augment=None, shuffle=True, drop_last=True, seed=1)
    teacher = PaidAnswers(answers)
    teacher.follow(loader)
    assert len(teacher) == 2
    for x, _ in loader.epoch(0):
        idx = (x[:, 0, 0, 0] * 255).round().long()
        assert torch.equal(teacher.all_logits(x), answers[:, idx])
        assert torch.allclose(teacher.logits(x), answers[:, idx].mean(0))
    assert len(PaidAnswers(torch.eye(4))) == 1
