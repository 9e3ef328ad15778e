"""A teacher behind the V1 protocol (TensorFlow Serving REST / KServe v1): one file, its kind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from undistill import steal
from undistill.config import Runtime
from undistill.runs import get_dataset
from undistill.serve import BackgroundServer
from undistill.teachers import Teacher, TeacherError
from undistill.teachers.kind import detect_kind

DS = get_dataset("digits", None)
WEIGHTS = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))


class V1Model:
    """A linear model on the digits answering ``{"predictions": ...}``; counts the images."""

    def __init__(self, answer: str = "probs") -> None:
        self.images, self.answer = 0, answer
        self.app = Starlette(routes=[Route("/v1/models/m:predict", self.predict, methods=["POST"])])

    async def predict(self, request: Request):
        x = torch.tensor(json.loads(await request.body())["instances"], dtype=torch.float32)
        self.images += x.shape[0]
        if self.answer == "nan":
            return PlainTextResponse('{"predictions": [[NaN' + ", 0" * 9 + "]]}",
                                     media_type="application/json")
        p = (x.reshape(x.shape[0], -1) @ WEIGHTS).softmax(1)
        return JSONResponse({"predictions": p.tolist()})


def test_v1_urls_are_their_own_kind() -> None:
    assert detect_kind("http://127.0.0.1:8501/v1/models/m") == "v1"
    assert detect_kind("https://u:p@host/v1/models/m/versions/3") == "v1"
    assert detect_kind("http://127.0.0.1:8000/v2/models/m") == "url"


def test_a_v1_model_answers_like_the_model_and_is_stolen_within_budget(tmp_path) -> None:
    model = V1Model()
    with BackgroundServer(model.app) as srv:
        url = f"{srv.url}/v1/models/m"
        t = Teacher.open(url, retries=0).bind_dataset(DS)
        t.probe()
        assert t.kind == "v1" and t.identity.startswith("v1:")
        x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        want = (x.reshape(5, -1) @ WEIGHTS).softmax(1)
        torch.testing.assert_close(t.logits(x).softmax(1), want, rtol=1e-4, atol=1e-5)
        model.images = 0
        res = steal(url, "digits", method="kd", budget=30, epochs=1, retries=0,
                    sets=["optim.batch_size=32", "model.width=0.25"],
                    runtime=Runtime(runs_dir=tmp_path / "runs", device="cpu", progress=False))
        assert model.images == 30  # the probe and 29 training images, each once
        cfg = json.loads((Path(res.run_dir) / "config.json").read_text())
        assert cfg["config"]["teachers"][0]["kind"] == "v1"


def test_a_bad_v1_answer_is_one_line() -> None:
    with BackgroundServer(V1Model("nan").app) as srv, \
            pytest.raises(TeacherError, match="NaN or infinite") as e:
        Teacher.open(f"{srv.url}/v1/models/m", retries=0).bind_dataset(DS).probe()
    assert "\n" not in str(e.value)
