"""The RabbitMQ broker (``amqp://`` and ``amqps://`` URLs) over pika 1.4; README.md here explains the design.

``RabbitBroker`` serves (a worker: one I/O thread in ``serve``);
``BlockingRabbitBroker`` never does (the master and one-shot commands: each
call pumps the connection itself).
"""
from swarm.brokers.rabbitmq.blocking import BlockingRabbitBroker
from swarm.brokers.rabbitmq.broker import RECONNECT_CAP, RECONNECT_FIRST, RabbitBroker
from swarm.brokers.rabbitmq.connection import Connection
from swarm.brokers.rabbitmq.consuming import CONSUMER_TIMEOUT_SLACK, RabbitDelivery, consumer_timeout_note
from swarm.brokers.rabbitmq.errors import ConnectionLost, describe_connect_error
from swarm.brokers.rabbitmq.topology import DELAY_TIERS_MS, Topology, delay_tier, retry_queue
from swarm.brokers.rabbitmq.url import DEFAULT_CONSUMER_TIMEOUT, BrokerOptions, parse_url

# The names tests and callers used before the package was split.
_parse_url = parse_url
_describe_connect = describe_connect_error

__all__ = [
    "BlockingRabbitBroker", "BrokerOptions", "CONSUMER_TIMEOUT_SLACK", "Connection", "ConnectionLost",
    "DEFAULT_CONSUMER_TIMEOUT", "DELAY_TIERS_MS", "RECONNECT_CAP", "RECONNECT_FIRST", "RabbitBroker",
    "RabbitDelivery", "Topology", "consumer_timeout_note", "delay_tier", "describe_connect_error", "parse_url",
    "retry_queue",
]
