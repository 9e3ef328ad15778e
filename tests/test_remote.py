"""The black-box client against misbehaving loopback servers (issue #21): retries within the budget,
answers checked before they are cached, a total deadline per request, a capped answer size, a
damaged cache, empty API keys, credentials in the URL, and a fuzzed answer parser."""

from __future__ import annotations

import base64
import json
import math
import resource
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FailEvery, digits_torchscript
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.responses import PlainTextResponse

from undistill.config import ClientConfig, ExternalTeacherConfig
from undistill.runs import get_dataset
from undistill.serve import BackgroundServer, ServeStats, create_app
from undistill.teachers import BudgetExhausted, Teacher, TeacherError
from undistill.teachers.remote import AnswerCache, RemoteTeacher

DS = get_dataset("digits", None)
FAST = ["optim.batch_size=32", "model.width=0.25"]



@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return digits_torchscript(tmp_path / "teacher.ts")


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg and msg, msg
    return msg


# ---------------------------------------------------------------- servers
async def read_body(receive) -> bytes:
    body, more = b"", True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    return body


def replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}
    return receive


class Count:
    """ASGI middleware: every image of every inference request that reaches the server."""

    def __init__(self, app) -> None:
        self.app, self.images, self.requests = app, 0, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            body = await read_body(receive)
            self.requests += 1
            self.images += int(json.loads(body)["inputs"][0]["shape"][0])
            receive = replay(body)
        await self.app(scope, receive, send)




class Answers:
    """A raw ASGI model: probabilities from each image's first 10 pixels; ``nan``: training
    requests (more than one image) get NaN; ``basic``: Basic credentials it requires."""

    def __init__(self, basic: tuple[str, str] | None = None) -> None:
        self.nan, self.basic, self.images = False, basic, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        if self.basic is not None:
            want = b"Basic " + base64.b64encode(":".join(self.basic).encode())
            if dict(scope["headers"]).get(b"authorization") != want:
                await PlainTextResponse("who are you", status_code=401)(scope, receive, send)
                return
        doc = json.loads(await read_body(receive))
        shape = doc["inputs"][0]["shape"]
        x = np.asarray(doc["inputs"][0]["data"], dtype=np.float32).reshape(shape[0], -1)[:, :10]
        self.images += shape[0]
        p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
        data: list[Any] = p.reshape(-1).tolist()
        if self.nan and shape[0] > 1:
            data = [math.nan] * len(data)
        body = json.dumps({"outputs": [{"name": "probabilities", "shape": [shape[0], 10],
                                        "datatype": "FP32", "data": data}]})  # NaN as JSON's NaN
        await PlainTextResponse(body, media_type="application/json")(scope, receive, send)


class RawServer:
    """A raw-socket loopback server: ``handler(conn, stop)`` answers each connection (after its
    request is read), each in a thread; everything stops within a bounded time."""

    def __init__(self, handler: Callable[[socket.socket, threading.Event], None]) -> None:
        self.handler, self.stop = handler, threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                for _ in range(10_000):  # the headers, then content-length bytes of body
                    if b"\r\n\r\n" in data:
                        head, _, body = data.partition(b"\r\n\r\n")
                        length = [int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                                  if k.strip().lower() == b"content-length"]
                        if len(body) >= (length or [0])[0]:
                            break
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.handler(conn, self.stop)
            except OSError:
                pass

    def __enter__(self) -> RawServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.sock.close()


def within(seconds: float, fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    """Run ``fn`` in a thread; its exception (or None) and the seconds it took, or fail the test
    if it runs past ``seconds``."""
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            out.append(None)
        except BaseException as e:  # noqa: BLE001 -- handed back to the test
            out.append(e)

    t0 = time.monotonic()
    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout=seconds)
    assert out, f"still running after {seconds} s"
    return out[0], time.monotonic() - t0


# ---------------------------------------------------------------- 4: empty API keys
def test_an_empty_api_key_is_an_error_not_no_authentication(monkeypatch) -> None:
    for key in ("", "  "):
        with pytest.raises(TeacherError, match="empty API key"):
            RemoteTeacher("http://127.0.0.1:9/v2/models/m", api_key=key)
    monkeypatch.setenv("UNDISTILL_TEST_KEY", "")
    with pytest.raises(ValueError, match=r"\$UNDISTILL_TEST_KEY is set but empty"):
        ClientConfig(api_key_env="UNDISTILL_TEST_KEY").options()
    monkeypatch.setenv("UNDISTILL_TEST_KEY", "k")
    assert ClientConfig(api_key_env="UNDISTILL_TEST_KEY").options()["api_key"] == "k"


# ---------------------------------------------------------------- 5: retries count
def test_retries_count_against_the_budget(model_file: Path, tmp_path: Path) -> None:
    app = create_app(Teacher.open(model_file).bind_dataset(DS), stats=ServeStats())
    count = Count(FailEvery(app, 2))  # every second request fails: each one is sent twice
    with BackgroundServer(count) as srv:
        url = f"{srv.url}/v2/models/model"
        t = Teacher.from_url(url, budget=41, retries=3, backoff=0.01, batch_size=8, concurrency=1,
                             cache=tmp_path / "a.sqlite").bind_dataset(DS)
        with pytest.raises(BudgetExhausted, match="retry") as e:
            t.logits(images(40))
        one_line(e.value)
        assert count.images <= 41 == t.budget.used
        # with room for the retries the same attack succeeds, and the budget is what was received
        t = Teacher.from_url(url, budget=200, retries=3, backoff=0.01, batch_size=8, concurrency=1,
                             cache=tmp_path / "b.sqlite").bind_dataset(DS)
        before = count.images
        t.logits(images(40))
        assert t.budget.used == count.images - before > 41 and t.sent == 41
    # a connection that was refused sent nothing: it does not count
    t = Teacher.from_url(url, budget=5, retries=2, backoff=0.01).bind_dataset(DS)
    with pytest.raises(TeacherError, match=r"no answer after 3 attempts \(ConnectError"):
        t.probe()
    assert t.budget.used == 0


# ---------------------------------------------------------------- 6: checked before cached
def test_bad_answers_are_never_cached_and_bad_rows_are_asked_again(tmp_path: Path) -> None:
    model = Answers()
    cache = tmp_path / "answers.sqlite"
    x = images(6)
    with BackgroundServer(model) as srv:
        def teacher() -> Teacher:
            return Teacher.from_url(srv.url, retries=0, cache=cache).bind_dataset(DS)

        model.nan = True
        t = teacher()
        with pytest.raises(TeacherError, match="NaN or infinite") as e:
            t.logits(x)
        one_line(e.value)
        assert AnswerCache(cache).count() == 0
        t.close()
        model.nan = False  # the server is fixed: the re-run asks again and gets good answers
        t = teacher()
        got = t.logits(x)
        assert torch.isfinite(got).all() and model.images == 1 + 6 + 1 + 6
        identity = t.identity
        t.close()
        # poison three rows: NaN, a wrong class count, and bytes that are no float32 array
        db = sqlite3.connect(cache)
        keys = [k for (k,) in db.execute("SELECT key FROM answers ORDER BY key")]
        assert len(keys) == 6
        for key, blob in zip(keys, [np.full(10, np.nan, np.float32).tobytes(),
                                    np.ones(5, np.float32).tobytes(), b"1234567"], strict=False):
            db.execute("UPDATE answers SET answer = ? WHERE teacher = ? AND key = ?",
                       [blob, identity, key])
        db.commit()
        db.close()
        t = teacher()
        before = model.images
        again = t.logits(x)
        assert model.images - before == 1 + 3  # the probe, and the three bad rows re-asked
        torch.testing.assert_close(again, got)
        assert t.logits(x).shape == (6, 10) and model.images - before == 4  # stored again
        t.close()


# ---------------------------------------------------------------- 7: a total deadline
@pytest.mark.parametrize("fast_headers", [False, True])
def test_a_trickling_server_times_out(fast_headers: bool) -> None:
    body = json.dumps({"outputs": [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32",
                                    "data": [0.1] * 10}]}).encode()
    head = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n")

    def trickle(conn: socket.socket, stop: threading.Event) -> None:
        rest = head + body
        if fast_headers:
            conn.sendall(head)
            rest = body
        for i in range(len(rest)):  # one byte a second
            if stop.wait(1.0):
                return
            conn.sendall(rest[i:i + 1])

    with RawServer(trickle) as srv:
        t = RemoteTeacher(srv.url, timeout=1.0, retries=0).bind_dataset(DS)
        err, took = within(30, t.probe)
    assert isinstance(err, TeacherError), err
    assert "timeout" in one_line(err) and took < 10


# ---------------------------------------------------------------- 9: a damaged cache
def test_a_damaged_answer_cache_is_one_line_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "answers.sqlite"
    path.write_bytes(b"this is not a database, just garbage\x00\xff" * 200)
    for opener in (lambda: AnswerCache(path),
                   lambda: Teacher.from_url("http://127.0.0.1:9/m", cache=path)):
        with pytest.raises(TeacherError, match="delete it") as e:
            opener()
        msg = one_line(e.value)
        assert str(path) in msg and "move it aside" in msg


# ---------------------------------------------------------------- 10: a capped answer size
def test_a_huge_answer_is_cut_off_early(tmp_path: Path) -> None:
    total, sent = 300_000_000, [0]
    prefix = b'{"outputs": [{"name": "probabilities", "shape": [1, 10], "datatype": "FP32", "data": ['
    block = b"0.1000, " * 8192  # 64 KiB

    def huge(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\n\r\n" + prefix)
        while sent[0] < total and not stop.is_set():  # generated lazily, up to 300 MB
            conn.sendall(block)
            sent[0] += len(block)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with RawServer(huge) as srv:
        t = RemoteTeacher(srv.url, retries=0).bind_dataset(DS)
        err, took = within(60, t.probe)
        assert isinstance(err, TeacherError) and "bytes" in one_line(err), err
        time.sleep(0.2)
        assert sent[0] < 32_000_000  # the client stopped reading long before the end
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown_mib < 200
    # a declared length over the cap fails before the body is read; the cap is an option
    def declared(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"content-length: 300000000\r\n\r\n" + prefix)

    with RawServer(declared) as srv:
        t = RemoteTeacher(srv.url, retries=0, max_answer_bytes=1000).bind_dataset(DS)
        with pytest.raises(TeacherError, match="more than 1000 bytes"):
            t.probe()


# ---------------------------------------------------------------- 11: hostile JSON
def test_deeply_nested_and_non_finite_json_are_one_line_errors() -> None:
    async def app(scope, receive, send):
        if scope["type"] == "http":
            await read_body(receive)
            await PlainTextResponse("[" * 100_000, media_type="application/json")(scope, receive, send)

    with BackgroundServer(app) as srv:
        with pytest.raises(TeacherError, match="not JSON") as e:
            RemoteTeacher(srv.url, retries=0, max_answer_bytes=10**6).bind_dataset(DS).probe()
        one_line(e.value)
    from undistill.teachers.remote import parse_answer

    with pytest.raises(TeacherError, match="not JSON"):
        parse_answer(b'{"outputs": ' + b"[" * 100_000, 1, None, "s")

    def doc(data: str) -> bytes:
        return ('{"outputs": [{"name": "logits", "shape": [1, 3], "datatype": "FP32", "data": '
                f'[{data}]}}]}}').encode()

    assert parse_answer(doc("1, 2, 3"), 1, 3, "s").tolist() == [[1, 2, 3]]
    for bad in ("NaN, 1, 2", "Infinity, 1, 2", "-Infinity, 1, 2", "1e999, 1, 2"):
        with pytest.raises(TeacherError, match="NaN or infinite"):
            parse_answer(doc(bad), 1, 3, "s")


# ---------------------------------------------------------------- 14: credentials in the URL
def test_credentials_in_the_url_are_used_and_never_stored(tmp_path: Path, monkeypatch) -> None:
    model = Answers(basic=("user", "PASSWORD"))
    runs = tmp_path / "runs"
    from undistill import steal
    from undistill.config import Runtime

    with BackgroundServer(model) as srv:
        port = srv.url.rsplit(":", 1)[1]
        url = f"http://user:PASSWORD@127.0.0.1:{port}/v2/models/m"
        with pytest.raises(TeacherError, match="401") as e:
            RemoteTeacher(url.replace("PASSWORD", "wrong"), retries=0).bind_dataset(DS).probe()
        assert "wrong" not in str(e.value)
        res = steal(url, "digits", method="kd", budget=30, epochs=1, sets=FAST, retries=0,
                    runtime=Runtime(runs_dir=runs, device="cpu", progress=False))
        assert model.images == 30
        cfg = json.loads((Path(res.run_dir) / "config.json").read_text())["config"]
        source = cfg["teachers"][0]["source"]
        assert source == f"http://127.0.0.1:{port}/v2/models/m"
        leaks = [p for p in runs.rglob("*") if p.is_file() and b"PASSWORD" in p.read_bytes()]
        assert leaks == []
        with_auth = RemoteTeacher(url, retries=0).bind_dataset(DS)
        with_auth.probe()
        assert with_auth.source == source and "PASSWORD" not in json.dumps(with_auth.describe())
        model.basic = None  # the same model without authentication: the same identity
        plain = RemoteTeacher(source, retries=0).bind_dataset(DS)
        plain.probe()
        assert plain.identity == with_auth.identity
        model.basic = ("user", "PASSWORD")
        # credentials for reopening come from the environment, never from a config
        monkeypatch.setenv("UNDISTILL_TEST_AUTH", "user:PASSWORD")
        opts = ClientConfig(basic_auth_env="UNDISTILL_TEST_AUTH").options()
        again = RemoteTeacher(source, **{**opts, "retries": 0}).bind_dataset(DS)
        assert again.probe().shape == (1, 10) and again.identity == plain.identity
    e_cfg = ExternalTeacherConfig(source=url, kind="url", identity="url:0123456789")
    assert "PASSWORD" not in e_cfg.model_dump_json() and e_cfg.source == source


# ---------------------------------------------------------------- fuzz: the answer parser
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=6)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=6),
                    max_leaves=40)
OUTPUT = st.fixed_dictionaries(
    {"name": st.sampled_from(["probabilities", "logits", "labels", "other"]),
     "shape": st.lists(st.integers(-2, 12), max_size=3) | JSON,
     "datatype": st.sampled_from(["FP32", "INT64", "UINT8", "BYTES"]) | JSON,
     "data": st.lists(st.floats() | st.integers(-3, 12), max_size=40) | JSON})
DOCS = st.fixed_dictionaries({"outputs": st.lists(OUTPUT, max_size=3) | JSON}) | JSON


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=400) | DOCS.map(lambda d: json.dumps(d).encode()),
       n=st.integers(1, 4), classes=st.none() | st.integers(2, 10))
def test_parse_answer_returns_the_right_shape_or_a_one_line_error(body: bytes, n: int,
                                                                  classes: int | None) -> None:
    from undistill.teachers.remote import parse_answer

    try:
        out = parse_answer(body, n, classes, "http://fuzz")
    except TeacherError as e:
        assert one_line(e).startswith("http://fuzz")
        return
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 2
    assert out.shape[0] == n and (classes is None or out.shape[1] == classes)
    assert out.shape[1] >= 1 and np.isfinite(out).all()


def test_parse_answer_reads_labels_and_the_named_output() -> None:
    from undistill.teachers.remote import parse_answer

    doc = {"outputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [9, 9, 9, 9]},
                       {"name": "labels", "shape": [2], "datatype": "INT64", "data": [2, 0]}]}
    out = parse_answer(json.dumps(doc).encode(), 2, 3, "s")
    assert out.tolist() == [[0, 0, 1], [1, 0, 0]]
    for labels, message in [([3, 0], "outside"), ([0.5, 1], "outside"), ([1, 1], None)]:
        doc["outputs"][1]["data"] = labels
        if message is None:
            assert parse_answer(json.dumps(doc).encode(), 2, 3, "s").shape == (2, 3)
        else:
            with pytest.raises(TeacherError, match=message):
                parse_answer(json.dumps(doc).encode(), 2, 3, "s")
    with pytest.raises(TeacherError, match="give num_classes"):
        parse_answer(json.dumps(doc).encode(), 2, None, "s")
