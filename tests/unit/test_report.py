"""`swarm runs` as an operator reads it, on terminals of every width."""
import datetime

import pytest
from rich.console import Console

from swarm.ledger import Run
from swarm.report import duration, print_runs

LONG_ID = "merchant_daily@date=2026-11-22+r12"
STARTED = datetime.datetime(2026, 11, 23, 2, 0, 13).timestamp()
ERROR = "phase reduce: 3 dead-lettered; first: KeyError: ['bucket'] [bold]x\nTraceback (most recent call last):"


def run(run_id: str, status: str, error: str | None = None) -> Run:
    return Run(run_id, "merchant_daily", {"date": "2026-11-22"}, status, "reduce", error, STARTED, STARTED + 12.3,
               STARTED + 12.3 if status != "running" else None)


RUNS = [run(LONG_ID, "failed", ERROR), run("merchant_daily@date=2026-11-21", "running"),
        run("merchant_daily@date=2026-11-20", "done")]


def shown(width: int) -> list[str]:
    console = Console(width=width, record=True)
    print_runs(RUNS, console=console, now=STARTED + 12.3)
    return console.export_text().splitlines()


def test_eighty_columns_keep_whole_ids_and_statuses_and_give_up_the_error_then_the_seconds():
    lines = shown(80)
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert LONG_ID in text and "merchant_daily@date=2026-11-21" in text
    assert all(status in text for status in ("failed", "running", "done"))
    assert "error" not in lines[1] and "KeyError" not in text
    assert "11-23 02:00" in text and "2026-11-23 02:00:13" not in text  # started, shortened
    assert "reduce" in text and "12.3s" in text


def test_a_wide_terminal_shows_every_column_and_a_middling_one_cuts_the_error():
    wide = "\n".join(shown(200))
    assert "2026-11-23 02:00:13" in wide and "KeyError: ['bucket'] [bold]x" in wide  # brackets as written
    middling = shown(120)
    assert max(map(len, middling)) <= 120
    assert "phase reduce: 3 dead-lett" in "\n".join(middling) and "…" in middling[3]
    assert "2026-11-23 02:00:13" in "\n".join(middling)


@pytest.mark.parametrize("width", [60, 50])
def test_narrower_the_started_time_then_phase_and_took_go(width):
    lines = shown(width)
    assert max(map(len, lines)) <= width and LONG_ID in "\n".join(lines)
    assert "started" not in lines[1] and "failed" in "\n".join(lines)


def test_too_narrow_even_for_a_table_the_id_folds_onto_more_lines_but_is_not_cut():
    lines = shown(30)
    assert max(map(len, lines)) <= 30
    assert LONG_ID in "".join(line.split()[0] for line in lines[:3] if line.strip())
    assert "failed" in lines[0] and "running" in "\n".join(lines)


def test_a_running_run_shows_how_long_it_has_run_not_its_last_update():
    running = Run("merchant_daily@date=2026-11-24", "merchant_daily", {}, "running", "map", None, STARTED, STARTED,
                  None)
    console = Console(width=120, record=True)
    print_runs([running], console=console, now=STARTED + 7_325)
    assert "2h 02m" in console.export_text() and "0.0s" not in console.export_text()


@pytest.mark.parametrize("seconds, shown", [(0.04, "0.0s"), (59.9, "59.9s"), (60, "1m 00s"), (3599, "59m 59s"),
                                            (3600, "1h 00m"), (90_061, "25h 01m")])
def test_durations_read_at_a_glance(seconds, shown):
    assert duration(seconds) == shown
