"""Model files from strangers: a ``.pt2`` never runs code when opened, damaged files fail in one line,
a YAML beside a model cannot name code to run without an opt-in, and in-memory modules are teachers
only through ``Teacher.from_module``."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from undistill.runs import get_dataset
from undistill.teachers import Teacher, TeacherError, open_source

DS = get_dataset("digits", None)


def plain_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


def batch(n: int = 5) -> torch.Tensor:
    from undistill.data.augment import normalize

    return normalize(DS.train_images[:n], DS.mean, DS.std)


# ------------------------------------------------------------------------------------- .pt2 files
class Evil:
    """Unpickling this creates the directory ``marker`` (a stand-in for any code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.makedirs, (self.marker,))


@pytest.fixture(scope="module")
def genuine_pt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``torch.export.save`` archive of a tiny model with a dynamic batch."""
    path = tmp_path_factory.mktemp("pt2") / "genuine.pt2"
    ep = torch.export.export(plain_module(), (torch.randn(2, 1, 8, 8),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, path)
    return path


Members = dict[str, bytes]


def rewrite(src: Path, dst: Path, change: Callable[[Members], None]) -> Path:
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i.filename) for i in z.infolist()}
    change(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def member(members: Members, suffix: str) -> str:
    return next(n for n in members if n.endswith(suffix))


def torch_pickle(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def evil_sample_inputs(members: Members, marker: str) -> None:
    """torch.export.load falls back to weights_only=False for sample inputs."""
    members[member(members, "data/sample_inputs/model.pt")] = torch_pickle(Evil(marker))


def evil_pickled_weight(members: Members, marker: str) -> None:
    """A weight marked ``use_pickle`` is read with weights_only=False."""
    cfg_name = member(members, "data/weights/model_weights_config.json")
    cfg = json.loads(members[cfg_name])
    entry = cfg["config"]["1.bias"]
    entry["use_pickle"] = True
    members[cfg_name] = json.dumps(cfg).encode()
    members[member(members, "data/weights/" + entry["path_name"])] = torch_pickle(Evil(marker))


def evil_constant(members: Members, marker: str, path: str) -> None:
    cfg_name = member(members, "data/constants/model_constants_config.json")
    cfg = {"config": {"c": {"path_name": path, "is_param": False, "use_pickle": True,
                            "tensor_meta": None}}}
    members[cfg_name] = json.dumps(cfg).encode()
    members[cfg_name.replace("model_constants_config.json", path)] = pickle.dumps(Evil(marker))


def evil_opaque_constant(members: Members, marker: str) -> None:
    """An opaque constant is read with pickle.loads."""
    evil_constant(members, marker, "opaque_obj_0")


def evil_custom_object(members: Members, marker: str) -> None:
    """A TorchScript custom-class constant is read with torch._C._pickle_load_obj."""
    evil_constant(members, marker, "custom_obj_0")


def evil_shape_expression(members: Members, marker: str) -> None:
    """Symbolic sizes are parsed with sympy.sympify, which evaluates Python."""
    name = member(members, "models/model.json")
    text = members[name].decode()
    sym = "Symbol('s31', positive=True, integer=True)"
    assert sym in text
    members[name] = text.replace(sym, f"__import__('os').makedirs('{marker}') or {sym}", 1).encode()


@pytest.mark.parametrize("attack, named", [
    (evil_sample_inputs, "data/sample_inputs/model.pt"),
    (evil_pickled_weight, "data/weights/weight_1"),
    (evil_opaque_constant, "opaque_obj_0"),
    (evil_custom_object, "custom_obj_0"),
    (evil_shape_expression, "models/model.json"),
])
def test_a_crafted_pt2_runs_no_code(genuine_pt2: Path, tmp_path: Path, attack: Callable[..., None],
                                    named: str) -> None:
    marker = tmp_path / "pwned"
    evil = rewrite(genuine_pt2, tmp_path / "evil.pt2", lambda m: attack(m, str(marker)))
    with pytest.raises(TeacherError) as err:
        Teacher.open(evil).bind_dataset(DS).probe()
    assert not marker.exists(), "the archive ran code"
    msg = str(err.value)
    assert "\n" not in msg and "evil.pt2" in msg and named in msg, msg


@pytest.mark.parametrize("attack", [evil_sample_inputs, evil_pickled_weight, evil_opaque_constant,
                                    evil_custom_object, evil_shape_expression])
def test_the_load_guards_hold_without_the_archive_check(
        genuine_pt2: Path, tmp_path: Path, attack: Callable[..., None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second layer: with the member check skipped, torch's load itself still runs no code."""
    from torch.export.pt2_archive import _package

    from undistill.teachers import archive_check

    real_load = torch.load
    monkeypatch.setattr(archive_check, "check_archive", lambda data, source: None)
    marker = tmp_path / "pwned"
    evil = rewrite(genuine_pt2, tmp_path / "evil.pt2", lambda m: attack(m, str(marker)))
    with pytest.raises(TeacherError, match=r"evil.pt2: refused: ") as err:
        Teacher.open(evil)
    assert not marker.exists() and "\n" not in str(err.value)
    assert torch.load is real_load and _package.pickle is pickle  # the guards are undone


def test_a_pt2_calling_python_functions_is_refused(genuine_pt2: Path, tmp_path: Path) -> None:
    """A graph node may only call torch operators (torch's own verifier refuses this too)."""
    marker = tmp_path / "pwned"

    def change(members: Members) -> None:
        name = member(members, "models/model.json")
        doc = json.loads(members[name])
        doc["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.makedirs"
        members[name] = json.dumps(doc).encode()

    evil = rewrite(genuine_pt2, tmp_path / "evil.pt2", change)
    with pytest.raises(TeacherError) as err:
        Teacher.open(evil).bind_dataset(DS).probe()
    assert not marker.exists() and "\n" not in str(err.value)


def test_a_pt2_with_compiled_code_is_refused(genuine_pt2: Path, tmp_path: Path) -> None:
    """AOTInductor members are shared libraries that torch.export.load would dlopen."""
    def change(members: Members) -> None:
        root = next(iter(members)).split("/")[0]
        members[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"

    evil = rewrite(genuine_pt2, tmp_path / "aoti.pt2", change)
    with pytest.raises(TeacherError, match=r"aoti.pt2: .*data/aotinductor/model/model.so"):
        Teacher.open(evil)


def test_a_genuine_pt2_still_loads_and_answers(genuine_pt2: Path) -> None:
    t = Teacher.open(genuine_pt2).bind_dataset(DS)
    assert t.kind == "export"
    t.probe()
    x = batch()
    torch.testing.assert_close(t.logits(x), plain_module()(x), atol=1e-5, rtol=1e-4)
    assert t.identity == Teacher.from_export(genuine_pt2).identity
    assert t.identity.startswith("export:")


def test_a_pt2_without_sample_inputs_still_loads(tmp_path: Path) -> None:
    """torch writes an empty sample-inputs member then; empty is not a pickle to refuse."""
    ep = torch.export.export(plain_module(), (torch.randn(2, 1, 8, 8),),
                             dynamic_shapes=({0: torch.export.Dim("batch")},))
    ep.example_inputs = None
    torch.export.save(ep, tmp_path / "bare.pt2")
    with zipfile.ZipFile(tmp_path / "bare.pt2") as z:
        assert [i.file_size for i in z.infolist() if "sample_inputs" in i.filename] == [0]
    t = Teacher.open(tmp_path / "bare.pt2").bind_dataset(DS)
    assert t.probe().shape == (1, 10)


def damaged(genuine: Path, tmp_path: Path, how: str) -> Path:
    data = genuine.read_bytes()
    if how == "truncated":
        (tmp_path / "bad.pt2").write_bytes(data[: len(data) // 2])
        return tmp_path / "bad.pt2"
    if how == "not-zip":
        (tmp_path / "bad.pt2").write_bytes(b"\x00garbage" * 10)
        return tmp_path / "bad.pt2"

    def change(members: Members) -> None:
        if how == "bad-json":
            members[member(members, "models/model.json")] = b"{garbage"
        elif how == "bad-weights":
            members[member(members, "data/weights/weight_0")] = b"\x00\x01\x02"
        elif how == "bad-version":
            members[member(members, "archive_version")] = b"99"

    return rewrite(genuine, tmp_path / "bad.pt2", change)


DAMAGES = ["truncated", "not-zip", "bad-json", "bad-weights", "bad-version"]


def test_a_damaged_pt2_fails_in_one_line(genuine_pt2: Path, tmp_path: Path) -> None:
    """Nothing but the one-line error: torch logs a traceback from a handler made at import (on the
    process's own stderr), so the files are opened in a child process and its stderr is read."""
    bad = []
    for how in DAMAGES:
        (tmp_path / how).mkdir()
        bad.append(damaged(genuine_pt2, tmp_path / how, how))
        with pytest.raises(TeacherError) as err:
            Teacher.open(bad[-1])
        assert str(err.value).startswith(f"{bad[-1]}: ") and "\n" not in str(err.value), how
    code = ("import sys\n"
            "from undistill.teachers import Teacher, TeacherError\n"
            "for p in sys.argv[1:]:\n"
            "    try:\n"
            "        Teacher.open(p)\n"
            "    except TeacherError as e:\n"
            "        print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code, *map(str, bad)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stderr == "", r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert len(lines) == len(bad)
    assert all(ln.startswith(f"refused: {p}: ") for ln, p in zip(lines, bad, strict=True))


@pytest.mark.parametrize("location", ["../outside.bin", "ABSOLUTE", "link.bin"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path: Path, location: str) -> None:
    """onnxruntime (not this toolkit) refuses external data that escapes the model's folder:
    a relative path up, an absolute path, a symlink out."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    (tmp_path / "model").mkdir()
    np.full(64, 7, np.float32).tofile(tmp_path / "outside.bin")
    (tmp_path / "model" / "link.bin").symlink_to(tmp_path / "outside.bin")
    w = numpy_helper.from_array(np.zeros(64, np.float32), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    where = str(tmp_path / "outside.bin") if location == "ABSOLUTE" else location
    w.external_data.add(key="location", value=where)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Add", ["f", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "model" / "m.onnx")
    with pytest.raises(TeacherError, match=r"m.onnx: not an ONNX model \(.*External data path") as err:
        Teacher.open(tmp_path / "model" / "m.onnx")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- factories named beside a model
MARKER_FACTORY = """
import os
from torch import nn

def build(num_classes, in_channels, image_size):
    os.makedirs(os.environ["UNDISTILL_TEST_MARKER"])
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size * image_size, num_classes))
"""


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(plain_module().state_dict(), path)
    return path


@pytest.fixture
def marker_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real factory ``marker_models:build`` that leaves a marker directory when it runs."""
    (tmp_path / "marker_models.py").write_text(MARKER_FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    marker = tmp_path / "factory-ran"
    monkeypatch.setenv("UNDISTILL_TEST_MARKER", str(marker))
    return marker


def test_a_yaml_beside_the_model_cannot_name_a_factory(weights: Path, marker_factory: Path) -> None:
    (weights.parent / "w.yaml").write_text(yaml.safe_dump({"arch": "marker_models:build"}))
    with pytest.raises(TeacherError) as err:
        open_source(str(weights), {"num_classes": 10, "channels": 1, "image_size": 8})
    msg = str(err.value)
    assert "\n" not in msg and "w.yaml" in msg and "marker_models:build" in msg
    assert "--trust-factory" in msg and "trust_factory=True" in msg and "--teacher-arch" in msg
    assert not marker_factory.exists()
    with pytest.raises(TeacherError, match="names a factory"):
        Teacher.open(weights, {"num_classes": 10, "channels": 1, "image_size": 8})
    assert not marker_factory.exists()


def test_trust_factory_opens_the_factory_in_the_yaml(weights: Path, marker_factory: Path) -> None:
    (weights.parent / "w.yaml").write_text(yaml.safe_dump({"arch": "marker_models:build"}))
    t = open_source(str(weights), trust_factory=True).bind_dataset(DS)
    t.probe()
    assert marker_factory.exists() and t.arch == "marker_models:build"
    x = batch()
    torch.testing.assert_close(t.logits(x), plain_module()(x), atol=1e-5, rtol=1e-4)
    assert Teacher.open(weights, trust_factory=True).arch == "marker_models:build"


def test_the_callers_own_factory_and_yaml_zoo_names_need_no_opt_in(
        weights: Path, marker_factory: Path, tmp_path: Path) -> None:
    (weights.parent / "w.yaml").write_text(yaml.safe_dump({"arch": "os:abort"}))
    t = open_source(str(weights), arch="marker_models:build").bind_dataset(DS)  # --teacher-arch
    t.probe()
    assert marker_factory.exists()
    from safetensors.torch import save_file

    from undistill.models import build_model

    zoo = tmp_path / "zoo" / "z.safetensors"
    zoo.parent.mkdir()
    save_file(build_model("cnn", 10, 1, 0.25, 8).state_dict(), zoo)
    (zoo.parent / "z.yaml").write_text(yaml.safe_dump({"arch": "cnn", "width": 0.25}))
    z = open_source(str(zoo)).bind_dataset(DS)
    assert z.arch == "cnn" and z.probe().shape == (1, 10)


def test_os_abort_beside_a_model_leaves_the_process_alive(weights: Path) -> None:
    """The reported case, in a child process (an abort must not take the test run with it)."""
    (weights.parent / "w.yaml").write_text(yaml.safe_dump({"arch": "os:abort"}))
    code = ("from undistill.teachers import open_source, TeacherError\n"
            "try:\n"
            f"    open_source({str(weights)!r}, {{'num_classes': 10, 'channels': 1, 'image_size': 8}})\n"
            "except TeacherError as e:\n"
            "    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("refused: ") and "os:abort" in r.stdout and "names a factory" in r.stdout


# ------------------------------------------------------------------------ in-memory modules
def test_from_module_answers_like_the_module() -> None:
    m = plain_module()
    t = Teacher.from_module(m, {"num_classes": 10}).bind_dataset(DS)
    assert t.kind == "module" and t.source.startswith("module:")
    assert t.probe().shape == (1, 10) and t.spec.outputs == "logits"
    x = batch()
    torch.testing.assert_close(t.logits(x), m(x), atol=0, rtol=0)
    assert not t.logits(x).requires_grad
    named = Teacher.from_module(m, name="my-teacher")
    assert named.source == "my-teacher"
    with pytest.raises(TeacherError, match="in-memory module cannot go into a run config"):
        t.config()


def test_from_module_identity_follows_the_weights() -> None:
    a, b = Teacher.from_module(plain_module()), Teacher.from_module(plain_module())
    assert a.identity == b.identity and a.identity.startswith("module:")
    changed = plain_module()
    with torch.no_grad():
        changed[1].weight[0, 0] += 1e-3
    assert Teacher.from_module(changed).identity != a.identity

    class Other(nn.Sequential):
        pass

    torch.manual_seed(0)
    other = Other(nn.Flatten(), nn.Linear(64, 10))
    assert Teacher.from_module(other).identity != a.identity  # same weights, another class


def test_a_module_passed_as_a_source_is_refused_in_one_line() -> None:
    for bad in (nn.Linear(2, 2), 3, None):
        with pytest.raises(TeacherError) as err:
            Teacher(bad)  # type: ignore[arg-type]
        msg = str(err.value)
        assert "\n" not in msg and "Teacher.from_module(" in msg and "Linear(in_features" not in msg
    with pytest.raises(TeacherError, match="from_module"):
        Teacher.open(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TeacherError, match="not an nn.Module"):
        Teacher.from_module("model.onnx")  # type: ignore[arg-type]


def test_a_run_directory_naming_a_factory_needs_trust(tmp_path: Path) -> None:
    """A stranger's run directory whose config.json names ``os:abort`` is refused before anything
    is imported or called; with trust_factory the check is skipped (this config is then invalid)."""
    import json

    from undistill.teachers import open_source

    run = tmp_path / "run"
    run.mkdir()
    doc = {"config": {"name": "x", "model": {"arch": "cnn"},
                      "teachers": [{"model": {"arch": "os:abort"}}]}}
    (run / "config.json").write_text(json.dumps(doc))
    with pytest.raises(TeacherError, match="factory 'os:abort'.*--trust-factory"):
        open_source(str(run))
    from undistill.config import ConfigError

    with pytest.raises((TeacherError, ConfigError)) as e:  # past the check: the config is invalid
        open_source(str(run), trust_factory=True)
    assert "trust" not in str(e.value)
