"""Server interceptor recording every call: requests by method and status, and latency.

Why an interceptor: the counts must be complete (including calls refused before a handler runs) and alike for
the node and the coordinator, without servicer code remembering to count.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

__all__ = ["REQUESTS", "REQUEST_LATENCY", "MetricsInterceptor"]

_log = logging.getLogger("fedcheck.rpc")

#: ``fedcheck_requests_total{method,status}``
REQUESTS = Counter(
    "fedcheck_requests_total", "gRPC requests served, by method and status code", ["method", "status"]
)
#: ``fedcheck_request_seconds{method}``
REQUEST_LATENCY = Histogram(
    "fedcheck_request_seconds",
    "gRPC request latency by method",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _status(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps unary-unary and unary-stream handlers with counting and timing."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = str(details.method).rsplit("/", 1)[-1]
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                start = time.perf_counter()
                failed = True
                try:
                    reply = inner(request, context)
                    failed = False
                    return reply
                finally:
                    _record(method, _status(context, failed), time.perf_counter() - start)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_s = handler.unary_stream

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                start = time.perf_counter()
                failed = True
                try:
                    yield from inner_s(request, context)
                    failed = False
                finally:
                    _record(method, _status(context, failed), time.perf_counter() - start)

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _record(method: str, status: str, seconds: float) -> None:
    REQUESTS.labels(method=method, status=status).inc()
    REQUEST_LATENCY.labels(method=method).observe(seconds)
    _log.debug("rpc", extra={"method": method, "status": status, "ms": round(seconds * 1000, 1)})
