"""A stage's pool: batches of what waits, the active-thread limit, draining, statistics."""
from __future__ import annotations

import itertools
import logging
import threading
import time

import pytest

from swarm.control import ConcurrencyController, Window
from swarm.errors import ConfigError
from swarm.pool import STUCK_WINDOWS, StagePool

TIMEOUT = 5.0  # every wait in these tests ends by then, and the test fails if it had to
_names = itertools.count()


class Recorder:
    """A work function that records its batches and holds every call until released."""

    def __init__(self, hold: bool = True, fail: set | None = None):
        self.cond = threading.Condition()
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.fail = fail or set()
        self.batches: list[list] = []
        self.running = self.peak = self.finished = 0
        self.tickets = threading.Semaphore(0)  # each lets one held call finish before the gate opens

    def __call__(self, batch: list) -> None:
        with self.cond:
            self.batches.append(list(batch))
            self.running += 1
            self.peak = max(self.peak, self.running)
            self.cond.notify_all()
        try:
            deadline = time.monotonic() + TIMEOUT
            while not (self.gate.is_set() or self.tickets.acquire(timeout=0.01)):
                assert time.monotonic() < deadline, "work was never released"
            if self.fail & set(batch):
                raise ValueError("boom")
        finally:
            with self.cond:
                self.running -= 1
                self.finished += 1
                self.cond.notify_all()

    def finish(self, n: int) -> None:
        """Let ``n`` held calls finish, and wait until they have."""
        with self.cond:
            target = self.finished + n
        for _ in range(n):
            self.tickets.release()
        with self.cond:
            assert self.cond.wait_for(lambda: self.finished >= target, TIMEOUT), "held calls did not finish"

    def wait_running(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.running >= n, TIMEOUT), f"{self.running} calls running, not {n}"

    def items(self) -> list:
        return sorted(item for batch in self.batches for item in batch)


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def pool_threads(pool: StagePool) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"swarm-{pool.name}-")]


def stop(pool: StagePool) -> None:
    """Shut down without waiting, then join with a time-out so that a stuck pool fails instead of hanging."""
    pool.shutdown(wait=False)
    for thread in pool_threads(pool):
        thread.join(TIMEOUT)
        assert not thread.is_alive(), f"{thread.name} did not exit"


@pytest.fixture
def make():
    made: list[tuple[StagePool, object]] = []

    def factory(name: str, work, **kwargs) -> StagePool:
        pool = StagePool(f"p{next(_names)}-{name}", work, **kwargs)
        made.append((pool, work))
        return pool

    yield factory
    for pool, work in made:  # never leave threads behind, even after a failure
        if isinstance(work, Recorder):
            work.gate.set()
        stop(pool)


def test_threads_take_only_what_waits_and_at_most_batch(make):
    work = Recorder()
    pool = make("batch", work, threads=2, batch=3)
    pool.start()
    pool.put(0)
    work.wait_running(1)
    pool.put(1)
    work.wait_running(2)
    for i in range(2, 12):
        pool.put(i)
    assert pool.waiting == 10
    work.gate.set()
    stop(pool)
    assert work.batches[:2] == [[0], [1]]  # taken alone: nothing else waited, and no one waits for a batch to fill
    assert all(1 <= len(b) <= 3 for b in work.batches), work.batches
    assert all(b == list(range(b[0], b[0] + len(b))) for b in work.batches)  # in order, from the head
    assert work.items() == list(range(12))  # every one exactly once
    assert pool.waiting == 0


def test_no_more_than_the_limit_work_at_once(make):
    work = Recorder()
    pool = make("limit", work, threads=4, controller=ConcurrencyController(2, 2))
    assert pool.limit == 2
    pool.start()
    for i in range(8):
        pool.put(i)
    work.wait_running(2)
    assert pool.waiting == 6  # two idle threads, but no slot under the limit
    work.gate.set()
    stop(pool)
    assert work.peak == 2 and work.items() == list(range(8))


def test_without_a_controller_the_limit_is_the_thread_count(make):
    work = Recorder()
    pool = make("threads", work, threads=3)
    assert pool.limit == 3 and pool.adjust() == 3
    pool.start()
    for i in range(8):
        pool.put(i)
    work.wait_running(3)
    assert pool.waiting == 5
    work.gate.set()
    stop(pool)
    assert work.peak == 3 and work.items() == list(range(8))


def test_adjust_lets_more_threads_work_when_the_controller_grows(make):
    work, limits = Recorder(), []
    pool = make("grow", work, threads=3, controller=ConcurrencyController(1, 3), on_limit=limits.append)
    pool.start()
    for i in range(6):
        pool.put(i)
    work.wait_running(1)
    assert pool.waiting == 5
    assert pool.adjust() == 2 and pool.limit == 2
    work.wait_running(2)
    assert pool.waiting == 4
    assert pool.adjust() == 3
    work.wait_running(3)
    assert pool.waiting == 3
    assert limits == [1, 2, 3]
    work.gate.set()
    stop(pool)
    assert work.items() == list(range(6)) and work.peak == 3


def test_a_cap_holds_the_stage_below_its_limit_until_it_is_lifted(make):
    work, limits = Recorder(), []
    controller = ConcurrencyController(1, 3, start=3)
    pool = make("cap", work, threads=3, controller=controller, on_limit=limits.append)
    pool.start()
    pool.cap(1)  # a successor is full
    assert pool.limit == 1 and limits == [3, 1]
    for i in range(6):
        pool.put(i)
    work.wait_running(1)
    assert pool.waiting == 5  # two idle threads, but the cap lets one work
    assert pool.adjust() == 1 and controller.limit == 3  # the controller is not fed while capped
    pool.cap(1)  # the same cap again: nothing to tell
    pool.cap(None)
    assert pool.limit == 3 and limits == [3, 1, 3]
    work.wait_running(3)
    work.gate.set()
    stop(pool)
    assert work.items() == list(range(6))


def test_shutdown_drains_what_was_put_under_the_limit_then_joins(make):
    work = Recorder()
    pool = make("drain", work, threads=3, batch=2, controller=ConcurrencyController(1, 1))
    for i in range(20):
        pool.put(i)
    pool.start()
    work.wait_running(1)
    closer = threading.Thread(target=pool.shutdown, daemon=True)
    closer.start()
    closer.join(0.05)
    assert closer.is_alive()  # cannot return while a call is held
    work.gate.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive()
    assert pool_threads(pool) == []
    assert work.items() == list(range(20)) and work.peak == 1


def test_threads_waiting_for_a_slot_stay_to_drain_when_the_limit_grows(make):
    work = Recorder()
    pool = make("drain-grow", work, threads=2, controller=ConcurrencyController(1, 2))
    pool.start()
    for i in range(5):
        pool.put(i)
    work.wait_running(1)
    pool.shutdown(wait=False)
    time.sleep(0.05)  # not a timing assertion: gives a wrongly leaving thread the time to go
    assert pool.adjust() == 2
    work.wait_running(2)  # the second thread did not leave with work still queued
    work.gate.set()
    stop(pool)
    assert work.items() == list(range(5))


def test_every_thread_exits_after_a_drain_under_a_small_limit(make):
    work = Recorder()
    pool = make("exit", work, threads=4, controller=ConcurrencyController(1, 1))
    pool.start()
    pool.put(0)
    pool.put(1)
    work.wait_running(1)
    pool.shutdown(wait=False)
    time.sleep(0.05)  # not a timing assertion: lets the three idle threads go back to waiting for a slot
    work.gate.set()
    stop(pool)  # fails if the one who took the last delivery left the others waiting
    assert work.items() == [0, 1]


def test_threads_are_named_after_the_stage_and_do_not_hold_up_an_exit(make):
    pool = make("names", Recorder(hold=False), threads=3)
    pool.start()
    threads = pool_threads(pool)
    assert sorted(t.name for t in threads) == [f"swarm-{pool.name}-{i}" for i in range(3)]
    # A worker drains its pools before it exits; daemons only spare a process that never drained a hang.
    assert all(t.daemon for t in threads)


def test_a_raising_work_function_loses_no_later_delivery(make, caplog):
    work = Recorder(hold=False, fail={3})
    pool = make("raise", work, threads=1)
    for i in range(6):
        pool.put(i)
    with caplog.at_level(logging.ERROR, logger="swarm.worker"):
        pool.start()
        stop(pool)
    assert work.batches == [[i] for i in range(6)]  # the one thread went on after the raise
    errors = [r for r in caplog.records if r.name == "swarm.worker" and r.exc_info]
    assert len(errors) == 1 and "boom" in str(errors[0].exc_info[1])


def test_window_reports_done_busy_waiting_and_resets(make):
    clock = FakeClock(100.0)

    def work(batch):
        clock.now += 2.0  # each call takes two seconds

    pool = make("window", work, threads=1, batch=2, clock=clock)
    for i in range(3):
        pool.put(i)
    assert pool.window() == Window(seconds=0.0, done=0, busy=0.0, waiting=3)
    pool.start()
    stop(pool)
    assert pool.window() == Window(seconds=4.0, done=3, busy=4.0, waiting=0)  # batches [0, 1] and [2]
    assert pool.window() == Window(seconds=0.0, done=0, busy=0.0, waiting=0)


def test_window_counts_calls_still_running(make):
    clock, work = FakeClock(100.0), Recorder()
    pool = make("running", work, threads=1, clock=clock)
    pool.start()
    pool.put("a")
    pool.put("b")
    work.wait_running(1)
    clock.now = 103.0
    assert pool.window() == Window(seconds=3.0, done=0, busy=3.0, waiting=1)
    clock.now = 105.0
    work.gate.set()
    stop(pool)
    assert pool.window() == Window(seconds=2.0, done=2, busy=2.0, waiting=0)  # not the 5 s since "a" began


def test_bad_sizes_are_a_config_error():
    with pytest.raises(ConfigError, match="0 and 1"):
        StagePool("bad", print, threads=0)
    with pytest.raises(ConfigError, match="2 and 0"):
        StagePool("bad", print, threads=2, batch=0)


def test_a_backlogged_window_with_few_completions_runs_on_before_it_is_judged(make):
    work, clock = Recorder(), FakeClock()
    pool = make("judge", work, threads=3, controller=ConcurrencyController(1, 3), min_done=2, max_window=10.0,
                clock=clock)
    pool.start()
    for i in range(6):
        pool.put(i)
    work.wait_running(1)
    clock.now += 5
    assert pool.adjust() == 1  # a backlog, nothing finished, 5 s: too soon to tell
    clock.now += 5
    assert pool.adjust() == 1  # 10 s, but its one working thread has finished nothing yet
    work.finish(1)
    assert pool.adjust() == 2  # 10 s and a completion per working thread: judged
    work.wait_running(2)
    work.gate.set()  # the rest finish (at least 2 completions before the queue empties)
    stop(pool)
    assert work.items() == list(range(6))


def test_a_backlogged_window_with_no_completion_is_judged_at_last(make):
    work, clock = Recorder(), FakeClock()
    pool = make("stuck", work, threads=3, controller=ConcurrencyController(1, 3), min_done=2, max_window=10.0,
                clock=clock)
    pool.start()
    for i in range(4):
        pool.put(i)
    work.wait_running(1)
    clock.now += 10 * STUCK_WINDOWS - 1
    assert pool.adjust() == 1  # a hung handler, but not for long enough yet
    clock.now += 1
    assert pool.adjust() == 2  # stuck that long: another thread may work around it
    work.gate.set()
    stop(pool)
    assert work.items() == list(range(4))


def test_quiet_windows_are_judged_at_once(make):
    work, clock = Recorder(hold=False), FakeClock()
    pool = make("quiet", work, threads=3, controller=ConcurrencyController(1, 3, start=3, idle_windows=1),
                min_done=100, max_window=60.0, clock=clock)
    pool.start()
    clock.now += 1
    assert pool.adjust() == 2  # no backlog: nothing to wait for


def test_a_paused_pool_finishes_what_it_holds_hands_back_what_waits_and_takes_again_once_resumed(make):
    work = Recorder()
    pool = make("pause", work, threads=1, batch=2)
    pool.start()
    pool.put(0)
    work.wait_running(1)
    for i in range(1, 4):
        pool.put(i)
    handed: list[int] = []
    assert pool.pause(handed.extend) == 3  # prefetched, not started: given back
    assert pool.paused and pool.waiting == 0 and handed == [1, 2, 3]
    pool.put(4)  # put while paused (a delivery already on its way): handed back too
    assert handed == [1, 2, 3, 4] and pool.waiting == 0
    work.finish(1)  # the call in hand finishes
    assert work.batches == [[0]]
    pool.resume()
    assert not pool.paused
    pool.put(5)
    work.gate.set()
    stop(pool)
    assert work.items() == [0, 5]  # each exactly once: the handed-back ones are the queue's again


def test_a_paused_pool_shuts_down_without_waiting_for_a_resume(make):
    work = Recorder(hold=False)
    pool = make("pause-stop", work, threads=2)
    pool.start()
    pool.pause(lambda deliveries: None)
    stop(pool)
    assert not pool_threads(pool)
