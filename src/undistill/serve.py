"""Serve any teacher over the Open Inference Protocol (KServe v2), behind an output policy.

Routes: ``GET /v2/health/live`` and ``GET /v2/health/ready``, open to all (probes); behind the API
key when one is set (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; 401 otherwise):
``GET /v2`` (server metadata: name, version, extensions), ``GET /v2/models/{name}`` (metadata),
``GET /v2/models/{name}/ready``, ``GET /v2/models/{name}/stats`` (images answered) and ``POST
/v2/models/{name}/infer``. Inputs are FP32 ``[N, C, H, W]`` in the model's own conventions (its
input spec), as JSON or binary tensor data (:mod:`undistill.oip`); the answer is one FP32 output
``probabilities`` ``[N, C]`` after the output policy, binary when the request asks for it.

Limits (:mod:`undistill.serve_limits`): a body over ``max_request_bytes`` gets 413 (unread when
Content-Length says so, else as soon as the running count passes it); bodies being read or
answered are bounded by ``max_inflight_bytes`` together (503 with ``Retry-After``); a body must
arrive within ``body_timeout`` seconds (408). An error that leaves a body unread closes the
connection. Malformed requests (NaN/inf values included) get a 400 JSON error and are not counted
in the stats. An empty API key is refused (ValueError), never read as "no key".

The output policy is an output defence of :mod:`undistill.defences` (None: the probabilities as
they are), and answers take the one release path a defended student's teacher takes
(:func:`undistill.defences.release`: the model's raw answer as float32 probabilities, then the
defence, which gets the request's images when it reads the queries: MAD). ``--policy`` names are
shorthand for defences (:func:`make_policy`). The optional extra ``undistill[serve]`` (Starlette,
uvicorn).
"""

from __future__ import annotations

import hmac
import logging
import socket
import threading
import time
from collections import Counter
from typing import Any

import torch

from undistill.defences.base import Defence
from undistill.defences.release_path import policy_defence, release
from undistill.oip import (
    BINARY_EXTENSION,
    OUTPUT,
    RequestError,
    encode_response,
    parse_infer_request,
)
from undistill.serve_limits import (
    BodyError,
    InflightBytes,
    Reservation,
    check_options,
    check_port,
    read_body,
)
from undistill.teachers.base import Teacher
from undistill.teachers.remote import input_key

#: Routes answered without the API key (liveness and readiness probes).
OPEN_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})
log = logging.getLogger(__name__)


def make_policy(name: str, k: int = 1, decimals: int = 2, num_classes: int | None = None
                ) -> Defence | None:
    """The output defence ``--policy NAME`` stands for (:func:`undistill.defences.policy_defence`):
    ``full`` -> None (no defence), ``top-k`` (or ``topk``) -> ``topk`` with ``k`` (renormalised),
    ``round`` -> ``round`` with ``decimals`` (clamped to [0, 1]), ``labels`` -> ``labels``.
    ValueError for an unknown name or bad parameters (``k`` checked against ``num_classes`` when
    given, else when the app is created)."""
    return policy_defence(name, k, decimals, num_classes)


class ServeStats:
    """What the server answered (thread-safe): requests, images, and, with ``track_inputs``, how
    often each input (by hash; memory grows with the distinct inputs: for tests and audits)."""

    def __init__(self, track_inputs: bool = False) -> None:
        self.requests = 0
        self.images = 0
        self.track_inputs = track_inputs
        self.per_input: Counter[str] = Counter()
        self.lock = threading.Lock()

    def add(self, x: torch.Tensor) -> None:
        keys = [input_key(row) for row in x.numpy()] if self.track_inputs else []
        with self.lock:
            self.requests += 1
            self.images += int(x.shape[0])
            self.per_input.update(keys)


class _RequireKey:
    """ASGI middleware: 401 for every request without the API key, except the health checks."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.key = app, key.encode()

    def authorised(self, scope: Any) -> bool:
        headers = dict(scope["headers"])
        got = headers.get(b"authorization", b"")
        token = got[7:] if got[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
        return hmac.compare_digest(token, self.key)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not self.authorised(scope):
            response = _error(401, "missing or wrong API key", close=True,
                              headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(status: int, msg: str, close: bool = False, headers: dict[str, str] | None = None) -> Any:
    """A JSON error; ``close``: hang up after it (a body left unread is not read)."""
    from starlette.responses import JSONResponse

    extra = {**(headers or {}), **({"Connection": "close"} if close else {})}
    return JSONResponse({"error": msg}, status_code=status, headers=extra)


def create_app(teacher: Teacher, *, name: str = "model", policy: Defence | None = None,
               api_key: str | None = None, max_request_bytes: int = 16 << 20,
               max_inflight_bytes: int | None = None, body_timeout: float = 60.0,
               stats: ServeStats | None = None) -> Any:
    """A Starlette app answering for ``teacher`` (probed: its input spec must be complete).

    ``policy``: the output defence answers go through (:func:`make_policy`, or any defence of
    :mod:`undistill.defences`); None releases the probabilities as they are.
    ``max_inflight_bytes`` (default 4 x ``max_request_bytes``) bounds the bodies being read or
    answered at once; ``body_timeout`` (s) the time a body may take to arrive. ValueError naming
    the option for an empty ``api_key``, limits out of range, or a defence that cannot serve the
    teacher's classes; TypeError for a ``policy`` that is not a defence.
    """
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    max_request_bytes, max_inflight_bytes, body_timeout = check_options(
        api_key, max_request_bytes, max_inflight_bytes, body_timeout)
    if policy is not None and not isinstance(policy, Defence):
        raise TypeError(f"policy: expected an output defence (make_policy, undistill.defences."
                        f"build_defence) or None, got {type(policy).__name__}")
    stats = stats or ServeStats()
    inflight = InflightBytes(max_inflight_bytes)
    spec = teacher.spec
    if spec.channels is None or spec.image_size is None or spec.num_classes is None:
        teacher.probe()
        spec = teacher.spec
    image_shape = (int(spec.channels or 0), int(spec.image_size or 0), int(spec.image_size or 0))
    if policy is not None and spec.num_classes is not None:
        try:
            policy.check(int(spec.num_classes))
        except ValueError as e:
            raise ValueError(f"policy: {e}") from None
    lock = threading.Lock()  # one forward at a time: models are not all thread-safe

    def unknown(request: Request) -> JSONResponse | None:
        model = request.path_params["model"]
        return None if model == name else _error(404, f"unknown model {model[:100]!r}", close=True)

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> JSONResponse:
        from undistill import __version__

        return JSONResponse({"name": "undistill", "version": __version__,
                             "extensions": [BINARY_EXTENSION, "statistics"]})

    async def model_ready(request: Request) -> JSONResponse:
        return unknown(request) or JSONResponse({"name": name, "ready": True})

    async def metadata(request: Request) -> JSONResponse:
        return unknown(request) or JSONResponse({
            "name": name, "platform": f"undistill/{teacher.kind}",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *image_shape]}],
            "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1, spec.num_classes]}]})

    async def model_stats(request: Request) -> JSONResponse:
        return unknown(request) or JSONResponse({"model_stats": [{
            "name": name, "inference_count": stats.images, "execution_count": stats.requests}]})

    def answer(x: torch.Tensor) -> torch.Tensor:  # the one release path, as students see it
        with lock:
            return release(teacher.raw_answer, x, policy, outputs=teacher.spec.outputs)

    def work(body: bytes | bytearray, headers: Any) -> tuple[bytes, dict[str, str]]:
        req = parse_infer_request(body, headers, image_shape)
        try:
            probs = answer(req.x)
        except Exception:
            log.exception("the model failed on a request of shape %s", list(req.x.shape))
            raise RequestError(500, "the model failed to answer (see the server log)") from None
        if not torch.isfinite(probs).all():
            raise RequestError(400, "the model's answer to this input is not finite (inputs far "
                                    "outside the model's range?)")
        payload, out_headers = encode_response(name, probs, req.binary_output, req.id)
        stats.add(req.x)
        return payload, out_headers

    async def infer(request: Request) -> Response:
        if (missing := unknown(request)) is not None:
            return missing
        held = Reservation(inflight)
        try:
            try:
                body = await read_body(request, max_request_bytes, held, body_timeout)
            except BodyError as e:
                return _error(e.status, e.message, close=True, headers=e.headers)
            except ClientDisconnect:
                return _error(400, "the client disconnected", close=True)
            try:
                payload, headers = await run_in_threadpool(work, body, request.headers)
            except RequestError as e:
                return _error(e.status, e.message)
            return Response(payload, headers=headers)
        finally:
            held.release()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)  # 404 and 405 of the router, as JSON
        return _error(exc.status_code, str(exc.detail))

    app = Starlette(routes=[
        Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{model}", metadata), Route("/v2/models/{model}/ready", model_ready),
        Route("/v2/models/{model}/stats", model_stats),
        Route("/v2/models/{model}/infer", infer, methods=["POST"])],
        middleware=[Middleware(_RequireKey, key=api_key)] if api_key is not None else [],
        exception_handlers={HTTPException: http_error})
    app.state.stats = stats
    app.state.inflight = inflight
    return app


class BackgroundServer:
    """An ASGI app on a loopback port in a background thread (tests, notebooks).

    ``with BackgroundServer(app) as srv: srv.url`` -> ``http://127.0.0.1:PORT``.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        check_port(port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(teacher: Teacher, host: str = "127.0.0.1", port: int = 8000, **app_options: Any) -> None:
    """Serve ``teacher`` until interrupted (``create_app`` options); ValueError for a bad option."""
    import uvicorn

    check_port(port)
    uvicorn.run(create_app(teacher, **app_options), host=host, port=port, log_level="info")
