"""Waiting for a node or coordinator to report SERVING on the standard gRPC health service.

Why: the demo, the tests and operators' scripts all need one readiness check. A node turns SERVING only
once its first epoch index is built, so this is also "the node can answer rounds".
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcheck.errors import Unavailable
from fedcheck.rpc.clients import make_channel
from fedcheck.rpc.tls import TlsIdentity

__all__ = ["wait_serving"]


def wait_serving(
    address: str,
    tls: TlsIdentity | None,
    *,
    timeout: float = 60.0,
    alive: Callable[[], bool] | None = None,
    insecure_dev: bool = False,
) -> None:
    """Poll ``address`` until health says SERVING; :class:`Unavailable` on timeout or when ``alive()`` fails.

    ``alive`` lets a caller that started the server as a child process stop waiting as soon as it exits.
    """
    channel = make_channel(address, tls, insecure_dev=insecure_dev)
    stub = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if alive is not None and not alive():
                raise Unavailable(f"server for {address} exited before it was SERVING", reason="exited")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    finally:
        channel.close()
    raise Unavailable(f"{address} not SERVING after {timeout:.0f}s", reason="not_serving")
