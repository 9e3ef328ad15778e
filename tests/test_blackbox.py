"""Black-box teachers over a real loopback server: stealing within a budget, retries, the answer
cache across a killed attack, output policies, serve's limits, and audit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FailEvery, digits_torchscript
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from undistill import steal
from undistill.config import Runtime
from undistill.runs import get_dataset
from undistill.serve import BackgroundServer, ServeStats, create_app, make_policy
from undistill.teachers import Teacher, TeacherError
from undistill.teachers.remote import RemoteTeacher

DS = get_dataset("digits", None)
SRC = str(Path(__file__).resolve().parents[1] / "src")
FAST = ["optim.batch_size=32", "model.width=0.25"]



@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return digits_torchscript(tmp_path / "teacher.ts")


def served(model_file: Path, **options):
    t = Teacher.open(model_file).bind_dataset(DS)
    app = create_app(t, stats=ServeStats(track_inputs=True), **options)
    return app, BackgroundServer(app)




def test_steal_through_a_server_within_budget_and_never_twice(model_file: Path, tmp_path: Path) -> None:
    app, server = served(model_file)
    runs = tmp_path / "runs"
    with server:
        url = f"{server.url}/v2/models/model"
        res = steal(url, "digits", method="kd", budget=40, epochs=2, sets=FAST, retries=0,
                    runtime=Runtime(runs_dir=runs, device="cpu", progress=False))
        stats = app.state.stats
        assert stats.images == 40  # the probe and 39 training images, each once
        assert max(stats.per_input.values()) == 1
        assert res.epochs_run == 2
        cfg = json.loads((Path(res.run_dir) / "config.json").read_text())["config"]
        assert cfg["budget"] == 40 and cfg["teachers"][0]["identity"].startswith("url:")
        # a repeated attack (another student, a new process) pays only for the probe
        steal(url, "digits", method="hard-label", budget=40, epochs=1, sets=FAST, retries=0,
              runtime=Runtime(runs_dir=runs, device="cpu", progress=False))
        assert stats.images == 41 and sorted(set(stats.per_input.values())) == [1, 2]
        # a budget too small for what is asked is never exceeded: nothing is sent
        t = Teacher.from_url(url, budget=3, cache=tmp_path / "other.sqlite").bind_dataset(DS)
        t.probe()
        x = torch.randn(5, 1, 8, 8)
        with pytest.raises(TeacherError, match="query budget of 3 images spent"):
            t.logits(x)
        assert stats.images == 42 and t.sent == 1
        t.logits(x[:2])
        assert t.sent == 3 and stats.images == 44


def test_retries_recover_from_a_failing_server_without_double_counting(model_file: Path,
                                                                        tmp_path: Path) -> None:
    app, _ = served(model_file)
    server = BackgroundServer(FailEvery(app, 3))
    with server:
        t = Teacher.from_url(f"{server.url}/v2/models/model", batch_size=8, concurrency=2,
                             retries=4, backoff=0.01, cache=tmp_path / "a.sqlite").bind_dataset(DS)
        t.probe()
        from undistill.data.augment import normalize

        x = normalize(DS.train_images[:64], DS.mean, DS.std)
        got = t.logits(x)
        direct = Teacher.open(model_file).bind_dataset(DS).logits(x).log_softmax(1)
        torch.testing.assert_close(got, direct, atol=1e-4, rtol=1e-4)
        assert server.server.config.app.n > 9  # some requests failed and were retried
        assert app.state.stats.images == 65 == t.sent  # 64 images + probe, each answered once
        assert max(app.state.stats.per_input.values()) == 1


def test_a_killed_attack_resumes_without_requerying(model_file: Path, tmp_path: Path) -> None:
    app, _ = served(model_file)

    class Slow:
        def __init__(self, inner) -> None:
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["path"].endswith("/infer"):
                import asyncio

                await asyncio.sleep(0.1)
            await self.inner(scope, receive, send)

    server = BackgroundServer(Slow(app))
    runs = tmp_path / "runs"
    with server:
        cmd = [sys.executable, "-m", "undistill", "steal", "--teacher",
               f"{server.url}/v2/models/model", "--dataset", "digits", "--budget", "81",
               "--runs-dir", str(runs), "--request-batch", "4", "--concurrency", "1",
               "--no-progress", "--set", "optim.epochs=1", "--set", "optim.milestones=[]",
               "--set", "optim.batch_size=32", "--set", "model.width=0.25", "--device", "cpu"]
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while app.state.stats.images < 30 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()  # still mid-attack
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        paid = app.state.stats.images
        assert 30 <= paid < 81
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        stats = app.state.stats
        # everything the killed process received was kept: the resume re-asks only the probe and
        # the one request (4 images) that was in flight at the kill, answered but never received
        counts = sorted(stats.per_input.values())
        assert set(counts) <= {1, 2} and 1 <= counts.count(2) <= 1 + 4
        assert len(counts) == 81 and stats.images == 81 + counts.count(2)


def test_bad_servers_get_clear_errors(tmp_path: Path) -> None:
    async def garbage(request):
        return PlainTextResponse("<html>oops</html>")

    async def seven(request):
        doc = await request.json()
        n = doc["inputs"][0]["shape"][0]
        return JSONResponse({"outputs": [{"name": "probabilities", "shape": [n, 7],
                                          "datatype": "FP32", "data": [1 / 7] * (7 * n)}]})

    async def nan(request):
        return PlainTextResponse('{"outputs": [{"name": "logits", "shape": [1, 10], "datatype": '
                                 '"FP32", "data": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}',
                                 media_type="application/json")

    app = Starlette(routes=[Route("/garbage/infer", garbage, methods=["POST"]),
                            Route("/seven/infer", seven, methods=["POST"]),
                            Route("/nan/infer", nan, methods=["POST"])])
    with BackgroundServer(app) as srv:
        for path, message in [("garbage", "the answer is not JSON"),
                              ("seven", "answers 7 classes but 10 are expected"),
                              ("nan", "NaN or infinite")]:
            t = RemoteTeacher(f"{srv.url}/{path}", retries=0).bind_dataset(DS)
            with pytest.raises(TeacherError, match=message):
                t.probe()
        with pytest.raises(TeacherError, match="404"):
            RemoteTeacher(f"{srv.url}/missing", retries=0).bind_dataset(DS).probe()
    with pytest.raises(TeacherError, match=r"no answer after 2 attempts \(ConnectError"):
        RemoteTeacher(srv.url + "/gone", retries=1, backoff=0.01).bind_dataset(DS).probe()
    with pytest.raises(TeacherError, match="budget: 0 images leave none to train on"):
        steal(f"{srv.url}/gone", "digits", budget=0, runtime=Runtime(runs_dir=tmp_path))


def test_serve_api_key_size_limit_and_output_policies(model_file: Path) -> None:
    app, server = served(model_file, api_key="s3cret", max_request_bytes=20_000,
                        policy=make_policy("top-k", k=2))
    with server:
        url = f"{server.url}/v2/models/model"
        import httpx

        assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
        with pytest.raises(TeacherError, match="401"):
            RemoteTeacher(url, retries=0).bind_dataset(DS).probe()
        t = RemoteTeacher(url, api_key="s3cret", retries=0, batch_size=64).bind_dataset(DS)
        answer = t.probe()
        # top-2 is the topk defence now: renormalised, so rows sum to one (they did not before)
        assert (answer > 0).sum() == 2 and t.spec.outputs == "probs"
        assert torch.allclose(answer.sum(1), torch.ones(1))
        with pytest.raises(TeacherError, match="413"):
            t.logits(torch.randn(64, 1, 8, 8))  # ~64 x 64 floats of JSON: over 20 kB
        r = httpx.post(f"{url}/infer", content=b"{not json", headers={"x-api-key": "s3cret"})
        assert r.status_code == 400 and "malformed" in r.json()["error"]
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    # policies are the defences of the same name: top-k is renormalised (it was not before)
    assert torch.equal(make_policy("top-k", k=1)(p), torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    assert torch.allclose(make_policy("top-k", k=2)(p),
                          torch.tensor([[0.625, 0.375, 0.0], [0.0, 2 / 3, 1 / 3]]))
    assert torch.allclose(make_policy("round", decimals=1)(torch.tensor([[0.46, 0.54]])),
                          torch.tensor([[0.5, 0.5]]))
    assert torch.equal(make_policy("labels")(p), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    assert make_policy("full") is None
    with pytest.raises(ValueError, match="unknown output policy"):
        make_policy("noise")


def test_hard_label_attack_through_a_labels_only_server(model_file: Path, tmp_path: Path) -> None:
    app, server = served(model_file, policy=make_policy("labels"))
    with server:
        res = steal(f"{server.url}/v2/models/model", "digits", method="hard-label", budget=200,
                    runtime=Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False),
                    epochs=10, labels=False,
                    sets=["optim.batch_size=32", "model.width=0.5", "optim.lr=0.05"])
    from undistill.analysis import predict_logits
    from undistill.runs import load_run_model, read_run_config

    run = Path(res.run_dir)
    student = load_run_model(read_run_config(run), run.parent, which="last")
    teacher = Teacher.open(model_file).bind_dataset(DS)
    s = predict_logits(student, DS.test_images, DS.mean, DS.std)
    t = predict_logits(teacher.logits, DS.test_images, DS.mean, DS.std)
    agreement = (s.argmax(1) == t.argmax(1)).float().mean().item()
    assert agreement > 0.3  # learnt the teacher's labels (chance: about 0.1)
    assert app.state.stats.images == 200


def test_audit_cli_writes_json_report_and_curve(model_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from undistill.cli import app

    out = tmp_path / "audit"
    r = CliRunner().invoke(app, ["audit", str(model_file), "--dataset", "digits", "--budget", "32",
                                 "--out", str(out), "--steps", "4", "--width", "0.25",
                                 "--curve-points", "2", "--device", "cpu", "--no-progress",
                                 "--set", "optim.batch_size=32"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "audit.json").read_text())
    assert 0 <= doc["teacher"]["accuracy"] <= 100
    assert [a["method"] for a in doc["attacks"]] == ["kd", "htc", "skeptical", "hard-label"]
    assert all(set(a) >= {"method", "arch", "accuracy_mean", "accuracy_ci", "agreement_mean",
                          "fraction_of_teacher", "seeds", "run_ids", "budget"}
               and a["budget"] == 32 for a in doc["attacks"])
    assert [(c["method"], c["budget"]) for c in doc["curve"]] == [
        (m, b) for m in ["kd", "htc", "skeptical", "hard-label"] for b in (16, 32)]
    report = (out / "report.md").read_text()
    assert "Verdict:" in report and "| hard-label | cnn |" in report
    assert (out / "curve.png").stat().st_size > 1000
    r = CliRunner().invoke(app, ["audit", str(tmp_path / "nope.onnx"), "--dataset", "digits",
                                 "--out", str(out)])
    assert r.exit_code == 2 and "no such model file" in r.output
