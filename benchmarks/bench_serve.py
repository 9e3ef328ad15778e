"""Images answered per second by ``undistill serve`` against the raw model's batched inference.

One run, one machine: the plain CNN (``cnn``, CIFAR-like 3x32x32 input, 10 classes) saved as
TorchScript and

* ``raw``: the loaded model called directly on batches of ``--batch-size`` (``no_grad``);
* ``serve-binary`` / ``serve-json``: the same file behind :func:`undistill.serve.create_app` on a
  loopback :class:`~undistill.serve.BackgroundServer`, with its limits on (the defaults), an API
  key and an output defence (``--defence``, top-1 by default), asked by one keep-alive httpx
  client with binary tensor data requests and answers (:mod:`undistill.oip`) or with JSON ones.

The paths take turns request by request (raw batch, binary request, JSON request, ...), so that
a machine whose load changes slows them alike. Request bodies are encoded before the timing (the
client's encoding is not the server's cost); every answer is checked (status 200, shape). Client
and server share the process (and the GIL). Prints images/s per path and the ratio to ``raw``
(median of ``--repeats`` rounds); ``--out`` writes the same as JSON. Goal: ``serve-binary`` at
batch 64 >= 0.7x ``raw``.

    .venv/bin/python benchmarks/bench_serve.py --threads 2 --out /tmp/bench-serve.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import torch

from undistill.defences import parse_defence
from undistill.models import build_model
from undistill.oip import decode_response, encode_request
from undistill.serve import BackgroundServer, create_app
from undistill.teachers import Teacher

SHAPE = (3, 32, 32)
CLASSES = 10
KEY = "bench"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=float, default=1.0, help="width of the plain CNN")
    p.add_argument("--requests", type=int, default=20, help="timed batches per round (raw, binary)")
    p.add_argument("--json-requests", type=int, default=5, help="timed JSON requests per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--defence", default="{name: topk, params: {k: 1}}")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    a = parse(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    batches = [torch.randn(a.batch_size, *SHAPE) for _ in range(8)]
    model = build_model("cnn", CLASSES, in_channels=SHAPE[0], width=a.width, image_size=SHAPE[1]).eval()
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    path = tmp / "cnn.ts"
    torch.jit.save(torch.jit.trace(model, batches[0][:2]), path)
    raw_model = torch.jit.load(str(path)).eval()
    teacher = Teacher.open(path, {"channels": SHAPE[0], "image_size": SHAPE[1], "num_classes": CLASSES})
    app = create_app(teacher, api_key=KEY, policy=parse_defence(a.defence, CLASSES))
    bodies = {kind: [encode_request(x, binary=kind == "binary", binary_output=kind == "binary")
                     for x in batches] for kind in ("binary", "json")}

    with BackgroundServer(app) as srv, httpx.Client(
            headers={"authorization": f"Bearer {KEY}"}, timeout=120) as client:
        url = f"{srv.url}/v2/models/model/infer"

        def raw(i: int) -> None:
            with torch.no_grad():
                raw_model(batches[i % len(batches)])

        def ask(kind: str) -> Callable[[int], None]:
            def one(i: int) -> None:
                body, headers = bodies[kind][i % len(batches)]
                r = client.post(url, content=body, headers=headers)
                if r.status_code != 200:
                    raise RuntimeError(f"{kind}: {r.status_code} {r.text[:200]}")
                if i == 0:  # the first answer of each kind is decoded and checked
                    probs = decode_response(r.content, r.headers)["probabilities"]
                    assert probs.shape == (a.batch_size, CLASSES)
            return one

        paths = {"raw": (raw, a.requests), "serve-binary": (ask("binary"), a.requests),
                 "serve-json": (ask("json"), a.json_requests)}
        for fn, _ in paths.values():  # warm-up: the model's first (JIT-profiled) calls, connection
            for i in range(a.warmup):
                fn(i)
        rounds: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(a.repeats):
            spent = dict.fromkeys(paths, 0.0)
            for i in range(a.requests):
                for name, (fn, n) in paths.items():
                    if i < n:
                        t0 = time.perf_counter()
                        fn(i)
                        spent[name] += time.perf_counter() - t0
            for name, (_, n) in paths.items():
                rounds[name].append(n * a.batch_size / spent[name])
            print(f"  round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rounds.items())
                  + " img/s", file=sys.stderr, flush=True)
        served = app.state.stats.images

    results = {k: statistics.median(v) for k, v in rounds.items()}
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(),
                    "load_avg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "images_per_s": results, "all_images_per_s": rounds,
        "ratio_to_raw": {k: v / results["raw"] for k, v in results.items() if k != "raw"},
        "images_answered_by_server": served,
    }
    if a.out is not None:
        a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"batch {a.batch_size}, cnn width {a.width} at {'x'.join(map(str, SHAPE))}, defence "
          f"{a.defence}, {torch.get_num_threads()} torch threads")
    print(f"{'path':14s} {'img/s':>9s} {'x raw':>7s}")
    for name, v in results.items():
        print(f"{name:14s} {v:9.1f} {v / results['raw']:6.2f}x")
    return report


if __name__ == "__main__":
    main()
