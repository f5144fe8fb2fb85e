"""gRPC servicers: thin adapters (check peer, decode, call the handler, encode, map errors).

Nothing here decides anything: identity comes from :class:`~fedcheck.rpc.tls.PeerVerifier`, validation from
:mod:`fedcheck.rpc.serde`, decisions from the handlers, status codes from :mod:`fedcheck.rpc.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2 as cpb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2_grpc as cgrpc
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc as ngrpc
from fedcheck.errors import FedcheckError, NotFound
from fedcheck.rpc import serde
from fedcheck.rpc.errors import abort
from fedcheck.rpc.handlers import CoordinatorHandler, CrlProvider, NodeHandler
from fedcheck.rpc.tls import PeerVerifier
from fedcheck.trust.pki import PeerIdentity

__all__ = ["CoordinatorServicer", "NodeServicer"]

_M = TypeVar("_M")


#: TLS peers a node answers: the coordinator (relaying), partner nodes (direct index downloads) and
#: evaluators (conformance suite). Signed requests are then judged by their signer (NodeService._querier).
NODE_PEER_ROLES: tuple[str, ...] = ("node", "coordinator", "evaluator")
#: TLS peers that may fetch the coordinator's CRL (Coordinator.GetCrl): every authenticated federation member.
CRL_PEER_ROLES: tuple[str, ...] = ("node", "coordinator", "evaluator")


class NodeServicer(ngrpc.NodeServicer):  # type: ignore[misc]
    def __init__(self, handler: NodeHandler, verifier: PeerVerifier) -> None:
        self._h = handler
        self._v = verifier

    def GetNodeInfo(self, request: pb.NodeInfoRequest, context: grpc.ServicerContext) -> pb.NodeInfo:
        try:
            peer = self._v.identify(context, roles=NODE_PEER_ROLES)
            serde.check_header(request.header, request.HasField("header"))
            return serde.node_info_to_pb(self._h.node_info(peer))
        except Exception as exc:
            abort(context, exc)

    def GetIndex(self, request: pb.GetIndexRequest, context: grpc.ServicerContext) -> Iterator[pb.IndexChunk]:
        try:
            peer = self._v.identify(context, roles=NODE_PEER_ROLES)
            req = serde.get_index_request_from_pb(request)
            for chunk in self._h.get_index(peer, req):
                yield serde.chunk_to_pb(chunk)
        except Exception as exc:
            abort(context, exc)

    def _parsed(self, peer: PeerIdentity, kind: str, parse: Callable[[], _M]) -> _M:
        """``parse()``; its refusal is audited at the holder (sizes and framing are checked here, before the
        request reaches the service's own audited checks)."""
        try:
            return parse()
        except FedcheckError as exc:
            self._h.refuse_malformed(peer, kind, exc)
            raise

    def BlindEvaluate(
        self, request: pb.BlindEvaluateRequest, context: grpc.ServicerContext
    ) -> pb.BlindEvaluateResponse:
        try:
            peer = self._v.identify(context, roles=NODE_PEER_ROLES)
            req = self._parsed(
                peer, "request", lambda: serde.blind_evaluate_request_from_pb(request, self._h.max_batch)
            )
            return serde.evaluation_to_pb(self._h.blind_evaluate(peer, req))
        except Exception as exc:
            abort(context, exc)

    def FuzzyScore(
        self, request: pb.FuzzyScoreRequest, context: grpc.ServicerContext
    ) -> pb.FuzzyScoreResponse:
        try:
            peer = self._v.identify(context, roles=NODE_PEER_ROLES)
            req = self._parsed(peer, "fuzzy_score", lambda: serde.fuzzy_score_request_from_pb(request))
            return serde.fuzzy_score_to_pb(self._h.fuzzy_score(peer, req))
        except Exception as exc:
            abort(context, exc)

    def FuzzyRelease(
        self, request: pb.FuzzyReleaseRequest, context: grpc.ServicerContext
    ) -> pb.FuzzyReleaseResponse:
        try:
            peer = self._v.identify(context, roles=NODE_PEER_ROLES)
            req = self._parsed(peer, "fuzzy_release", lambda: serde.fuzzy_release_request_from_pb(request))
            return serde.fuzzy_release_reply_to_pb(self._h.fuzzy_release(peer, req))
        except Exception as exc:
            abort(context, exc)


class CoordinatorServicer(cgrpc.CoordinatorServicer):  # type: ignore[misc]
    def __init__(
        self, handler: CoordinatorHandler, verifier: PeerVerifier, crl: CrlProvider | None = None
    ) -> None:
        self._h = handler
        self._v = verifier
        self._crl = crl

    def SubmitRound(self, request: cpb.SubmitRoundRequest, context: grpc.ServicerContext) -> cpb.RoundResult:
        try:
            peer = self._v.identify(context, roles=("node",))
            req = serde.submit_round_from_pb(request, self._h.max_batch)
            return serde.round_result_to_pb(self._h.submit_round(peer, req))
        except Exception as exc:
            abort(context, exc)

    def ListNodes(
        self, request: cpb.ListNodesRequest, context: grpc.ServicerContext
    ) -> cpb.ListNodesResponse:
        try:
            peer = self._v.identify(context, roles=("node", "evaluator"))
            serde.check_header(request.header, request.HasField("header"))
            return serde.node_entries_to_pb(self._h.list_nodes(peer))
        except Exception as exc:
            abort(context, exc)

    def GetIndex(
        self, request: cpb.RelayIndexRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.IndexChunk]:
        try:
            peer = self._v.identify(context, roles=("node",))
            serde.check_header(request.header, request.HasField("header"))
            state = serde.validate_state(request.state)
            inner = serde.get_index_request_from_pb(request.request)
            for chunk in self._h.get_index(peer, state, inner):
                yield serde.chunk_to_pb(chunk)
        except Exception as exc:
            abort(context, exc)

    def SubmitFuzzyRound(
        self, request: cpb.SubmitFuzzyRoundRequest, context: grpc.ServicerContext
    ) -> cpb.RoundResult:
        try:
            peer = self._v.identify(context, roles=("node",))
            req = serde.submit_fuzzy_round_from_pb(request)
            return serde.round_result_to_pb(self._h.submit_fuzzy_round(peer, req))
        except Exception as exc:
            abort(context, exc)

    def FuzzyRelease(
        self, request: cpb.RelayFuzzyReleaseRequest, context: grpc.ServicerContext
    ) -> pb.FuzzyReleaseResponse:
        try:
            peer = self._v.identify(context, roles=("node",))
            serde.check_header(request.header, request.HasField("header"))
            state = serde.validate_state(request.state)
            inner = serde.fuzzy_release_request_from_pb(request.request)
            return serde.fuzzy_release_reply_to_pb(self._h.fuzzy_release(peer, state, inner))
        except Exception as exc:
            abort(context, exc)

    def GetCrl(self, request: cpb.GetCrlRequest, context: grpc.ServicerContext) -> cpb.CrlResponse:
        try:
            self._v.identify(context, roles=CRL_PEER_ROLES)
            serde.crl_request_from_pb(request)
            if self._crl is None:
                raise NotFound("this coordinator serves no revocation list", reason="crl_not_served")
            return serde.crl_response_to_pb(self._crl.current_crl())
        except Exception as exc:
            abort(context, exc)
