"""Teachers from anywhere: run directories, TorchScript, torch.export, ONNX, state_dicts, URLs,
and ``nn.Module`` objects in memory (``Teacher.from_module``).

See ``docs/teachers.md`` (its trust model says what opening each kind can run).
:class:`Teacher` is the one abstraction (``logits(x)``, ``num_classes``, ``input_spec``,
``identity``); :func:`open_source` opens any path or URL, its kind detected by the registry of
kinds (:mod:`undistill.teachers.kind`, one file per kind under ``kinds/``). :class:`Budgeted`,
:class:`Cached` and :class:`Defended` wrap any teacher; an :class:`Opener` holds the teachers of
one call.
"""

from undistill.teachers import kinds  # noqa: F401  (registers the built-in kinds)
from undistill.teachers.answer_cache import AnswerCache, QueryBudget
from undistill.teachers.base import Ask, BudgetExhausted, Teacher, TeacherError
from undistill.teachers.kind import KINDS, Kind, Source, detect_kind, get_kind, register_kind
from undistill.teachers.opener import Opener, open_config
from undistill.teachers.remote import RemoteTeacher
from undistill.teachers.sources import open_source
from undistill.teachers.spec import read_spec
from undistill.teachers.wrappers import Budgeted, Cached, Defended, Wrapper, wrap

__all__ = [
    "KINDS",
    "AnswerCache",
    "Ask",
    "BudgetExhausted",
    "Budgeted",
    "Cached",
    "Defended",
    "Kind",
    "Opener",
    "QueryBudget",
    "RemoteTeacher",
    "Source",
    "Teacher",
    "TeacherError",
    "Wrapper",
    "detect_kind",
    "get_kind",
    "open_config",
    "open_source",
    "read_spec",
    "register_kind",
    "wrap",
]
