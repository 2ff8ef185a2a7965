"""Prometheus ``/metrics`` of the components: where they are, parsing, scraping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from sagaway.services.order_app import order_app
from sagaway.supervisor import DEFAULT_METRICS_PORT_BASE, components

SampleKey = tuple[str, frozenset[tuple[str, str]]]
"""A sample's name (``x_total``, ``x_bucket``...) and its labels."""

# The bench drives the order application's HTTP API, so it scrapes that application's
# workers.
ORDER = order_app.participant_names


@dataclass(frozen=True)
class MetricsSource:
    """One process's ``/metrics``, under the name the report gives it.

    Several sources may share a name (N instances of one component): their figures add up.
    """

    name: str
    url: str


@dataclass(frozen=True)
class MetricSamples:
    """Every sample of one scrape."""

    values: Mapping[SampleKey, float]

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of the samples called ``name`` whose labels include ``labels``, or
        None when the scrape has no sample of that name at all."""
        wanted = set(labels.items())
        found = [v for (n, have), v in self.values.items() if n == name and wanted <= have]
        return sum(found) if found else None


def parse_metrics(text: str) -> MetricSamples:
    """Parse Prometheus' text exposition format.

    Args:
        text: A ``/metrics`` answer.

    Returns:
        Its samples.

    Raises:
        ValueError: The text is not in the exposition format.
    """
    return MetricSamples(
        {
            (sample.name, frozenset(sample.labels.items())): float(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
    )


def default_sources(api_url: str) -> tuple[MetricsSource, ...]:
    """The API's own ``/metrics`` and the side ports ``sagaway up`` gives the others.

    Args:
        api_url: Base URL of the API; the side ports are asked on the same host.

    Returns:
        api, relay, orchestrator, inventory, payment, notification, backend.
    """
    host = urlsplit(api_url).hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    # Both layouts: whichever is not running is simply not found.
    children = [
        *components(0, host, DEFAULT_METRICS_PORT_BASE, participants=ORDER, split=True),
        *components(0, host, DEFAULT_METRICS_PORT_BASE, participants=ORDER)[1:],
    ]
    return (
        MetricsSource("api", api_url.rstrip("/") + "/metrics/"),
        *(
            MetricsSource(c.name, f"http://{host}:{c.env['SAGAWAY_METRICS_PORT']}/metrics")
            for c in children
            if "SAGAWAY_METRICS_PORT" in c.env
        ),
    )


def parse_source(text: str) -> MetricsSource:
    """A ``--metrics-url`` value: ``NAME=URL``, or a bare URL named by its host and port.

    Raises:
        ValueError: Not an http(s) URL.
    """
    name, sep, url = text.partition("=")
    if not sep or "://" in name:
        name, url = "", text
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    return MetricsSource(name or parts.netloc, url)


async def scrape(client: httpx.AsyncClient, url: str) -> MetricSamples | None:
    """One scrape of ``url``; None when it cannot be read (down, not Prometheus)."""
    try:
        answer = await client.get(url, follow_redirects=True)
        if answer.status_code != 200:
            return None
        return parse_metrics(answer.text)
    except (httpx.HTTPError, ValueError):
        return None
