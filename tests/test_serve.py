"""The server's hardening (issue #21): body limits enforced while streaming, a bound on the bytes in
flight, strict request parsing (fuzzed with Hypothesis), the API key on every route but health,
option checks, and the binary tensor data extension of the Open Inference Protocol."""

from __future__ import annotations

import asyncio
import json
import string
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient
from torch import nn

from undistill.oip import (
    HEADER_LENGTH,
    RequestError,
    decode_response,
    encode_request,
    parse_infer_request,
)
from undistill.serve import BackgroundServer, ServeStats, create_app, serve
from undistill.teachers import Teacher

SPEC = {"channels": 1, "image_size": 8, "num_classes": 10}
IMAGE = (1, 8, 8)
KEY = "s3cret"
AUTH = {"authorization": f"Bearer {KEY}"}
INFER = "/v2/models/model/infer"
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    path = tmp_path_factory.mktemp("model") / "teacher.ts"
    torch.jit.save(torch.jit.trace(m, torch.randn(2, 1, 8, 8)), path)
    return path


def teacher(path: Path) -> Teacher:
    return Teacher.open(path, SPEC)


@pytest.fixture(scope="module")
def client(model_file: Path):
    app = create_app(teacher(model_file), api_key=KEY, max_request_bytes=1 << 20,
                     stats=ServeStats())
    with TestClient(app) as c:
        yield c


def doc(shape: list[Any], data: Any, **extra: Any) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                   "data": data}], **extra}).encode()


class CountBody:
    """ASGI middleware counting the request body bytes the app read."""

    def __init__(self, app: Any) -> None:
        self.app, self.read = app, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counted() -> Any:
            msg = await receive()
            if msg["type"] == "http.request":
                self.read += len(msg.get("body", b""))
            return msg
        await self.app(scope, counted, send)


def gated(path: Path, gate: threading.Event) -> Teacher:
    """A teacher whose every forward waits for ``gate`` (requests held in flight)."""
    t = teacher(path)
    inner = t._answer

    def answer(x: torch.Tensor) -> torch.Tensor:
        assert gate.wait(20)
        return inner(x)
    t._answer = answer
    return t


# ----------------------------------------------------------------------------- size and load


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(model_file: Path) -> None:
    limit, chunk, total = 256 << 10, 64 << 10, 64 << 20
    app = CountBody(create_app(teacher(model_file), max_request_bytes=limit))
    sent = 0

    def body():
        nonlocal sent
        while sent < total:
            sent += chunk
            yield b"0" * chunk

    with BackgroundServer(app) as srv:
        try:  # no Content-Length: httpx sends a generator chunked
            r = httpx.post(f"{srv.url}{INFER}", content=body(), timeout=30)
            assert r.status_code == 413 and "limit" in r.json()["error"]
        except httpx.TransportError:
            pass  # the server answered and closed the connection while the client was writing
    assert app.read <= limit + (512 << 10)  # stopped reading at the limit (+ uvicorn buffers)...
    assert sent < total // 2  # ...and hung up: the client could not push the rest


def test_bytes_in_flight_are_bounded_and_released(model_file: Path) -> None:
    gate = threading.Event()
    app = create_app(gated(model_file, gate), max_request_bytes=30_000, max_inflight_bytes=60_000)
    body, headers = encode_request(torch.randn(100, *IMAGE))
    assert 25_000 < len(body) < 30_000  # two fit in flight, a third does not
    with BackgroundServer(app) as srv, ThreadPoolExecutor(4) as pool:
        url = f"{srv.url}{INFER}"

        def post() -> httpx.Response:
            return httpx.post(url, content=body, headers=headers, timeout=30)

        futures = [pool.submit(post) for _ in range(4)]
        first = []
        for f in as_completed(futures, timeout=20):  # two are held by the gate; two come back
            first.append(f)
            if len(first) == 2:
                break
        busy = [f.result() for f in first]
        assert [r.status_code for r in busy] == [503, 503]
        assert all(r.headers["retry-after"] == "1" and "busy" in r.json()["error"] for r in busy)
        assert app.state.inflight.used == 2 * len(body)

        def trickle():  # chunked: refused once what arrived no longer fits
            for i in range(0, len(body), 4096):
                yield body[i:i + 4096]
        try:
            r = httpx.post(url, content=trickle(), headers=headers, timeout=30)
            assert r.status_code == 503
        except httpx.TransportError:
            pass
        assert app.state.inflight.used == 2 * len(body)
        gate.set()
        done = [f.result(timeout=20) for f in futures if f not in first]
        assert sorted(r.status_code for r in [*busy, *done]) == [200, 200, 503, 503]
        assert app.state.inflight.used == 0  # released when answered...
        bad = httpx.post(url, content=b"x" * len(body), timeout=30)
        assert bad.status_code == 400 and app.state.inflight.used == 0  # ...and on errors
        ok = httpx.post(url, content=body, headers=headers, timeout=30)
        assert ok.status_code == 200 and app.state.stats.images == 300


def test_a_body_that_does_not_arrive_in_time_gets_408(model_file: Path) -> None:
    app = create_app(teacher(model_file), body_timeout=0.2)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": INFER, "raw_path": INFER.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"content-length", b"1000")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    messages: list[dict[str, Any]] = []
    calls = []

    async def receive() -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            return {"type": "http.request", "body": b"{", "more_body": True}
        await asyncio.sleep(30)  # a client that never sends the rest
        return {"type": "http.disconnect"}

    async def send(msg: dict[str, Any]) -> None:
        messages.append(msg)

    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert messages[0]["status"] == 408
    assert (b"connection", b"close") in messages[0]["headers"]
    assert app.state.inflight.used == 0


def test_a_failing_or_non_finite_model_is_a_json_error_not_counted(model_file: Path) -> None:
    t = teacher(model_file)
    answers = iter([RuntimeError("boom"), torch.full((1, 10), float("nan"))])

    def answer(x: torch.Tensor) -> torch.Tensor:
        out = next(answers)
        if isinstance(out, Exception):
            raise out
        return out
    t._answer = answer
    app = create_app(t)
    with TestClient(app) as c:
        for status, message in [(500, "the model failed"), (400, "not finite")]:
            r = c.post(INFER, content=doc([1, 1, 8, 8], [0.0] * 64))
            assert r.status_code == status and message in r.json()["error"]
    assert app.state.stats.requests == 0 and app.state.inflight.used == 0


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("body", [
    doc([1, 1, 8, 8], [0.5] * 63 + ["NaN"]).replace(b'"NaN"', b"NaN"),
    doc([1, 1, 8, 8], [0.5] * 63 + ["x"]).replace(b'"x"', b"Infinity"),
    doc([1, 1, 8, 8], [0.5] * 63 + ["x"]).replace(b'"x"', b"-Infinity"),
    doc([1, 1, 8, 8], [0.5] * 63 + ["x"]).replace(b'"x"', b"1e999"),
    doc([1, 1, 8, 8], [0.5] * 63 + [1e39]),  # beyond FP32: infinite once read
], ids=["nan", "inf", "-inf", "1e999", "1e39"])
def test_nan_and_infinity_are_400_json_and_not_counted(client: TestClient, body: bytes) -> None:
    before = client.app.state.stats.requests
    r = client.post(INFER, content=body, headers=AUTH)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert "NaN" in r.json()["error"] or "finite" in r.json()["error"]
    assert client.app.state.stats.requests == before


MALFORMED = {
    "not-json": b"{not json",
    "empty": b"",
    "not-utf8": b"\xff\xfe\x00{",
    "array": b"[1, 2, 3]",
    "deep-nesting": b"[" * 100_000,
    "deep-nesting-in-data": b'{"inputs": [{"shape": [1, 1, 8, 8], "data": ' + b"[" * 100_000,
    "deep-valid-nesting": doc([1, 1, 8, 8], json.loads("[" * 500 + "]" * 500)),
    "no-inputs": b'{"outputs": []}',
    "inputs-not-list": b'{"inputs": {"shape": [1, 1, 8, 8]}}',
    "two-inputs": json.dumps({"inputs": [{"shape": [1, 1, 8, 8], "data": [0] * 64}] * 2}).encode(),
    "nested-data": doc([1, 1, 8, 8], [[0.0] * 8] * 8),
    "short-data": doc([1, 1, 8, 8], [0.0] * 63),
    "long-data": doc([1, 1, 8, 8], [0.0] * 65),
    "string-data": doc([1, 1, 8, 8], ["0.5"] * 64),
    "null-data": doc([1, 1, 8, 8], [None] * 64),
    "bool-data": doc([1, 1, 8, 8], [True] * 64),
    "object-data": doc([1, 1, 8, 8], [{}] * 64),
    "data-not-list": doc([1, 1, 8, 8], "0" * 64),
    "huge-int-data": doc([1, 1, 8, 8], [10 ** 40] * 64),
    "negative-shape": doc([-1, 1, 8, 8], [0.0] * 64),
    "negative-dims": doc([1, -1, -8, 8], [0.0] * 64),
    "huge-shape": doc([10 ** 18, 1, 8, 8], [0.0] * 64),
    "huge-int-shape": doc([10 ** 40, 1, 8, 8], [0.0] * 64),
    "product-mismatch": doc([2, 1, 8, 8], [0.0] * 64),
    "wrong-image": doc([1, 64, 1, 1], [0.0] * 64),
    "zero-size": doc([0, 1, 8, 8], []),
    "float-shape": doc([1.0, 1, 8, 8], [0.0] * 64),
    "bool-shape": doc([True, 1, 8, 8], [0.0] * 64),
    "string-shape": doc(["1", "1", "8", "8"], [0.0] * 64),
    "3d-shape": doc([1, 8, 8], [0.0] * 64),
    "datatype": json.dumps({"inputs": [{"shape": [1, 1, 8, 8], "datatype": "INT64",
                                        "data": [0] * 64}]}).encode(),
    "unknown-output": doc([1, 1, 8, 8], [0.0] * 64, outputs=[{"name": "logits"}]),
    "binary-size-without-header": json.dumps({"inputs": [{"shape": [1, 1, 8, 8], "datatype": "FP32",
                                                          "parameters": {"binary_data_size": 256}}]
                                              }).encode(),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_every_malformed_body_is_a_4xx_json_error(client: TestClient, name: str) -> None:
    before = client.app.state.stats.requests
    r = client.post(INFER, content=MALFORMED[name], headers=AUTH)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"] == "application/json" and r.json()["error"]
    assert client.app.state.stats.requests == before
    with pytest.raises(RequestError) as e:
        parse_infer_request(MALFORMED[name], {}, IMAGE)
    assert e.value.status == 400 and "\n" not in e.value.message


# ----------------------------------------------------------------------------- the API key


def test_every_route_but_health_needs_the_key(client: TestClient) -> None:
    from undistill import __version__

    for path in ["/v2/health/live", "/v2/health/ready"]:
        assert client.get(path).status_code == 200
    body = doc([1, 1, 8, 8], [0.0] * 64)
    routes = [("GET", "/v2"), ("GET", "/v2/models/model"), ("GET", "/v2/models/model/stats"),
              ("GET", "/v2/models/model/ready"), ("GET", "/v2/models/other"), ("POST", INFER),
              ("POST", "/v2/models/other/infer")]
    for method, path in routes:
        for headers in [{}, {"authorization": "Bearer nope"}, {"x-api-key": ""}]:
            r = client.request(method, path, headers=headers, content=body)
            assert r.status_code == 401, (method, path, headers)
            assert r.json()["error"] == "missing or wrong API key"
    assert client.get("/v2/models/model/stats", headers={"x-api-key": KEY}).status_code == 200
    assert client.get("/v2/models/model", headers=AUTH).json()["name"] == "model"
    assert client.get("/v2/models/other", headers=AUTH).status_code == 404
    meta = client.get("/v2", headers=AUTH)
    assert meta.status_code == 200 and meta.json() == {
        "name": "undistill", "version": __version__,
        "extensions": ["binary_tensor_data", "statistics"]}


def test_empty_key_and_bad_limits_or_ports_raise(model_file: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uvicorn.run", lambda *a, **k: pytest.fail("served despite a bad option"))
    t = teacher(model_file)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"api_key": ""}, "api_key"), ({"max_request_bytes": 0}, "max_request_bytes"),
        ({"max_request_bytes": -5}, "max_request_bytes"),
        ({"max_request_bytes": 1.5}, "max_request_bytes"),
        ({"max_request_bytes": 100, "max_inflight_bytes": 99}, "max_inflight_bytes"),
        ({"body_timeout": 0}, "body_timeout")]
    for options, name in bad:
        with pytest.raises(ValueError, match=f"^{name}: ") as e:
            create_app(t, **options)
        assert "\n" not in str(e.value)
    create_app(t, max_request_bytes=100, max_inflight_bytes=100)
    for port in [-1, 65536, 70000]:
        with pytest.raises(ValueError, match="^port: must be in 0..65535"):
            BackgroundServer(create_app(t), port=port)
        with pytest.raises(ValueError, match="^port: must be in 0..65535"):
            serve(t, port=port)
    with pytest.raises(ValueError, match="^api_key: "):
        serve(t, port=8000, api_key="")


# ----------------------------------------------------------------------------- binary tensors


def test_binary_tensor_data_round_trips_and_is_checked_strictly(client: TestClient,
                                                                model_file: Path) -> None:
    x = torch.randn(5, *IMAGE)
    want = teacher(model_file)._answer(x).softmax(1)
    for binary in (True, False):
        for binary_output in (True, False):
            body, headers = encode_request(x, binary=binary, binary_output=binary_output)
            r = client.post(INFER, content=body, headers={**headers, **AUTH})
            assert r.status_code == 200, r.text
            assert (HEADER_LENGTH.lower() in r.headers) == binary_output
            got = decode_response(r.content, r.headers)["probabilities"]
            torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-6, rtol=1e-5)
    body, headers = encode_request(x)
    split = int(headers[HEADER_LENGTH])
    cases = {
        "length beyond the body": (body, str(len(body) + 1)),
        "length zero": (body, "0"),
        "length not a number": (body, "12x"),
        "length negative": (body, "-3"),
        "length inside the JSON": (body, str(split - 1)),
        "missing bytes": (body[:-4], str(split)),
        "extra bytes": (body + b"\0\0\0\0", str(split)),
        "NaN bytes": (body[:-4] + np.float32("nan").tobytes(), str(split)),
        "size not shape x 4": (body.replace(b'"binary_data_size": 1280', b'"binary_data_size": 1276')
                               [:-4], str(split)),
        "JSON data and binary bytes": (doc([5, 1, 8, 8], [0.0] * 320) + b"\0" * 16,
                                       str(len(doc([5, 1, 8, 8], [0.0] * 320)))),
    }
    for name, (bad, length) in cases.items():
        r = client.post(INFER, content=bad, headers={HEADER_LENGTH: length, **AUTH})
        assert r.status_code == 400 and r.json()["error"], name


# ----------------------------------------------------------------------------- fuzzing

LEAF = (st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.floats()
        | st.text(max_size=8))
KEYS = st.sampled_from(["inputs", "outputs", "shape", "data", "datatype", "name", "parameters",
                        "binary_data", "binary_data_size", "binary_data_output", "id"]) | st.text(
    max_size=6)
ANYTHING = st.recursive(LEAF, lambda c: st.lists(c, max_size=6) | st.dictionaries(KEYS, c, max_size=6),
                        max_leaves=40)


@st.composite
def near_valid(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """Requests close to valid ones (JSON or binary), often exactly valid, often off by a bit."""
    n = draw(st.integers(-1, 3))
    x = np.asarray(draw(st.lists(st.floats(-1e3, 1e3, width=32), min_size=64 * max(n, 1),
                                 max_size=64 * max(n, 1))), dtype=np.float32)
    x = x.reshape(max(n, 1), *IMAGE)
    body, headers = encode_request(x, binary=draw(st.booleans()), binary_output=draw(st.booleans()))
    if n < 1:  # a wrong batch size in the header
        body = body.replace(b'"shape": [1,', f'"shape": [{n},'.encode(), 1)
        if HEADER_LENGTH in headers:
            headers[HEADER_LENGTH] = str(int(headers[HEADER_LENGTH]) + len(str(n)) - 1)
    match draw(st.sampled_from(["as is", "truncate", "append", "flip", "length", "field"])):
        case "truncate":
            body = body[:draw(st.integers(0, len(body)))]
        case "append":
            body += draw(st.binary(max_size=16))
        case "flip":
            i = draw(st.integers(0, len(body) - 1))
            body = body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1:]
        case "length":
            headers[HEADER_LENGTH] = draw(st.integers(-2, len(body) + 2).map(str) | st.text(
                string.ascii_letters + string.digits + " -+", max_size=4))
        case "field":
            d = json.loads(body if HEADER_LENGTH not in headers else body[:int(headers[HEADER_LENGTH])])
            d["inputs"][0][draw(KEYS)] = draw(ANYTHING)
            head = json.dumps(d).encode()
            tail = body[int(headers[HEADER_LENGTH]):] if HEADER_LENGTH in headers else b""
            if HEADER_LENGTH in headers:
                headers[HEADER_LENGTH] = str(len(head))
            body = head + tail
    return body, headers


BODIES = (st.tuples(st.binary(max_size=2048), st.just({}))
          | st.tuples(ANYTHING.map(lambda d: json.dumps(d).encode()), st.just({}))
          | st.tuples(st.binary(max_size=512), st.integers(-1, 600).map(
              lambda n: {HEADER_LENGTH: str(n)}))
          | near_valid())


def check_answer(req_or_error: Any) -> None:
    if isinstance(req_or_error, RequestError):
        assert 400 <= req_or_error.status < 500 and "\n" not in req_or_error.message
    else:
        x = req_or_error.x
        assert x.dtype == torch.float32 and tuple(x.shape[1:]) == IMAGE and x.shape[0] >= 1
        assert torch.isfinite(x).all()


@FUZZ
@given(BODIES)
def test_fuzz_parse_infer_request(case: tuple[bytes, dict[str, str]]) -> None:
    body, headers = case
    try:
        got: Any = parse_infer_request(body, headers, IMAGE)
    except RequestError as e:
        got = e
    check_answer(got)


@FUZZ
@given(BODIES)
def test_fuzz_the_infer_route(client: TestClient, case: tuple[bytes, dict[str, str]]) -> None:
    body, headers = case
    stats = client.app.state.stats
    before = stats.requests
    r = client.post(INFER, content=body, headers={**headers, **AUTH})
    if r.status_code == 200:
        probs = decode_response(r.content, r.headers)["probabilities"]
        assert probs.shape[1] == 10 and np.isfinite(probs).all()
        assert stats.requests == before + 1
    else:
        assert 400 <= r.status_code < 500 and r.json()["error"], r.text
        assert stats.requests == before


PATTERNS = [b"[", b"{", b'{"a":', b"0.1,", b"1e999,", b"-0,", b'"a",', b"[1],", b"{},", b"\\u0000",
            b"99999999999999999999,", b"1.00000000000000000000000001,", b"null,", b" "]


@settings(max_examples=30, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([b"", b'{"inputs": [{"shape": [16384, 1, 8, 8], "datatype": "FP32", '
                                b'"data": [', b'{"inputs": [{"shape": [1, 1, 8, 8], "data": [']),
       st.sampled_from(PATTERNS), st.floats(0.1, 1.0), st.sampled_from([b"", b"0]}]}"]))
def test_fuzz_the_largest_bodies_in_bounded_memory(prefix: bytes, pattern: bytes, fill: float,
                                                   suffix: bytes) -> None:
    limit = 1 << 20
    room = limit - len(prefix) - len(suffix)
    body = prefix + pattern * int(room * fill // len(pattern)) + suffix
    tracemalloc.start()
    try:
        try:
            got: Any = parse_infer_request(body, {}, IMAGE)
        except RequestError as e:
            got = e
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    check_answer(got)
    assert peak < 40 * limit, f"{peak / 2**20:.1f} MiB"
