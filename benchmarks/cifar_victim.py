"""Train "the model a user would bring" for the ART comparison: a small VGG-style CNN on CIFAR-10.

Plain PyTorch, no undistill training code: conv-BN-ReLU blocks of 64, 128 and 256 channels (times
``--width``) with max-pooling, a global max pool and a bias-free linear head, trained for
``--epochs`` (2) epochs at batch 256 with SGD (Nesterov momentum 0.9, weight decay 5e-4 x batch
scaling as below), a one-cycle learning rate (linear warm-up over the first quarter, linear decay
to zero) and label smoothing 0.2 -- the ingredients of fast CIFAR-10 recipes such as
KellerJordan/cifar10-airbench, not its code. The data comes through undistill's loader
(``cifar10-jpeg``; ``--data-root``: the archive or its folder), augmented batch-wise with
undistill's ``augment_batch`` (4-pixel padded random crop and flip, the dataset's spec).

Output: ``--out`` (TorchScript, traced in eval mode on the CPU) taking images normalised with the
dataset's mean/std, ``[N, 3, 32, 32]`` float, and returning logits ``[N, 10]`` -- the dataset's
own conventions, so no spec YAML is needed beside it -- plus ``<out without suffix>.json`` (test
accuracy, wall time, the command, the settings). Check it opens as a teacher:

    .venv/bin/python -m undistill inspect victim.ts --dataset cifar10-jpeg \\
        --data-root ../shared/data/cifar10-jpeg.tar.gz

Full scale (about 73 % test accuracy is the aim) on a GPU:

    .venv/bin/python benchmarks/cifar_victim.py --out benchmarks/victim-cifar10.ts \\
        --data-root ../shared/data/cifar10-jpeg.tar.gz --epochs 2 --device cuda

Smoke (2,000 training images drawn at random, 1 epoch, CPU): add ``--limit 2000 --epochs 1``.
``--dataset digits`` trains the same network on the embedded 8x8 digits (no data needed): the
tiny victim of the ART benchmark's smoke run.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from undistill.data.augment import augment_batch
from undistill.runs import get_dataset
from undistill.version import __version__ as undistill_version

DATASET = "cifar10-jpeg"


def conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class VictimCNN(nn.Module):
    """VGG-style: stem conv, then three blocks (conv-BN-ReLU, max-pool 2, conv-BN-ReLU) of 64,
    128 and 256 channels (times ``width``), global max pool, linear."""

    def __init__(self, num_classes: int = 10, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        c1, c2, c3 = (max(8, int(round(c * width))) for c in (64, 128, 256))
        layers: list[nn.Module] = conv_bn(in_channels, c1 // 2)
        for c_in, c_out in ((c1 // 2, c1), (c1, c2), (c2, c3)):
            layers += [*conv_bn(c_in, c_out), nn.MaxPool2d(2), *conv_bn(c_out, c_out)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c3, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = F.adaptive_max_pool2d(x, 1).flatten(1)
        return self.head(x)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("benchmarks/victim-cifar10.ts"),
                   help="TorchScript file to write (the JSON goes beside it, same stem)")
    p.add_argument("--data-root", type=Path, default=Path("../shared/data/cifar10-jpeg.tar.gz"))
    p.add_argument("--dataset", default=DATASET,
                   help="a registered dataset (default cifar10-jpeg; digits: an offline smoke victim)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0, help="channel multiplier of 64-128-256")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate of the one-cycle")
    p.add_argument("--label-smoothing", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0,
                   help="train on N training images drawn at random with --seed (0: all; smoke "
                   "tests; not the first N: the decoded splits are sorted by class)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p.parse_args(argv)


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() / 255.0 - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor,
             std: torch.Tensor, device: torch.device, batch: int = 1000) -> float:
    model.eval()
    hits = 0
    for i in range(0, len(images), batch):
        x = normalise(images[i:i + batch].to(device), mean, std)
        hits += int((model(x).argmax(1).cpu() == labels[i:i + batch]).sum())
    return 100.0 * hits / len(images)


def train(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    torch.manual_seed(args.seed)
    ds = get_dataset(args.dataset, args.data_root)
    x_train, y_train = ds.train_images, ds.train_labels
    if args.limit:  # a seeded random subset: the decoded splits are sorted by class
        keep = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed))[:args.limit]
        x_train, y_train = x_train[keep], y_train[keep]
    x_train, y_train = x_train.to(device), y_train.to(device)
    mean = torch.tensor(ds.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(ds.std, device=device).view(1, -1, 1, 1)

    model = VictimCNN(ds.num_classes, args.width, x_train.shape[1]).to(device)
    model = model.to(memory_format=torch.channels_last) if device.type == "cuda" else model
    n = len(x_train)
    steps_per_epoch = n // args.batch_size if n >= args.batch_size else 1
    total = steps_per_epoch * args.epochs
    decay, no_decay = [], []
    for prm in model.parameters():  # no weight decay on BatchNorm's scales and shifts
        (no_decay if prm.ndim == 1 else decay).append(prm)
    groups = [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total, pct_start=0.25,
                                                anneal_strategy="linear", div_factor=20.0,
                                                final_div_factor=1e3, cycle_momentum=False)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    start = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(n, generator=gen, device=device)
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size:(i + 1) * args.batch_size]
            x = normalise(augment_batch(x_train[idx], ds.augment, gen), mean, std)
            loss = F.cross_entropy(model(x), y_train[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        print(f"epoch {epoch + 1}/{args.epochs}: {step} steps, last loss {loss.item():.3f}, "
              f"{time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - start
    test_acc = accuracy(model, ds.test_images, ds.test_labels, mean, std, device)

    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    example = torch.zeros(2, x_train.shape[1], *x_train.shape[2:])
    traced = torch.jit.trace(model, example)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(args.out))
    loaded = torch.jit.load(str(args.out))
    cpu_mean, cpu_std = mean.cpu(), std.cpu()
    check = accuracy(loaded, ds.test_images[::10], ds.test_labels[::10], cpu_mean, cpu_std,
                     torch.device("cpu"))  # the saved file, on every 10th test image
    doc = {"model": str(args.out), "dataset": args.dataset, "arch": "VictimCNN (benchmarks/cifar_victim.py)",
           "width": args.width, "parameters": sum(p.numel() for p in model.parameters()),
           "epochs": args.epochs, "steps": step, "batch_size": args.batch_size, "lr": args.lr,
           "label_smoothing": args.label_smoothing, "seed": args.seed,
           "train_images": n, "limit": args.limit or None,
           "test_accuracy": test_acc, "saved_model_accuracy_every_10th": check,
           "train_wall_s": train_s, "device": str(device),
           "input": {"normalised_with": {"mean": list(ds.mean), "std": list(ds.std)},
                     "shape": [None, *x_train.shape[1:]], "outputs": "logits"},
           "versions": {"torch": torch.__version__, "undistill": undistill_version,
                        "python": platform.python_version()},
           "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    doc = train(parse(argv))
    print(f"test accuracy {doc['test_accuracy']:.2f} % after {doc['steps']} steps "
          f"({doc['train_wall_s']:.1f} s on {doc['device']}); saved {doc['model']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
