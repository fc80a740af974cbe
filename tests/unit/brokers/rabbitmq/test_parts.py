"""Parts of the RabbitMQ broker that need no server: delay tiers, queue arguments, URL options, coalesced acks."""
from __future__ import annotations

import pytest

from swarm.broker import dead_letter_queue
from swarm.brokers.rabbitmq import (
    DELAY_TIERS_MS,
    BlockingRabbitBroker,
    RabbitBroker,
    Topology,
    consumer_timeout_note,
    delay_tier,
    retry_queue,
)
from swarm.brokers.rabbitmq.consuming import write_settles
from swarm.brokers.rabbitmq.url import parse_url
from swarm.errors import ConfigError

Q = "swarm.test.stage"
URL = "amqp://guest:guest@127.0.0.1:5672/swarm-test"


def test_delay_rounds_to_the_nearest_tier():
    assert delay_tier(0.05) == 1000
    assert delay_tier(1.2) == 1000
    assert delay_tier(1.5) == 2000
    assert delay_tier(3) == 4000
    assert delay_tier(300) == 256_000
    assert delay_tier(10**7) == DELAY_TIERS_MS[-1]


def test_servers_without_quorum_queues_get_classic_durable_ones():
    old = Topology((3, 7), delivery_limit=20).queues(Q)
    assert all("x-queue-type" not in args and "x-delivery-limit" not in args for _, args in old)
    stage = dict(old)[Q]
    assert (stage["x-dead-letter-exchange"], stage["x-dead-letter-routing-key"]) == ("", dead_letter_queue(Q))
    tier = dict(old)[retry_queue(Q, 8000)]
    assert (tier["x-message-ttl"], tier["x-dead-letter-routing-key"]) == (8000, Q)


@pytest.mark.parametrize("kind", [RabbitBroker, BlockingRabbitBroker])
def test_bad_url_options_are_config_errors_naming_the_option(kind):
    with pytest.raises(ConfigError, match="delivery_limit"):
        kind(f"{URL}?delivery_limit=many")
    with pytest.raises(ConfigError, match="bogus"):
        kind(f"{URL}?bogus=1")


def test_connections_get_tcp_keepalive_unless_the_url_sets_tcp_options():
    assert parse_url(URL).params.tcp_options == {"TCP_KEEPIDLE": 60, "TCP_KEEPINTVL": 10, "TCP_KEEPCNT": 6}
    assert parse_url(f"{URL}?tcp_options={{'TCP_KEEPIDLE':5}}").params.tcp_options == {"TCP_KEEPIDLE": 5}
    assert parse_url(f"{URL}?tcp_options={{}}").params.tcp_options == {}  # none at all


def test_consumer_timeout_note_says_what_to_configure():
    broker = RabbitBroker(URL)
    assert broker.consumer_timeout_note(Q, 300) is None
    note = broker.consumer_timeout_note(Q, 1800)
    assert note and "consumer_timeout" in note and Q in note
    assert RabbitBroker(f"{URL}?consumer_timeout=7200").consumer_timeout_note(Q, 1800) is None
    assert consumer_timeout_note(Q, 10**6, consumer_timeout=0) is None  # 0: disabled on the server


def test_the_blocking_broker_does_not_consume():
    broker = BlockingRabbitBroker(URL)  # connects on its first call: none of these makes one
    for call in (lambda: broker.consume(Q, 1, print), lambda: broker.set_prefetch(Q, 2),
                 lambda: broker.serve(None), broker.cancel):
        with pytest.raises(NotImplementedError, match="open_broker"):
            call()


# -- settling in bulk ------------------------------------------------------


class _Channel:
    """Records what a settle writes on it."""

    is_open = True

    def __init__(self):
        self.frames: list[tuple] = []

    def basic_ack(self, tag, multiple=False):
        self.frames.append(("ack", tag, multiple))

    def basic_nack(self, tag, requeue=True):
        self.frames.append(("nack", tag, requeue))


def settle_on(unacked: list[int], acks: list[int], requeues: list[int]) -> tuple[list[tuple], list[int]]:
    """What ``write_settles`` writes for these tags, and what it leaves unacked."""
    ch = _Channel()
    held = dict.fromkeys(unacked)
    write_settles(ch, held, dict.fromkeys(acks, False) | dict.fromkeys(requeues, True))
    assert not set(held) & set(acks + requeues)  # every settled tag it held is settled and forgotten
    return ch.frames, list(held)


def test_a_multiple_ack_covers_only_the_oldest_run_of_acked_tags():
    frames, left = settle_on([1, 2, 3, 4, 5, 6, 7], acks=[3, 1, 2, 5, 7], requeues=[4])
    assert frames[0] == ("ack", 3, True)  # 1..3: every older tag acked
    assert sorted(frames[1:]) == [("ack", 5, False), ("ack", 7, False), ("nack", 4, True)]
    assert left == [6]


def test_a_requeue_or_a_held_tag_first_means_single_frames():
    frames, left = settle_on([1, 2, 3], acks=[2, 3], requeues=[1])
    assert sorted(frames) == [("ack", 2, False), ("ack", 3, False), ("nack", 1, True)]
    assert left == []
    frames, left = settle_on([4, 5, 6], acks=[5, 6], requeues=[])
    assert sorted(frames) == [("ack", 5, False), ("ack", 6, False)]
    assert left == [4]
    frames, left = settle_on([4, 5, 6], acks=[4, 9], requeues=[])  # 9 is not held here: left alone
    assert frames == [("ack", 4, False)]
    assert left == [5, 6]
