"""The master's half of straggler splitting (master.splitting): range messages waiting unclaimed in a phase's tail."""
import pytest

from master.coordinator import Master, MasterSettings
from master.planner import plan_phase
from master.splitting import Splitter
from swarm.broker import Delivery, stage_queue
from swarm.brokers.memory import MemoryBroker
from swarm.envelope import decode
from swarm.ledger import MessageState, PhaseState
from swarm.local import local_fleet
from swarm.runtime import SKIPPED, Processor
from swarm.signing import SiteKeys
from swarm.slices import SplitSettings, split_messages
from workers.jobs import merchant_daily as md

DATE = "2026-11-22"
RUN = md.job.run_id({"date": DATE})
KEYS = SiteKeys(b"s" * 32)
QUEUE = stage_queue(md.job.name, "scan")
ON = SplitSettings(enabled=True, ways=4, tail=8, min_rows=1000)  # the hot chunk only: 4,500 rows, the others ~500


class FakeDelivery(Delivery):
    def __init__(self, queue, body):
        self.queue, self.body, self.headers, self.redelivered = queue, body, {}, False
        self.acked = 0

    def ack(self):
        self.acked += 1

    def requeue(self):
        raise AssertionError("not requeued")


@pytest.fixture
def skewed(tables):
    md.create_tables(tables, DATE)
    md.generate(tables, DATE, 8000, merchants=30, customers=500, seed=7, hot=0.5)
    return tables


@pytest.fixture
def waiting(skewed, ledger, broker):
    """The map phase's 8 roots, checkpointed and queued in the ledger, on no queue: waiting, never claimed."""
    broker.declare([stage_queue(md.job.name, s) for s in md.job.stages])
    ledger.open_run(RUN, md.job.name, {"date": DATE})
    roots = plan_phase(md.job, RUN, "map", skewed, {"chunks": 8}, KEYS)
    ledger.save_plan(RUN, "map", roots)
    ledger.mark_queued([m.id for m in roots])
    return roots


def splitter(broker, ledger, tables, settings=ON):
    return Splitter(md.job, broker, ledger, tables, KEYS, settings)


def hot(roots):
    """The root of the chunk that holds half the day."""
    return next(m for m in roots if decode(m.body, KEYS).payload["start"] <= f"{DATE}/{md.HOT}".encode()
                < decode(m.body, KEYS).payload["stop"])


def test_in_the_tail_what_waits_unclaimed_is_split_and_its_parts_published(waiting, ledger, broker, skewed):
    split = splitter(broker, ledger, skewed).tend(RUN, "map", ledger.counts(RUN, "map"))
    root = hot(waiting)
    assert split == 1  # only the hot chunk holds 1000 rows or more
    parts = ledger.queued_children(root.id)
    assert [p.id.rsplit("/", 1)[1] for p in parts] == ["0:0", "0:1", "0:2", "0:3"]
    assert broker.depth(QUEUE) == 4  # published
    assert ledger.claim(RUN, "map", root, "w1", 60).state == MessageState.DONE
    ranges = [decode(p.body, KEYS).payload for p in parts]
    whole = decode(root.body, KEYS).payload
    assert ranges[0]["start"] == whole["start"] and ranges[-1]["stop"] == whole["stop"]
    assert all(a["stop"] == b["start"] for a, b in zip(ranges, ranges[1:], strict=False))
    rows = lambda r: sum(1 for _ in skewed.scan(md.EVENTS, r["start"], r["stop"]))  # noqa: E731
    assert sum(rows(r) for r in ranges) == rows(whole)  # every row in exactly one part


def test_a_range_not_worth_splitting_is_read_once(waiting, ledger, broker, skewed, monkeypatch):
    first = splitter(broker, ledger, skewed)
    assert first.tend(RUN, "map", ledger.counts(RUN, "map")) == 1
    reads = []
    monkeypatch.setattr(skewed, "scan", lambda *args, **kw: reads.append(args) or iter(()))
    assert first.tend(RUN, "map", ledger.counts(RUN, "map")) == 0  # the 7 small chunks, declined before
    assert reads == []


def test_a_message_a_worker_claimed_is_never_split(waiting, ledger, broker, skewed):
    root = hot(waiting)
    claim = ledger.claim(RUN, "map", root, "w1", 60)
    assert splitter(broker, ledger, skewed).tend(RUN, "map", ledger.counts(RUN, "map")) == 0
    assert ledger.queued_children(root.id) == [] and broker.depth(QUEUE) == 0
    # Handed back (its worker never started it, or an outage): still never split, its token has moved.
    ledger.release(root.id, claim.token, MessageState.QUEUED, None, refund=True)
    assert splitter(broker, ledger, skewed).tend(RUN, "map", ledger.counts(RUN, "map")) == 0
    assert ledger.claim(RUN, "map", root, "w2", 60).granted


@pytest.mark.parametrize("why", ["off", "open", "queue"])
def test_nothing_is_split_outside_the_tail(waiting, ledger, broker, skewed, why):
    settings = SplitSettings(enabled=why != "off", ways=4, tail=7 if why == "open" else 8, min_rows=500)
    if why == "queue":
        broker.publish([(QUEUE, waiting[0].body)])  # work waiting: the threads are not idle
    assert splitter(broker, ledger, skewed, settings).tend(RUN, "map", ledger.counts(RUN, "map")) == 0
    assert ledger.counts(RUN, "map") == {MessageState.QUEUED: 8}


def test_a_worker_that_receives_the_original_skips_it_and_publishes_its_parts_again(waiting, ledger, broker,
                                                                                     skewed):
    splitter(broker, ledger, skewed).tend(RUN, "map", ledger.counts(RUN, "map"))
    root = hot(waiting)
    broker.purge(QUEUE)  # as if the parts' publish had been lost
    worker = Processor(md.job, broker, ledger, skewed, "w1", lease=30, keys=KEYS)
    delivery = FakeDelivery(QUEUE, root.body)
    assert worker.handle(delivery) == SKIPPED and delivery.acked == 1
    assert broker.depth(QUEUE) == 4  # harmless: each part is claimed once


def test_a_master_killed_between_a_split_and_its_publish_is_finished_by_the_next(waiting, ledger, skewed, hub):
    """The split committed, its parts on no queue (master.after_split): the next master publishes them as lost."""
    root = hot(waiting)
    env = decode(root.body, KEYS)
    parts = split_messages(env, md.job.stages["scan"], env.seq, env.payload, ON, skewed, KEYS)
    assert ledger.split(RUN, "map", root.id, parts)  # and then the master died
    ledger.set_phase_state(RUN, "map", PhaseState.PUBLISHED)
    settings = MasterSettings(poll=0.05, lost_after=0.2, options={"chunks": 8, "slice_rows": 300}, split=ON)
    with local_fleet(md.job, lambda: MemoryBroker(hub), ledger, skewed, 2, keys=KEYS,
                     options={"slice_rows": 300}, split=ON):
        run = Master(md.job, {"date": DATE}, MemoryBroker(hub), ledger, skewed, settings, keys=KEYS).run()
    assert (run.status, run.error) == ("done", None)
    assert md.summary(skewed, DATE) == md.reference(skewed, DATE)
    assert ledger.counters(RUN) == {"rows": 8000, "merchants": 30}
