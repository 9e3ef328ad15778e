"""Progress off a terminal: steady heartbeat lines within an epoch; a line while data decodes."""

from __future__ import annotations

from undistill.progress import Reporter, slow_task


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_lines_at_a_steady_pace_when_not_on_a_terminal(capsys) -> None:
    clock = FakeClock()
    rep = Reporter(enabled=True, live=False, heartbeat_s=30.0, clock=clock)
    rep.start_run("teacher", total_steps=1000, done_steps=100)
    for _ in range(45):  # 45 calls of 20 steps, 10 s apart: a line every 30 s
        clock.now += 10.0
        rep.step(20)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 15
    assert lines[0].startswith("teacher step 160/1000 (16.0%), 0:00:30 elapsed")
    assert lines[-1].startswith("teacher step 1000/1000 (100.0%), 0:07:30 elapsed")
    assert "about 0:07:00 left" in lines[0]  # 840 steps left at 2 steps/s


def test_epoch_line_restarts_the_heartbeat_and_disabled_is_silent(capsys) -> None:
    clock = FakeClock()
    rep = Reporter(enabled=True, live=False, heartbeat_s=30.0, clock=clock)
    rep.start_run("s", total_steps=10)
    clock.now = 29.0
    rep.epoch({"epoch": 0, "train/loss": 1.0, "eval/acc": 50.0, "eval/split": "test",
               "images_per_s": 10.0}, 2)
    clock.now = 40.0
    rep.step(1)  # 11 s after the epoch line: no heartbeat yet
    assert len(capsys.readouterr().err.splitlines()) == 1
    quiet = Reporter(enabled=False, live=False, heartbeat_s=0.0, clock=clock)
    quiet.start_run("q", total_steps=10)
    quiet.step(5)
    assert capsys.readouterr().err == ""


def test_slow_task_says_what_it_is_doing_only_when_slow() -> None:
    said: list[str] = []
    with slow_task("decoding cifar10", after=0.0, emit=said.append):
        while not said:  # the timer thread has announced the task
            pass
    assert said[0] == "decoding cifar10 ..." and said[1].startswith("decoding cifar10: done in ")
    quiet: list[str] = []
    with slow_task("decoding digits", after=60.0, emit=quiet.append):
        pass
    assert quiet == []
