"""The ./dev entry point: its help is its usage comment, nothing else (it never sets anything up)."""

from __future__ import annotations

import subprocess
from pathlib import Path

DEV = Path(__file__).parents[1] / "dev"


def test_dev_help_prints_only_the_usage() -> None:
    r = subprocess.run(["bash", str(DEV), "help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    lines = r.stdout.splitlines()
    assert lines and all(line.startswith("#") for line in lines)
    assert any("./dev test" in line for line in lines)
    assert "set -euo pipefail" not in r.stdout
