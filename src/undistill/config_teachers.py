"""The configuration of teachers from model files and URLs: their input conventions
(:class:`InputSpec`), how a URL teacher is asked (:class:`ClientConfig`) and a run config's entry
for such a teacher (:class:`ExternalTeacherConfig`; its ``kind`` is a registered kind,
:mod:`undistill.teachers.kind`). Re-exported by :mod:`undistill.config`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    """No unknown fields; assignments validated (every config model)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class InputSpec(StrictModel):
    """What a model from outside expects and answers; unset fields follow the dataset's own."""

    image_size: int | None = Field(None, ge=1, le=4096, description="square input size (pixels)")
    channels: int | None = Field(None, ge=1, le=4, description="input channels (1 grey, 3 colour)")
    channel_order: Literal["rgb", "bgr"] = "rgb"
    mean: list[float] | None = Field(None, description="per-channel mean the model subtracts from "
                                     "[0, 1] pixels ([0] with std [1]: raw [0, 1] input)")
    std: list[float] | None = None
    num_classes: int | None = Field(None, ge=2)
    outputs: Literal["auto", "logits", "probs"] = Field("auto", description="what the model "
                                                        "answers; auto: probabilities if every "
                                                        "row of the probe's answer sums to 1")

    @model_validator(mode="after")
    def _norm(self) -> InputSpec:
        if (self.mean is None) != (self.std is None):
            raise ValueError("mean and std: give both or neither")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std {len(self.std)}")
        return self


class ClientConfig(StrictModel):
    """How a URL teacher is asked (never part of a run's identity)."""

    batch_size: int = Field(64, ge=1, description="images per request")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    rate: float | None = Field(None, gt=0, description="requests per second at most")
    timeout: float = Field(30.0, gt=0, description="seconds per request")
    retries: int = Field(5, ge=0, description="retries of a failed request (exponential backoff)")
    backoff: float = Field(0.5, ge=0, description="first backoff wait (s), doubling per retry")
    api_key_env: str | None = Field(None, description="environment variable holding the API key "
                                    "(the key itself is never written to a config)")
    basic_auth_env: str | None = Field(None, description="environment variable holding "
                                       "'user:password' for HTTP basic auth (never written to a "
                                       "config; credentials in a URL are taken out of it)")

    def options(self) -> dict[str, Any]:
        import os

        d = self.model_dump(exclude={"api_key_env", "basic_auth_env"})
        for field, var in (("api_key_env", self.api_key_env), ("basic_auth_env", self.basic_auth_env)):
            if not var:
                continue
            if var not in os.environ:
                raise ValueError(f"client.{field}: ${var} is not set")
            if not os.environ[var].strip():
                raise ValueError(f"client.{field}: ${var} is set but empty")
            if field == "api_key_env":
                d["api_key"] = os.environ[var]
            else:
                user, _, password = os.environ[var].partition(":")
                d["auth"] = (user, password)
        return d


class ExternalTeacherConfig(StrictModel):
    """A frozen teacher from outside the runs directory (see docs/teachers.md)."""

    source: str = Field(description="a model file (.pt/.ts TorchScript, .pt2 torch.export, .onnx, "
                        ".safetensors/.pt state_dict) or an http(s) URL of an Open Inference "
                        "Protocol model")
    kind: str = Field(description="a registered teacher kind that can go into a run config "
                      "(undistill.teachers.kind: torchscript, export, onnx, state_dict, url, and any "
                      "kind registered since)")
    identity: str = Field(min_length=8, description="content hash of the file, or of the URL and "
                          "its answer to the fixed probe; part of every dependent run's id")
    arch: str | None = Field(None, description="state_dict: zoo architecture or factory "
                             "package.module:function")
    width: float = Field(1.0, gt=0.0, le=4.0)
    spec: InputSpec = Field(default_factory=InputSpec)
    client: ClientConfig = Field(default_factory=ClientConfig)

    @field_validator("source")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        """``user:password@`` is taken out of a URL: credentials are never stored in a config (they
        come from ``client.api_key_env`` / ``client.basic_auth_env``); run ids do not hold sources."""
        from urllib.parse import urlsplit, urlunsplit

        try:
            parts = urlsplit(v)
        except ValueError:  # not a URL (the teacher says so when it is opened)
            return v
        if parts.scheme in ("http", "https") and "@" in parts.netloc:
            return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        return v

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        from undistill.teachers.kind import config_kinds

        if v not in (known := config_kinds()):
            raise ValueError(f"unknown teacher kind {v!r}; known in a run config: {', '.join(known)}")
        return v

    @model_validator(mode="after")
    def _arch(self) -> ExternalTeacherConfig:
        from undistill.teachers.kind import get_kind

        if get_kind(self.kind).needs_arch and not self.arch:
            raise ValueError(f"arch: a {self.kind} teacher needs a zoo architecture or a factory")
        return self
