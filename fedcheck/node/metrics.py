"""Prometheus metrics of a node (request counts and latencies live in :mod:`fedcheck.rpc.interceptors`).

Why these: an operator must see load (batch sizes), abuse (items evaluated and budget left per partner), and
freshness (epoch age, build progress, index size) without reading logs. Partner codes are the only labels:
nothing about travellers or listed persons is ever a label.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from fedcheck.errors import ConfigError

__all__ = [
    "BATCH_SIZE",
    "BUDGET_REMAINING",
    "EPOCH_BUILD_PROGRESS",
    "EPOCH_STARTED",
    "INDEX_SIZE",
    "ITEMS_EVALUATED",
    "REFUSALS",
    "ROUNDS",
    "ROUND_SECONDS",
    "serve_metrics",
]

BATCH_SIZE = Histogram(
    "fedcheck_batch_size",
    "Blinded elements per evaluated batch",
    ["method"],
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000),
)
ITEMS_EVALUATED = Counter(
    "fedcheck_items_evaluated_total", "Blinded elements evaluated, by partner", ["partner"]
)
BUDGET_REMAINING = Gauge(
    "fedcheck_budget_remaining_items", "Items left in a partner's budget (-1 = unlimited)", ["partner"]
)
REFUSALS = Counter(
    "fedcheck_refusals_total", "Requests refused, by partner and reason", ["partner", "reason"]
)
EPOCH_BUILD_PROGRESS = Gauge("fedcheck_epoch_build_progress", "Progress of the epoch index build (0..1)")
EPOCH_STARTED = Gauge("fedcheck_epoch_started_timestamp_seconds", "When the current epoch became active")
EPOCH_AGE = Gauge("fedcheck_epoch_age_seconds", "Age of the current epoch")
INDEX_SIZE = Gauge("fedcheck_index_size", "Distinct match keys in the current epoch's index")
ROUNDS = Counter(
    "fedcheck_rounds_total",
    "Query rounds (coordinator or querier), by outcome per holder",
    ["role", "state", "status"],
)
ROUND_SECONDS = Histogram(
    "fedcheck_round_seconds",
    "Query round wall time",
    ["role"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)

EPOCH_AGE.set_function(
    lambda: time.time() - EPOCH_STARTED._value.get() if EPOCH_STARTED._value.get() else 0.0
)


def serve_metrics(port: int, address: str = "127.0.0.1", *, what: str = "metrics.port") -> Callable[[], None]:
    """Expose ``/metrics`` over HTTP on ``address:port`` (a daemon thread); returns a function stopping it.

    Node and coordinator both use it. A port held by another process (or an address that is not local) is a
    one-line :class:`ConfigError` naming ``address:port`` and ``what``, not an ``OSError`` traceback."""
    try:
        httpd, _thread = start_http_server(port, addr=address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"metrics port {address}:{port} is already in use ({what}): is another node or coordinator"
                " running, or give it another [metrics] port",
                reason="metrics_address_in_use",
            ) from None
        raise ConfigError(
            f"cannot serve metrics on {address}:{port} ({what}): {exc.strerror or exc}",
            reason="metrics_bind_failed",
        ) from None

    def stop() -> None:
        httpd.shutdown()
        httpd.server_close()

    return stop
