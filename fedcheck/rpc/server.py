"""Building a gRPC server: mutual TLS (or explicit insecure dev), health, reflection, metrics interceptor.

Why one builder: the node and the coordinator must expose the same standard surface (grpc.health.v1, server
reflection) and shut down the same way (``stop(grace)`` drains in-flight calls, health flips to NOT_SERVING
first so load balancers and the demo's readiness probes stop sending work).

Why ``grpc.so_reuseport = 0``: gRPC sets SO_REUSEPORT by default, so a second node or coordinator started on
the same address would bind "successfully" and the kernel would split connections between the two processes.
Without it the second bind fails, and that is reported as a one-line configuration error naming the address.
"""

from __future__ import annotations

import errno
import logging
import socket
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

__all__ = ["SERVER_OPTIONS", "RunningServer", "start_server"]

_log = logging.getLogger(__name__)

#: channel options plus: never share a listening port with another process (see module docstring)
SERVER_OPTIONS: list[tuple[str, int]] = [*CHANNEL_OPTIONS, ("grpc.so_reuseport", 0)]


def _address_in_use(address: str) -> bool:
    """True if ``HOST:PORT`` (not port 0) is already bound by someone else: probed with a plain socket, like
    gRPC binds without SO_REUSEPORT (SO_REUSEADDR only lets us past TIME_WAIT leftovers)."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) == 0:
        return False
    bind_host: str | None = host.strip("[]") or None
    try:
        infos = socket.getaddrinfo(
            bind_host, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        return False
    for family, kind, proto, _name, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
    return False


def _in_use_error(address: str, what: str) -> ConfigError:
    return ConfigError(
        f"port {address} is already in use ({what}): is another node or coordinator running there?",
        reason="address_in_use",
    )


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
    what: str = "listen",
) -> RunningServer:
    """Bind ``address``, register services, health and reflection; health starts NOT_SERVING.

    A bind failure is a :class:`ConfigError` naming ``address`` and ``what`` (the config key, e.g.
    ``node.listen``): ``address_in_use`` when another process holds the port, ``bind_failed`` otherwise."""
    if tls is None and not insecure_dev:
        raise ConfigError("TLS material is required unless insecure_dev is set", reason="tls_required")
    if _address_in_use(address):  # before gRPC tries (and logs its own multi-line complaint)
        raise _in_use_error(address, what)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[MetricsInterceptor()],
        options=SERVER_OPTIONS,
        maximum_concurrent_rpcs=max_workers * 4,
    )
    for add in register:
        add(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    reflection.enable_server_reflection(names, server)
    try:
        if tls is not None:
            port = server.add_secure_port(address, server_credentials(tls))
        else:
            _log.warning("serving WITHOUT TLS (insecure_dev): development only")
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpc >= 1.5x raises instead of returning port 0
        port = 0
    if port == 0:
        server.stop(None)
        if _address_in_use(address):  # lost a race with another process since the probe
            raise _in_use_error(address, what)
        raise ConfigError(
            f"cannot listen on {address} ({what}): not a local address, or the TLS certificate/key were "
            "refused (GRPC_VERBOSITY=debug shows gRPC's reason)",
            reason="bind_failed",
        )
    server.start()
    running = RunningServer(server, port, health_servicer, tuple(service_names))
    running.set_serving(False)
    return running
