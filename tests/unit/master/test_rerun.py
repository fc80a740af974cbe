"""Rerunning the reduce stage for chosen dates, from the intermediate tables."""
import pytest

from master.rerun import RerunLocked, RerunRefused, dates_between, describe, plan_rerun, run_rerun
from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.effects import Put
from swarm.errors import ConfigError
from swarm.local import local_fleet
from swarm.testing import run_job
from workers.jobs import merchant_daily as md

DATES = ["2026-11-20", "2026-11-21", "2026-11-22"]


@pytest.fixture
def nights(tables, ledger):
    for date in DATES:
        md.create_tables(tables, date)
        md.generate(tables, date, 800, merchants=10, customers=100)
        assert run_job(md.job, {"date": date}, tables, ledger, options={"chunks": 8}).status == "done"
    return tables


def spoil(tables, date):
    """Overwrite every summary row of ``date`` with wrong numbers, as a buggy reduce would have."""
    rows = md.summary(tables, date)
    tables.apply([Put(md.SUMMARY, key, {"s:orders": "-1"}).normalized() for key in rows])


def rerun(job, date, ledger, tables, **kw):
    hub = MemoryHub()
    plan = plan_rerun(job, {"date": date}, "reduce", ledger, tables, **kw)
    with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 2):
        return plan, run_rerun(plan, job, {"date": date}, MemoryBroker(hub), ledger, tables)


def test_rerun_of_reduce_rewrites_exactly_the_chosen_dates(nights, ledger):
    for date in DATES:
        spoil(nights, date)
    for date in dates_between("2026-11-21..2026-11-22"):
        plan, run = rerun(md.job, date, ledger, nights)
        assert (run.id, run.status) == (f"merchant_daily@date={date}+r1", "done")
        assert set(ledger.chunk_counts(run.id)) == {"reduce"}  # no source-scan work at all
        assert ledger.counters(run.id) == {"merchants": 10}
        assert md.summary(nights, date) == md.reference(nights, date)
    spoiled = md.summary(nights, "2026-11-20")
    assert all(cells[b"s:orders"] == b"-1" for cells in spoiled.values())  # the other date is untouched


def test_rerun_refuses_while_a_master_holds_the_date(nights, ledger):
    ledger.lock_master("merchant_daily@date=2026-11-22", "tonight's master")
    plan = plan_rerun(md.job, {"date": "2026-11-22"}, "reduce", ledger, nights)
    with pytest.raises(RerunLocked, match="being run right now by .*tonight's master"):
        run_rerun(plan, md.job, {"date": "2026-11-22"}, MemoryBroker(MemoryHub()), ledger, nights)


def test_rerun_refuses_a_date_that_never_ran(nights, ledger):
    with pytest.raises(RerunRefused, match="has never run") as refused:
        plan_rerun(md.job, {"date": "2026-11-19"}, "reduce", ledger, nights)
    assert not isinstance(refused.value, RerunLocked)  # the operator's request, not another master
    assert "start it with `swarm master merchant_daily --date 2026-11-19` instead" in str(refused.value)


def test_a_run_left_running_is_refused_as_unfinished_and_one_a_master_holds_as_locked(nights, ledger):
    source = "merchant_daily@date=2026-11-23"
    ledger.open_run(source, "merchant_daily", {"date": "2026-11-23"})
    with pytest.raises(RerunRefused) as unfinished:
        plan_rerun(md.job, {"date": "2026-11-23"}, "reduce", ledger, nights)
    assert not isinstance(unfinished.value, RerunLocked)
    assert str(unfinished.value) == (f"{source} has not finished and no master is running it: finish it first "
                                     f"with `swarm master merchant_daily --date 2026-11-23` (it resumes the run), "
                                     f"then rerun it")
    ledger.lock_master(source, "tonight's master")
    with pytest.raises(RerunLocked, match="being run right now by .*tonight's master"):
        plan_rerun(md.job, {"date": "2026-11-23"}, "reduce", ledger, nights)


def test_dry_run_lists_runs_phases_chunks_and_the_generation_each_phase_reads(nights, ledger):
    plan = plan_rerun(md.job, {"date": "2026-11-22"}, "reduce", ledger, nights, chunks=["b03", "b07"])
    source = "merchant_daily@date=2026-11-22"
    assert describe([plan], md.job).splitlines() == [
        f"{source}+r1 (reruns {source} from stage reduce)",
        f"  phase map: not run; its output is read from {source}",
        "  phase reduce: all its stages; 2 chunk(s): b03, b07",
        f"    reads {source}; writes generation {source}+r1",
    ]


def test_second_rerun_gets_the_next_number_and_only_chosen_chunks(nights, ledger):
    rerun(md.job, "2026-11-22", ledger, nights)
    _, second = rerun(md.job, "2026-11-22", ledger, nights, chunks=["b01"])
    assert second.id.endswith("+r2")
    assert ledger.chunk_counts(second.id) == {"reduce": {"done": 1}}


@pytest.mark.parametrize("spec, expected", [
    ("2026-11-01..2026-11-03", ["2026-11-01", "2026-11-02", "2026-11-03"]),
    ("2026-11-01,2026-11-05", ["2026-11-01", "2026-11-05"]),
])
def test_dates_between(spec, expected):
    assert dates_between(spec) == expected


def test_bad_stage_and_dates_are_clear(nights, ledger):
    with pytest.raises(ConfigError, match="has no stage 'nope'"):
        plan_rerun(md.job, {"date": "2026-11-22"}, "nope", ledger, nights)
    with pytest.raises(ConfigError, match="--chunks: phase map is read as a whole by the phases after it"):
        plan_rerun(md.job, {"date": "2026-11-22"}, "scan", ledger, nights, chunks=["r00001"])
    with pytest.raises(ConfigError, match="ends before it starts"):
        dates_between("2026-11-03..2026-11-01")
