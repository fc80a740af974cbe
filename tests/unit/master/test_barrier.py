"""The barrier: a phase is over once none of its messages is open."""
import pytest

from master.coordinator import barrier_passed
from swarm.ledger import M_ABORTED, M_CLAIMED, M_DEAD, M_DONE, M_PLANNED, M_QUEUED


@pytest.mark.parametrize("counts, passed", [
    ({M_DONE: 5}, True),
    ({M_DONE: 3, M_DEAD: 1, M_ABORTED: 1}, True),  # settled, though the run will fail
    ({}, True),
    ({M_DONE: 4, M_QUEUED: 1}, False),
    ({M_DONE: 4, M_CLAIMED: 1}, False),
    ({M_PLANNED: 1}, False),
    ({M_DONE: 4, M_QUEUED: 0}, True),
])
def test_the_barrier_passes_only_when_nothing_is_open(counts, passed):
    assert barrier_passed(counts) is passed
