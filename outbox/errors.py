"""The outbox's own errors; driver exceptions are translated into these at the edge."""

from __future__ import annotations


class BrokerUnavailable(Exception):
    """RabbitMQ cannot be reached or dropped the connection."""


class PublishFailed(Exception):
    """The broker refused one message (returned as unroutable, nacked, or timed out)."""


class Unprocessable(Exception):
    """A message no redelivery can fix (bad payload, unknown type): dead-letter it now.

    Args:
        detail: What is wrong, for the log: names and counts, never the payload.
        reason: A short code for the metric label (``unknown_type``, ``invalid_payload``).
    """

    def __init__(self, detail: str, *, reason: str = "unprocessable") -> None:
        super().__init__(detail)
        self.reason = reason
