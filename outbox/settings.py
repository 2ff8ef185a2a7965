"""Configuration, read once from the environment (prefix ``SAGAWAY_``)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sagaway.outbox.broker_nodes import parse_nodes
from sagaway.outbox.envelope import DEFAULT_MAX_MESSAGE_BYTES

DEFAULT_APP = "sagaway.services.order_app:order_app"
"""The application every command runs without ``--app``: the built-in order saga."""


class Settings(BaseSettings):
    """Every knob sagaway has. Built in the entry point and passed down, never global."""

    # hide_input_in_errors: a rejected value (a URL with its password) never reaches
    # the error message, which is printed and logged.
    model_config = SettingsConfigDict(
        env_prefix="SAGAWAY_", extra="ignore", hide_input_in_errors=True
    )

    # The saga application to run, as ``module:attribute`` (``--app`` on every command).
    app: str = Field(
        default=DEFAULT_APP,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$",
    )
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/sagaway"
    # One node's URL, or the nodes of one RabbitMQ cluster separated by commas.
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    admin_token: SecretStr | None = None

    # Prefix of every exchange and queue name, so that several installations (or test
    # runs) can share one broker without seeing each other's messages.
    namespace: str = Field(default="sagaway", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    queue_type: Literal["quorum", "classic"] = "quorum"
    # Deliveries of one message before the broker dead-letters it instead of looping.
    delivery_limit: int = Field(default=5, ge=1, le=100)

    step_max_attempts: int = Field(default=5, ge=1)
    step_backoff_s: float = Field(default=1.0, gt=0)
    step_backoff_cap_s: float = Field(default=30.0, gt=0)
    step_timeout_s: float = Field(default=30.0, gt=0)

    default_credit_limit_cents: int = Field(default=100_000, ge=0)

    relay_batch_size: int = Field(default=500, ge=1, le=10_000)
    relay_concurrency: int = Field(default=2, ge=1, le=16)
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    relay_lease_s: float = Field(default=30.0, gt=0)
    relay_max_attempts: int = Field(default=10, ge=1)
    publish_timeout_s: float = Field(default=10.0, gt=0)
    # Consumers publish the outbox rows they commit themselves (outbox.handoff); the
    # relay takes over a row whose process did not confirm it within the lease.
    handoff: bool = True
    handoff_lease_s: float = Field(default=15.0, gt=0)
    # The largest message body, at both ends: the relay refuses to publish a bigger one,
    # and a consumer dead-letters a bigger one on arrival without parsing it (so nothing
    # sagaway publishes is refused by its own consumers). Orders are at most 64 KiB.
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1024)
    outbox_retention_s: float = Field(default=3600.0, ge=0)
    inbox_retention_s: float = Field(default=7 * 86400.0, ge=60)
    # Port of this process's Prometheus /metrics endpoint; unset means none. The API
    # serves /metrics on its own port regardless.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # Deliveries a consumer holds unacknowledged; also the most it applies in one
    # transaction (it takes what has arrived, never waiting for a batch to fill).
    consumer_prefetch: int = Field(default=50, ge=1, le=10_000)
    # Connections per process. Every component of an installation, times its instances,
    # must fit in PostgreSQL's max_connections (100 by default).
    db_pool_size: int = Field(default=5, ge=1, le=200)

    # The HTTP API against slow and idle clients. A request head (request line and
    # headers) must arrive whole within api_header_timeout_s of the connection opening,
    # or of its first byte on a kept-alive connection; a body within api_body_timeout_s
    # of its head (else 408). A connection idle after a response is closed after
    # api_keep_alive_s: longer than the usual client or load-balancer idle timeout, so
    # that the client is the one that closes it (a server-side close races with a
    # request the client is just sending).
    api_header_timeout_s: float = Field(default=10.0, gt=0)
    api_body_timeout_s: float = Field(default=30.0, gt=0)
    api_keep_alive_s: int = Field(default=30, ge=1)

    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("database_url")
    @classmethod
    def _asyncpg_driver(cls, value: str) -> str:
        # Users paste plain postgres:// URLs; the async engine needs the asyncpg driver.
        for plain in ("postgresql://", "postgres://"):
            if value.startswith(plain):
                return "postgresql+asyncpg://" + value[len(plain) :]
        return value

    @field_validator("amqp_url")
    @classmethod
    def _amqp_nodes(cls, value: str) -> str:
        # A bad URL is refused at start, naming which one and why (never its password).
        return ",".join(parse_nodes(value))

    @property
    def amqp_nodes(self) -> tuple[str, ...]:
        """The RabbitMQ node URLs ``amqp_url`` lists, in its order."""
        return parse_nodes(self.amqp_url)

    def admin_token_value(self) -> str | None:
        """The admin token, or None when admin calls must all be refused."""
        if self.admin_token is None or not self.admin_token.get_secret_value():
            return None
        return self.admin_token.get_secret_value()


def redact_url(url: str) -> str:
    """Return ``url`` with any password (in the user part or a query argument) hidden,
    fit for logs and error messages. A list of URLs separated by commas (RabbitMQ's
    nodes, PostgreSQL's hosts) has each one's hidden."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<unparseable url>"
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{port}" if port is not None else "")
    query = "&".join(
        f"{key}=***" if key.lower() in _SECRET_QUERY_KEYS else f"{key}={value}" if sep else key
        for key, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "token", "secret"})
