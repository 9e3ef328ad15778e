"""Output-perturbation defences by name (``docs/defences.md``). A new defence is one module here
with a ``@DEFENCES.register("name")`` class, plus its import below. Every release of a teacher's
answers goes through :func:`release` (``release_path.py``)."""

from undistill.defences import mad, misinformation, output  # noqa: F401  (registers)
from undistill.defences.base import (
    ALIASES,
    DEFENCES,
    KNOWN_CLASSES,
    RELEASE_FLOOR,
    Defence,
    DefenceConfig,
    DefenceParams,
    build_defence,
    parse_defence,
    released_logits,
)
from undistill.defences.release_path import (
    POLICIES,
    answer_probabilities,
    policy_defence,
    release,
    release_answer,
    released_answers,
)

__all__ = ["ALIASES", "DEFENCES", "KNOWN_CLASSES", "POLICIES", "RELEASE_FLOOR", "Defence", "DefenceConfig",
           "DefenceParams", "answer_probabilities", "build_defence", "parse_defence", "policy_defence",
           "release", "release_answer", "released_answers", "released_logits"]
