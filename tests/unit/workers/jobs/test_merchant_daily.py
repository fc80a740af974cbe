"""The example job end to end on embedded backends, checked row by row against the plain computation."""
import pytest

from master.coordinator import Master
from swarm.brokers.memory import MemoryBroker
from swarm.errors import MasterLocked
from swarm.testing import call, run_job
from workers.jobs import merchant_daily as md

DATE = "2026-11-22"


@pytest.fixture
def day(tables):
    md.create_tables(tables, DATE)
    md.generate(tables, DATE, 4000, merchants=30, customers=500, seed=7)
    return tables


def assert_exact(tables):
    written, expected = md.summary(tables, DATE), md.reference(tables, DATE)
    assert len(expected) == 30
    for key, cells in expected.items():
        assert written.get(key) == cells, key
    assert set(written) == set(expected)


def test_summary_equals_the_reference(day, ledger):
    run = run_job(md.job, {"date": DATE}, day, ledger, workers=2, options={"chunks": 12})
    assert (run.status, run.error) == ("done", None)
    assert_exact(day)
    assert ledger.counters(run.id) == {"rows": 4000, "merchants": 30}


def test_large_chunks_are_handed_on_and_still_exact(day, ledger, monkeypatch):
    monkeypatch.setattr(md, "MAX_ROWS", 97)  # forces continuation messages
    run = run_job(md.job, {"date": DATE}, day, ledger, workers=2, options={"chunks": 4})
    assert run.status == "done"
    assert ledger.chunk_counts(run.id)["map"]["done"] > 40  # 4000 rows / 97 per message
    assert ledger.counters(run.id)["rows"] == 4000
    assert_exact(day)


def test_rerunning_the_same_date_doubles_nothing(day, ledger):
    first = run_job(md.job, {"date": DATE}, day, ledger, options={"chunks": 8})
    before = md.summary(day, DATE)
    again = run_job(md.job, {"date": DATE}, day, ledger, options={"chunks": 8})
    assert again.id == first.id and again.status == "done"
    assert ledger.counters(first.id) == {"rows": 4000, "merchants": 30}
    assert md.summary(day, DATE) == before
    assert_exact(day)


def test_a_fresh_run_of_the_same_date_rewrites_the_same_summary(day, ledger):
    run_job(md.job, {"date": DATE}, day, ledger, options={"chunks": 8})
    before = md.summary(day, DATE)
    from swarm.brokers.memory import MemoryHub
    from swarm.local import local_fleet

    memory = MemoryHub()
    with local_fleet(md.job, lambda: MemoryBroker(memory), ledger, day, 2):
        rerun = Master(md.job, {"date": DATE}, MemoryBroker(memory), ledger, day,
                       run_id=f"{md.job.run_id({'date': DATE})}#2").run()
    assert rerun.status == "done"
    assert md.summary(day, DATE) == before


def test_second_master_for_the_same_date_refuses(day, ledger):
    run_id = md.job.run_id({"date": DATE})
    ledger.lock_master(run_id, "the first master")
    with pytest.raises(MasterLocked, match="the first master"):
        Master(md.job, {"date": DATE}, MemoryBroker(), ledger, day).run()


def test_scan_handler_in_one_line(day):
    effects = call(md.scan, {"start": b"2026-11-22/", "stop": b"2026-11-22/1", "part": 0}, tables=day,
                   run="merchant_daily@date=2026-11-22", chunk="r00000")
    assert effects[-1].name == "rows" and 0 < effects[-1].value < 4000
