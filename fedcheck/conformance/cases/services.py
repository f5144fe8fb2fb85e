"""Standard services every node exposes: gRPC health checking and server reflection (issue #3, "Services").

Why: operators' probes and generic tooling (grpcurl, load balancers) rely on them, and reflection lets an
evaluator check that the node serves the published wire contract, not a private variant of it.
"""

from __future__ import annotations

from fedcheck.conformance.model import CaseFailed, CaseSkipped, case, check
from fedcheck.conformance.session import Session

__all__: list[str] = []

NODE_SERVICE = "fedcheck.v1.Node"
HEALTH_SERVICE = "grpc.health.v1.Health"
_METHODS = {
    "GetNodeInfo": (".fedcheck.v1.NodeInfoRequest", ".fedcheck.v1.NodeInfo", False),
    "GetIndex": (".fedcheck.v1.GetIndexRequest", ".fedcheck.v1.IndexChunk", True),
    "BlindEvaluate": (".fedcheck.v1.BlindEvaluateRequest", ".fedcheck.v1.BlindEvaluateResponse", False),
}


def _health(session: Session, service: str) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    stub = health_pb2_grpc.HealthStub(session.channel)
    call = session.invoke(stub.Check, health_pb2.HealthCheckRequest(service=service))
    if not call.ok:
        raise CaseFailed(f"Health/Check({service!r}) answered {call.describe()}")
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(call.response.status))


@case("services.health_overall", title="grpc.health.v1 reports the server SERVING",
      spec="grpc.health.v1; issue #3 Services")
def health_overall(session: Session) -> str:
    """Health/Check with the empty service name must answer SERVING once the node's epoch is ready."""
    status = _health(session, "")
    check(status == "SERVING", f"overall health is {status}")
    return "SERVING"


@case("services.health_node", title="grpc.health.v1 reports fedcheck.v1.Node SERVING",
      spec="grpc.health.v1; issue #3 Services")
def health_node(session: Session) -> str:
    """Health/Check for ``fedcheck.v1.Node`` must answer SERVING."""
    status = _health(session, NODE_SERVICE)
    check(status == "SERVING", f"{NODE_SERVICE} health is {status}")
    return "SERVING"


def _reflect(session: Session, **request: str) -> object:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(session.channel)
    try:
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**request)]),
                                                 timeout=session.config.timeout_s, metadata=session.metadata))
    except Exception as exc:  # grpc.RpcError: the service is missing or broken
        raise CaseFailed(f"server reflection failed: {exc.__class__.__name__}") from None
    if not replies:
        raise CaseFailed("server reflection answered nothing")
    return replies[0]


@case("services.reflection_lists", title="server reflection lists the node and health services",
      spec="grpc.reflection.v1alpha; issue #3 Services")
def reflection_lists(session: Session) -> str:
    """ListServices through server reflection must include ``fedcheck.v1.Node`` and
    ``grpc.health.v1.Health``."""
    reply = _reflect(session, list_services="")
    names = sorted(s.name for s in reply.list_services_response.service)  # type: ignore[attr-defined]
    missing = [n for n in (NODE_SERVICE, HEALTH_SERVICE) if n not in names]
    check(not missing, f"reflection does not list {missing}; lists {names}")
    return ", ".join(names)


@case("services.reflection_contract", title="reflected fedcheck.v1.Node matches the published contract",
      spec="proto/fedcheck/v1/node.proto")
def reflection_contract(session: Session) -> str:
    """The descriptor served by reflection must define Node's three methods with the published request and
    response types and streaming shape."""
    from google.protobuf import descriptor_pb2

    reply = _reflect(session, file_containing_symbol=NODE_SERVICE)
    protos = reply.file_descriptor_response.file_descriptor_proto  # type: ignore[attr-defined]
    if not protos:
        raise CaseFailed("reflection returned no file descriptor for fedcheck.v1.Node")
    for raw in protos:
        fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for svc in fd.service:
            if f"{fd.package}.{svc.name}" != NODE_SERVICE:
                continue
            got = {m.name: (m.input_type, m.output_type, m.server_streaming) for m in svc.method}
            for name, want in _METHODS.items():
                check(got.get(name) == want, f"method {name}: reflected {got.get(name)}, published {want}")
            return f"{len(got)} methods match"
    raise CaseSkipped("reflection descriptor does not contain the service definition")
