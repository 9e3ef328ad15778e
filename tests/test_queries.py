"""Query strategies (undistill.queries): the contract, and each strategy's defining behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from undistill.queries import STRATEGIES, PoolState, Strategy, select
from undistill.queries.knockoff import KnockoffStrategy, kmeans, policy, rewards, share, tiny_features

K = 5


def _probs(n: int, seed: int) -> torch.Tensor:
    return torch.softmax(torch.randn(n, K, generator=torch.Generator().manual_seed(seed)) * 3, dim=1)


def _state(n: int = 60, paid: int = 10, student: bool = True) -> PoolState:
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    rounds = [torch.randperm(n, generator=g)[:paid]] if paid else []
    answers = [_probs(paid, 1)] if paid else []
    if not student:
        return PoolState(pool, rounds, answers)
    return PoolState(pool, rounds, answers, _probs(n, 2), torch.randn(n, 6, generator=g))


def _perm(n: int, seed: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def test_registry_names_match_classes():
    assert STRATEGIES.names() == ["k-center", "knockoff", "random", "uncertainty"]
    for name in STRATEGIES.names():
        cls = STRATEGIES.get(name)
        assert cls.name == name and cls.description
    assert {n for n in STRATEGIES.names() if STRATEGIES.get(n).needs_student} == {"k-center", "uncertainty"}


@pytest.mark.parametrize("name", STRATEGIES.names())
@pytest.mark.parametrize("paid", [0, 10])
def test_contract_distinct_unpaid_deterministic(name: str, paid: int):
    state = _state(paid=paid)
    out = select(name, 7, state, seed=3)
    assert out.dtype == torch.long and out.shape == (7,)
    assert out.unique().numel() == 7 and out.min() >= 0 and out.max() < 60
    assert not set(out.tolist()) & set(state.paid.tolist())
    assert torch.equal(out, select(name, 7, state, seed=3))
    if name in ("random", "knockoff"):
        assert not torch.equal(out, select(name, 7, state, seed=4))


def test_paid_is_concatenation_of_rounds():
    assert PoolState(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), [], []).paid.dtype == torch.long
    state = PoolState(torch.zeros(9, 1, 2, 2, dtype=torch.uint8), [torch.tensor([4, 1]), torch.tensor([7])],
                      [_probs(2, 0), _probs(1, 0)])
    assert state.paid.tolist() == [4, 1, 7]


def test_random_is_a_fixed_permutation_walk():
    state = _state(paid=0, student=False)
    ten, thirty = select("random", 10, state, seed=5), select("random", 30, state, seed=5)
    assert torch.equal(ten, _perm(60, 5)[:10]) and torch.equal(ten, thirty[:10])
    after = PoolState(state.pool, [ten], [_probs(10, 0)])
    assert torch.equal(select("random", 10, after, seed=5), thirty[10:20])


def test_uncertainty_picks_highest_entropy_unpaid():
    n = 8
    probs = torch.zeros(n, 4)
    probs[:, 0] = 1.0  # entropy 0
    probs[2] = torch.tensor([0.25, 0.25, 0.25, 0.25])  # the highest, but paid below
    probs[5] = torch.tensor([0.4, 0.3, 0.2, 0.1])
    probs[6] = torch.tensor([0.5, 0.5, 0.0, 0.0])
    probs[1] = torch.tensor([0.9, 0.1, 0.0, 0.0])
    pool = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    state = PoolState(pool, [torch.tensor([2])], [torch.ones(1, 4) / 4], probs)
    assert select("uncertainty", 3, state, seed=0).tolist() == [5, 6, 1]
    # ties (the zero-entropy images) follow the fixed permutation, as in `random`
    tied = [i for i in _perm(n, 0).tolist() if i in (0, 3, 4, 7)]
    assert select("uncertainty", 5, state, seed=0).tolist() == [5, 6, 1, *tied[:2]]


def test_active_strategies_first_round_is_random_then_need_student():
    bare = _state(paid=0, student=False)
    for name in ("uncertainty", "k-center"):
        assert torch.equal(select(name, 9, bare, seed=2), select("random", 9, bare, seed=2))
        with pytest.raises(ValueError, match=name):
            select(name, 3, _state(paid=10, student=False), seed=0)


def _three_clusters() -> torch.Tensor:
    jitter = torch.randn(15, 2, generator=torch.Generator().manual_seed(0))
    centers = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]]).repeat_interleave(5, dim=0)
    return centers + jitter  # rows 0-4 near (0,0), 5-9 near (100,0), 10-14 near (0,100)


def test_k_center_covers_far_clusters_first():
    feats = _three_clusters()
    pool = torch.zeros(15, 1, 2, 2, dtype=torch.uint8)
    fresh = select("k-center", 3, PoolState(pool, [], [], _probs(15, 0), feats), seed=1)
    assert sorted(i // 5 for i in fresh.tolist()) == [0, 1, 2]
    one_paid = PoolState(pool, [torch.tensor([2])], [_probs(1, 0)], _probs(15, 0), feats)
    assert sorted(i // 5 for i in select("k-center", 2, one_paid, seed=1).tolist()) == [1, 2]
    # with features absent it falls back to the probabilities, and never re-picks paid images
    paid = torch.tensor([0, 1, 5, 6, 10, 11])
    state = PoolState(pool, [paid], [_probs(6, 0)], _probs(15, 0))
    out = select("k-center", 9, state, seed=1)
    assert sorted(out.tolist()) == sorted(set(range(15)) - set(paid.tolist()))


def _grey_levels(per: int = 40) -> torch.Tensor:
    levels = torch.tensor([0, 80, 160, 240], dtype=torch.uint8)
    return levels.repeat_interleave(per).view(-1, 1, 1, 1).expand(-1, 3, 4, 4).contiguous()


def test_knockoff_arms_are_the_obvious_clusters():
    pool = _grey_levels()
    arm = kmeans(tiny_features(pool), KnockoffStrategy.arms, torch.Generator().manual_seed(0))
    assert arm.view(4, 40).unique(dim=1).numel() == 4  # one arm per grey level, 4 arms


def test_knockoff_rewarding_arm_gets_more_picks():
    pool = _grey_levels()
    paid = torch.cat([torch.arange(q * 40, q * 40 + 10) for q in range(4)])
    paid = paid[_perm(40, 1)]
    answers = torch.full((40, K), 1.0 / K)  # uninformative answers...
    high = paid < 40
    answers[high] = torch.eye(K)[0]  # ...except for the darkest images: certain answers
    state = PoolState(pool, [paid], [answers])
    for seed in range(3):
        out = select("knockoff", 60, state, seed=seed)
        assert (out < 40).sum() >= 20  # a uniform policy would give 15 of 60
    # the same replay, directly: the rewarding arm's probability rises above uniform
    arm = paid // 40
    pi = policy(arm.tolist(), rewards(arm, answers, None).tolist(), 4, KnockoffStrategy.lr)
    assert pi[0] > 0.4 and torch.allclose(pi.sum(), torch.tensor(1.0, dtype=pi.dtype))
    assert torch.allclose(policy([], [], 4, 0.1), torch.full((4,), 0.25, dtype=torch.float64))


def test_knockoff_reward_terms():
    arm = torch.tensor([0, 0, 1])
    answers = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.5, 0.5]])
    student = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.5, 0.5]])
    r = rewards(arm, answers, None)
    # certainty 1, 1, 0; diversity: |y - 0| = 1, |y - mean of earlier| = 0, |y| = 0.707
    assert torch.allclose(r, torch.tensor([2.0, 1.0, math.sqrt(0.5)], dtype=r.dtype))
    r = rewards(arm, answers, student)
    assert torch.allclose(r, torch.tensor([3.0, 1.0, math.sqrt(0.5) + 1.0], dtype=r.dtype))


def test_knockoff_share_moves_overflow_to_arms_with_room():
    pi = torch.tensor([0.9, 0.05, 0.05], dtype=torch.float64)
    room = torch.tensor([2, 10, 10])
    counts = share(12, pi, room, torch.Generator().manual_seed(0))
    assert counts.sum() == 12 and (counts <= room).all() and counts[0] == 2


def test_select_rejects_bad_k_and_unknown_names():
    state = _state(paid=10)
    with pytest.raises(ValueError, match=r"k=0.*50"):
        select("random", 0, state, seed=0)
    with pytest.raises(ValueError, match=r"k=51.*50"):
        select("random", 51, state, seed=0)
    assert select("random", 50, state, seed=0).numel() == 50
    with pytest.raises(KeyError, match="known: k-center, knockoff, random, uncertainty"):
        select("nope", 1, state, seed=0)
    overlap = PoolState(state.pool, [torch.tensor([1, 2]), torch.tensor([2])], [_probs(2, 0), _probs(1, 0)])
    with pytest.raises(ValueError, match="disjoint"):
        select("random", 1, overlap, seed=0)


def test_select_checks_the_strategy_output(monkeypatch: pytest.MonkeyPatch):
    class RepeatsPaid(Strategy):
        name = "bad"

        def select(self, k, state, generator):
            return state.paid[:k]

    monkeypatch.setitem(STRATEGIES._items, "bad", RepeatsPaid)
    with pytest.raises(RuntimeError, match="'bad'.*already paid"):
        select("bad", 2, _state(paid=10), seed=0)
