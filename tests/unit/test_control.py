"""The per-stage concurrency controller, against simulated stages and random windows."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.control import ConcurrencyController, Window
from swarm.errors import ConfigError


def saturating(c: int) -> float:
    """Messages/s at concurrency c: linear up to 6 threads, then contention costs 60/s a thread."""
    return min(c, 6) * 100 - max(0, c - 6) * 60


def steeper(c: int) -> float:
    return min(c, 6) * 100 - max(0, c - 6) * 100


def linear(c: int) -> float:
    return c * 100.0


def drive(ctl: ConcurrencyController, throughput, windows: int) -> list[int]:
    """Run a stage that always has a backlog and keeps all its allowed threads busy."""
    limits = []
    for _ in range(windows):
        c = ctl.limit
        # latency = busy / done = c / throughput(c)
        limits.append(ctl.observe(Window(seconds=1.0, done=int(throughput(c)), busy=float(c), waiting=50)))
    return limits


@pytest.mark.parametrize(
    "throughput, options",
    [(saturating, {"tolerance": 0.05}), (steeper, {})],
    ids=["saturating-tolerance-0.05", "steeper-defaults"],
)
def test_a_saturating_stage_settles_next_to_its_best_concurrency(throughput, options):
    ctl = ConcurrencyController(1, 16, **options)
    limits = drive(ctl, throughput, 40)
    assert max(limits) <= 7
    settled = drive(ctl, throughput, 40)
    assert all(5 <= limit <= 7 for limit in settled), settled
    # Probing the worse level costs one window in hold + 1; the rest are spent at the best one.
    assert settled.count(6) >= len(settled) * 3 // 4


def test_at_exactly_the_tolerance_a_loss_is_not_undone():
    # saturating(7) is exactly 10 % below saturating(6): not "more than" the default tolerance.
    limits = drive(ConcurrencyController(1, 16), saturating, 40)
    assert max(limits) == 8 and set(limits[-20:]) == {7, 8}


def test_a_stage_that_keeps_scaling_climbs_to_high_and_stays():
    ctl = ConcurrencyController(1, 16)
    limits = drive(ctl, linear, 40)
    assert limits[:15] == list(range(2, 17))
    assert set(limits[15:]) == {16}


def test_a_growth_that_only_adds_latency_is_undone_then_held():
    ctl = ConcurrencyController(1, 8, start=4, hold=2)
    assert ctl.observe(Window(1.0, 400, 4.0, 10)) == 5
    # 5 % more throughput for more than twice the latency per message: undone
    assert ctl.observe(Window(1.0, 420, 9.0, 10)) == 4
    assert ctl.observe(Window(1.0, 400, 4.0, 10)) == 4  # held
    assert ctl.observe(Window(1.0, 400, 4.0, 10)) == 4  # held
    assert ctl.observe(Window(1.0, 400, 4.0, 10)) == 5  # hold over: probe again


def test_more_latency_with_a_real_gain_is_kept():
    ctl = ConcurrencyController(1, 8, start=4)
    assert ctl.observe(Window(1.0, 400, 4.0, 10)) == 5
    assert ctl.observe(Window(1.0, 500, 9.0, 10)) == 6


def test_a_growth_is_not_judged_by_a_window_without_backlog():
    ctl = ConcurrencyController(1, 8, start=4)
    assert ctl.observe(Window(1.0, 400, 4.0, 10)) == 5
    assert ctl.observe(Window(1.0, 100, 4.5, 0)) == 5  # demand fell, not the stage
    assert ctl.observe(Window(1.0, 100, 4.5, 10)) == 6


def test_idle_windows_shrink_to_low_one_step_per_run():
    ctl = ConcurrencyController(2, 8, start=8)
    idle = Window(1.0, 0, 0.0, 0)
    limits = [ctl.observe(idle) for _ in range(24)]
    assert limits[:6] == [8, 8, 7, 7, 7, 6]
    assert limits[-6:] == [2] * 6


def test_under_used_threads_shrink_until_one_spare_thread():
    ctl = ConcurrencyController(1, 8, start=8)
    two_busy = Window(1.0, 100, 2.0, 0)
    limits = [ctl.observe(two_busy) for _ in range(30)]
    assert limits[2] == 7
    assert limits[-1] == 3  # 2 thread-seconds a second is not under 3 - 1


def test_threads_stuck_in_long_calls_are_not_idle():
    ctl = ConcurrencyController(1, 8, start=4)
    limits = [ctl.observe(Window(1.0, 0, 4.0, 0)) for _ in range(10)]
    assert set(limits) == {4}


def test_a_backlog_resets_the_run_of_quiet_windows():
    ctl = ConcurrencyController(1, 8, start=5, idle_windows=3)
    quiet, busy = Window(1.0, 0, 0.0, 0), Window(1.0, 100, 5.0, 3)
    for window in [quiet, quiet, busy, quiet, quiet]:
        ctl.observe(window)
    assert ctl.limit == 6  # the backlog grew it; neither run of quiet windows reached 3


def test_start_defaults_to_low_and_is_clamped():
    assert ConcurrencyController(2, 5).limit == 2
    assert ConcurrencyController(2, 5, start=9).limit == 5
    assert ConcurrencyController(2, 5, start=0).limit == 2


@pytest.mark.parametrize("low, high, names", [(0, 4, "low=0"), (-1, 4, "low=-1"), (3, 2, "low=3, high=2")])
def test_bad_bounds_are_a_config_error_naming_them(low, high, names):
    with pytest.raises(ConfigError, match=names):
        ConcurrencyController(low, high)


windows = st.builds(
    Window,
    seconds=st.floats(0.0, 10.0),
    done=st.integers(0, 1000),
    busy=st.floats(0.0, 100.0),
    waiting=st.integers(0, 50),
)


@settings(max_examples=100, deadline=None)
@given(
    low=st.integers(1, 6),
    span=st.integers(0, 6),
    start=st.none() | st.integers(-2, 16),
    seq=st.lists(windows, max_size=60),
)
def test_the_limit_never_leaves_its_bounds(low, span, start, seq):
    high = low + span
    ctl, twin = ConcurrencyController(low, high, start), ConcurrencyController(low, high, start)
    assert low <= ctl.limit <= high
    for window in seq:
        limit = ctl.observe(window)
        assert low <= limit <= high and limit == ctl.limit
        assert twin.observe(window) == limit  # deterministic


def test_slow_start_doubles_while_the_stage_scales():
    ctl = ConcurrencyController(1, 16, slow_start=True)
    assert drive(ctl, linear, 6) == [2, 4, 8, 16, 16, 16]


@pytest.mark.parametrize("throughput", [saturating, steeper], ids=["saturating", "steeper"])
def test_slow_start_backs_off_an_overshoot_and_settles_next_to_the_best(throughput):
    ctl = ConcurrencyController(1, 16, slow_start=True, tolerance=0.05)
    limits = drive(ctl, throughput, 40)
    assert limits[:3] == [2, 4, 8]  # 4 -> 8 gains less than half of perfect scaling: back to 4
    assert limits[3] == 4
    settled = drive(ctl, throughput, 40)
    assert all(5 <= limit <= 7 for limit in settled), settled
    assert settled.count(6) >= len(settled) * 3 // 4


def test_slow_start_ends_with_the_first_shrink():
    ctl = ConcurrencyController(1, 16, start=8, slow_start=True, idle_windows=1)
    assert ctl.observe(Window(seconds=1.0, done=0, busy=0.0, waiting=0)) == 7
    assert drive(ctl, linear, 2) == [8, 9]
