"""Serve any teacher over the Open Inference Protocol (KServe v2), behind an output policy.

Routes: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2/models/{name}`` (metadata),
``GET /v2/models/{name}/stats`` (images answered), ``POST /v2/models/{name}/infer``. Inputs are
FP32 ``[N, C, H, W]`` in the model's own conventions (its input spec); the answer is one FP32
output ``probabilities`` ``[N, C]`` after the output policy. Requests larger than
``max_request_bytes`` get 413, a missing or wrong API key 401, malformed requests 400.

An output policy is a function ``probs [N, C] -> probs [N, C]`` (:data:`POLICIES`: ``full``,
``top-k``, ``round``, ``labels``); every output defence of ``undistill.defences`` is one too (a
defence that reads the queries, MAD, gets the request's images). The optional extra
``undistill[serve]`` (Starlette, uvicorn).
"""

from __future__ import annotations

import hmac
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from undistill.teachers.base import Teacher
from undistill.teachers.remote import input_key

OutputPolicy = Callable[[torch.Tensor], torch.Tensor]


def full() -> OutputPolicy:
    """The probabilities as they are."""
    return lambda p: p


def top_k(k: int = 1) -> OutputPolicy:
    """Keep the ``k`` largest probabilities, zero the rest (not renormalised)."""
    if k < 1:
        raise ValueError(f"top-k: k must be at least 1, got {k}")

    def policy(p: torch.Tensor) -> torch.Tensor:
        kk = min(k, p.shape[1])
        idx = p.topk(kk, dim=1).indices
        return torch.zeros_like(p).scatter(1, idx, p.gather(1, idx))
    return policy


def rounded(decimals: int = 2) -> OutputPolicy:
    """Probabilities rounded to ``decimals`` decimal places."""
    if decimals < 0:
        raise ValueError(f"round: decimals must be >= 0, got {decimals}")
    return lambda p: p.round(decimals=decimals)


def labels_only() -> OutputPolicy:
    """The top-1 class as a one-hot vector."""
    return lambda p: torch.nn.functional.one_hot(p.argmax(1), p.shape[1]).to(p.dtype)


POLICIES: dict[str, Callable[..., OutputPolicy]] = {
    "full": full, "top-k": top_k, "round": rounded, "labels": labels_only}


def make_policy(name: str, k: int = 1, decimals: int = 2) -> OutputPolicy:
    if name not in POLICIES:
        raise ValueError(f"unknown output policy {name!r}; known: {', '.join(POLICIES)}")
    if name == "top-k":
        return top_k(k)
    if name == "round":
        return rounded(decimals)
    return POLICIES[name]()


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


def create_app(teacher: Teacher, *, name: str = "model", policy: OutputPolicy | None = None,
               api_key: str | None = None, max_request_bytes: int = 16 << 20,
               stats: ServeStats | None = None) -> Any:
    """A Starlette app answering for ``teacher`` (probed: its input spec must be complete)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    policy = policy or full()
    stats = stats or ServeStats()
    spec = teacher.spec
    if spec.channels is None or spec.image_size is None or spec.num_classes is None:
        teacher.probe()
        spec = teacher.spec
    lock = threading.Lock()  # one forward at a time: models are not all thread-safe

    def error(status: int, msg: str) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    def authorised(request: Request) -> bool:
        if api_key is None:
            return True
        got = request.headers.get("authorization", "")
        token = got[7:] if got.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return hmac.compare_digest(token.encode(), api_key.encode())

    async def live(request: Request) -> JSONResponse:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> JSONResponse:
        return JSONResponse({"ready": True})

    def known(request: Request) -> bool:
        return request.path_params["model"] == name

    async def metadata(request: Request) -> JSONResponse:
        if not known(request):
            return error(404, f"unknown model {request.path_params['model']!r}")
        return JSONResponse({
            "name": name, "platform": f"undistill/{teacher.kind}",
            "inputs": [{"name": "input", "datatype": "FP32",
                        "shape": [-1, spec.channels, spec.image_size, spec.image_size]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32",
                         "shape": [-1, spec.num_classes]}]})

    async def model_stats(request: Request) -> JSONResponse:
        if not known(request):
            return error(404, f"unknown model {request.path_params['model']!r}")
        return JSONResponse({"model_stats": [{"name": name, "inference_count": stats.images,
                                              "execution_count": stats.requests}]})

    def answer(x: torch.Tensor) -> torch.Tensor:
        with lock, torch.no_grad():
            out = teacher._answer(x)
        probs = out if teacher.spec.outputs == "probs" else out.softmax(1)
        if getattr(policy, "uses_inputs", lambda: False)():  # a defence reading the queries (MAD)
            return policy(probs.float(), x)
        return policy(probs.float())

    async def infer(request: Request) -> JSONResponse:
        if not known(request):
            return error(404, f"unknown model {request.path_params['model']!r}")
        if not authorised(request):
            return error(401, "missing or wrong API key")
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_request_bytes:
            return error(413, f"request of {size} bytes exceeds the limit of {max_request_bytes}")
        body = await request.body()
        if len(body) > max_request_bytes:
            return error(413, f"request exceeds the limit of {max_request_bytes} bytes")
        try:
            doc = json.loads(body)
            inp = doc["inputs"][0]
            shape = [int(s) for s in inp["shape"]]
            if str(inp.get("datatype", "FP32")).upper() != "FP32":
                return error(400, "input datatype must be FP32")
            x = torch.tensor(np.asarray(inp["data"], dtype=np.float32).reshape(shape))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            return error(400, f"malformed inference request: {type(e).__name__}: {e}")
        want = [spec.channels, spec.image_size, spec.image_size]
        if x.dim() != 4 or list(x.shape[1:]) != want or x.shape[0] < 1:
            return error(400, f"input shape {shape}; expected [N, {', '.join(map(str, want))}]")
        probs = await run_in_threadpool(answer, x)
        stats.add(x)
        return JSONResponse({"model_name": name, "outputs": [{
            "name": "probabilities", "datatype": "FP32", "shape": list(probs.shape),
            "data": probs.reshape(-1).tolist()}]})

    app = Starlette(routes=[
        Route("/v2/health/live", live), Route("/v2/health/ready", ready),
        Route("/v2/models/{model}", metadata), Route("/v2/models/{model}/ready", ready),
        Route("/v2/models/{model}/stats", model_stats),
        Route("/v2/models/{model}/infer", infer, methods=["POST"])])
    app.state.stats = stats
    return app


class BackgroundServer:
    """An ASGI app on a loopback port in a background thread (tests, notebooks).

    ``with BackgroundServer(app) as srv: srv.url`` -> ``http://127.0.0.1:PORT``.
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

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
    """Serve ``teacher`` until interrupted (``create_app`` options)."""
    import uvicorn

    uvicorn.run(create_app(teacher, **app_options), host=host, port=port, log_level="info")
