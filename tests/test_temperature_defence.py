"""The temperature defence: flatter answers, the same class order, undone by a thief knowing T."""

from __future__ import annotations

import pytest
import torch

from undistill.defences import DEFENCES, build_defence, parse_defence


def test_it_flattens_keeps_the_order_and_can_be_undone() -> None:
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(32, 10) * 3, dim=1)
    out = build_defence({"name": "temperature", "params": {"temperature": 4.0}}, 10)(p)
    assert torch.allclose(out.sum(1), torch.ones(32))
    assert torch.equal(out.argsort(1), p.argsort(1))
    entropy = lambda q: -(q * q.log()).sum(1)  # noqa: E731
    assert (entropy(out) > entropy(p)).all()
    back = out.pow(4.0)
    assert torch.allclose(back / back.sum(1, keepdim=True), p, atol=1e-5)


def test_it_is_registered_and_validates_its_parameter() -> None:
    assert "temperature" in DEFENCES
    assert parse_defence("{name: temperature, params: {temperature: 2}}").params.temperature == 2
    with pytest.raises(ValueError, match="temperature"):
        parse_defence("{name: temperature, params: {temperature: 0}}")
