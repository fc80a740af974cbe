"""What a worker holds: a renewal's answer moves a lease's local end, and only for the claim it was asked for."""
import math

from swarm.leases import InFlight, Leases
from tests.unit.test_runtime import FakeDelivery, envelope
from tests.unit.toyjob import job


def flight(n: int, token: int) -> InFlight:
    env = envelope(n=n)
    return InFlight(env, job.stages["sink"], FakeDelivery("q", b""), token, attempts=1, held_until=100.0)


def test_a_renewal_extends_the_kept_loses_the_others_and_leaves_newer_claims_alone():
    kept, lost, newer, gone = flight(1, 3), flight(2, 3), flight(3, 5), flight(4, 1)
    leases = Leases()
    with leases.holding([kept, lost, newer]):
        asked = [(kept.env.id, 3), (lost.env.id, 3), (newer.env.id, 4), (gone.env.id, 1)]
        leases.renewed(asked, {kept.env.id, newer.env.id, gone.env.id}, 160.0)
        assert (kept.held_until, lost.held_until, newer.held_until) == (160.0, -math.inf, 100.0)
        assert not lost.holds(0.0, 0.0) and kept.holds(150.0, 10.0) and not kept.holds(151.0, 10.0)
    assert gone.held_until == 100.0  # never held here: untouched
