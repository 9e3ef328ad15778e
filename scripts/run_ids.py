"""Every run id the built-in suites and leaderboards plan, as JSON: a refactor must keep them.

    python scripts/run_ids.py > before.json   # ... change the code ...
    python scripts/run_ids.py --check before.json

Suites: every run of ``build_plan(suite, scale)`` for each scale (searches not chosen).
Leaderboards: the victims and every (defence, attack, grid candidate, seed) student config.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def suite_ids() -> dict[str, list[str]]:
    from undistill.suites.plan import build_plan
    from undistill.suites.spec import builtin_suites, load_suite

    out: dict[str, list[str]] = {}
    for name in builtin_suites():
        suite = load_suite(name)
        for scale in suite.scales:
            out[f"suite {name} {scale}"] = sorted(r.run_id for r in build_plan(suite, scale).runs())
    return out


def leaderboard_ids() -> dict[str, list[str]]:
    from undistill.suites import leaderboard_spec as lb

    out: dict[str, list[str]] = {}
    for name in lb.builtin_leaderboards():
        spec = lb.load_leaderboard(name)
        v = lb.victim_plan(spec)
        models: dict[Any, Any] = {"normal": v.normal, "nasty": v.nasty, "scm-release": v.release,
                                  "nasty-es": v.nasty}
        ids = [r.run_id for r in (v.normal, v.nasty, *v.sequence, v.release)]
        for d in [None, *spec.defences]:
            for a in spec.attacks:
                if (a.name == spec.vanilla) != (d is None) or (d is not None and not lb.applicable(a, d)):
                    continue
                for params in a.grid:
                    for s in spec.seeds:
                        ids.append(lb.attack_config(spec, v, models, d, a, params, s).run_id)
        out[f"leaderboard {name}"] = sorted(set(ids))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", help="a JSON written earlier: exit 1 when any id differs")
    args = ap.parse_args()
    now = {**suite_ids(), **leaderboard_ids()}
    if args.check is None:
        json.dump(now, sys.stdout, indent=1)
        return 0
    with open(args.check) as f:
        before = json.load(f)
    bad = [k for k in before.keys() | now.keys() if before.get(k) != now.get(k)]
    for k in sorted(bad):
        print(f"changed: {k}")
    print(f"{sum(len(v) for v in now.values())} run ids in {len(now)} plans; {len(bad)} plans changed")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
