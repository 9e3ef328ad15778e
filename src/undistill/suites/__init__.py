"""Experiment suites: one YAML per paper table, planned into runs and reproduced by one command;
and the defence leaderboards (every attack against every defence), run the same way."""

from undistill.suites.leaderboard import run_leaderboard
from undistill.suites.leaderboard_spec import LeaderboardSpec, builtin_leaderboards, load_leaderboard
from undistill.suites.plan import Cell, Plan, build_plan
from undistill.suites.runner import DryRun, dry_run, reproduce
from undistill.suites.spec import SuiteSpec, builtin_suites, load_suite

__all__ = ["Cell", "DryRun", "LeaderboardSpec", "Plan", "SuiteSpec", "build_plan", "builtin_leaderboards",
           "builtin_suites", "dry_run", "load_leaderboard", "load_suite", "reproduce", "run_leaderboard"]
