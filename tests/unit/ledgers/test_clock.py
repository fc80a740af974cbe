"""The ledger server's clock, as every host reads it: the server's time whatever the host's clock says."""
import pytest

from swarm.ledgers.clock import ServerClock


class Host:
    """A host's two clocks, moved by hand: its wall clock ``skew`` seconds off the server's."""

    def __init__(self, skew: float):
        self.mono, self.skew = 50.0, skew

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> float:
        return SERVER_EPOCH + self.mono + self.skew


SERVER_EPOCH = 1_800_000_000.0


def server_time(host: Host, round_trip: float = 0.0, down: list | None = None):
    """A reading of the server's clock that takes ``round_trip`` seconds, or fails while ``down`` is non-empty."""
    def read() -> float:
        if down:
            raise ConnectionError("server out of reach")
        host.mono += round_trip / 2
        at = SERVER_EPOCH + host.mono
        host.mono += round_trip / 2
        return at

    return read


@pytest.mark.parametrize("skew", [-600.0, 0.0, 600.0])
def test_hosts_with_clocks_minutes_apart_tell_the_same_time(skew):
    host = Host(skew)
    clock = ServerClock(server_time(host, round_trip=0.2), monotonic=host.monotonic, local=host.wall)
    assert clock.now() == pytest.approx(SERVER_EPOCH + host.mono)
    host.mono += 30.0  # carried by the monotonic clock between readings
    assert clock.now() == pytest.approx(SERVER_EPOCH + host.mono)
    assert clock.offset == pytest.approx(-skew)


def test_the_server_is_read_again_after_resync_and_its_last_reading_serves_while_it_is_out_of_reach():
    host, down, reads = Host(0.0), [], []
    read = server_time(host, down=down)

    def counted() -> float:
        reads.append(host.mono)
        return read()

    clock = ServerClock(counted, resync=60.0, retry=2.0, monotonic=host.monotonic, local=host.wall)
    clock.now()
    host.mono += 59.0
    clock.now()
    assert len(reads) == 1
    host.mono += 1.0
    down.append(True)
    assert clock.now() == pytest.approx(SERVER_EPOCH + host.mono)  # the last reading, carried on
    host.mono += 1.0
    clock.now()
    assert len(reads) == 2  # failed, tried again only after ``retry``
    host.mono += 1.0
    down.clear()
    assert clock.now() == pytest.approx(SERVER_EPOCH + host.mono) and len(reads) == 3


def test_before_any_reading_the_host_clock_stands_in():
    host = Host(5.0)
    clock = ServerClock(server_time(host, down=[True]), monotonic=host.monotonic, local=host.wall)
    assert clock.now() == host.wall() and clock.offset is None
