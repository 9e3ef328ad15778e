"""A run stopped at an accuracy (``stop_at_acc``: Nasty-ES) read off its finished twin.

A run with ``stop_at_acc`` trains exactly as the same config without it, its *twin* (same run
id but for that field: the nasty teacher a Nasty-ES run retrains), until the first epoch whose
evaluation accuracy reaches the target; the engine's training is a function of the config and
the epoch (every random draw is seeded by them), so the two agree epoch for epoch. When the
twin is finished and that first epoch is also the twin's best epoch, the twin's best checkpoint
holds the very weights the stopped run would end with (its best and last epoch), and
:func:`from_twin` writes the run from the twin instead of training it again:

* ``config.json``; ``metrics.jsonl``: the twin's rows up to that epoch;
* ``best.safetensors`` and ``last.safetensors``: the twin's best weights (the last checkpoint
  without optimizer state: a finished run is never resumed);
* ``result.json``: status ``stopped_at_acc``, ``wall_time_s`` 0 (nothing was trained; the
  twin's own time is counted once, in the twin) and ``derived_from``, the twin's run id.

Any other case (no finished twin; the twin never reaches the target; it reaches it first at an
epoch that is not its best, whose weights were not kept) returns None and the run trains.
Like every run, the result holds for the compute path that trained it: the twin's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from undistill.checkpoint import atomic_write_bytes, atomic_write_json, load_checkpoint, save_checkpoint
from undistill.config import RunConfig
from undistill.resume import read_metrics
from undistill.run_result import RunResult
from undistill.runs import BEST, CONFIG, LAST, METRICS, RESULT, read_result, run_dir


def twin_of(cfg: RunConfig) -> RunConfig:
    """The same run without ``stop_at_acc``."""
    return cfg.model_copy(update={"stop_at_acc": None})


def stop_epoch(history: list[dict[str, Any]], target: float) -> int | None:
    """The first epoch whose evaluation accuracy reaches ``target`` (the engine's stopping test)."""
    return next((int(r["epoch"]) for r in history if r["eval/acc"] >= target), None)


def from_twin(cfg: RunConfig, runs_dir: Path) -> RunResult | None:
    """Write ``cfg``'s run from its finished twin where the twin holds its weights (see the
    module); None where it does not, or when several processes train the run together."""
    if cfg.stop_at_acc is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    twin = run_dir(twin_of(cfg), runs_dir)
    if not (twin / RESULT).exists() or not (twin / BEST).exists():
        return None
    done = read_result(twin)["result"]
    history = read_metrics(twin / METRICS, upto_epoch=done["epochs_run"] - 1)
    epoch = stop_epoch(history, cfg.stop_at_acc)
    if epoch is None or epoch != done["best_epoch"]:
        return None
    rows = history[: epoch + 1]
    tensors, meta = load_checkpoint(twin / BEST, device="cpu")
    if meta.get("epoch") != epoch:
        return None
    out = run_dir(cfg, runs_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG, {"run_id": cfg.run_id, "config": cfg.model_dump(mode="json")})
    atomic_write_bytes(out / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode())
    record = rows[-1]
    derived = {"run_id": cfg.run_id, "epoch": epoch, "metrics": record,
               "derived_from": done["run_id"]}
    save_checkpoint(out / BEST, tensors, derived)
    save_checkpoint(out / LAST, tensors, {**derived, "best_acc": record["eval/acc"],
                                          "best_epoch": epoch})
    acc = float(record["eval/acc"])
    result = RunResult(run_id=cfg.run_id, run_dir=str(out), best_acc=acc, best_epoch=epoch,
                       last_acc=acc, epochs_run=epoch + 1, status="stopped_at_acc",
                       eval_split=done["eval_split"], wall_time_s=0.0,
                       compute=done.get("compute", ""))
    atomic_write_json(out / RESULT, {"result": asdict(result), "derived_from": done["run_id"],
                                     "config": cfg.model_dump(mode="json")})
    return result


def releases_twin(cfg: RunConfig, result: RunResult, twin: RunConfig, twin_result: RunResult
                  ) -> bool:
    """Whether the teacher ``cfg`` releases the very weights its twin ``twin`` releases: it *is*
    the twin (a Nasty-ES whose nasty training never reaches the target), or it stopped at the
    epoch the twin releases (a Nasty-ES stopped at the nasty run's own best epoch). Then its
    students are the twin's students and a claim about the one is the claim about the other."""
    if cfg.run_id == twin.run_id:
        return True
    return (cfg.stop_at_acc is not None and twin_of(cfg).run_id == twin.run_id
            and result.released_epoch == twin_result.released_epoch)
