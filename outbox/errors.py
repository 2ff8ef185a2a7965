"""The outbox's own errors; driver exceptions are translated into these at the edge."""

from __future__ import annotations


class BrokerUnavailable(Exception):
    """RabbitMQ cannot be reached or dropped the connection."""


class PublishFailed(Exception):
    """The broker refused one message (returned as unroutable, nacked, or timed out)."""
