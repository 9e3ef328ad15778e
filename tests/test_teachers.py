"""Teachers from files: TorchScript, torch.export, ONNX, state_dicts (zoo or factory), input
conventions, identities in run ids, and clear errors for bad input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from undistill.config import ConfigError, ExternalTeacherConfig, parse_config
from undistill.runs import get_dataset
from undistill.teachers import Teacher, TeacherError, open_source

DS = get_dataset("digits", None)


def plain_module(num_classes: int = 10, in_channels: int = 1, size: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, num_classes)).eval()


FACTORY = """
import torch
from torch import nn

def build(num_classes, in_channels, image_size):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
"""


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's own architecture, importable as my_models:build."""
    (tmp_path / "my_models.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_models:build"


def batch(n: int = 5) -> torch.Tensor:
    from undistill.data.augment import normalize

    return normalize(DS.train_images[:n], DS.mean, DS.std)


def save_all(m: nn.Module, d: Path) -> dict[str, Path]:
    x = torch.randn(2, 1, 8, 8)
    paths = {k: d / n for k, n in [("torchscript", "m.ts"), ("export", "m.pt2"), ("onnx", "m.onnx"),
                                   ("safetensors", "w.safetensors"), ("pt", "w.pt")]}
    torch.jit.save(torch.jit.trace(m, x), paths["torchscript"])
    ep = torch.export.export(m, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, paths["export"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(paths["onnx"]), input_names=["input"], dynamo=False,
                          dynamic_axes={"input": {0: "n"}})
    from safetensors.torch import save_file

    save_file(m.state_dict(), paths["safetensors"])
    torch.save(m.state_dict(), paths["pt"])
    return paths


def test_every_file_kind_answers_like_the_module(tmp_path: Path, factory: str) -> None:
    m = plain_module()
    paths = save_all(m, tmp_path)
    x = batch()
    want = m(x)
    arch = factory
    teachers = {
        "torchscript": Teacher.from_torchscript(paths["torchscript"]),
        "export": Teacher.from_export(paths["export"]),
        "onnx": Teacher.from_onnx(paths["onnx"]),
        "safetensors": Teacher.from_state_dict(paths["safetensors"], arch),
        "pt": open_source(str(paths["pt"]), arch=arch),
    }
    for name, t in teachers.items():
        t.bind_dataset(DS)
        answer = t.probe()
        assert answer.shape == (1, 10), name
        assert t.spec.outputs == "logits" and t.num_classes == 10
        torch.testing.assert_close(t.logits(x), want, atol=1e-5, rtol=1e-4, msg=name)
    ids = {t.identity for t in teachers.values()}
    assert len(ids) == 5  # kinds and contents differ
    # the same content gives the same identity; other weights another
    assert Teacher.from_onnx(paths["onnx"]).identity == teachers["onnx"].identity
    torch.jit.save(torch.jit.trace(plain_module(num_classes=10).requires_grad_(False).apply(
        lambda mod: nn.init.zeros_(mod.weight) if isinstance(mod, nn.Linear) else None),
        torch.randn(2, 1, 8, 8)), tmp_path / "other.ts")
    assert Teacher.from_torchscript(tmp_path / "other.ts").identity != teachers["torchscript"].identity


def test_input_conventions_from_yaml_beside_the_model(tmp_path: Path) -> None:
    """A teacher wanting 3x16x16 BGR inputs with its own mean/std gets exactly those."""
    torch.jit.save(torch.jit.trace(plain_module(10, 3, 16), torch.randn(2, 3, 16, 16)),
                   tmp_path / "w.pt")
    (tmp_path / "w.yaml").write_text(yaml.safe_dump({
        "image_size": 16, "channels": 3, "channel_order": "bgr", "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25], "num_classes": 10}))
    t = Teacher.open(tmp_path / "w.pt").bind_dataset(DS)
    t.probe()
    seen: list[torch.Tensor] = []
    answer = t._answer
    t._answer = lambda x: seen.append(x) or answer(x)  # what the model is given
    t.logits(batch(2))
    x = seen[-1]
    assert x.shape == (2, 3, 16, 16)
    px = x * 0.25 + 0.5  # back to [0, 1] pixels
    assert torch.allclose(px[:, 0], px[:, 2]) and px.min() >= 0.0 and px.max() <= 1.0 + 1e-5
    raw = DS.train_images[:2].float() / 255
    up = nn.functional.interpolate(raw, size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(px[:, :1], up, atol=1e-5, rtol=1e-5)


def test_bad_files_and_answers_get_clear_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a model")
    with pytest.raises(TeacherError, match="junk.pt: not a model file"):
        Teacher.open(junk)
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"\x00\x01garbage")
    with pytest.raises(TeacherError, match="bad.onnx: not an ONNX model"):
        Teacher.open(bad_onnx)
    with pytest.raises(TeacherError, match="no such model file"):
        Teacher.open(tmp_path / "missing.onnx")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(TeacherError, match="unknown model file type '.txt'"):
        Teacher.open(tmp_path / "x.txt")

    m = plain_module()
    paths = save_all(m, tmp_path)
    with pytest.raises(TeacherError, match="a state_dict, not a whole model; give its architecture"):
        Teacher.open(paths["pt"])
    with pytest.raises(TeacherError, match="does not fit cnn"):
        Teacher.from_state_dict(paths["safetensors"], "cnn").bind_dataset(DS)
    # wrong class count: a 7-class model against 10-class digits
    torch.jit.save(torch.jit.trace(plain_module(num_classes=7), torch.randn(2, 1, 8, 8)),
                   tmp_path / "seven.ts")
    with pytest.raises(TeacherError, match="answers 7 classes but 10 are expected"):
        Teacher.open(tmp_path / "seven.ts").bind_dataset(DS).probe()
    with pytest.raises(TeacherError, match="num_classes is 7 but the data has 10"):
        Teacher.open(tmp_path / "seven.ts", spec={"num_classes": 7}).bind_dataset(DS)

    class NaNs(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :10] * float("nan")

    torch.jit.save(torch.jit.trace(NaNs(), torch.randn(2, 1, 8, 8)), tmp_path / "nan.ts")
    with pytest.raises(TeacherError, match="NaN or infinite"):
        Teacher.open(tmp_path / "nan.ts").bind_dataset(DS).probe()
    with pytest.raises(TeacherError, match=r"fails on the probe of shape \[1, 1, 9, 9\]"):
        Teacher.open(paths["torchscript"], spec={"image_size": 9}).bind_dataset(DS).probe()
    (tmp_path / "bad.yaml").write_text("mean: [0.5]\n")
    torch.jit.save(torch.jit.trace(m, torch.randn(2, 1, 8, 8)), tmp_path / "bad.ts")
    with pytest.raises(TeacherError, match="mean and std: give both or neither"):
        Teacher.open(tmp_path / "bad.ts")


def external(identity: str = "torchscript:0123456789abcdef") -> dict:
    return {"source": "/models/m.ts", "kind": "torchscript", "identity": identity}


def run_dict(**extra) -> dict:
    d = {"data": {"name": "digits", "augment": False}, "model": {"arch": "cnn", "width": 0.25},
         "method": {"name": "kd"}, "external_teachers": [external()]}
    d.update(extra)
    return d


def test_teacher_identity_and_budget_enter_the_run_id() -> None:
    a = parse_config(run_dict())
    moved = run_dict()
    moved["external_teachers"][0]["source"] = "/elsewhere/m.ts"  # same content, other path
    assert parse_config(moved).run_id == a.run_id
    assert parse_config(run_dict(external_teachers=[external("torchscript:fedcba9876543210")])
                        ).run_id != a.run_id
    conv = run_dict()
    conv["external_teachers"][0]["spec"] = {"channel_order": "bgr"}
    assert parse_config(conv).run_id != a.run_id
    client = run_dict()
    client["external_teachers"][0]["client"] = {"concurrency": 9}  # how it is asked: not identity
    assert parse_config(client).run_id == a.run_id
    assert parse_config(run_dict(budget=50)).run_id != a.run_id
    plain = {"data": {"name": "digits"}, "model": {"arch": "cnn"}}
    assert "external_teachers" not in parse_config(plain).identity()  # old run ids unchanged


def test_bad_external_configs_name_the_field() -> None:
    with pytest.raises(ConfigError, match="budget: Input should be greater than or equal to 2"):
        parse_config(run_dict(budget=0))
    with pytest.raises(ConfigError, match="data.augment"):
        parse_config(run_dict(budget=10, data={"name": "digits"}))
    with pytest.raises(ConfigError, match="budget: a query budget needs a teacher"):
        parse_config({"data": {"name": "digits", "augment": False}, "model": {"arch": "cnn"},
                      "budget": 10})
    with pytest.raises(ConfigError, match="kd.*takes 1"):
        parse_config(run_dict(external_teachers=[]))
    with pytest.raises(ValueError, match="arch: a state_dict teacher needs"):
        ExternalTeacherConfig(source="w.pt", kind="state_dict", identity="state_dict:abcdefgh")
    with pytest.raises(ConfigError, match="cannot import"):
        parse_config({"data": {"name": "digits"}, "model": {"arch": "no_such_pkg.mod:fn"}})


def test_factory_architecture_trains_as_a_student(runtime, factory: str) -> None:
    from undistill.executor import ensure_trained

    cfg = parse_config({"data": {"name": "digits", "augment": False},
                        "model": {"arch": factory},
                        "optim": {"epochs": 1, "milestones": [], "batch_size": 256, "lr": 0.05}})
    res = ensure_trained(cfg, runtime)
    assert res.epochs_run == 1 and res.best_acc > 10.0


def test_a_users_model_is_made_nasty_and_inspected(runtime, factory: str, tmp_path: Path) -> None:
    """A state_dict of the user's own architecture is the adversary of a nasty teacher of that
    architecture; ``undistill inspect`` measures both files alike."""
    from typer.testing import CliRunner

    from undistill.cli import app
    from undistill.executor import ensure_trained
    from undistill.runs import load_run_model

    m = plain_module()
    paths = save_all(m, tmp_path)
    t = Teacher.from_state_dict(paths["safetensors"], factory).bind_dataset(DS)
    t.probe()
    cfg = parse_config({"data": {"name": "digits", "augment": False}, "model": {"arch": factory},
                        "method": {"name": "nasty", "params": {"omega": 0.04, "temperature": 4}},
                        "optim": {"epochs": 1, "milestones": [], "batch_size": 256, "lr": 0.05},
                        "external_teachers": [t.config().model_dump()]})
    res = ensure_trained(cfg, runtime)
    nasty = load_run_model(cfg, runtime.runs_dir)
    assert res.epochs_run == 1 and isinstance(nasty, nn.Sequential)  # the user's architecture
    r = CliRunner().invoke(app, ["inspect", str(paths["onnx"]), "--dataset", "digits",
                                 "--reference", str(paths["torchscript"]), "--json",
                                 "--device", "cpu"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)
    assert row["agreement"] == 100.0 and row["kl_T1"] < 1e-6 and 0 <= row["accuracy"] <= 100
    r = CliRunner().invoke(app, ["inspect", str(paths["pt"]), "--dataset", "digits"])
    assert r.exit_code == 2 and "give its architecture" in r.output


def test_url_teachers_reject_bad_settings_before_any_request() -> None:
    with pytest.raises(TeacherError, match="not an http"):
        Teacher.from_url("ftp://example/model")
    with pytest.raises(TeacherError, match="input channels and size unknown"):
        Teacher.from_url("http://127.0.0.1:9/v2/models/m").probe()  # nothing is sent
    with pytest.raises(TeacherError, match="batch_size, concurrency >= 1"):
        Teacher.from_url("http://127.0.0.1:9/v2/models/m", concurrency=0)
    with pytest.raises(TeacherError, match="identity unknown until the teacher is probed"):
        Teacher.from_url("http://127.0.0.1:9/v2/models/m").identity  # noqa: B018
