"""The RabbitMQ nodes a component may use: one broker URL, or the nodes of one cluster.

``SAGAWAY_AMQP_URL`` holds one URL or several separated by commas, each naming a node of
the same RabbitMQ cluster. ``parse_nodes`` is the one place that reads that value into
node URLs; the settings call it to refuse a bad value at start, and every connection
calls it to know where it may go. Errors name a URL by its position and its
``host:port``, never with its password (a comma inside a password must be written
``%2C``, as URLs require of any reserved character).
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671}


class InvalidBrokerUrl(ValueError):
    """A value of ``SAGAWAY_AMQP_URL`` no client could connect with."""


def parse_nodes(value: str) -> tuple[str, ...]:
    """The node URLs ``value`` lists, in its order, once each is known to be usable.

    Raises:
        InvalidBrokerUrl: an entry is empty, not an ``amqp://``/``amqps://`` URL, has no
            host or a bad port, repeats a node, or the entries name different virtual
            hosts (the nodes of one cluster share them, so that is a mistake).
    """
    entries = [entry.strip() for entry in value.split(",")]
    nodes: list[str] = []
    addresses: list[str] = []
    vhosts: set[str] = set()
    for position, url in enumerate(entries, start=1):
        where = f"URL {position} of {len(entries)}" if len(entries) > 1 else "the URL"
        if not url:
            raise InvalidBrokerUrl(f"{where} is empty" + (" (a stray comma?)" if nodes else ""))
        parts = _split(url, where)
        address = _address(parts)
        if address in addresses:
            raise InvalidBrokerUrl(f"{where} names {address} again")
        nodes.append(url)
        addresses.append(address)
        vhosts.add(_vhost(parts))
    if len(vhosts) > 1:
        raise InvalidBrokerUrl(
            "the URLs name different virtual hosts "
            f"({', '.join(sorted(vhosts))}); the nodes of one cluster share theirs"
        )
    return tuple(nodes)


def node_address(url: str) -> str:
    """``host:port`` of a node URL (the default port filled in): what logs and probes
    show of a node, with no credentials."""
    return _address(_split(url, "the URL"))


def virtual_host(url: str) -> str:
    """The virtual host a node URL names (``/`` when it names none)."""
    return _vhost(_split(url, "the URL"))


def _split(url: str, where: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidBrokerUrl(f"{where} has an invalid host or port") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise InvalidBrokerUrl(f"{where} is not an amqp:// or amqps:// URL")
    if not parts.hostname:
        raise InvalidBrokerUrl(f"{where} names no host")
    if port == 0:
        raise InvalidBrokerUrl(f"{where} has port 0")
    return parts


def _address(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or DEFAULT_PORTS[parts.scheme]}"


def _vhost(parts: SplitResult) -> str:
    return unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
