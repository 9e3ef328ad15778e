"""The built-in defence leaderboards, one YAML each (data only): ``undistill leaderboard NAME``
reads ``NAME.yaml`` here (:func:`undistill.suites.leaderboard_spec.load_leaderboard`)."""
