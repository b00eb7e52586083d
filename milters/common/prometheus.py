"""Prometheus plumbing both daemons share: a /metrics server, latency buckets, and reading a
logged number back (each daemon's metrics are a projection of its own log events)."""

from __future__ import annotations

import threading
from decimal import Decimal

from prometheus_client import CollectorRegistry, start_http_server

from milters.common.sockets import InetAddress

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def as_number(value: object) -> float | None:
    """A score or duration as logged: int, float, or the Decimal the milter scores in."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)


def serve(address: InetAddress, registry: CollectorRegistry) -> threading.Thread:
    """Serve /metrics over HTTP in a daemon thread (prometheus_client's own server)."""
    _, thread = start_http_server(address.port, address.host, registry=registry)
    return thread
