"""Analysis: KL to a reference, output statistics, features and t-SNE (pure, on tensors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from undistill.analysis import (
    class_mean_distributions,
    ensemble,
    entropy,
    example_indices,
    features,
    fixed_subset,
    kl_to_reference,
    output_stats,
    peak_counts,
    predict_logits,
    tsne,
    tsne_perplexity,
)
from undistill.models import build_model


def test_kl_of_a_model_to_itself_is_zero() -> None:
    z = torch.randn(16, 10, generator=torch.Generator().manual_seed(0)) * 5
    assert kl_to_reference(z, z) == pytest.approx(0.0, abs=1e-12)
    assert kl_to_reference(z, z, temperature=4.0) == pytest.approx(0.0, abs=1e-12)


def test_kl_is_nonnegative_and_matches_a_hand_computation() -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        a, b = torch.randn(8, 5, generator=g) * 3, torch.randn(8, 5, generator=g) * 3
        assert kl_to_reference(a, b) >= 0.0
    # two samples, three classes, by hand: KL(p||q) = sum p log(p/q), mean over samples
    p = [[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]]
    q = [[0.4, 0.4, 0.2], [0.1, 0.1, 0.8]]
    hand = sum(sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr, strict=True))
               for pr, qr in zip(p, q, strict=True)) / 2
    lp, lq = torch.tensor(p).log(), torch.tensor(q).log()  # logits whose softmax is p, q
    assert kl_to_reference(lp, lq) == pytest.approx(hand, rel=1e-6)
    # at temperature T the logits are divided by T first
    assert kl_to_reference(2 * lp, 2 * lq, temperature=2.0) == pytest.approx(hand, rel=1e-6)
    with pytest.raises(ValueError, match="shape"):
        kl_to_reference(lp, lq[:, :2])


def test_peak_counts_on_crafted_distributions() -> None:
    one_hot = torch.zeros(1, 10, dtype=torch.float64)
    one_hot[0, 3] = 1.0
    uniform = torch.full((1, 10), 0.1, dtype=torch.float64)
    two = torch.tensor([[0.45, 0.45, 0.1] + [0.0] * 7], dtype=torch.float64)
    assert peak_counts(one_hot).tolist() == [1]
    assert peak_counts(one_hot, labels=torch.tensor([3])).tolist() == [0]  # incorrect peaks
    assert peak_counts(uniform, 0.1).tolist() == [0]  # strictly above the threshold
    assert peak_counts(uniform, 0.05).tolist() == [10]
    assert peak_counts(two, 0.1).tolist() == [2]
    assert peak_counts(two, 0.1, labels=torch.tensor([0])).tolist() == [1]
    # through output_stats, from logits: uniform logits -> 0 peaks at 0.1, entropy log C
    s = output_stats(torch.zeros(4, 10), torch.tensor([0, 1, 2, 3]), threshold=0.1)
    assert s["peaks"] == 0 and s["incorrect_peaks"] == 0
    assert s["entropy"] == pytest.approx(math.log(10))
    assert s["target_prob"] == pytest.approx(0.1) and s["max_prob"] == pytest.approx(0.1)
    sharp = output_stats(torch.tensor([[50.0, 0.0, 0.0]]), torch.tensor([0]))
    assert sharp["peaks"] == 1 and sharp["incorrect_peaks"] == 0 and sharp["accuracy"] == 100.0
    assert sharp["entropy"] == pytest.approx(0.0, abs=1e-12)


def test_entropy_of_uniform_is_log_c() -> None:
    for c in (2, 10, 100):
        assert float(entropy(torch.full((3, c), 1.0 / c))[0]) == pytest.approx(math.log(c))
    assert float(entropy(torch.tensor([[1.0, 0.0]]))[0]) == 0.0  # 0 log 0 = 0


def test_class_mean_distributions() -> None:
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [10.0, 0.0, 0.0]])
    m = class_mean_distributions(logits, torch.tensor([0, 1, 0]), 3)
    assert m.shape == (3, 3) and torch.isnan(m[2]).all()  # class 2 has no samples
    assert torch.allclose(m[:2].sum(1), torch.ones(2, dtype=torch.float64))
    assert m[0, 0] > 0.99 and m[1, 1] > 0.99


def test_ensemble_averages_logits() -> None:
    torch.manual_seed(0)
    a = build_model("cnn", num_classes=10, in_channels=1, width=0.25, image_size=8)
    b = build_model("cnn", num_classes=10, in_channels=1, width=0.25, image_size=8)
    a.eval(), b.eval()
    x = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    za, zb = (predict_logits(m, x, (0.5,), (0.25,)) for m in (a, b))
    ze = predict_logits(ensemble([a, b]), x, (0.5,), (0.25,))
    assert torch.allclose(ze, (za + zb) / 2, atol=1e-6)


def test_features_are_the_classifier_input() -> None:
    torch.manual_seed(0)
    m = build_model("cnn", num_classes=10, in_channels=1, width=0.25, image_size=8).eval()
    x = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    f = features(m, x, (0.5,), (0.25,), batch_size=3)
    assert f.shape == (7, m.feature_dim) and f.dtype == torch.float32
    from undistill.data import normalize

    with torch.no_grad():
        assert torch.allclose(f, m.forward_features(normalize(x, (0.5,), (0.25,))).features)
    with pytest.raises(ValueError, match="mean and std"):
        features(m, x)


def test_tsne_shape_determinism_and_small_n() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.cat([torch.randn(15, 6, generator=g), torch.randn(15, 6, generator=g) + 8])
    e1, e2 = tsne(f, seed=3, max_iter=250), tsne(f, seed=3, max_iter=250)
    assert e1.shape == (30, 2) and np.isfinite(e1).all()
    np.testing.assert_array_equal(e1, e2)
    assert tsne_perplexity(30) == pytest.approx(29 / 3) and tsne_perplexity(5000) == 30.0
    assert tsne_perplexity(2) == 1.0
    assert tsne(f[:4], seed=0, max_iter=250).shape == (4, 2)  # perplexity clipped below N
    with pytest.raises(ValueError):
        tsne(f[:1])


def test_fixed_subsets_and_example_indices() -> None:
    a, b = fixed_subset(100, 10, seed=0), fixed_subset(100, 10, seed=0)
    assert torch.equal(a, b) and a.numel() == 10 and torch.equal(a, a.sort().values)
    assert fixed_subset(5, 10).tolist() == [0, 1, 2, 3, 4]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    ex = example_indices(labels, 3, seed=0)
    assert sorted(labels[ex].tolist()) == [0, 1, 2]  # distinct classes first
    correct = torch.tensor([False, True, True, False, False, True])
    ex = example_indices(labels, 3, seed=0, correct=correct)
    assert sorted(ex.tolist()) == [1, 2, 5]
    assert example_indices(labels, 5, seed=1).unique().numel() == 5


def test_kl_table_of_models_and_an_ensemble() -> None:
    from undistill.analysis import EvalData, kl_table

    torch.manual_seed(0)
    a, b = (build_model("cnn", num_classes=10, in_channels=1, width=0.25, image_size=8).eval()
            for _ in range(2))
    data = EvalData(torch.randint(0, 256, (20, 1, 8, 8), dtype=torch.uint8),
                    torch.randint(0, 10, (20,)), "test", (0.5,), (0.25,), [str(i) for i in range(10)])
    rows = kl_table({"a": a, "b": b, "ens": ensemble([a, b])}, a, data, temperatures=(1.0, 4.0))
    assert [r["model"] for r in rows] == ["a", "b", "ens"]
    assert rows[0]["kl_T1"] == pytest.approx(0.0, abs=1e-12) and rows[0]["kl_T4"] == pytest.approx(
        0.0, abs=1e-12)
    assert rows[1]["kl_T1"] > 0 and rows[2]["kl_T1"] > 0 and rows[1]["split"] == "test"
    assert {"peaks", "entropy", "accuracy", "target_prob"} <= set(rows[0])
