"""A teacher's input conventions: the YAML beside a model, flags over it, and the conversion from
the data pipeline's conventions to the model's (:class:`~undistill.config.InputSpec`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from pydantic import ValidationError
from torch.nn import functional as F

from undistill.config import InputSpec, _format
from undistill.teachers.errors import TeacherError

SPEC_FIELDS = set(InputSpec.model_fields)


def spec_file(path: str | Path) -> Path | None:
    """The YAML beside a model: ``model.onnx.yaml`` or ``model.yaml``."""
    p = Path(path)
    for cand in (p.with_name(p.name + ".yaml"), p.with_suffix(".yaml")):
        if cand.is_file() and cand != p:
            return cand
    return None


def read_spec_yaml(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TeacherError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise TeacherError(f"{path}: must hold a mapping of input conventions")
    return doc


def read_spec(path: str | Path | None, spec: InputSpec | dict[str, Any] | None = None
              ) -> InputSpec:
    """The YAML beside the model (if any), overridden by ``spec`` (flags)."""
    fields: dict[str, Any] = {}
    if path is not None and (f := spec_file(path)) is not None:
        fields.update({k: v for k, v in read_spec_yaml(f).items() if k in SPEC_FIELDS})
    if isinstance(spec, InputSpec):
        fields.update(spec.model_dump(exclude_unset=True))
    elif spec:
        fields.update({k: v for k, v in spec.items() if v is not None})
    try:
        return InputSpec(**fields)
    except ValidationError as e:
        raise TeacherError(f"input spec of {path or 'the teacher'}: {_format(e)}") from None


def to_model_conventions(x: torch.Tensor,
                         data: tuple[tuple[float, ...], tuple[float, ...], int, int] | None,
                         s: InputSpec, source: str) -> torch.Tensor:
    """Images in the data pipeline's conventions (``data``: mean, std, channels, size; None: the
    model's own already) -> the model's conventions ``s``."""
    if data is None:
        return x
    d_mean, d_std, _, _ = data
    same = (s.channels == x.shape[1] and s.image_size == x.shape[-1]
            and s.channel_order == "rgb" and list(s.mean or []) == list(d_mean)
            and list(s.std or []) == list(d_std))
    if same:
        return x

    def col(v: tuple[float, ...] | list[float]) -> torch.Tensor:
        return torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    px = x * col(d_std) + col(d_mean)  # [0, 1] pixels
    c = s.channels or px.shape[1]
    if c != px.shape[1]:
        if px.shape[1] == 1:
            px = px.expand(-1, c, -1, -1)
        elif c == 1:
            px = px.mean(1, keepdim=True)
        else:
            raise TeacherError(f"{source}: cannot turn {px.shape[1]} channels into {c}")
    if s.channel_order == "bgr":
        px = px.flip(1)
    size = s.image_size or px.shape[-1]
    if size != px.shape[-1] or size != px.shape[-2]:
        px = F.interpolate(px, size=(size, size), mode="bilinear", align_corners=False)
    mean = s.mean if s.mean is not None else [0.0]
    std = s.std if s.std is not None else [1.0]
    return (px - col(mean)) / col(std)


def require_file(path: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise TeacherError(f"{path}: no such model file")
    return p
