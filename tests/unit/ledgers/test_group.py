"""Group commit: who leads, who shares a transaction, and that each caller gets its own outcome."""
from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from swarm.ledgers.group import Group, Pending


class Recorder:
    """A group's ``run``: records each group; the first one waits until ``release`` is set."""

    def __init__(self) -> None:
        self.groups: list[list[tuple]] = []
        self.threads: list[threading.Thread] = []
        self.release = threading.Event()

    def __call__(self, group: list[Pending]) -> None:
        if not self.groups:
            self.release.wait(10)
        self.groups.append([(p.key, p.id) for p in group])
        self.threads.append(threading.current_thread())
        for p in group:
            if p.id.startswith("bad"):
                p.fail(ValueError(p.id))
            else:
                p.succeed((p.key, p.id, p.request))


def queue_up(pool, group: Group, calls: list[tuple]) -> list[concurrent.futures.Future]:
    """Submit ``calls`` (key, id, args) one after the other, each queued before the next starts."""
    futures = []
    for i, call in enumerate(calls):
        futures.append(pool.submit(group.submit, *call))
        wait_for_waiting(group, i + 1)
    return futures


def start_leader(pool, group: Group) -> concurrent.futures.Future:
    first = pool.submit(group.submit, "k", "m0", ())
    deadline = time.monotonic() + 10
    while not group._busy:
        assert time.monotonic() < deadline, "no leader"
        time.sleep(0.001)
    return first


def wait_for_waiting(group: Group, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(group._waiting) < n:
        assert time.monotonic() < deadline, "the callers did not queue up"
        time.sleep(0.001)


def test_a_lone_caller_runs_its_own_group_in_its_own_thread():
    run = Recorder()
    run.release.set()
    group = Group(run)
    assert group.submit("k", "m1", (1,)) == ("k", "m1", (1,))
    assert run.groups == [[("k", "m1")]] and run.threads == [threading.current_thread()]


def test_callers_arriving_during_a_transaction_share_the_next_one():
    run = Recorder()
    group = Group(run, limit=64)
    later = [("k", f"m{i}") for i in range(12)] + [("k", "bad1"), ("other", "m1"), ("k", "m3")]
    with concurrent.futures.ThreadPoolExecutor(len(later) + 1) as pool:
        first = start_leader(pool, group)
        futures = queue_up(pool, group, [(key, msg_id, (i,)) for i, (key, msg_id) in enumerate(later)])
        run.release.set()
        assert first.result() == ("k", "m0", ())
        for i, ((key, msg_id), future) in enumerate(zip(later, futures)):
            if msg_id == "bad1":
                with pytest.raises(ValueError, match="bad1"):
                    future.result()
            else:
                assert future.result() == (key, msg_id, (i,))
    assert run.groups[0] == [("k", "m0")]
    # The second group: every waiting "k" request, each message once; then the rest, oldest first.
    assert sorted(run.groups[1]) == sorted([("k", f"m{i}") for i in range(12)] + [("k", "bad1")])
    assert sorted(run.groups[2:]) == [[("k", "m3")], [("other", "m1")]]


def test_a_group_holds_at_most_its_limit():
    run = Recorder()
    group = Group(run, limit=4)
    with concurrent.futures.ThreadPoolExecutor(11) as pool:
        first = start_leader(pool, group)
        futures = queue_up(pool, group, [("k", f"m{i}", ()) for i in range(1, 11)])
        run.release.set()
        assert [f.result()[1] for f in [first, *futures]] == [f"m{i}" for i in range(11)]
    assert [len(g) for g in run.groups] == [1, 4, 4, 2]


def test_an_interrupted_leader_fails_the_others_instead_of_leaving_them_waiting():
    def run(group: list[Pending]) -> None:
        group[0].succeed("first")
        raise KeyboardInterrupt

    group = Group(run)
    members = [Pending("k", "m1", ()), Pending("k", "m2", ())]
    group._waiting = list(members)
    group._busy = True
    with pytest.raises(KeyboardInterrupt):
        group._lead(group._take())
    assert members[0].outcome() == "first"
    assert members[1].settled and "interrupted" in str(members[1].error)
    assert not group._busy
