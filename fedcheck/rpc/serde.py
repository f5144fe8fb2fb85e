"""All proto <-> domain conversion, with the wire validation that goes with it.

Why one module: it is the only place that touches generated classes (STYLE.md), so each request is checked the
same way before a handler sees it: protocol version (FAILED_PRECONDITION), field shapes and element lengths
(INVALID_ARGUMENT). Group-membership checks of elements belong to the OPRF layer (called by the handler).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence

from google.protobuf.message import DecodeError

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import coordinator_pb2 as cpb
from fedcheck.codes import STATE_CODE_RE
from fedcheck.errors import FormatError, InvalidElement, InvalidInput, LimitExceeded, UnsupportedVersion
from fedcheck.rpc import messages as m
from fedcheck.trust.audit import audit_text_problem

__all__ = [
    "AUDIT_HASH_PATTERN",
    "AUDIT_SIGNATURE_BYTES",
    "CODE_PATTERN",
    "EPOCH_ANNOUNCEMENT_CONTEXT",
    "MAX_AUDIT_SEQ",
    "MAX_TARGETS",
    "blind_evaluate_request_from_pb",
    "blind_evaluate_request_to_pb",
    "check_audit_head",
    "check_header",
    "chunk_from_pb",
    "chunk_to_pb",
    "crl_request_from_pb",
    "crl_request_to_pb",
    "crl_response_from_pb",
    "crl_response_to_pb",
    "envelope_from_pb",
    "envelope_to_pb",
    "epoch_announcement_from_bytes",
    "epoch_announcement_to_bytes",
    "evaluation_from_pb",
    "evaluation_to_pb",
    "fuzzy_release_payload_from_bytes",
    "fuzzy_release_payload_to_bytes",
    "fuzzy_release_reply_from_pb",
    "fuzzy_release_reply_to_pb",
    "fuzzy_release_request_from_pb",
    "fuzzy_release_request_to_pb",
    "fuzzy_score_from_pb",
    "fuzzy_score_request_from_pb",
    "fuzzy_score_request_to_pb",
    "fuzzy_score_to_pb",
    "get_index_request_from_pb",
    "get_index_request_to_pb",
    "header",
    "holder_result_from_pb",
    "holder_result_to_pb",
    "index_request_from_bytes",
    "index_request_to_bytes",
    "node_entries_from_pb",
    "node_entries_to_pb",
    "node_info_from_pb",
    "node_info_to_pb",
    "round_payload_from_bytes",
    "round_payload_to_bytes",
    "round_result_from_pb",
    "round_result_to_pb",
    "submit_fuzzy_round_from_pb",
    "submit_fuzzy_round_to_pb",
    "submit_round_from_pb",
    "submit_round_to_pb",
    "validate_round_id",
    "validate_state",
]

_ROUND_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_TEXT_MAX = 256
_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")
#: A short machine code (reason, key type, label field): what a peer's reason codes must look like before
#: they are relayed or audited (:func:`fedcheck.rpc.errors.from_rpc_error` uses it too).
CODE_PATTERN = _CODE
#: A holder's audit head hash: the SHA-256 hex digest :mod:`fedcheck.trust.audit` chains entries with.
AUDIT_HASH_PATTERN = re.compile(r"^[0-9a-f]{64}$")
#: An audit head signature is one Ed25519 signature.
AUDIT_SIGNATURE_BYTES = 64
#: Audit sequence numbers are kept in SQLite (signed 64-bit) by the coordinator.
MAX_AUDIT_SEQ = 2**63 - 1
#: Target States of one round. The coordinator's audit entry lists them (and per-State maps of them), and the
#: audit log refuses lists and maps longer than 256 (``fedcheck.trust.audit``), so a round that could not be
#: audited is refused here, before any holder is asked.
MAX_TARGETS = 256
_MODE_TO_PB = {"exact": pb.MODE_EXACT, "cardinality": pb.MODE_CARDINALITY, m.FUZZY_MODE: pb.MODE_FUZZY}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_STATUS_TO_PB = {
    m.HolderStatus.OK: cpb.HOLDER_STATUS_OK,
    m.HolderStatus.TIMEOUT: cpb.HOLDER_STATUS_TIMEOUT,
    m.HolderStatus.UNAVAILABLE: cpb.HOLDER_STATUS_UNAVAILABLE,
    m.HolderStatus.REFUSED: cpb.HOLDER_STATUS_REFUSED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}


# -- validation helpers -------------------------------------------------------------------------------------


def validate_state(code: str, field: str = "state") -> str:
    if not STATE_CODE_RE.match(code):
        raise InvalidInput(f"{field} must be an upper-case State code (e.g. FRA)", reason="invalid_state")
    return code


def validate_round_id(round_id: str) -> str:
    if not _ROUND_ID.match(round_id):
        raise InvalidInput("round_id must be 1-64 characters of [A-Za-z0-9._:-]", reason="invalid_round_id")
    return round_id


def _text(value: str, field: str, *, required: bool = False) -> str:
    if required and not value:
        raise InvalidInput(f"{field} is required", reason=f"missing_{field}")
    if len(value) > _TEXT_MAX or not value.isprintable():
        raise InvalidInput(
            f"{field} must be at most {_TEXT_MAX} printable characters", reason=f"invalid_{field}"
        )
    return value


def _audited_text(value: str, field: str, *, required: bool = False) -> str:
    """Caller-supplied text that goes into the receiver's audit log: the wire rules plus the audit log's own
    string rules (:func:`fedcheck.trust.audit.audit_text_problem`, one shared validator), so every request
    that passes here can be audited, refusals included."""
    _text(value, field, required=required)
    problem = audit_text_problem(value)
    if problem is not None:
        raise InvalidInput(f"{field} is not accepted: {problem}", reason=f"invalid_{field}")
    return value


def _codes(values: Sequence[str], field: str) -> tuple[str, ...]:
    """A short list of reason / key-type / label-field codes (never free text)."""
    if len(values) > 32:
        raise InvalidInput(f"{field} lists too many codes", reason=f"invalid_{field}")
    for v in values:
        if not _CODE.match(v):
            raise InvalidInput(f"{field} entries must be short codes", reason=f"invalid_{field}")
    return tuple(values)


def check_audit_head(seq: int, audit_hash: str, signature: bytes) -> None:
    """A holder's signed audit head as returned with an answer: ``audit_hash`` empty (no head) or a SHA-256
    hex digest, ``seq`` within what the coordinator can store, ``signature`` empty or one Ed25519 signature.
    Raises :class:`InvalidInput` (``invalid_audit_head``) otherwise."""
    if audit_hash and not AUDIT_HASH_PATTERN.match(audit_hash):
        raise InvalidInput(
            "audit_hash must be empty or 64 lower-case hex digits", reason="invalid_audit_head"
        )
    if not 0 <= seq <= MAX_AUDIT_SEQ:
        raise InvalidInput("audit_seq out of range", reason="invalid_audit_head")
    if len(signature) not in (0, AUDIT_SIGNATURE_BYTES):
        raise InvalidInput(
            f"audit_signature must be empty or {AUDIT_SIGNATURE_BYTES} bytes (Ed25519)",
            reason="invalid_audit_head",
        )


def _audit_head(seq: int, audit_hash: str, signature: bytes) -> tuple[int, str, bytes]:
    check_audit_head(int(seq), str(audit_hash), bytes(signature))
    return int(seq), str(audit_hash), bytes(signature)


def _elements(values: Sequence[bytes], field: str) -> tuple[bytes, ...]:
    for i, v in enumerate(values):
        if len(v) != m.ELEMENT_BYTES:
            raise InvalidElement(
                f"{field}[{i}] must be {m.ELEMENT_BYTES} bytes, got {len(v)}", reason="invalid_element_length"
            )
    return tuple(values)


def _mode_from_pb(value: int) -> str:
    mode = _MODE_FROM_PB.get(value)  # type: ignore[call-overload]
    if mode is None:
        raise InvalidInput("mode must be exact, cardinality or fuzzy", reason="invalid_mode")
    return str(mode)


# -- header and envelope ------------------------------------------------------------------------------------


def header(round_id: str = "", version: int = m.PROTOCOL_VERSION) -> pb.RequestHeader:
    return pb.RequestHeader(protocol_version=version, round_id=round_id)


def check_header(h: pb.RequestHeader, has_header: bool = True) -> str:
    """Validate the protocol version and return the round id (for logs)."""
    if not has_header:
        raise UnsupportedVersion(
            "request header with protocol_version is required", reason="unsupported_version"
        )
    if h.protocol_version not in m.SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"protocol version {h.protocol_version} not supported; this node speaks "
            + ",".join(str(v) for v in m.SUPPORTED_VERSIONS),
            reason="unsupported_version",
        )
    if h.round_id:
        validate_round_id(h.round_id)
    return str(h.round_id)


def envelope_to_pb(env: m.SignedEnvelope) -> pb.SignedEnvelope:
    return pb.SignedEnvelope(
        payload=env.payload, signature=env.signature, certificate_pem=env.certificate_pem
    )


def envelope_from_pb(env: pb.SignedEnvelope, field: str = "envelope") -> m.SignedEnvelope:
    if not env.payload or not env.signature or not env.certificate_pem:
        raise InvalidInput(f"{field} needs payload, signature and certificate", reason="missing_signature")
    if len(env.certificate_pem) > 16384 or len(env.signature) > 512:
        raise InvalidInput(f"{field} certificate or signature too large", reason="invalid_signature")
    return m.SignedEnvelope(bytes(env.payload), bytes(env.signature), bytes(env.certificate_pem))


# -- signed payloads ----------------------------------------------------------------------------------------


def round_payload_to_bytes(p: m.RoundPayload) -> bytes:
    msg = pb.RoundPayload(
        round_id=p.round_id,
        purpose=p.purpose,
        legal_basis=p.legal_basis,
        mode=_MODE_TO_PB[p.mode],
        targets=[
            pb.RoundTarget(state=t.state, epoch_id=t.epoch_id, count=t.count, batch_sha256=t.batch_sha256)
            for t in p.targets
        ],
        deadline_unix_ms=p.deadline_unix_ms,
        issued_at_unix_ms=p.issued_at_unix_ms,
        unit=p.unit,
        official=p.official,
        key_types=list(p.key_types),
        label_fields=list(p.label_fields),
    )
    return msg.SerializeToString(deterministic=True)


def round_payload_from_bytes(data: bytes) -> m.RoundPayload:
    msg = pb.RoundPayload()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise FormatError(
            "round payload is not a valid RoundPayload message", reason="malformed_payload"
        ) from None
    if len(msg.targets) > MAX_TARGETS:
        raise LimitExceeded(
            f"round payload names {len(msg.targets)} target States; at most {MAX_TARGETS} per round",
            reason="too_many_targets",
        )
    targets: list[m.RoundTarget] = []
    seen: set[str] = set()
    for t in msg.targets:
        validate_state(t.state, "targets.state")
        if t.state in seen:
            raise InvalidInput("targets lists a State twice", reason="duplicate_target")
        seen.add(t.state)
        if len(t.batch_sha256) != 32:
            raise InvalidInput("targets.batch_sha256 must be 32 bytes", reason="invalid_digest")
        targets.append(
            m.RoundTarget(
                t.state, _text(t.epoch_id, "epoch_id", required=True), int(t.count), bytes(t.batch_sha256)
            )
        )
    if not targets:
        raise InvalidInput("round payload has no target States", reason="no_targets")
    if msg.deadline_unix_ms <= 0 or msg.issued_at_unix_ms <= 0:
        raise InvalidInput("round payload needs deadline and issue time", reason="missing_deadline")
    return m.RoundPayload(
        round_id=validate_round_id(msg.round_id),
        purpose=_audited_text(msg.purpose, "purpose", required=True),
        legal_basis=_audited_text(msg.legal_basis, "legal_basis"),
        mode=_mode_from_pb(msg.mode),
        targets=tuple(targets),
        deadline_unix_ms=int(msg.deadline_unix_ms),
        issued_at_unix_ms=int(msg.issued_at_unix_ms),
        unit=_audited_text(msg.unit, "unit"),
        official=_audited_text(msg.official, "official"),
        key_types=_codes(msg.key_types, "key_types"),
        label_fields=_codes(msg.label_fields, "label_fields"),
    )


def index_request_to_bytes(r: m.IndexRequest) -> bytes:
    msg = pb.IndexRequestPayload(
        holder_state=r.holder_state, epoch_id=r.epoch_id, issued_at_unix_ms=r.issued_at_unix_ms
    )
    return msg.SerializeToString(deterministic=True)


def index_request_from_bytes(data: bytes) -> m.IndexRequest:
    msg = pb.IndexRequestPayload()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise FormatError(
            "index request is not a valid IndexRequestPayload", reason="malformed_payload"
        ) from None
    return m.IndexRequest(
        validate_state(msg.holder_state, "holder_state"),
        _text(msg.epoch_id, "epoch_id"),
        int(msg.issued_at_unix_ms),
    )


#: Context prefix of a signed epoch announcement payload: it can never parse as a request payload (a
#: request signed by a node key is not an announcement, and vice versa).
EPOCH_ANNOUNCEMENT_CONTEXT = b"fedcheck/v1/epoch-announcement\x00"


def epoch_announcement_to_bytes(a: m.EpochAnnouncement) -> bytes:
    msg = pb.EpochAnnouncementPayload(
        state=a.state,
        epoch_id=a.epoch_id,
        epoch_public_key=a.epoch_public_key,
        index_sha256=a.index_sha256,
        valid_from_unix_ms=a.valid_from_unix_ms,
        valid_until_unix_ms=a.valid_until_unix_ms,
        partner_state=a.partner_state,
        audience=a.audience,
    )
    return EPOCH_ANNOUNCEMENT_CONTEXT + msg.SerializeToString(deterministic=True)


def epoch_announcement_from_bytes(data: bytes) -> m.EpochAnnouncement:
    if not data.startswith(EPOCH_ANNOUNCEMENT_CONTEXT):
        raise FormatError("not an epoch announcement", reason="invalid_announcement")
    msg = pb.EpochAnnouncementPayload()
    try:
        msg.ParseFromString(data[len(EPOCH_ANNOUNCEMENT_CONTEXT) :])
    except DecodeError:
        raise FormatError("epoch announcement does not parse", reason="invalid_announcement") from None
    return m.EpochAnnouncement(
        validate_state(msg.state),
        _text(msg.epoch_id, "epoch_id", required=True),
        bytes(msg.epoch_public_key),
        bytes(msg.index_sha256),
        int(msg.valid_from_unix_ms),
        int(msg.valid_until_unix_ms),
        validate_state(msg.partner_state) if msg.partner_state else "",
        _text(msg.audience, "audience"),
    )


# -- node messages ------------------------------------------------------------------------------------------


def node_info_to_pb(i: m.NodeInfo) -> pb.NodeInfo:
    return pb.NodeInfo(
        state=i.state,
        protocol_versions=list(i.protocol_versions),
        modes=[_MODE_TO_PB[x] for x in i.modes],
        epoch_id=i.epoch_id,
        epoch_public_key=i.epoch_public_key,
        index_size=i.index_size,
        limits=pb.Limits(max_batch=i.max_batch, index_chunk_bytes=i.index_chunk_bytes),
        epoch_started_unix_ms=i.epoch_started_unix_ms,
        epoch_building=i.epoch_building,
        fuzzy=None if i.fuzzy is None else pb.FuzzyInfo(**vars(i.fuzzy)),
        previous_epoch_id=i.previous_epoch_id,
        previous_epoch_public_key=i.previous_epoch_public_key,
        epoch_announcement=_opt_envelope_to_pb(i.epoch_announcement),
        previous_epoch_announcement=_opt_envelope_to_pb(i.previous_epoch_announcement),
    )


def _opt_envelope_to_pb(env: m.SignedEnvelope | None) -> pb.SignedEnvelope | None:
    return None if env is None else envelope_to_pb(env)


def _opt_envelope_from_pb(msg: pb.NodeInfo | pb.IndexChunk, name: str) -> m.SignedEnvelope | None:
    return envelope_from_pb(getattr(msg, name), name) if msg.HasField(name) else None


def node_info_from_pb(i: pb.NodeInfo) -> m.NodeInfo:
    return m.NodeInfo(
        state=i.state,
        protocol_versions=tuple(i.protocol_versions),
        modes=tuple(str(_MODE_FROM_PB[x]) for x in i.modes if x in _MODE_FROM_PB),
        epoch_id=i.epoch_id,
        epoch_public_key=bytes(i.epoch_public_key),
        index_size=int(i.index_size),
        max_batch=int(i.limits.max_batch),
        index_chunk_bytes=int(i.limits.index_chunk_bytes),
        epoch_started_unix_ms=int(i.epoch_started_unix_ms),
        epoch_building=bool(i.epoch_building),
        fuzzy=_fuzzy_info_from_pb(i.fuzzy) if i.HasField("fuzzy") else None,
        previous_epoch_id=i.previous_epoch_id,
        previous_epoch_public_key=bytes(i.previous_epoch_public_key),
        epoch_announcement=_opt_envelope_from_pb(i, "epoch_announcement"),
        previous_epoch_announcement=_opt_envelope_from_pb(i, "previous_epoch_announcement"),
    )


def _fuzzy_info_from_pb(f: pb.FuzzyInfo) -> m.FuzzyInfo:
    return m.FuzzyInfo(
        max_travellers=int(f.max_travellers), name_size_table=min(int(f.name_size_table), 256),
        year_min=int(f.year_min), year_max=int(f.year_max), name_entries=int(f.name_entries),
        face_dims=int(f.face_dims), face_entries=int(f.face_entries),
        release_ttl_seconds=int(f.release_ttl_seconds),
    )


def chunk_to_pb(c: m.IndexChunk) -> pb.IndexChunk:
    return pb.IndexChunk(
        epoch_id=c.epoch_id,
        offset=c.offset,
        data=c.data,
        chunk_sha256=c.chunk_sha256,
        total_bytes=c.total_bytes,
        index_sha256=c.index_sha256,
        last=c.last,
        epoch_public_key=c.epoch_public_key,
        announcement=_opt_envelope_to_pb(c.announcement),
    )


def chunk_from_pb(c: pb.IndexChunk) -> m.IndexChunk:
    return m.IndexChunk(
        c.epoch_id,
        int(c.offset),
        bytes(c.data),
        bytes(c.chunk_sha256),
        int(c.total_bytes),
        bytes(c.index_sha256),
        bool(c.last),
        bytes(c.epoch_public_key),
        _opt_envelope_from_pb(c, "announcement"),
    )


def get_index_request_to_pb(r: m.GetIndexRequest) -> pb.GetIndexRequest:
    return pb.GetIndexRequest(header=header(), request=envelope_to_pb(r.request), offset=r.offset)


def get_index_request_from_pb(r: pb.GetIndexRequest) -> m.GetIndexRequest:
    check_header(r.header, r.HasField("header"))
    return m.GetIndexRequest(envelope_from_pb(r.request, "request"), int(r.offset))


def blind_evaluate_request_to_pb(r: m.BlindEvaluateRequest) -> pb.BlindEvaluateRequest:
    return pb.BlindEvaluateRequest(
        header=header(r.round_id), round=envelope_to_pb(r.round), blinded=list(r.blinded)
    )


def blind_evaluate_request_from_pb(r: pb.BlindEvaluateRequest, max_batch: int) -> m.BlindEvaluateRequest:
    round_id = check_header(r.header, r.HasField("header"))
    if len(r.blinded) > max_batch:
        raise LimitExceeded(
            f"batch of {len(r.blinded)} elements exceeds the limit of {max_batch}", reason="batch_too_large"
        )
    if not r.blinded:
        raise InvalidInput("blinded batch is empty", reason="empty_batch")
    return m.BlindEvaluateRequest(
        envelope_from_pb(r.round, "round"), _elements(r.blinded, "blinded"), round_id
    )


def evaluation_to_pb(ev: m.Evaluation) -> pb.BlindEvaluateResponse:
    return pb.BlindEvaluateResponse(
        epoch_id=ev.epoch_id,
        evaluated=list(ev.evaluated),
        proof=ev.proof,
        budget_remaining=ev.budget_remaining,
        audit_seq=ev.audit_seq,
        audit_hash=ev.audit_hash,
        audit_signature=ev.audit_signature,
        narrowed=list(ev.narrowed),
        effective_key_types=list(ev.effective_key_types),
        effective_label_fields=list(ev.effective_label_fields),
        replayed=ev.replayed,
        budget_limited=ev.budget_limited,
    )


def evaluation_from_pb(ev: pb.BlindEvaluateResponse) -> m.Evaluation:
    seq, audit_hash, audit_signature = _audit_head(ev.audit_seq, ev.audit_hash, ev.audit_signature)
    return m.Evaluation(
        ev.epoch_id,
        _elements(ev.evaluated, "evaluated"),
        bytes(ev.proof),
        int(ev.budget_remaining),
        audit_seq=seq,
        audit_hash=audit_hash,
        audit_signature=audit_signature,
        narrowed=_codes(ev.narrowed, "narrowed"),
        effective_key_types=_codes(ev.effective_key_types, "effective_key_types"),
        effective_label_fields=_codes(ev.effective_label_fields, "effective_label_fields"),
        replayed=bool(ev.replayed),
        budget_limited=bool(ev.budget_limited),
    )


# -- coordinator messages -----------------------------------------------------------------------------------


def submit_round_to_pb(r: m.SubmitRoundRequest) -> cpb.SubmitRoundRequest:
    return cpb.SubmitRoundRequest(
        header=header(r.round_id),
        round=envelope_to_pb(r.round),
        batches=[cpb.HolderBatch(state=s, blinded=list(b)) for s, b in r.batches.items()],
    )


def submit_round_from_pb(r: cpb.SubmitRoundRequest, max_batch: int) -> m.SubmitRoundRequest:
    round_id = check_header(r.header, r.HasField("header"))
    batches: dict[str, tuple[bytes, ...]] = {}
    for b in r.batches:
        validate_state(b.state, "batches.state")
        if b.state in batches:
            raise InvalidInput("batches lists a State twice", reason="duplicate_batch")
        if len(b.blinded) > max_batch:
            raise LimitExceeded(
                f"batch of {len(b.blinded)} elements exceeds the limit of {max_batch}",
                reason="batch_too_large",
            )
        batches[b.state] = _elements(b.blinded, "blinded")
    return m.SubmitRoundRequest(envelope_from_pb(r.round, "round"), batches, round_id)


def holder_result_to_pb(h: m.HolderResult) -> cpb.HolderResult:
    out = cpb.HolderResult(
        state=h.state,
        status=_STATUS_TO_PB[h.status],
        reason=h.reason,
        message=h.message,
        retry_after_s=h.retry_after_s,
        latency_ms=h.latency_ms,
        reasons=list(h.reasons),
        code=h.code,
    )
    if h.evaluation is not None:
        out.evaluation.CopyFrom(evaluation_to_pb(h.evaluation))
    if h.fuzzy is not None:
        out.fuzzy.CopyFrom(fuzzy_score_to_pb(h.fuzzy))
    return out


def holder_result_from_pb(h: cpb.HolderResult) -> m.HolderResult:
    status = _STATUS_FROM_PB.get(h.status)
    if status is None:
        raise InvalidInput("holder result has no status", reason="invalid_status")
    ev = evaluation_from_pb(h.evaluation) if h.HasField("evaluation") else None
    return m.HolderResult(
        h.state,
        status,
        h.reason,
        h.message,
        int(h.retry_after_s),
        ev,
        int(h.latency_ms),
        _codes(h.reasons, "reasons"),
        _text(h.code, "code"),
        fuzzy_score_from_pb(h.fuzzy) if h.HasField("fuzzy") else None,
    )


def round_result_to_pb(r: m.RoundResult) -> cpb.RoundResult:
    return cpb.RoundResult(
        round_id=r.round_id,
        results=[holder_result_to_pb(h) for h in r.results],
        started_unix_ms=r.started_unix_ms,
        finished_unix_ms=r.finished_unix_ms,
        replayed=r.replayed,
    )


def round_result_from_pb(r: cpb.RoundResult) -> m.RoundResult:
    return m.RoundResult(
        r.round_id,
        tuple(holder_result_from_pb(h) for h in r.results),
        int(r.started_unix_ms),
        int(r.finished_unix_ms),
        bool(r.replayed),
    )


def node_entries_to_pb(entries: Iterable[m.NodeEntry]) -> cpb.ListNodesResponse:
    out = cpb.ListNodesResponse()
    for e in entries:
        ne = out.nodes.add(state=e.state, reachable=e.reachable)
        if e.info is not None:
            ne.info.CopyFrom(node_info_to_pb(e.info))
    return out


def node_entries_from_pb(r: cpb.ListNodesResponse) -> list[m.NodeEntry]:
    return [
        m.NodeEntry(n.state, bool(n.reachable), node_info_from_pb(n.info) if n.HasField("info") else None)
        for n in r.nodes
    ]


# -- revocation list distribution (Coordinator.GetCrl) -------------------------------------------------------
# The CRL travels as opaque bytes: its CA signature, number and validity are judged by the receiving node
# (fedcheck.trust.crlsync), never by this layer or the coordinator.


def crl_request_to_pb() -> cpb.GetCrlRequest:
    return cpb.GetCrlRequest(header=header())


def crl_request_from_pb(r: cpb.GetCrlRequest) -> None:
    check_header(r.header, r.HasField("header"))


def crl_response_to_pb(crl: bytes) -> cpb.CrlResponse:
    return cpb.CrlResponse(crl=crl)


def crl_response_from_pb(r: cpb.CrlResponse) -> bytes:
    if not r.crl:
        raise InvalidInput("the coordinator sent an empty revocation list", reason="crl_empty")
    return bytes(r.crl)


# -- fuzzy (Paillier) rounds --------------------------------------------------------------------------------
# The fuzzy messages themselves are opaque bytes here (framed and validated by fedcheck.fuzzy.messages and the
# holder); this layer checks only presence and the envelope, so the coordinator never parses ciphertexts.


def fuzzy_score_request_to_pb(r: m.FuzzyScoreRequest) -> pb.FuzzyScoreRequest:
    return pb.FuzzyScoreRequest(
        header=header(r.round_id), round=envelope_to_pb(r.round), score_request=r.score_request
    )


def fuzzy_score_request_from_pb(r: pb.FuzzyScoreRequest) -> m.FuzzyScoreRequest:
    round_id = check_header(r.header, r.HasField("header"))
    if not r.score_request:
        raise InvalidInput("score_request is empty", reason="empty_batch")
    return m.FuzzyScoreRequest(envelope_from_pb(r.round, "round"), bytes(r.score_request), round_id)


def fuzzy_score_to_pb(s: m.FuzzyScore) -> pb.FuzzyScoreResponse:
    return pb.FuzzyScoreResponse(
        epoch_id=s.epoch_id,
        score_response=s.score_response,
        budget_remaining=s.budget_remaining,
        release_ttl_seconds=s.release_ttl_seconds,
        attestation=None if s.attestation is None else envelope_to_pb(s.attestation),
        audit_seq=s.audit_seq,
        audit_hash=s.audit_hash,
        audit_signature=s.audit_signature,
    )


def fuzzy_score_from_pb(s: pb.FuzzyScoreResponse) -> m.FuzzyScore:
    seq, audit_hash, audit_signature = _audit_head(s.audit_seq, s.audit_hash, s.audit_signature)
    return m.FuzzyScore(
        _text(s.epoch_id, "epoch_id"),
        bytes(s.score_response),
        int(s.budget_remaining),
        int(s.release_ttl_seconds),
        envelope_from_pb(s.attestation, "attestation") if s.HasField("attestation") else None,
        audit_seq=seq,
        audit_hash=audit_hash,
        audit_signature=audit_signature,
    )


def fuzzy_release_payload_to_bytes(p: m.FuzzyReleasePayload) -> bytes:
    msg = pb.FuzzyReleasePayload(
        round_id=p.round_id,
        holder_state=p.holder_state,
        label_request_sha256=p.label_request_sha256,
        issued_at_unix_ms=p.issued_at_unix_ms,
        purpose=p.purpose,
        legal_basis=p.legal_basis,
        unit=p.unit,
        official=p.official,
        reply_public_key=p.reply_public_key,
    )
    return msg.SerializeToString(deterministic=True)


def fuzzy_release_payload_from_bytes(data: bytes) -> m.FuzzyReleasePayload:
    msg = pb.FuzzyReleasePayload()
    try:
        msg.ParseFromString(data)
    except DecodeError:
        raise FormatError(
            "release payload is not a valid FuzzyReleasePayload", reason="malformed_payload"
        ) from None
    if len(msg.label_request_sha256) != 32:
        raise InvalidInput("label_request_sha256 must be 32 bytes", reason="invalid_digest")
    if msg.issued_at_unix_ms <= 0:
        raise InvalidInput("release payload needs its issue time", reason="missing_deadline")
    if msg.reply_public_key and len(msg.reply_public_key) != 32:
        raise InvalidInput("reply_public_key must be 32 bytes (X25519)", reason="bad_reply_key")
    return m.FuzzyReleasePayload(
        round_id=validate_round_id(msg.round_id),
        holder_state=validate_state(msg.holder_state, "holder_state"),
        label_request_sha256=bytes(msg.label_request_sha256),
        issued_at_unix_ms=int(msg.issued_at_unix_ms),
        purpose=_audited_text(msg.purpose, "purpose", required=True),
        legal_basis=_audited_text(msg.legal_basis, "legal_basis"),
        unit=_audited_text(msg.unit, "unit"),
        official=_audited_text(msg.official, "official"),
        reply_public_key=bytes(msg.reply_public_key),
    )


def fuzzy_release_reply_to_pb(r: m.FuzzyReleaseReply) -> pb.FuzzyReleaseResponse:
    return pb.FuzzyReleaseResponse(
        sealed_label_response=r.sealed_label_response,
        attestation=None if r.attestation is None else envelope_to_pb(r.attestation),
        audit_seq=r.audit_seq,
        audit_hash=r.audit_hash,
        audit_signature=r.audit_signature,
    )


def fuzzy_release_reply_from_pb(r: pb.FuzzyReleaseResponse) -> m.FuzzyReleaseReply:
    seq, audit_hash, audit_signature = _audit_head(r.audit_seq, r.audit_hash, r.audit_signature)
    return m.FuzzyReleaseReply(
        bytes(r.sealed_label_response),
        envelope_from_pb(r.attestation, "attestation") if r.HasField("attestation") else None,
        audit_seq=seq,
        audit_hash=audit_hash,
        audit_signature=audit_signature,
    )


def fuzzy_release_request_to_pb(r: m.FuzzyReleaseRequest) -> pb.FuzzyReleaseRequest:
    return pb.FuzzyReleaseRequest(
        header=header(), release=envelope_to_pb(r.release), label_request=r.label_request
    )


def fuzzy_release_request_from_pb(r: pb.FuzzyReleaseRequest) -> m.FuzzyReleaseRequest:
    check_header(r.header, r.HasField("header"))
    if not r.label_request:
        raise InvalidInput("label_request is empty", reason="empty_batch")
    return m.FuzzyReleaseRequest(envelope_from_pb(r.release, "release"), bytes(r.label_request))


def submit_fuzzy_round_to_pb(r: m.SubmitFuzzyRoundRequest) -> cpb.SubmitFuzzyRoundRequest:
    """Targets with identical request bytes share one FuzzyBatch (no copy on the wire)."""
    groups: dict[bytes, list[str]] = {}
    blobs: dict[bytes, bytes] = {}
    for state, data in r.requests.items():
        digest = hashlib.sha256(data).digest()
        groups.setdefault(digest, []).append(state)
        blobs[digest] = data
    return cpb.SubmitFuzzyRoundRequest(
        header=header(r.round_id),
        round=envelope_to_pb(r.round),
        batches=[cpb.FuzzyBatch(states=states, score_request=blobs[d]) for d, states in groups.items()],
    )


def submit_fuzzy_round_from_pb(r: cpb.SubmitFuzzyRoundRequest) -> m.SubmitFuzzyRoundRequest:
    round_id = check_header(r.header, r.HasField("header"))
    requests: dict[str, bytes] = {}
    for b in r.batches:
        if not b.score_request:
            raise InvalidInput("a fuzzy batch is empty", reason="empty_batch")
        data = bytes(b.score_request)
        for state in b.states:
            validate_state(state, "batches.states")
            if state in requests:
                raise InvalidInput("batches list a State twice", reason="duplicate_batch")
            requests[state] = data
    return m.SubmitFuzzyRoundRequest(envelope_from_pb(r.round, "round"), requests, round_id)
