"""The example job end to end on embedded backends, checked row by row against the plain computation."""
import pytest

from master.coordinator import Master
from swarm.brokers.memory import MemoryBroker
from swarm.errors import MasterLocked
from swarm.slices import SplitSettings, is_part
from swarm.testing import call, plan, run_job
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


def test_slices_key_their_partials_by_chunk_and_slice(day, ledger):
    run = run_job(md.job, {"date": DATE}, day, ledger, workers=2, options={"chunks": 8, "slice_rows": 200})
    assert run.status == "done"
    written = {key.rsplit(b"/", 1)[1].decode() for key, _ in day.scan(md.PARTIALS, prefix=f"{run.id}/".encode())}
    slices = {f"{r.message.chunk}.{r.message.id.rsplit('/', 1)[1]}" for r in ledger.recorded(run.id, "map")}
    assert written == slices  # 500 rows a chunk: r00000.0, r00000.0+1, r00000.0+2...
    assert {"r00000.0", "r00000.0+1", "r00000.0+2"} <= written and "r00000.0:1" not in written
    assert ledger.counters(run.id)["rows"] == 4000
    assert_exact(day)


@pytest.fixture
def skewed(tables):
    """A skewed day: half of 8000 events keyed in one chunk's range (md.HOT), the rest spread evenly."""
    md.create_tables(tables, DATE)
    md.generate(tables, DATE, 8000, merchants=30, customers=500, seed=7, hot=0.5)
    return tables


def test_a_skewed_day_has_half_its_rows_in_one_chunk(skewed):
    chunks = plan(md.job, "map", tables=skewed, params={"date": DATE}, options={"chunks": 8})
    rows = [sum(1 for _ in skewed.scan(md.EVENTS, c.payload["start"], c.payload["stop"])) for c in chunks]
    assert sum(rows) == 8000 and max(rows) > 4000 and sorted(rows)[-2] < 1000


@pytest.mark.parametrize("split", [False, True])
def test_a_skewed_day_is_counted_exactly_once_with_splitting_on_or_off(skewed, ledger, split):
    settings = SplitSettings(enabled=split, ways=4, tail=4, min_rows=300)
    run = run_job(md.job, {"date": DATE}, skewed, ledger, workers=2, options={"chunks": 8, "slice_rows": 250},
                  split=settings)
    assert (run.status, run.error) == ("done", None)
    assert_exact(skewed)
    assert ledger.counters(run.id) == {"rows": 8000, "merchants": 30}
    seqs = [r.message.id.rsplit("/", 1)[1] for r in ledger.recorded(run.id, "map")]
    parts = [s for s in seqs if is_part(s)]
    assert bool(parts) == split  # the hot chunk's rest was split among the idle threads, or never
    # Every slice, split or not, wrote partials of its own: the slices of the run's partial rows are its messages'.
    slices = {key.rsplit(b"/", 1)[1].decode() for key, _ in skewed.scan(md.PARTIALS, prefix=f"{run.id}/".encode())}
    done = {r.message.id.split("/map/", 1)[1] for r in ledger.recorded(run.id, "map")}
    assert slices <= {d.replace("/scan/", ".") for d in done}


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
