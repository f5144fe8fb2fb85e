"""Building a gRPC server: mutual TLS (or explicit insecure dev), health, reflection, metrics interceptor.

Why one builder: the node and the coordinator must expose the same standard surface (grpc.health.v1, server
reflection) and shut down the same way (``stop(grace)`` drains in-flight calls, health flips to NOT_SERVING
first so load balancers and the demo's readiness probes stop sending work).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fedcheck.errors import ConfigError
from fedcheck.rpc.clients import CHANNEL_OPTIONS
from fedcheck.rpc.interceptors import MetricsInterceptor
from fedcheck.rpc.tls import TlsIdentity, server_credentials

__all__ = ["RunningServer", "start_server"]

_log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful with ``:0``)."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    service_names: tuple[str, ...]

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in (*self.service_names, ""):
            self.health.set(name, status)

    def stop(self, grace: float = 5.0) -> None:
        """Flip health to NOT_SERVING, refuse new calls, let in-flight ones finish within ``grace`` s."""
        self.set_serving(False)
        done: threading.Event = self.server.stop(grace)
        done.wait(grace + 1.0)


def start_server(
    address: str,
    register: Sequence[Callable[[grpc.Server], None]],
    service_names: Sequence[str],
    *,
    tls: TlsIdentity | None,
    insecure_dev: bool = False,
    max_workers: int = 16,
) -> RunningServer:
    """Bind ``address``, register services, health and reflection; health starts NOT_SERVING."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[MetricsInterceptor()],
        options=CHANNEL_OPTIONS,
        maximum_concurrent_rpcs=max_workers * 4,
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    if tls is not None:
        port = server.add_secure_port(address, server_credentials(tls))
    elif insecure_dev:
        _log.warning("serving WITHOUT TLS (insecure_dev): development only")
        port = server.add_insecure_port(address)
    else:
        raise ConfigError("TLS material is required unless insecure_dev is set", reason="tls_required")
    if port == 0:
        raise ConfigError(f"cannot bind {address}", reason="bind_failed")
    server.start()
    running = RunningServer(server, port, health_servicer, tuple(service_names))
    running.set_serving(False)
    return running
