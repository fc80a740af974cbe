"""Held runs, publish and reject, and a promotion that is cut off and finished; pruning old generations."""
import pytest
from rich.console import Console

from master.rerun import plan_rerun, run_rerun
from swarm import publishing
from swarm.brokers.memory import MemoryBroker, MemoryHub
from swarm.effects import Delete, Put
from swarm.errors import PublishRefused
from swarm.generations import generations, nights, prune
from swarm.ledger import PublishState
from swarm.local import local_fleet, master_for
from swarm.publishing import publish_held, reject_held
from swarm.report import print_status
from workers.jobs import merchant_daily as md

DAYS = ["2026-11-10", "2026-11-11", "2026-11-12", "2026-11-13"]
HALF = "2026-11-14"
EVENTS = 400


def night(tables, ledger, date, alerts=None):
    hub = MemoryHub()
    with local_fleet(md.job, lambda: MemoryBroker(hub), ledger, tables, 2):
        return master_for(md.job, {"date": date}, MemoryBroker(hub), ledger, tables, {"chunks": 4},
                          alert=(alerts.append if alerts is not None else lambda event: None)).run()


def rerun(date, stage, ledger, tables):
    hub = MemoryHub()
    plan = plan_rerun(md.job, {"date": date}, stage, ledger, tables)
    with local_fleet(md.job, lambda: MemoryBroker(hub), ledger, tables, 2):
        return run_rerun(plan, md.job, {"date": date}, MemoryBroker(hub), ledger, tables)


@pytest.fixture
def history(tables, ledger):
    """Four nights of the same size, published."""
    md.create_tables(tables, DAYS[0])
    for date in DAYS:
        md.generate(tables, date, EVENTS, merchants=12, customers=100)
        assert night(tables, ledger, date).status == "done"
    return tables


def delete_half(tables, date):
    keys = [k for k, _ in tables.scan(md.EVENTS, prefix=f"{date}/".encode())]
    tables.apply([Delete(md.EVENTS, k) for k in keys[::2]])


def test_a_night_with_half_its_input_is_held_its_checks_shown_and_publish_promotes_it_exactly(history, ledger):
    before = {d: md.summary(history, d) for d in DAYS}
    md.generate(history, HALF, EVENTS // 2, merchants=12, customers=100)
    alerts: list = []
    run = night(history, ledger, HALF, alerts)
    assert run.status == "held" and run.error.startswith("1 of 3 check(s) failed: total:merchant_daily:s:orders")
    assert md.summary(history, HALF) == {} and {d: md.summary(history, d) for d in DAYS} == before
    assert ledger.publication(run.id) is None
    failed = [c for c in ledger.checks(run.id) if not c.passed]
    assert [c.name for c in failed] == ["total:merchant_daily:s:orders"]
    assert failed[0].expected > failed[0].measured and failed[0].tolerance.startswith("±30% of the median")
    assert [a["event"] for a in alerts] == ["run_held"] and alerts[0]["checks"][0]["measured"] == failed[0].measured
    console = Console(record=True, width=200)
    print_status(run, ledger, console=console)
    shown = console.export_text()
    assert "total:merchant_daily:s:orders │ FAIL" in shown and "result: held" in shown
    assert night(history, ledger, HALF).status == "held"  # its master again changes nothing

    published = publish_held(md.job, run.id, "a half day: the other half was never sent", ledger, history, "me")
    assert published.status == "done" and md.summary(history, HALF) == md.reference(history, HALF)
    assert ledger.publication(run.id).state == PublishState.PUBLISHED
    assert [(d.action, d.reason) for d in ledger.decisions(run.id)] == [
        ("publish", "a half day: the other half was never sent")]
    with pytest.raises(PublishRefused, match="is done, not held"):
        publish_held(md.job, run.id, "again", ledger, history, "me")


def test_a_held_rerun_leaves_the_published_result_and_reject_keeps_it(history, ledger):
    date = DAYS[-1]
    published = md.summary(history, date)
    delete_half(history, date)
    held = rerun(date, "scan", ledger, history)
    assert held.status == "held" and md.summary(history, date) == published
    assert ledger.publication(f"merchant_daily@date={date}").run_id == f"merchant_daily@date={date}"
    rejected = reject_held(held.id, "the feed lost half the day; keep yesterday's numbers", ledger, "me")
    assert rejected.status == "rejected" and rejected.error.startswith("rejected: the feed lost half")
    assert md.summary(history, date) == published
    assert ledger.decisions(held.id)[0].action == "reject"
    with pytest.raises(PublishRefused, match="is rejected, not held"):
        publish_held(md.job, held.id, "changed my mind", ledger, history, "me")


def test_a_new_result_replaces_the_old_exactly_rows_it_lacks_deleted(history, ledger):
    date = DAYS[0]
    prefix = f"{date}/".encode()
    gone = [k for k, c in history.scan(md.EVENTS, prefix=prefix) if c[b"e:merchant"] == b"m00011"]
    history.apply([Delete(md.EVENTS, k) for k in gone])  # a merchant with no events any more
    assert f"{date}/m00011".encode() in md.summary(history, date)
    assert rerun(date, "scan", ledger, history).status == "done"
    assert md.summary(history, date) == md.reference(history, date)
    assert f"{date}/m00011".encode() not in md.summary(history, date)


class Killed(BaseException):
    """Stands in for a SIGKILL: nothing after the failpoint runs (the fault suite kills for real)."""


POINTS = ["master.checked", "publish.begun", "publish.mid_rows", "publish.before_record"]


@pytest.mark.parametrize("point, resume", [(p, "rerun") for p in POINTS] +
                         [(p, "master") for p in POINTS if p.startswith("publish.")])
def test_a_promotion_cut_off_anywhere_is_finished_exactly_on_resuming(history, ledger, monkeypatch, point, resume):
    """Killed inside the publish path; then the same rerun asked again, or the night's master, finishes it."""
    date = DAYS[1]
    delete_half(history, date)
    history.apply([Put(md.SUMMARY, f"{date}/m00000", {"s:orders": "-1"}).normalized()])  # the promotion mends it
    hits = {"n": 0}

    def die(name):
        if name == point:
            hits["n"] += 1
            if point != "publish.mid_rows" or hits["n"] == 2:  # mid rows: after the 2nd batch, others unwritten
                raise Killed(name)

    import master.coordinator as coordinator
    monkeypatch.setattr(publishing, "PROMOTE_BATCH", 4)
    monkeypatch.delitem(md.job.checks, "total:merchant_daily:s:orders")  # a half day passes the rest
    with monkeypatch.context() as dying, pytest.raises(Killed):
        dying.setattr(publishing, "failpoint", die)
        dying.setattr(coordinator, "failpoint", die)
        rerun(date, "scan", ledger, history)
    run_id, night_id = f"merchant_daily@date={date}+r1", f"merchant_daily@date={date}"
    assert ledger.get_run(run_id).status == "running"
    if point == "publish.mid_rows":
        assert md.summary(history, date) != md.reference(history, date)  # cut off half-way
    # Through the ledger's publication, a reader sees the old result whole until the new one is recorded.
    old = dict(publishing.staged_rows(history, md.SUMMARY, night_id))
    assert dict(publishing.published_rows(ledger, history, night_id, md.SUMMARY)) == old
    if resume == "rerun":
        assert rerun(date, "scan", ledger, history).id == run_id  # the same rerun, resumed
    else:
        assert night(history, ledger, date).id == f"merchant_daily@date={date}"  # done already: it only finishes
    assert ledger.get_run(run_id).status == "done"
    assert ledger.publication(f"merchant_daily@date={date}").run_id == run_id
    assert md.summary(history, date) == md.reference(history, date)
    assert dict(publishing.published_rows(ledger, history, night_id, md.SUMMARY)) == md.reference(history, date)


def test_pruning_keeps_what_is_published_or_read_and_removes_the_rest(history, ledger):
    date = DAYS[2]
    first = f"merchant_daily@date={date}"
    assert rerun(date, "scan", ledger, history).status == "done"  # r1: map and reduce
    assert rerun(date, "reduce", ledger, history).status == "done"  # r2: reads r1's map
    gens = {g.run.id: g.kept for g in generations(md.job, ledger, first, nights(md.job, ledger)[first])}
    assert gens == {first: "", f"{first}+r1": "last to complete phase map", f"{first}+r2": "published"}
    assert prune(md.job, ledger, history, dry_run=True, only=[first])[first] > 0
    assert any(True for _ in history.scan(md.PARTIALS, prefix=f"{first}/".encode()))
    deleted = prune(md.job, ledger, history, only=[first])
    assert list(deleted) == [first]
    for table in (md.PARTIALS, md.SUMMARY + "_staged"):
        assert not any(True for _ in history.scan(table, prefix=f"{first}/".encode()))
    assert any(True for _ in history.scan(md.PARTIALS, prefix=f"{first}+r1/".encode()))
    assert rerun(date, "reduce", ledger, history).status == "done"  # what the next rerun reads is still there
    assert md.summary(history, date) == md.reference(history, date)


def test_a_rerun_of_some_chunks_publishes_the_whole_night_with_those_chunks_redone(history, ledger):
    date = DAYS[3]
    published = md.summary(history, date)
    victim = next(iter(published))
    history.apply([Put(md.SUMMARY, victim, {"s:orders": "-1"}).normalized()])  # a bucket gone wrong
    bucket = f"b{md.bucket_of(victim.decode().split('/', 1)[1]):02d}"
    hub = MemoryHub()
    plan = plan_rerun(md.job, {"date": date}, "reduce", ledger, history, chunks=[bucket])
    with local_fleet(md.job, lambda: MemoryBroker(hub), ledger, history, 2):
        run = run_rerun(plan, md.job, {"date": date}, MemoryBroker(hub), ledger, history)
    assert run.status == "done" and ledger.chunk_counts(run.id) == {"reduce": {"done": 1}}
    assert md.summary(history, date) == published  # every other bucket's rows as they were, the chosen one mended
    row_count = next(c for c in ledger.checks(run.id) if c.name == "row_count:merchant_daily")
    assert row_count.measured == len(published)  # the checks saw the whole night


def test_db_prune_keeps_what_reruns_and_readers_of_a_published_night_go_by(history, ledger):
    date = DAYS[0]
    night_id = f"merchant_daily@date={date}"
    assert rerun(date, "scan", ledger, history).status == "done"
    counters = ledger.counters(night_id)
    pruned = ledger.prune(before=ledger.now() + 1)
    assert night_id in pruned.kept and f"{night_id}+r1" in pruned.kept
    assert ledger.counts(night_id) == {} and ledger.counters(night_id) == counters  # totals outlive messages
    plan = plan_rerun(md.job, {"date": date}, "reduce", ledger, history)
    assert plan.reads == {"map": f"{night_id}+r1"} and plan.run_id == f"{night_id}+r2"
    assert rerun(date, "reduce", ledger, history).status == "done"
    assert md.summary(history, date) == md.reference(history, date)
