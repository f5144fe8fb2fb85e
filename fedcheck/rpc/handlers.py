"""What servicers adapt: transport-free handler interfaces of the node and the coordinator.

Why: servicers stay thin (decode, call, encode, map errors), handlers are testable without sockets, and the
in-memory transport drives the very same handlers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from fedcheck.errors import FedcheckError
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
from fedcheck.trust.pki import PeerIdentity

__all__ = ["CoordinatorHandler", "CrlProvider", "NodeHandler"]


class NodeHandler(Protocol):
    """A holder node's request handling (see :mod:`fedcheck.node.service`)."""

    @property
    def max_batch(self) -> int: ...

    def node_info(self, peer: PeerIdentity | None = None) -> NodeInfo: ...

    def get_index(self, peer: PeerIdentity, request: GetIndexRequest) -> Iterator[IndexChunk]: ...

    def blind_evaluate(self, peer: PeerIdentity, request: BlindEvaluateRequest) -> Evaluation: ...

    def fuzzy_score(self, peer: PeerIdentity, request: FuzzyScoreRequest) -> FuzzyScore: ...

    def fuzzy_release(self, peer: PeerIdentity, request: FuzzyReleaseRequest) -> FuzzyReleaseReply:
        """Returns the holder's LabelResponse sealed to the querier, with the holder's signature."""
        ...

    def refuse_malformed(self, peer: PeerIdentity, kind: str, exc: FedcheckError) -> None:
        """Audit a request refused while its message was parsed (too large, empty, malformed), before any
        signature could be checked: the verified TLS peer is all that is known."""
        ...


class CoordinatorHandler(Protocol):
    """The coordinator's request handling (see :mod:`fedcheck.coordinator.service`)."""

    @property
    def max_batch(self) -> int: ...

    def submit_round(self, peer: PeerIdentity, request: SubmitRoundRequest) -> RoundResult: ...

    def list_nodes(self, peer: PeerIdentity) -> list[NodeEntry]: ...

    def get_index(self, peer: PeerIdentity, state: str, request: GetIndexRequest) -> Iterator[IndexChunk]: ...

    def submit_fuzzy_round(self, peer: PeerIdentity, request: SubmitFuzzyRoundRequest) -> RoundResult: ...

    def fuzzy_release(
        self, peer: PeerIdentity, state: str, request: FuzzyReleaseRequest
    ) -> FuzzyReleaseReply: ...


class CrlProvider(Protocol):
    """Where the coordinator's ``GetCrl`` bytes come from (:class:`fedcheck.trust.crlsync.CrlFile`)."""

    def current_crl(self) -> bytes:
        """The current CRL as the CA signed it (PEM or DER); raises a typed error when unavailable."""
        ...
