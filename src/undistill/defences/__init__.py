"""Output-perturbation defences by name (``docs/defences.md``). A new defence is one module here
with a ``@DEFENCES.register("name")`` class, plus its import below."""

from undistill.defences import mad, misinformation, output  # noqa: F401  (registers)
from undistill.defences.base import (
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

__all__ = ["DEFENCES", "KNOWN_CLASSES", "RELEASE_FLOOR", "Defence", "DefenceConfig", "DefenceParams",
           "build_defence", "parse_defence", "released_logits"]
