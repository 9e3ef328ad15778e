"""A finished run of this toolkit (a run directory; its released checkpoint), for serving and
auditing. In a run config such a teacher stays a nested :class:`~undistill.config.RunConfig`."""

from __future__ import annotations

from pathlib import Path

import torch

from undistill.teachers.base import Teacher, TeacherError
from undistill.teachers.kind import Kind, register_kind


class RunTeacher(Teacher):
    kind = "run"

    def __init__(self, path: Path, runs_dir: Path | None = None, data_root: Path | None = None,
                 trust_factory: bool = False) -> None:
        from undistill.checkpoint import CheckpointError
        from undistill.runs import get_dataset, load_run_model, read_run_config

        super().__init__(str(path))
        try:
            self.run_config = read_run_config(path, allow_factories=trust_factory)
            self.model = load_run_model(self.run_config, runs_dir or path.parent, data_root)
        except CheckpointError as e:
            raise TeacherError(str(e)) from None
        ds = get_dataset(self.run_config.data.name, data_root, self.run_config.data.resize)
        self.bind_dataset(ds)
        self.spec = self.spec.model_copy(update={"outputs": "logits"})
        self._digest = f"run:{self.run_config.run_id}"

    def _answer(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(iter(self.model.parameters())).device
        return self.model(x.to(dev)).float()


KIND = register_kind(Kind(
    "run", lambda source, arch: Path(source).is_dir(),
    lambda req: RunTeacher(Path(req.source), runs_dir=req.runs_dir, data_root=req.data_root,
                           trust_factory=req.trust_factory),
    describe="a run directory", identity="the run id", in_config=False, order=10))
