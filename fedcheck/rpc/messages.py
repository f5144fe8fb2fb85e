"""Domain messages of the wire protocol: frozen dataclasses that handlers, the coordinator and the querier
use.

Why separate from the generated classes: only :mod:`fedcheck.rpc.serde` touches protobuf objects, so handlers
are
testable without gRPC, validation happens once at the edge, and the coordinator never sees raw wire bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "ELEMENT_BYTES",
    "FUZZY_MODE",
    "MODES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "BlindEvaluateRequest",
    "EpochAnnouncement",
    "Evaluation",
    "FuzzyInfo",
    "FuzzyReleasePayload",
    "FuzzyReleaseReply",
    "FuzzyReleaseRequest",
    "FuzzyScore",
    "FuzzyScoreRequest",
    "GetIndexRequest",
    "HolderResult",
    "HolderStatus",
    "IndexChunk",
    "IndexRequest",
    "NodeEntry",
    "NodeInfo",
    "RoundPayload",
    "RoundResult",
    "RoundTarget",
    "SignedEnvelope",
    "SubmitFuzzyRoundRequest",
    "SubmitRoundRequest",
]

#: Protocol version this build sends.
PROTOCOL_VERSION = 1
#: Protocol versions this build accepts.
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
#: Size of an encoded ristretto255 element.
ELEMENT_BYTES = 32
#: Wire names of the modes (values of :class:`fedcheck.protocol.exact.Mode`).
MODES: tuple[str, ...] = ("exact", "cardinality")
#: Wire name of the encrypted similarity mode (``fedcheck.fuzzy``); advertised only by nodes that serve it.
FUZZY_MODE = "fuzzy"


class HolderStatus(StrEnum):
    """Outcome class of one holder in a round."""

    OK = "ok"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    REFUSED = "refused"


@dataclass(frozen=True)
class SignedEnvelope:
    """A querier-signed payload; the signer's State comes from ``certificate_pem`` once verified."""

    payload: bytes
    signature: bytes
    certificate_pem: bytes

    def __repr__(self) -> str:  # payloads are not secret, but keep logs short
        return f"SignedEnvelope(payload={len(self.payload)}B)"


@dataclass(frozen=True)
class RoundTarget:
    state: str
    epoch_id: str
    count: int
    batch_sha256: bytes


@dataclass(frozen=True)
class RoundPayload:
    round_id: str
    purpose: str
    legal_basis: str
    mode: str
    targets: tuple[RoundTarget, ...]
    deadline_unix_ms: int
    issued_at_unix_ms: int
    unit: str = ""
    official: str = ""
    #: match-key types the querier's batches contain (declarative); empty = whatever the holder allows
    key_types: tuple[str, ...] = ()
    #: label fields the querier asks for; empty = whatever the holder discloses
    label_fields: tuple[str, ...] = ()

    def target(self, state: str) -> RoundTarget | None:
        return next((t for t in self.targets if t.state == state), None)


@dataclass(frozen=True)
class IndexRequest:
    holder_state: str
    epoch_id: str
    issued_at_unix_ms: int


@dataclass(frozen=True)
class NodeInfo:
    state: str
    protocol_versions: tuple[int, ...]
    modes: tuple[str, ...]
    epoch_id: str
    epoch_public_key: bytes
    index_size: int
    max_batch: int
    index_chunk_bytes: int
    epoch_started_unix_ms: int
    epoch_building: bool = False
    fuzzy: FuzzyInfo | None = None
    #: the epoch the current one replaced, while still served ("" / b"" when none)
    previous_epoch_id: str = ""
    previous_epoch_public_key: bytes = b""
    #: holder-signed announcements of the current / previous epoch (fedcheck.node.announce); None when unset
    epoch_announcement: SignedEnvelope | None = None
    previous_epoch_announcement: SignedEnvelope | None = None


@dataclass(frozen=True)
class FuzzyInfo:
    """Public layout hints of a node's fuzzy service (proto ``FuzzyInfo``; rounded, see docs/fuzzy.md)."""

    max_travellers: int
    name_size_table: int
    year_min: int
    year_max: int
    name_entries: int
    face_dims: int = 0
    face_entries: int = 0
    release_ttl_seconds: int = 0


@dataclass(frozen=True)
class IndexChunk:
    epoch_id: str
    offset: int
    data: bytes
    chunk_sha256: bytes
    total_bytes: int
    index_sha256: bytes
    last: bool
    epoch_public_key: bytes
    #: on the last chunk: the holder-signed announcement for the caller's audience (with the index digest)
    announcement: SignedEnvelope | None = None


@dataclass(frozen=True)
class EpochAnnouncement:
    """What a holder signs about an epoch (proto ``EpochAnnouncementPayload``; see fedcheck.node.announce)."""

    state: str
    epoch_id: str
    epoch_public_key: bytes
    #: SHA-256 of the index one audience downloads; b"" in the audience-independent NodeInfo announcement
    index_sha256: bytes
    valid_from_unix_ms: int
    valid_until_unix_ms: int
    #: index-download announcements: the partner State whose signed request the index answers ("" in NodeInfo)
    partner_state: str = ""
    #: index-download announcements: the holder's audience key the index was built for ("" in NodeInfo)
    audience: str = ""


@dataclass(frozen=True)
class GetIndexRequest:
    request: SignedEnvelope
    offset: int = 0


@dataclass(frozen=True)
class BlindEvaluateRequest:
    round: SignedEnvelope
    blinded: tuple[bytes, ...]
    round_id: str = ""


@dataclass(frozen=True)
class Evaluation:
    epoch_id: str
    evaluated: tuple[bytes, ...]
    proof: bytes
    budget_remaining: int = 0
    #: the holder's signed audit head after recording this evaluation (external anchor for oversight)
    audit_seq: int = 0
    audit_hash: str = ""
    audit_signature: bytes = b""
    #: holder policy narrowing reason codes and the effective parameters
    narrowed: tuple[str, ...] = ()
    effective_key_types: tuple[str, ...] = ()
    effective_label_fields: tuple[str, ...] = ()
    #: answer to an exact duplicate of an evaluated request (no budget charged again)
    replayed: bool = False
    #: the querier has a budget at this holder (``budget_remaining`` counts; 0 = spent); False = unlimited
    budget_limited: bool = False


@dataclass(frozen=True)
class HolderResult:
    state: str
    status: HolderStatus
    reason: str = ""
    message: str = ""
    retry_after_s: int = 0
    evaluation: Evaluation | None = None
    latency_ms: int = 0
    #: every reason code of a refusal (``reason`` is the first)
    reasons: tuple[str, ...] = ()
    #: status name of a refusal (``PERMISSION_DENIED``, ``RESOURCE_EXHAUSTED``, ...); empty when OK
    code: str = ""
    #: the holder's encrypted scores when OK in a fuzzy round (``evaluation`` is then ``None``)
    fuzzy: FuzzyScore | None = None


@dataclass(frozen=True)
class RoundResult:
    round_id: str
    results: tuple[HolderResult, ...]
    started_unix_ms: int
    finished_unix_ms: int
    replayed: bool = False

    def by_state(self) -> dict[str, HolderResult]:
        return {r.state: r for r in self.results}


@dataclass(frozen=True)
class SubmitRoundRequest:
    round: SignedEnvelope
    batches: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    round_id: str = ""


@dataclass(frozen=True)
class NodeEntry:
    state: str
    reachable: bool
    info: NodeInfo | None = None


# -- fuzzy (Paillier) rounds: the fuzzy messages travel as opaque bytes (fedcheck.fuzzy.messages) -----------


@dataclass(frozen=True)
class FuzzyScoreRequest:
    """``round`` signs a fuzzy RoundPayload whose target for this holder binds ``score_request`` by digest."""

    round: SignedEnvelope
    score_request: bytes = field(repr=False)
    round_id: str = ""


@dataclass(frozen=True)
class FuzzyScore:
    """A holder's encrypted answer to a fuzzy round."""

    epoch_id: str
    score_response: bytes = field(repr=False)
    budget_remaining: int = 0
    release_ttl_seconds: int = 0
    #: the holder's signature over this answer (fedcheck.node.fuzzyseal); queriers refuse answers without
    attestation: SignedEnvelope | None = None
    #: the holder's signed audit head after recording this round (external anchor, as in :class:`Evaluation`)
    audit_seq: int = 0
    audit_hash: str = ""
    audit_signature: bytes = b""


@dataclass(frozen=True)
class FuzzyReleasePayload:
    """What the querier signs to follow up hits at exactly one holder."""

    round_id: str
    holder_state: str
    label_request_sha256: bytes
    issued_at_unix_ms: int
    purpose: str
    legal_basis: str = ""
    unit: str = ""
    official: str = ""
    #: the querier's fresh X25519 public key the holder seals the released labels to (32 bytes, required)
    reply_public_key: bytes = b""


@dataclass(frozen=True)
class FuzzyReleaseRequest:
    release: SignedEnvelope
    label_request: bytes = field(repr=False)


@dataclass(frozen=True)
class FuzzyReleaseReply:
    """A holder's follow-up answer: the LabelResponse sealed to the querier, signed by the holder."""

    sealed_label_response: bytes = field(repr=False)
    attestation: SignedEnvelope | None = None
    #: the holder's signed audit head after recording this follow-up (an external anchor, as in Evaluation)
    audit_seq: int = 0
    audit_hash: str = ""
    audit_signature: bytes = b""


@dataclass(frozen=True)
class SubmitFuzzyRoundRequest:
    """A signed fuzzy round and, per target State, its encrypted request bytes (identical bytes for several
    States travel once on the wire)."""

    round: SignedEnvelope
    requests: dict[str, bytes] = field(default_factory=dict, repr=False)
    round_id: str = ""
