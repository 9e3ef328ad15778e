"""SCM (Eq. 10-11): learn from the logit-averaged ensemble of a sequence of contrastive models.

The teachers of an SCM run are the sequence S^1 (the nasty teacher) .. S^k, each S^i a ``nasty``
run against S^(i-1); :class:`~undistill.methods.base.Teacher` averages their logits (z_ens).
The objective is HTC's form (``htc.py``) with Eq. 11 and SCM's defaults.
"""

from __future__ import annotations

from pydantic import Field

from undistill.losses import scm_loss
from undistill.methods import htc
from undistill.methods.base import METHODS
from undistill.methods.objective import OBJECTIVES, Plain

#: SCM's defaults wherever its loss is used (plain and Skeptical+SCM): m = tau^2, KD's scale;
#: alpha is HTC's (0.9).
TEMPERATURE, MULTIPLIER = 4.0, 16.0


class SCMParams(htc.HTCParams):
    temperature: float = Field(TEMPERATURE, gt=0.0, description="tau")
    multiplier: float = Field(MULTIPLIER, ge=0.0, description="m (m = tau^2 is KD's scale)")


@OBJECTIVES.register("scm")
class SCM(htc.HTC):
    """``scm`` = Eq. 11 (:func:`~undistill.losses.scm_loss`) on the ensemble's logits."""

    Params = SCMParams
    uses_sequence = True
    term = "scm"
    equation = staticmethod(scm_loss)


METHODS.register("scm")(Plain.using(
    SCM, title="SCM",
    description="sequence of contrastive models (Eq. 11) over an ensemble of teachers"))
