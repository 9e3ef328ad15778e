"""Semi-supervised thief: the paid answers plus FixMatch consistency on the images left unpaid.

Jagielski et al. (USENIX Security 2020, "High Accuracy and High Fidelity Extraction of Neural
Networks") showed that a query-budgeted thief gains from the images it holds but did not pay
for, by training semi-supervised (they used MixMatch, Berthelot et al. 2019). This scheme takes
the simpler FixMatch consistency (Sohn et al., NeurIPS 2020): the student's confident answer on
a weakly augmented unpaid image is the pseudo-label of a strongly augmented view of it.

What the engine hands it: every training step, the paid batch (normalised images, and labels or
None); before training, through :meth:`SemiSupervised.attach_unpaid`, an
:class:`~undistill.data.unpaid.UnpaidPool` (the thief's unpaid images, uint8 on the training
device, with the dataset's normalisation and augmentation). Without a pool, or with an empty one,
the scheme is :class:`~undistill.methods.objective.Plain` exactly. The unpaid images never reach
the teacher, so they cost no query. See ``docs/methods.md`` ("Semi-supervised thief").
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from undistill.data.augment import augment_batch, normalize
from undistill.data.unpaid import UnpaidPool
from undistill.methods import kd, soft_target
from undistill.methods.base import METHODS, Ensemble, Params
from undistill.methods.objective import Scheme
from undistill.models import ZooModel

#: strong view: a cutout square of side up to this fraction of the image's shorter side
CUTOUT = 0.5
#: strong view: brightness and contrast factors uniform in [1 - s, 1 + s]
BRIGHTNESS = 0.4
CONTRAST = 0.4
#: the cutout's fill, mid-grey on the 0..255 scale
GREY = 127.5


def global_generator(device: torch.device) -> torch.Generator:
    """The generator ``torch.rand(..., device=device)`` draws from (what ``torch.manual_seed``
    seeds): for functions that take one explicitly, such as :func:`augment_batch`."""
    if device.type == "cpu":
        return torch.default_generator
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.default_generators[index]
    # other backends: a generator on the device, seeded by one draw of the global one
    seed = int(torch.randint(0, 2**62, (), device=device))
    return torch.Generator(device=device).manual_seed(seed)


def strong_view(x: torch.Tensor, generator: torch.Generator | None = None, *,
                cutout: float = CUTOUT, brightness: float = BRIGHTNESS,
                contrast: float = CONTRAST) -> torch.Tensor:
    """A strongly perturbed copy of a batch ``[N, C, H, W]`` on the 0..255 scale (uint8 or
    float), same shape and dtype: per image, brightness then contrast jitter (factors uniform in
    ``[1 - s, 1 + s]``; contrast about the image's mean), clamped to 0..255, then a cutout
    square of mid-grey, its side uniform in ``1..ceil(cutout * min(H, W))``, centred anywhere
    (clipped at the border, as DeVries and Taylor's). Vectorised; the draws come in a fixed
    order from ``generator`` (None: the global generator of ``x``'s device)."""
    if x.dim() != 4:
        raise ValueError(f"strong_view expects [N, C, H, W], got shape {tuple(x.shape)}")
    n, _, h, w = x.shape
    dev = x.device

    def uniform(spread: float) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=dev)
        return (1.0 + spread * (2.0 * u - 1.0)).view(n, 1, 1, 1)

    y = x.float() * uniform(brightness)
    mean = y.mean(dim=(1, 2, 3), keepdim=True)
    y = ((y - mean) * uniform(contrast) + mean).clamp_(0.0, 255.0)
    most = max(1, math.ceil(cutout * min(h, w))) if cutout > 0 else 0
    if most:
        side = torch.randint(1, most + 1, (n,), generator=generator, device=dev)
        cy = torch.randint(0, h, (n,), generator=generator, device=dev)
        cx = torch.randint(0, w, (n,), generator=generator, device=dev)
        top, left = (cy - side // 2)[:, None], (cx - side // 2)[:, None]
        rows, cols = torch.arange(h, device=dev)[None], torch.arange(w, device=dev)[None]
        in_rows = (rows >= top) & (rows < top + side[:, None])  # [N, H]
        in_cols = (cols >= left) & (cols < left + side[:, None])  # [N, W]
        box = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # [N, 1, H, W]
        y = torch.where(box, torch.full_like(y, GREY), y)
    if x.is_floating_point():
        return y.to(x.dtype)
    return y.round_().to(x.dtype)


class SemiParams(Params):
    """The semi-supervised scheme's own hyperparameters, next to its objective's."""

    unpaid_weight: float = Field(1.0, ge=0.0, description="weight of the unpaid consistency term "
                                 "(FixMatch's lambda_u)")
    threshold: float = Field(0.95, gt=0.0, le=1.0, description="a pseudo-label counts where the "
                             "student's softmax on the weak view reaches this (FixMatch's tau)")
    unpaid_ratio: int = Field(1, ge=1, description="unpaid images per paid image in a step "
                              "(FixMatch's mu)")


class SemiSupervised(Scheme):
    """The objective's terms on the paid batch (the student's logits against the teacher's
    answers on it, as :class:`~undistill.methods.objective.Plain`), plus ``unpaid`` on
    ``unpaid_ratio`` times as many unpaid images drawn with replacement:
    ``unpaid_weight * mean(mask * CE(student(strong), argmax student(weak)))``, ``mask`` = the
    weak view's top softmax probability >= ``threshold``.

    The weak view is the dataset's augmentation (none where the pool has none), the strong view
    :func:`strong_view` of it. The pseudo-labels come from a separate forward without autograd;
    the paid and strong images share one forward (one BatchNorm batch, as FixMatch's). The pool
    is held outside parameters and state (checkpoints are the plain method's); draws use the
    global generator, which the engine reseeds at each epoch start.
    """

    SchemeParams = SemiParams

    def __init__(self, student: ZooModel, teacher: Ensemble | None, params: Params) -> None:
        super().__init__(student, teacher, params)
        self.__dict__["pool"] = None  # kept out of parameters() and state_dict(), as the teacher
        self.__dict__["_stats"] = None

    pool: UnpaidPool | None

    def attach_unpaid(self, pool: UnpaidPool) -> None:
        """Learn from ``pool`` from now on (an empty pool: as Plain)."""
        if pool.images.dim() != 4:
            raise ValueError(f"unpaid images must be [N, C, H, W], got {tuple(pool.images.shape)}")
        if len(pool) == 0:
            self.__dict__["pool"], self.__dict__["_stats"] = None, None
            return
        dev = pool.images.device
        self.__dict__["pool"] = pool
        self.__dict__["_stats"] = (torch.tensor(pool.mean, dtype=torch.float32, device=dev),
                                   torch.tensor(pool.std, dtype=torch.float32, device=dev))

    def unpaid_views(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weak and strong views (normalised float32) of ``n`` images drawn from the pool."""
        pool = self.pool
        if pool is None or self._stats is None:
            raise RuntimeError("no unpaid pool attached")
        raw = pool.sample(n)
        weak = raw if pool.augment is None else augment_batch(
            raw, pool.augment, global_generator(raw.device))
        strong = strong_view(weak)
        mean, std = self._stats
        return normalize(weak, mean, std), normalize(strong, mean, std)

    def forward_train(self, images: torch.Tensor, labels: torch.Tensor | None
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p: Any = self.params
        if self.pool is None:
            logits = self.student(images)
            return logits, self.objective.terms(p, logits, self.teacher_logits(images), labels)
        if tuple(self.pool.images.shape[1:]) != tuple(images.shape[1:]):
            raise ValueError(f"unpaid images are {tuple(self.pool.images.shape[1:])}, the paid "
                             f"batch {tuple(images.shape[1:])}: the pool must be prepared as the "
                             "training images are (resize, channels)")
        n = images.shape[0]
        weak, strong = self.unpaid_views(n * p.unpaid_ratio)
        fmt = (torch.channels_last if images.is_contiguous(memory_format=torch.channels_last)
               and not images.is_contiguous() else torch.contiguous_format)
        weak = weak.to(images.dtype).contiguous(memory_format=fmt)
        strong = strong.to(images.dtype).contiguous(memory_format=fmt)
        with torch.no_grad():
            probs = self.student(weak).float().softmax(dim=1)
        confidence, pseudo = probs.max(dim=1)
        mask = (confidence >= p.threshold).float()
        both = self.student(torch.cat([images, strong]))
        logits, strong_logits = both[:n], both[n:]
        terms = self.objective.terms(p, logits, self.teacher_logits(images), labels)
        ce = F.cross_entropy(strong_logits.float(), pseudo, reduction="none")
        terms["unpaid"] = p.unpaid_weight * (mask * ce).mean()
        return logits, terms


METHODS.register("semi-kd")(SemiSupervised.using(
    kd.KD, title="Semi+KD", audit_order=None,
    description="KD (Eq. 2) on the paid answers + FixMatch consistency on unpaid images "
                "(Jagielski et al. 2020; Sohn et al. 2020)"))
METHODS.register("semi-soft-target")(SemiSupervised.using(
    soft_target.SoftTarget, title="Semi+Soft",
    description="soft targets on the paid answers + FixMatch consistency on unpaid images "
                "(Jagielski et al. 2020; Sohn et al. 2020); labels never read"))
