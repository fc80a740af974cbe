"""The barrier: a phase is over once none of its messages is open."""
import pytest

from master.coordinator import barrier_passed
from swarm.ledger import MessageState as S


@pytest.mark.parametrize("counts, passed", [
    ({S.DONE: 5}, True),
    ({S.DONE: 3, S.DEAD: 1, S.ABORTED: 1}, True),  # settled, though the run will fail
    ({}, True),
    ({S.DONE: 4, S.QUEUED: 1}, False),
    ({S.DONE: 4, S.CLAIMED: 1}, False),
    ({S.PLANNED: 1}, False),
    ({S.DONE: 4, S.QUEUED: 0}, True),
])
def test_the_barrier_passes_only_when_nothing_is_open(counts, passed):
    assert barrier_passed(counts) is passed
