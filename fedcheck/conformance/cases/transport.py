"""Transport: mutual TLS is required (issue #5 "Identity and transport").

Why: the caller's State is taken from its verified certificate; a node that also listens in plain text, or
accepts TLS without a federation client certificate, lets anyone on the network ask it questions.
"""

from __future__ import annotations

import grpc

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc as node_grpc
from fedcheck.conformance._certs import foreign_identity
from fedcheck.conformance.model import CaseSkipped, case, check
from fedcheck.conformance.session import Call, Session

__all__: list[str] = []


def _probe(session: Session, channel: grpc.Channel) -> Call:
    try:
        stub = node_grpc.NodeStub(channel)
        return session.invoke(stub.GetNodeInfo, pb.NodeInfoRequest(header=session.header()),
                              timeout=min(5.0, session.config.timeout_s))
    finally:
        channel.close()


def _need_tls(session: Session) -> None:
    if not session.tls:
        raise CaseSkipped("target is tested without TLS (--insecure-dev): transport cannot be judged")


@case("transport.plaintext_refused", title="a plain-text connection is refused",
      spec="issue #5 Identity and transport; common.proto header comment")
def plaintext_refused(session: Session) -> str:
    """GetNodeInfo over an unencrypted HTTP/2 connection to the same address must not succeed."""
    _need_tls(session)
    call = _probe(session, session.open_channel(plaintext=True))
    check(not call.ok, "the node answered GetNodeInfo over plain text")
    return f"refused: {call.status}"


@case("transport.client_cert_required", title="TLS without a client certificate is refused",
      spec="issue #5 Identity and transport (mutual TLS)")
def client_cert_required(session: Session) -> str:
    """A TLS connection that presents no client certificate must not get an answer."""
    _need_tls(session)
    call = _probe(session, session.open_channel(client_cert=False))
    check(not call.ok, "the node answered GetNodeInfo to a client without a certificate")
    return f"refused: {call.status}"


@case("transport.foreign_client_cert_refused", title="a client certificate from another CA is refused",
      spec="issue #5 Identity and transport (federation CA)")
def foreign_client_cert_refused(session: Session) -> str:
    """A client certificate that claims a federation name but is issued by a foreign CA must be refused."""
    _need_tls(session)
    call = _probe(session, session.open_channel(client_pair=foreign_identity()))
    check(not call.ok, "the node answered GetNodeInfo to a certificate from a foreign CA")
    return f"refused: {call.status}"
