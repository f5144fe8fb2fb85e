"""Clients of the node and coordinator services, over gRPC or in memory, behind one interface each.

Why both: the coordinator's round engine and the querier are tested against in-memory transports (no sockets,
same handlers, same serde round-trip), and run against gRPC in production. Every client method raises typed
:mod:`fedcheck.errors` (rebuilt from status + trailing metadata), never ``grpc.RpcError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import grpc

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2 as cpb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2_grpc as cgrpc
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc as ngrpc
from fedcheck.rpc import serde
from fedcheck.rpc.errors import from_rpc_error
from fedcheck.rpc.handlers import CoordinatorHandler, NodeHandler
from fedcheck.rpc.messages import (
    BlindEvaluateRequest,
    Evaluation,
    FuzzyReleaseReply,
    FuzzyReleaseRequest,
    FuzzyScore,
    FuzzyScoreRequest,
    GetIndexRequest,
    IndexChunk,
    NodeEntry,
    NodeInfo,
    RoundResult,
    SubmitFuzzyRoundRequest,
    SubmitRoundRequest,
)
from fedcheck.rpc.tls import DEV_IDENTITY_KEY, TlsIdentity, channel_credentials
from fedcheck.trust.pki import PeerIdentity

__all__ = [
    "CHANNEL_OPTIONS",
    "CoordinatorTransport",
    "CrlTransport",
    "GrpcCoordinatorClient",
    "GrpcNodeClient",
    "InMemoryCoordinatorClient",
    "InMemoryNodeClient",
    "NodeTransport",
    "make_channel",
]

#: Message size limits shared by servers and channels (index chunks and batches stay far below).
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
]


def make_channel(address: str, tls: TlsIdentity | None, *, insecure_dev: bool = False) -> grpc.Channel:
    """A channel to ``address``: mutual TLS with our identity, or plain text only if ``insecure_dev``."""
    if tls is None:
        if not insecure_dev:
            from fedcheck.errors import ConfigError

            raise ConfigError("TLS material is required unless insecure_dev is set", reason="tls_required")
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, channel_credentials(tls), options=CHANNEL_OPTIONS)


class NodeTransport(Protocol):
    """How the coordinator (or a partner) talks to one holder node."""

    def node_info(self, *, timeout: float) -> NodeInfo: ...

    def get_index(self, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]: ...

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation: ...

    def fuzzy_score(self, request: FuzzyScoreRequest, *, timeout: float) -> FuzzyScore: ...

    def fuzzy_release(self, request: FuzzyReleaseRequest, *, timeout: float) -> FuzzyReleaseReply: ...


class CoordinatorTransport(Protocol):
    """How a querying node talks to the coordinator."""

    def submit_round(self, request: SubmitRoundRequest, *, timeout: float) -> RoundResult: ...

    def list_nodes(self, *, timeout: float) -> list[NodeEntry]: ...

    def get_index(self, state: str, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]: ...

    def submit_fuzzy_round(self, request: SubmitFuzzyRoundRequest, *, timeout: float) -> RoundResult: ...

    def fuzzy_release(
        self, state: str, request: FuzzyReleaseRequest, *, timeout: float
    ) -> FuzzyReleaseReply: ...


class CrlTransport(Protocol):
    """How a node fetches the coordinator's CRL (``Coordinator.GetCrl``; judged by fedcheck.trust.crlsync)."""

    def get_crl(self, *, timeout: float) -> bytes: ...


def _metadata(dev_identity: str | None) -> tuple[tuple[str, str], ...] | None:
    return ((DEV_IDENTITY_KEY, dev_identity),) if dev_identity else None


class GrpcNodeClient:
    """:class:`NodeTransport` over a gRPC channel."""

    def __init__(self, channel: grpc.Channel, *, dev_identity: str | None = None) -> None:
        self._stub = ngrpc.NodeStub(channel)
        self._md = _metadata(dev_identity)
        self.channel = channel

    def node_info(self, *, timeout: float) -> NodeInfo:
        try:
            reply = self._stub.GetNodeInfo(
                pb.NodeInfoRequest(header=serde.header()), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.node_info_from_pb(reply)

    def get_index(self, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        try:
            for chunk in self._stub.GetIndex(
                serde.get_index_request_to_pb(request), timeout=timeout, metadata=self._md
            ):
                yield serde.chunk_from_pb(chunk)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation:
        try:
            reply = self._stub.BlindEvaluate(
                serde.blind_evaluate_request_to_pb(request), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.evaluation_from_pb(reply)

    def fuzzy_score(self, request: FuzzyScoreRequest, *, timeout: float) -> FuzzyScore:
        try:
            reply = self._stub.FuzzyScore(
                serde.fuzzy_score_request_to_pb(request), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.fuzzy_score_from_pb(reply)

    def fuzzy_release(self, request: FuzzyReleaseRequest, *, timeout: float) -> FuzzyReleaseReply:
        try:
            reply = self._stub.FuzzyRelease(
                serde.fuzzy_release_request_to_pb(request), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.fuzzy_release_reply_from_pb(reply)

    def close(self) -> None:
        self.channel.close()


class GrpcCoordinatorClient:
    """:class:`CoordinatorTransport` over a gRPC channel."""

    def __init__(self, channel: grpc.Channel, *, dev_identity: str | None = None) -> None:
        self._stub = cgrpc.CoordinatorStub(channel)
        self._md = _metadata(dev_identity)
        self.channel = channel

    def submit_round(self, request: SubmitRoundRequest, *, timeout: float) -> RoundResult:
        try:
            reply = self._stub.SubmitRound(
                serde.submit_round_to_pb(request), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.round_result_from_pb(reply)

    def list_nodes(self, *, timeout: float) -> list[NodeEntry]:
        try:
            reply = self._stub.ListNodes(
                cpb.ListNodesRequest(header=serde.header()), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.node_entries_from_pb(reply)

    def get_index(self, state: str, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        msg = cpb.RelayIndexRequest(
            header=serde.header(), state=state, request=serde.get_index_request_to_pb(request)
        )
        try:
            for chunk in self._stub.GetIndex(msg, timeout=timeout, metadata=self._md):
                yield serde.chunk_from_pb(chunk)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def submit_fuzzy_round(self, request: SubmitFuzzyRoundRequest, *, timeout: float) -> RoundResult:
        try:
            reply = self._stub.SubmitFuzzyRound(
                serde.submit_fuzzy_round_to_pb(request), timeout=timeout, metadata=self._md
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.round_result_from_pb(reply)

    def fuzzy_release(
        self, state: str, request: FuzzyReleaseRequest, *, timeout: float
    ) -> FuzzyReleaseReply:
        msg = cpb.RelayFuzzyReleaseRequest(
            header=serde.header(), state=state, request=serde.fuzzy_release_request_to_pb(request)
        )
        try:
            reply = self._stub.FuzzyRelease(msg, timeout=timeout, metadata=self._md)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.fuzzy_release_reply_from_pb(reply)

    def get_crl(self, *, timeout: float) -> bytes:
        """The coordinator's current CRL bytes, unverified (:class:`CrlTransport`)."""
        try:
            reply = self._stub.GetCrl(serde.crl_request_to_pb(), timeout=timeout, metadata=self._md)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return serde.crl_response_from_pb(reply)

    def close(self) -> None:
        self.channel.close()


class InMemoryNodeClient:
    """:class:`NodeTransport` calling a handler directly, through the same serde round-trip as gRPC."""

    def __init__(self, handler: NodeHandler, peer: PeerIdentity) -> None:
        self._h = handler
        self._peer = peer

    def node_info(self, *, timeout: float) -> NodeInfo:
        return serde.node_info_from_pb(serde.node_info_to_pb(self._h.node_info(self._peer)))

    def get_index(self, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        req = serde.get_index_request_from_pb(serde.get_index_request_to_pb(request))
        for chunk in self._h.get_index(self._peer, req):
            yield serde.chunk_from_pb(serde.chunk_to_pb(chunk))

    def blind_evaluate(self, request: BlindEvaluateRequest, *, timeout: float) -> Evaluation:
        req = serde.blind_evaluate_request_from_pb(
            serde.blind_evaluate_request_to_pb(request), self._h.max_batch
        )
        return serde.evaluation_from_pb(serde.evaluation_to_pb(self._h.blind_evaluate(self._peer, req)))

    def fuzzy_score(self, request: FuzzyScoreRequest, *, timeout: float) -> FuzzyScore:
        req = serde.fuzzy_score_request_from_pb(serde.fuzzy_score_request_to_pb(request))
        return serde.fuzzy_score_from_pb(serde.fuzzy_score_to_pb(self._h.fuzzy_score(self._peer, req)))

    def fuzzy_release(self, request: FuzzyReleaseRequest, *, timeout: float) -> FuzzyReleaseReply:
        req = serde.fuzzy_release_request_from_pb(serde.fuzzy_release_request_to_pb(request))
        return serde.fuzzy_release_reply_from_pb(
            serde.fuzzy_release_reply_to_pb(self._h.fuzzy_release(self._peer, req))
        )


class InMemoryCoordinatorClient:
    """:class:`CoordinatorTransport` calling a coordinator handler directly."""

    def __init__(self, handler: CoordinatorHandler, peer: PeerIdentity) -> None:
        self._h = handler
        self._peer = peer

    def submit_round(self, request: SubmitRoundRequest, *, timeout: float) -> RoundResult:
        req = serde.submit_round_from_pb(serde.submit_round_to_pb(request), self._h.max_batch)
        return serde.round_result_from_pb(serde.round_result_to_pb(self._h.submit_round(self._peer, req)))

    def list_nodes(self, *, timeout: float) -> list[NodeEntry]:
        return serde.node_entries_from_pb(serde.node_entries_to_pb(self._h.list_nodes(self._peer)))

    def get_index(self, state: str, request: GetIndexRequest, *, timeout: float) -> Iterator[IndexChunk]:
        req = serde.get_index_request_from_pb(serde.get_index_request_to_pb(request))
        yield from self._h.get_index(self._peer, state, req)

    def submit_fuzzy_round(self, request: SubmitFuzzyRoundRequest, *, timeout: float) -> RoundResult:
        req = serde.submit_fuzzy_round_from_pb(serde.submit_fuzzy_round_to_pb(request))
        return serde.round_result_from_pb(
            serde.round_result_to_pb(self._h.submit_fuzzy_round(self._peer, req))
        )

    def fuzzy_release(
        self, state: str, request: FuzzyReleaseRequest, *, timeout: float
    ) -> FuzzyReleaseReply:
        req = serde.fuzzy_release_request_from_pb(serde.fuzzy_release_request_to_pb(request))
        return serde.fuzzy_release_reply_from_pb(
            serde.fuzzy_release_reply_to_pb(self._h.fuzzy_release(self._peer, state, req))
        )
