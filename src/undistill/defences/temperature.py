"""Temperature softening: release ``softmax(log p / T)``, i.e. ``p^(1/T)`` renormalised.

A high ``T`` flattens every answer towards uniform while keeping the order of the classes (so the
top-1, and a hard-label attacker, are untouched): the dark knowledge a KD student reads is blurred
at no cost to accuracy. ``T < 1`` sharpens instead. A thief who knows ``T`` can undo it exactly
(``p'^T`` renormalised); this defence measures what an unaware soft-label attack loses.
"""

from __future__ import annotations

import torch
from pydantic import Field

from undistill.defences.base import DEFENCES, RELEASE_FLOOR, Defence, DefenceParams


class TemperatureParams(DefenceParams):
    temperature: float = Field(4.0, gt=0.0, le=1000.0, description="T: > 1 softens, < 1 sharpens")


@DEFENCES.register("temperature")
class Temperature(Defence):
    """Each row ``p`` released as ``p^(1/T) / sum(p^(1/T))`` (zeros floored at the release floor)."""

    description = "temperature softening, class order kept"
    Params = TemperatureParams

    def release(self, probs: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        return torch.softmax(probs.clamp_min(RELEASE_FLOOR).log() / self.params.temperature, dim=1)
