"""Teachers from anywhere: run directories, TorchScript, torch.export, ONNX, state_dicts, URLs,
and ``nn.Module`` objects in memory (``Teacher.from_module``).

See ``docs/teachers.md`` (its trust model says what opening each kind can run).
:class:`Teacher` is the one abstraction (``logits(x)``, ``num_classes``, ``input_spec``,
``identity``); :func:`open_source` opens any path or URL.
"""

from undistill.teachers.base import BudgetExhausted, Teacher, TeacherError, TeacherProtocol
from undistill.teachers.remote import AnswerCache, QueryBudget, RemoteTeacher
from undistill.teachers.sources import detect_kind, open_config, open_source, read_spec

__all__ = [
    "AnswerCache",
    "BudgetExhausted",
    "QueryBudget",
    "RemoteTeacher",
    "Teacher",
    "TeacherError",
    "TeacherProtocol",
    "detect_kind",
    "open_config",
    "open_source",
    "read_spec",
]
