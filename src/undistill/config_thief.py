"""How a query-budgeted thief spends its budget and trains its student (:class:`ThiefConfig`).

A run with a ``budget`` and a ``thief`` section is a thief's student: it pays for ``budget - 1``
images of its pool (one more goes to the probe), picked by a query strategy
(:mod:`undistill.queries`) over ``rounds`` rounds, asks the teacher about each once, and learns
from the stored answers (:mod:`undistill.thief`). Re-exported by :mod:`undistill.config`.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from undistill.config_teachers import StrictModel


class ThiefConfig(StrictModel):
    """The thief's query strategy, rounds, augmentation, step budget and early stopping."""

    strategy: str = Field("random", description="query strategy (undistill.queries): random, "
                          "knockoff, uncertainty, k-center")
    rounds: int = Field(1, ge=1, le=12, description="query rounds; the cumulative budget doubles "
                        "each round (budget/2^(rounds-1), ..., budget/2, budget); the first "
                        "round is random, each later one is picked with the previous round's "
                        "selector student")
    augment: bool = Field(True, description="train on augmented views of the paid images, each "
                          "view learning the answer to its clean image (no extra queries)")
    steps: int = Field(3000, ge=1, le=10_000_000, description="optimisation steps of the student "
                       "(the same for every attack), whatever the transfer set's size")
    eval_every: int = Field(100, ge=1, description="steps between two evaluations on the held-out "
                            "paid answers (one 'epoch' of the run)")
    holdout: float = Field(0.1, ge=0.0, lt=0.5, description="share of the paid answers held out "
                           "to choose the student's checkpoint and stop early (never the test set)")
    patience: int | None = Field(8, ge=1, description="stop after this many evaluations without "
                                 "a better held-out agreement (None: train all the steps)")

    query_data: str | None = Field(None, description="the thief's own pool: a registered dataset "
                                   "(folder, cifar10-jpeg, fashion-mnist, ...) or arrays "
                                   "registered from Python, whose training images (never its "
                                   "labels) it queries instead of the victim's training split")
    query_root: str | None = Field(None, description="where query_data lives (its data root); "
                                   "not part of the identity, its fingerprint is")
    query_fingerprint: str = Field("", pattern=r"^([0-9a-f]{16})?$", description="content "
                                   "fingerprint of query_data, filled in at launch")

    @field_validator("query_data")
    @classmethod
    def _known_query_data(cls, v: str | None) -> str | None:
        from undistill.data import DATASETS

        if v is not None and v not in DATASETS and not v.startswith("arrays-"):
            raise ValueError(f"unknown dataset {v!r} for query data; known: "
                             f"{', '.join(DATASETS.names())}, or arrays registered from Python")
        return v

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        from undistill.queries import STRATEGIES

        if v not in STRATEGIES:
            raise ValueError(f"unknown query strategy {v!r}; known: "
                             f"{', '.join(STRATEGIES.names())}")
        return v
