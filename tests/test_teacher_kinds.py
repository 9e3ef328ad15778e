"""One teacher interface: the registry of kinds (a new source is one registration), the wrappers
that compose around any teacher (budget, cache, defence), the opener of one call, one teacher
list in a run config (run ids unchanged), and no import cycle in the package."""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from undistill.config import ConfigError, ExternalTeacherConfig, RunConfig, parse_config
from undistill.defences import build_defence, release, released_logits
from undistill.runs import get_dataset
from undistill.teachers import (
    KINDS,
    Budgeted,
    BudgetExhausted,
    Cached,
    Defended,
    Kind,
    Opener,
    Teacher,
    TeacherError,
    detect_kind,
    open_source,
    read_spec,
    register_kind,
    wrap,
)
from undistill.teachers.kind import config_kinds, is_remote, unregister_kind

DS = get_dataset("digits", None)
SRC = Path(__file__).resolve().parents[1] / "src"


def images(n: int = 5) -> torch.Tensor:
    from undistill.data.augment import normalize

    return normalize(DS.test_images[:n], DS.mean, DS.std)


def plain_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()


class Toy(Teacher):
    """A source this toolkit does not know: ``toy://NAME``, a linear model in memory."""

    kind = "toy"

    def __init__(self, source: str, spec=None) -> None:
        super().__init__(source, spec)
        self.model = plain_module()
        self.asked = 0  # images the model was asked about (the probe included)
        self._digest = f"toy:{hashlib.sha256(source.encode()).hexdigest()[:16]}"

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        self.asked += int(x.shape[0])
        return self.model(x)


@pytest.fixture
def toy_kinds() -> Iterator[None]:
    """A local kind ``toy://`` and a remote one ``toyr://`` (its answers cost queries)."""
    register_kind(Kind("toy", lambda source, arch: source.startswith("toy://"),
                       lambda req: Toy(req.source, read_spec(None, req.spec)),
                       describe="toy://NAME", identity="SHA-256 of the name"))
    register_kind(Kind("toyr", lambda source, arch: source.startswith("toyr://"),
                       lambda req: wrap(Toy(req.source, read_spec(None, req.spec)),
                                        cache=req.client.get("cache"),
                                        budget=req.client.get("budget")),
                       describe="toyr://NAME", identity="SHA-256 of the name", remote=True))
    yield
    unregister_kind("toy")
    unregister_kind("toyr")


# ---------------------------------------------------------------- the registry of kinds
def test_a_new_kind_is_one_registration(toy_kinds: None) -> None:
    assert detect_kind("toy://a") == "toy" and "toy" in config_kinds() and not is_remote("toy")
    t = open_source("toy://a").bind_dataset(DS)  # detected and opened by the registry
    assert isinstance(t, Toy) and t.probe().shape == (1, 10)
    torch.testing.assert_close(t.logits(images()), plain_module()(images()))
    assert isinstance(Teacher.open("toy://b"), Toy)
    # its config entry validates (the config's kinds are the registry's) and enters a run id
    entry = t.config()
    assert entry.kind == "toy" and entry.identity == t.identity
    cfg = parse_config({"data": {"name": "digits", "augment": False}, "model": {"arch": "cnn"},
                        "method": {"name": "kd"}, "teachers": [entry.model_dump()]})
    assert cfg.external_teachers == [entry] and cfg.run_teachers == []
    # a run opens it again through an opener: bound, probed, identity checked
    again = Opener().open_config(cfg.external_teachers[0], DS)
    assert isinstance(again, Toy) and again.identity == t.identity and again.asked == 1


def test_an_unregistered_kind_is_refused_by_a_config() -> None:
    with pytest.raises(ValueError, match="unknown teacher kind 'toy'; known in a run config: "
                                         "export, onnx, state_dict, torchscript, url"):
        ExternalTeacherConfig(source="toy://a", kind="toy", identity="toy:0123456789")
    with pytest.raises(TeacherError, match="unknown model file type"):
        detect_kind(__file__)


def test_the_builtin_kinds_and_their_traits(tmp_path: Path) -> None:
    assert {"torchscript", "export", "onnx", "state_dict", "run", "url", "v1", "module"} <= set(KINDS)
    assert config_kinds() == ["export", "onnx", "state_dict", "torchscript", "url", "v1"]
    assert [k for k in KINDS if is_remote(k)] == ["url", "v1"]
    assert KINDS["state_dict"].needs_arch and not KINDS["onnx"].needs_arch
    assert detect_kind("https://host/v2/models/m") == "url" and detect_kind(str(tmp_path)) == "run"
    with pytest.raises(TeacherError, match="no such model file"):
        detect_kind(str(tmp_path / "missing.onnx"))


def test_a_remote_kind_is_opened_through_the_cache_within_the_budget(toy_kinds: None,
                                                                     tmp_path: Path) -> None:
    opener = Opener(cache=tmp_path / "answers.sqlite", budget=4)
    t = opener.open("toyr://m").bind_dataset(DS)
    toy = t.find(Toy)
    assert isinstance(t, Cached) and isinstance(t.find(Budgeted), Budgeted) and toy is not None
    t.probe()
    assert t.budget.limit == 4 and t.budget.used == 1 == toy.asked
    x = images(5)
    first = t.logits(x[:3])
    assert t.budget.used == 4 == toy.asked
    torch.testing.assert_close(t.logits(x[:3]), first)  # from the cache: free
    assert t.budget.used == 4 == toy.asked
    with pytest.raises(BudgetExhausted, match="query budget of 4 images spent"):
        t.logits(x[3:])
    assert toy.asked == 4  # nothing beyond the budget reached the model
    # the owner's own evaluation: outside the budget, through the same cache
    free = t.unbudgeted()
    assert free.find(Budgeted) is None and isinstance(free, Cached)
    assert free.logits(x).shape == (5, 10) and toy.asked == 6 and t.budget.used == 4
    torch.testing.assert_close(t.logits(x[3:]), free.logits(x)[3:])  # now cached for all
    assert t.describe()["budget"] == 4


# ---------------------------------------------------------------- wrappers around any teacher
def test_budgeted_and_cached_compose_around_a_module(tmp_path: Path) -> None:
    m = plain_module()
    bare = Teacher.from_module(m).bind_dataset(DS)
    x = images(6)
    b = Budgeted(Teacher.from_module(m), 7).bind_dataset(DS)
    b.probe()
    torch.testing.assert_close(b.logits(x), bare.logits(x))
    assert b.budget.used == 7 and b.identity == bare.identity and b.kind == "module"
    with pytest.raises(BudgetExhausted):
        b.logits(x[:1])
    c = Cached(Budgeted(Teacher.from_module(m), 7), tmp_path / "c.sqlite").bind_dataset(DS)
    c.probe()
    torch.testing.assert_close(c.logits(x), bare.logits(x))
    torch.testing.assert_close(c.logits(torch.cat([x, x])), bare.logits(torch.cat([x, x])))
    assert c.budget.used == 7 and c.cache.count(c.identity) == 6  # each image asked once
    c.close()


def test_defended_releases_what_the_defence_releases() -> None:
    m = plain_module()
    bare = Teacher.from_module(m).bind_dataset(DS)
    topk = build_defence({"name": "topk", "params": {"k": 2}}, 10)
    d = Defended(Teacher.from_module(m), topk).bind_dataset(DS)
    x = images(4)
    want = release(bare.logits, x, topk)
    torch.testing.assert_close(d.logits(x), released_logits(want))
    assert int((d.probabilities(x) > 1e-3).sum(1).max()) == 2
    assert d.spec.outputs == "probs" and d.identity.startswith(bare.identity + "+defended:")
    other = Defended(Teacher.from_module(m), build_defence({"name": "topk", "params": {"k": 3}}, 10))
    assert other.identity != d.identity
    raw = d.raw_answer(bare._model_input(x))
    torch.testing.assert_close(raw, want)  # what serve would release
    with pytest.raises(TeacherError, match="defended teacher"):
        d.config()


# ---------------------------------------------------------------- the opener of one call
def test_an_opener_holds_the_teachers_of_one_call(tmp_path: Path) -> None:
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(plain_module(), torch.randn(2, 1, 8, 8)), path)
    opener = Opener()
    t = opener.open(path).bind_dataset(DS)
    t.probe()
    opener.remember(t)
    assert opener.open_config(t.config(), DS) is t  # the run learns from the teacher opened
    fresh = Opener().open_config(t.config(), DS)  # another call opens its own
    assert fresh is not t and fresh.identity == t.identity
    moved = t.config().model_copy(update={"identity": "torchscript:0000000000000000"})
    with pytest.raises(TeacherError, match="the model changed since this run was configured"):
        Opener().open_config(moved, DS)


# ---------------------------------------------------------------- one teacher list
URL = {"source": "http://u:p@host:8000/v2/models/m", "kind": "url",
       "identity": "url:0123456789abcdef01234567", "spec": {"num_classes": 10, "outputs": "probs"},
       "client": {"concurrency": 2}}
SD = {"source": "/x/w.safetensors", "kind": "state_dict", "identity": "state_dict:abcdefabcdef0123:cnn:0.5",
      "arch": "cnn", "width": 0.5, "spec": {"channel_order": "bgr", "mean": [0.5], "std": [0.25]}}
TS = {"source": "/x/m.ts", "kind": "torchscript", "identity": "torchscript:fedcba9876543210"}
BASE = {"data": {"name": "digits", "augment": False}, "model": {"arch": "cnn"},
        "method": {"name": "kd"}, "budget": 40}


def normal() -> dict:
    from undistill.recipes import normal_teacher

    return normal_teacher("digits", "cnn").model_dump()


#: run ids computed before the two teacher lists became one (they must never change)
BEFORE = [
    ({**BASE, "external_teachers": [URL]}, "digits-cnn-kd-37e8aeaab0e5"),
    ({**BASE, "external_teachers": [SD]}, "digits-cnn-kd-677a88219ca4"),
    ({**BASE, "teachers": ["normal"], "external_teachers": [TS]}, "digits-cnn-kd-c273ddb6f9f5"),
    ({**BASE, "external_teachers": [TS, SD], "defence": {"name": "topk", "params": {"k": 2}}},
     "digits-cnn-kd-927f81723bbc"),
    ({**BASE, "teachers": ["normal"]}, "digits-cnn-kd-45f6fb6db931"),
]


@pytest.mark.parametrize(("doc", "run_id"), BEFORE)
def test_one_teacher_list_keeps_every_run_id(doc: dict, run_id: str) -> None:
    doc = {**doc, "teachers": [normal() for _ in doc.get("teachers", [])]}
    old = parse_config(doc)  # the old key `external_teachers` still loads, folded into `teachers`
    assert old.run_id == run_id
    one = {k: v for k, v in doc.items() if k != "external_teachers"}
    one["teachers"] = [*doc.get("external_teachers", []), *doc["teachers"]]  # any order
    new = parse_config(one)
    assert new.run_id == run_id and new.identity() == old.identity()
    again = parse_config(new.model_dump())  # a config.json written now reads back the same
    assert again.run_id == run_id and "external_teachers" not in new.model_dump()
    assert all(isinstance(t, RunConfig) for t in new.run_teachers)
    assert all(isinstance(t, ExternalTeacherConfig) for t in new.external_teachers)


def test_the_one_list_names_bad_entries() -> None:
    with pytest.raises(ConfigError, match="teachers.0"):
        parse_config({**BASE, "teachers": [{"source": "/x/m.ts", "kind": "nosuch",
                                            "identity": "x" * 8}]})
    with pytest.raises(ConfigError, match="'vanilla' takes 0 to 0 teachers, got 2"):
        parse_config({**BASE, "method": {"name": "vanilla"}, "teachers": [TS],
                      "external_teachers": [SD]})  # both lists, counted as one


# ---------------------------------------------------------------- the package's imports
def import_graph(root: Path) -> dict[str, set[str]]:
    """``module -> modules it imports`` in ``root/undistill`` (inside functions too; not under
    TYPE_CHECKING; the top-level package, which re-exports the API, left out)."""
    mods = {}
    for f in (root / "undistill").rglob("*.py"):
        parts = list(f.relative_to(root).with_suffix("").parts)
        pkg = parts[-1] == "__init__"
        mods[".".join(parts[:-1] if pkg else parts)] = (f, pkg)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, (f, pkg) in mods.items():
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                node.body = []  # imported for type checking only
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module
                if node.level:
                    here = m.split(".") if pkg else m.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + [base])
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n not in (m, "undistill"):
                    graph[m].add(n)
    return {m: deps for m, deps in graph.items() if m != "undistill"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                comp.append(w)
            if comp:
                found.append(sorted([v, *comp]))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_through_the_teachers() -> None:
    around = ("undistill.teachers", "undistill.runs", "undistill.config", "undistill.stealing",
              "undistill.audit", "undistill.engine", "undistill.methods.base")
    bad = [c for c in cycles(import_graph(SRC)) if any(m.startswith(around) for m in c)]
    assert bad == []


def test_no_import_cycle_anywhere() -> None:
    """Not even through imports inside functions (the package's top-level re-exports aside)."""
    assert cycles(import_graph(SRC)) == []
