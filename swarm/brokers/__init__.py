"""Broker implementations: ``memory`` (in-process) and ``rabbitmq`` (pika)."""
