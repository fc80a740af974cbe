"""Reruns as generations: from any stage, reading what the night last completed, never a stale generation."""
import dataclasses

import pytest

from master.rerun import RerunRefused, describe, param_sets, plan_rerun, run_rerun
from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.effects import Delete, Put
from swarm.ledgers.sqlite import SqliteLedger
from swarm.local import local_fleet
from swarm.stage import Retry
from swarm.tables.embedded import EmbeddedTables
from swarm.testing import run_job
from tests.unit import tallyjob as tally
from workers.jobs import merchant_daily as md

DATE = "2026-11-24"
NIGHT = f"merchant_daily@date={DATE}"


def rerun(job, params, stage, ledger, tables, **kw):
    hub = MemoryHub()
    plan = plan_rerun(job, params, stage, ledger, tables, **kw)
    with local_fleet(job, lambda: MemoryBroker(hub), ledger, tables, 2):
        return plan, run_rerun(plan, job, params, MemoryBroker(hub), ledger, tables)


@pytest.fixture
def night(tables, ledger):
    md.create_tables(tables, DATE)
    md.generate(tables, DATE, 1200, merchants=12, customers=120)
    assert run_job(md.job, {"date": DATE}, tables, ledger, options={"chunks": 6}).status == "done"
    return tables


def change_the_source(tables):
    """Delete a third of the day's events and move some purchases to a merchant of its own."""
    keys = [key for key, _ in tables.scan(md.EVENTS, prefix=f"{DATE}/".encode())]
    tables.apply([Delete(md.EVENTS, k) for k in keys[::3]])
    tables.apply([Put(md.EVENTS, k, {"e:merchant": "m-new", "e:type": "purchase", "e:amount": 999,
                                     "e:customer": "c-new"}).normalized() for k in keys[1:60:3]])


def fresh_run(tables):
    """The summary a fresh full run over the current events gives, on a store and ledger of its own."""
    fresh = EmbeddedTables()
    md.create_tables(fresh, DATE)
    fresh.apply([Put(md.EVENTS, k, c) for k, c in tables.scan(md.EVENTS, prefix=f"{DATE}/".encode())])
    assert run_job(md.job, {"date": DATE}, fresh, SqliteLedger(), options={"chunks": 6}).status == "done"
    return md.summary(fresh, DATE)


def test_after_the_source_changes_reruns_from_the_first_and_a_later_stage_equal_a_fresh_run(night, ledger):
    change_the_source(night)
    expected = fresh_run(night)
    assert expected == md.reference(night, DATE) and expected != md.summary(night, DATE)
    _, first = rerun(md.job, {"date": DATE}, "scan", ledger, night)
    assert (first.id, first.status) == (f"{NIGHT}+r1", "done")
    assert md.summary(night, DATE) == expected  # row by row, cell by cell: no partial of the first run folded in
    assert any(True for _ in night.scan(md.PARTIALS, prefix=f"{NIGHT}/".encode()))  # which are still there
    plan, second = rerun(md.job, {"date": DATE}, "reduce", ledger, night)
    assert plan.reads == {"map": first.id} and ledger.get_run(second.id).reads == {"map": first.id}
    assert second.status == "done" and md.summary(night, DATE) == expected
    assert ledger.publication(NIGHT).run_id == second.id


def test_a_rerun_from_a_later_stage_reads_what_the_night_last_completed_not_the_first_run(night, ledger):
    _, first = rerun(md.job, {"date": DATE}, "scan", ledger, night)
    change_the_source(night)  # after the first rerun: its map output is the one to read, stale or not
    plan, _ = rerun(md.job, {"date": DATE}, "reduce", ledger, night)
    assert plan.reads == {"map": first.id}
    assert "phase map: not run; its output is read from " + first.id in describe([plan], md.job)


def fail_one_map_chunk(tables, monkeypatch):
    """A malformed event in one range: that scan chunk aborts, so the night's map phase does not complete."""
    stage = dataclasses.replace(md.job.stages["scan"], retry=Retry(max_attempts=1, base_delay=0.01))
    monkeypatch.setitem(md.job.stages, "scan", stage)
    tables.apply([Put(md.EVENTS, f"{DATE}/ffff0000", {"e:type": "purchase", "e:merchant": "m1",
                                                      "e:amount": "not a number"}).normalized()])


def test_a_rerun_refuses_when_a_phase_it_reads_did_not_complete_naming_it_and_its_chunks(tables, ledger,
                                                                                         monkeypatch):
    md.create_tables(tables, DATE)
    md.generate(tables, DATE, 600, merchants=8, customers=50)
    fail_one_map_chunk(tables, monkeypatch)
    assert run_job(md.job, {"date": DATE}, tables, ledger, options={"chunks": 6}).status == "failed"
    failed = sorted({f.chunk for f in ledger.failures(NIGHT) if f.state in ("dead", "aborted")})
    assert len(failed) == 1
    with pytest.raises(RerunRefused) as refused:
        plan_rerun(md.job, {"date": DATE}, "reduce", ledger, tables)
    assert str(refused.value).startswith(f"phase map did not complete in {NIGHT}: chunk(s) {failed[0]} not done")
    assert "--force" in str(refused.value)
    plan = plan_rerun(md.job, {"date": DATE}, "reduce", ledger, tables, force=True)
    assert plan.reads == {"map": NIGHT} and "--force: phase map did not complete" in describe([plan], md.job)
    assert ledger.get_run(f"{NIGHT}+r1") is None  # planning changed nothing


def test_a_rerun_from_inside_a_phase_starts_from_the_recorded_messages_of_that_stage(tables, ledger):
    tally.create_tables(tables)
    tally.load(tables, "eu", {f"{i:04x}": (f"shop{i % 5}", i) for i in range(0, 65536, 997)})
    night = run_job(tally.job, {"region": "eu"}, tables, ledger, options={"fold_bug": True})
    assert night.status == "done" and tally.published(tables, "eu") != tally.reference(tables, "eu")
    splits, folds = tally.calls["split"], tally.calls["fold"]
    plan, fixed = rerun(tally.job, {"region": "eu"}, "fold", ledger, tables)
    assert plan.replay_from == night.id and plan.phases == ["map", "reduce"]
    assert "phase map: stage(s) fold, from the messages tally@region=eu recorded" in describe([plan], tally.job)
    assert fixed.status == "done" and tally.published(tables, "eu") == tally.reference(tables, "eu")
    assert tally.calls["split"] == splits  # the stage before fold did not run again
    assert tally.calls["fold"] - folds == ledger.chunk_counts(night.id)["map"]["done"] - splits
    assert {r.message.stage for r in ledger.recorded(fixed.id, "map")} == {"fold"}


def test_reruns_take_any_params(tables, ledger):
    tally.create_tables(tables)
    tally.load(tables, "us", {"0a00": ("shopA", 5), "f000": ("shopB", 7)})
    assert run_job(tally.job, {"region": "us"}, tables, ledger).status == "done"
    assert param_sets(tally.job, {"region": "us"}) == [{"region": "us"}]
    _, again = rerun(tally.job, {"region": "us"}, "reduce", ledger, tables)
    assert again.id == "tally@region=us+r1" and tally.published(tables, "us") == tally.reference(tables, "us")


def test_a_rerun_cut_off_is_resumed_when_asked_again_and_another_is_refused_meanwhile(night, ledger):
    plan = plan_rerun(md.job, {"date": DATE}, "reduce", ledger, night)
    ledger.open_run(plan.run_id, md.job.name, {"date": DATE}, plan.spec)  # a rerun whose process was killed
    again = plan_rerun(md.job, {"date": DATE}, "reduce", ledger, night)
    assert (again.run_id, again.resumed, again.reads) == (plan.run_id, True, plan.reads)
    assert describe([again], md.job).startswith(f"{plan.run_id} (resumes {NIGHT} from stage reduce)")
    with pytest.raises(RerunRefused, match=r"\+r1, a rerun from stage reduce of chunks all, has not finished"):
        plan_rerun(md.job, {"date": DATE}, "scan", ledger, night)
    hub = MemoryHub()
    with local_fleet(md.job, lambda: MemoryBroker(hub), ledger, night, 2):
        assert run_rerun(again, md.job, {"date": DATE}, MemoryBroker(hub), ledger, night).status == "done"
    assert plan_rerun(md.job, {"date": DATE}, "scan", ledger, night).run_id == f"{NIGHT}+r2"
