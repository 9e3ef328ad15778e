"""Run ids are content addresses: a refactor that changes one silently retrains every suite.

When a change is meant to alter runs (a new suite column, a changed default), regenerate the
snapshot with ``python scripts/run_ids.py > tests/data/run_ids.json`` and say why in the commit.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_builtin_plans_keep_their_run_ids() -> None:
    spec = importlib.util.spec_from_file_location("run_ids", ROOT / "scripts" / "run_ids.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    now = {**mod.suite_ids(), **mod.leaderboard_ids()}
    before = json.loads((ROOT / "tests" / "data" / "run_ids.json").read_text())
    assert sorted(now) == sorted(before)
    changed = [k for k in before if before[k] != now[k]]
    assert not changed, f"run ids changed in {changed}; see this file's docstring"
