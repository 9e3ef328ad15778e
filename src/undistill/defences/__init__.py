"""Output-perturbation defences by name (``docs/defences.md``). A new defence is one module here
with a ``@DEFENCES.register("name")`` class: every module of this package is imported (so its
registration runs) when the package is (but ``_NOT_DEFENCES``). Every release of a teacher's
answers goes through :func:`release` (``release_path.py``)."""

import importlib
import pkgutil

from undistill.defences.base import (
    ALIASES,
    DEFENCES,
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

#: modules that hold no defence (the defended teacher imports the layers above)
_NOT_DEFENCES = ("base", "release_path", "teacher")
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_DEFENCES:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ALIASES", "DEFENCES", "POLICIES", "RELEASE_FLOOR", "Defence", "DefenceConfig", "DefenceParams",
           "answer_probabilities", "build_defence", "parse_defence", "policy_defence", "release",
           "release_answer", "released_answers", "released_logits"]
