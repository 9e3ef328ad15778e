"""Experiment suites: one YAML per paper table, planned into runs and reproduced by one command."""

from undistill.suites.plan import Cell, Plan, build_plan
from undistill.suites.runner import DryRun, dry_run, reproduce
from undistill.suites.spec import SuiteSpec, builtin_suites, load_suite

__all__ = ["Cell", "DryRun", "Plan", "SuiteSpec", "build_plan", "builtin_suites", "dry_run",
           "load_suite", "reproduce"]
