"""The master's progress: a bar on a terminal, plain lines in a log otherwise."""
import io
import logging

from rich.console import Console

from swarm.progress import ProgressReport


def test_a_terminal_gets_a_live_bar_with_counts():
    out = io.StringIO()
    report = ProgressReport(Console(file=out, force_terminal=True, width=100), live=True)
    report("run", "map", {"done": 3, "queued": 5})
    report("run", "map", {"done": 8})
    report.close()
    text = out.getvalue()
    assert "map" in text and "8/8" in text


def test_a_log_gets_periodic_lines(caplog):
    caplog.set_level(logging.INFO, logger="swarm.master")
    report = ProgressReport(Console(file=io.StringIO()), interval=3600, live=False)
    report("r1", "map", {"done": 1, "queued": 3})
    report("r1", "map", {"done": 2, "queued": 2})  # within the interval: not repeated
    report("r1", "map", {"done": 4})  # the phase completes: always said
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["run r1 phase map: 1/4 done (done=1, queued=3)", "run r1 phase map: 4/4 done (done=4)"]
