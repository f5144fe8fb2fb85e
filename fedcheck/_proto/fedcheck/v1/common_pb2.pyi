from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_EXACT: _ClassVar[Mode]
    MODE_CARDINALITY: _ClassVar[Mode]
    MODE_FUZZY: _ClassVar[Mode]
MODE_UNSPECIFIED: Mode
MODE_EXACT: Mode
MODE_CARDINALITY: Mode
MODE_FUZZY: Mode

class RequestHeader(_message.Message):
    __slots__ = ("protocol_version", "round_id")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    round_id: str
    def __init__(self, protocol_version: _Optional[int] = ..., round_id: _Optional[str] = ...) -> None: ...

class SignedEnvelope(_message.Message):
    __slots__ = ("payload", "signature", "certificate_pem")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    signature: bytes
    certificate_pem: bytes
    def __init__(self, payload: _Optional[bytes] = ..., signature: _Optional[bytes] = ..., certificate_pem: _Optional[bytes] = ...) -> None: ...

class RoundTarget(_message.Message):
    __slots__ = ("state", "epoch_id", "count", "batch_sha256")
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SHA256_FIELD_NUMBER: _ClassVar[int]
    state: str
    epoch_id: str
    count: int
    batch_sha256: bytes
    def __init__(self, state: _Optional[str] = ..., epoch_id: _Optional[str] = ..., count: _Optional[int] = ..., batch_sha256: _Optional[bytes] = ...) -> None: ...

class RoundPayload(_message.Message):
    __slots__ = ("round_id", "purpose", "legal_basis", "mode", "targets", "deadline_unix_ms", "issued_at_unix_ms", "unit", "official", "key_types", "label_fields")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    OFFICIAL_FIELD_NUMBER: _ClassVar[int]
    KEY_TYPES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELDS_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    purpose: str
    legal_basis: str
    mode: Mode
    targets: _containers.RepeatedCompositeFieldContainer[RoundTarget]
    deadline_unix_ms: int
    issued_at_unix_ms: int
    unit: str
    official: str
    key_types: _containers.RepeatedScalarFieldContainer[str]
    label_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round_id: _Optional[str] = ..., purpose: _Optional[str] = ..., legal_basis: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., targets: _Optional[_Iterable[_Union[RoundTarget, _Mapping]]] = ..., deadline_unix_ms: _Optional[int] = ..., issued_at_unix_ms: _Optional[int] = ..., unit: _Optional[str] = ..., official: _Optional[str] = ..., key_types: _Optional[_Iterable[str]] = ..., label_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class IndexRequestPayload(_message.Message):
    __slots__ = ("holder_state", "epoch_id", "issued_at_unix_ms")
    HOLDER_STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    holder_state: str
    epoch_id: str
    issued_at_unix_ms: int
    def __init__(self, holder_state: _Optional[str] = ..., epoch_id: _Optional[str] = ..., issued_at_unix_ms: _Optional[int] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_batch", "index_chunk_bytes")
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    INDEX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_batch: int
    index_chunk_bytes: int
    def __init__(self, max_batch: _Optional[int] = ..., index_chunk_bytes: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("state", "protocol_versions", "modes", "epoch_id", "epoch_public_key", "index_size", "limits", "epoch_started_unix_ms", "epoch_building", "fuzzy", "previous_epoch_id", "previous_epoch_public_key", "epoch_announcement", "previous_epoch_announcement")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MODES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_SIZE_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_BUILDING_FIELD_NUMBER: _ClassVar[int]
    FUZZY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_EPOCH_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_EPOCH_ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    state: str
    protocol_versions: _containers.RepeatedScalarFieldContainer[int]
    modes: _containers.RepeatedScalarFieldContainer[Mode]
    epoch_id: str
    epoch_public_key: bytes
    index_size: int
    limits: Limits
    epoch_started_unix_ms: int
    epoch_building: bool
    fuzzy: FuzzyInfo
    previous_epoch_id: str
    previous_epoch_public_key: bytes
    epoch_announcement: SignedEnvelope
    previous_epoch_announcement: SignedEnvelope
    def __init__(self, state: _Optional[str] = ..., protocol_versions: _Optional[_Iterable[int]] = ..., modes: _Optional[_Iterable[_Union[Mode, str]]] = ..., epoch_id: _Optional[str] = ..., epoch_public_key: _Optional[bytes] = ..., index_size: _Optional[int] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., epoch_started_unix_ms: _Optional[int] = ..., epoch_building: _Optional[bool] = ..., fuzzy: _Optional[_Union[FuzzyInfo, _Mapping]] = ..., previous_epoch_id: _Optional[str] = ..., previous_epoch_public_key: _Optional[bytes] = ..., epoch_announcement: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., previous_epoch_announcement: _Optional[_Union[SignedEnvelope, _Mapping]] = ...) -> None: ...

class EpochAnnouncementPayload(_message.Message):
    __slots__ = ("state", "epoch_id", "epoch_public_key", "index_sha256", "valid_from_unix_ms", "valid_until_unix_ms", "partner_state", "audience")
    STATE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    INDEX_SHA256_FIELD_NUMBER: _ClassVar[int]
    VALID_FROM_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PARTNER_STATE_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    state: str
    epoch_id: str
    epoch_public_key: bytes
    index_sha256: bytes
    valid_from_unix_ms: int
    valid_until_unix_ms: int
    partner_state: str
    audience: str
    def __init__(self, state: _Optional[str] = ..., epoch_id: _Optional[str] = ..., epoch_public_key: _Optional[bytes] = ..., index_sha256: _Optional[bytes] = ..., valid_from_unix_ms: _Optional[int] = ..., valid_until_unix_ms: _Optional[int] = ..., partner_state: _Optional[str] = ..., audience: _Optional[str] = ...) -> None: ...

class FuzzyInfo(_message.Message):
    __slots__ = ("max_travellers", "name_size_table", "year_min", "year_max", "name_entries", "face_dims", "face_entries", "release_ttl_seconds")
    MAX_TRAVELLERS_FIELD_NUMBER: _ClassVar[int]
    NAME_SIZE_TABLE_FIELD_NUMBER: _ClassVar[int]
    YEAR_MIN_FIELD_NUMBER: _ClassVar[int]
    YEAR_MAX_FIELD_NUMBER: _ClassVar[int]
    NAME_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    FACE_DIMS_FIELD_NUMBER: _ClassVar[int]
    FACE_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_travellers: int
    name_size_table: int
    year_min: int
    year_max: int
    name_entries: int
    face_dims: int
    face_entries: int
    release_ttl_seconds: int
    def __init__(self, max_travellers: _Optional[int] = ..., name_size_table: _Optional[int] = ..., year_min: _Optional[int] = ..., year_max: _Optional[int] = ..., name_entries: _Optional[int] = ..., face_dims: _Optional[int] = ..., face_entries: _Optional[int] = ..., release_ttl_seconds: _Optional[int] = ...) -> None: ...

class IndexChunk(_message.Message):
    __slots__ = ("epoch_id", "offset", "data", "chunk_sha256", "total_bytes", "index_sha256", "last", "epoch_public_key", "announcement")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_SHA256_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    EPOCH_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    ANNOUNCEMENT_FIELD_NUMBER: _ClassVar[int]
    epoch_id: str
    offset: int
    data: bytes
    chunk_sha256: bytes
    total_bytes: int
    index_sha256: bytes
    last: bool
    epoch_public_key: bytes
    announcement: SignedEnvelope
    def __init__(self, epoch_id: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., chunk_sha256: _Optional[bytes] = ..., total_bytes: _Optional[int] = ..., index_sha256: _Optional[bytes] = ..., last: _Optional[bool] = ..., epoch_public_key: _Optional[bytes] = ..., announcement: _Optional[_Union[SignedEnvelope, _Mapping]] = ...) -> None: ...

class GetIndexRequest(_message.Message):
    __slots__ = ("header", "request", "offset")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    request: SignedEnvelope
    offset: int
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., request: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., offset: _Optional[int] = ...) -> None: ...

class NodeInfoRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ...) -> None: ...

class BlindEvaluateRequest(_message.Message):
    __slots__ = ("header", "round", "blinded")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BLINDED_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    round: SignedEnvelope
    blinded: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., round: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., blinded: _Optional[_Iterable[bytes]] = ...) -> None: ...

class BlindEvaluateResponse(_message.Message):
    __slots__ = ("epoch_id", "evaluated", "proof", "budget_remaining", "audit_seq", "audit_hash", "audit_signature", "narrowed", "effective_key_types", "effective_label_fields", "replayed", "budget_limited")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    EVALUATED_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    NARROWED_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_KEY_TYPES_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_LABEL_FIELDS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    BUDGET_LIMITED_FIELD_NUMBER: _ClassVar[int]
    epoch_id: str
    evaluated: _containers.RepeatedScalarFieldContainer[bytes]
    proof: bytes
    budget_remaining: int
    audit_seq: int
    audit_hash: str
    audit_signature: bytes
    narrowed: _containers.RepeatedScalarFieldContainer[str]
    effective_key_types: _containers.RepeatedScalarFieldContainer[str]
    effective_label_fields: _containers.RepeatedScalarFieldContainer[str]
    replayed: bool
    budget_limited: bool
    def __init__(self, epoch_id: _Optional[str] = ..., evaluated: _Optional[_Iterable[bytes]] = ..., proof: _Optional[bytes] = ..., budget_remaining: _Optional[int] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ..., audit_signature: _Optional[bytes] = ..., narrowed: _Optional[_Iterable[str]] = ..., effective_key_types: _Optional[_Iterable[str]] = ..., effective_label_fields: _Optional[_Iterable[str]] = ..., replayed: _Optional[bool] = ..., budget_limited: _Optional[bool] = ...) -> None: ...

class FuzzyScoreRequest(_message.Message):
    __slots__ = ("header", "round", "score_request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    SCORE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    round: SignedEnvelope
    score_request: bytes
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., round: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., score_request: _Optional[bytes] = ...) -> None: ...

class FuzzyScoreResponse(_message.Message):
    __slots__ = ("epoch_id", "score_response", "budget_remaining", "release_ttl_seconds", "attestation", "audit_seq", "audit_hash", "audit_signature")
    EPOCH_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    BUDGET_REMAINING_FIELD_NUMBER: _ClassVar[int]
    RELEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    epoch_id: str
    score_response: bytes
    budget_remaining: int
    release_ttl_seconds: int
    attestation: SignedEnvelope
    audit_seq: int
    audit_hash: str
    audit_signature: bytes
    def __init__(self, epoch_id: _Optional[str] = ..., score_response: _Optional[bytes] = ..., budget_remaining: _Optional[int] = ..., release_ttl_seconds: _Optional[int] = ..., attestation: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ..., audit_signature: _Optional[bytes] = ...) -> None: ...

class FuzzyReleasePayload(_message.Message):
    __slots__ = ("round_id", "holder_state", "label_request_sha256", "issued_at_unix_ms", "purpose", "legal_basis", "unit", "official", "reply_public_key")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_STATE_FIELD_NUMBER: _ClassVar[int]
    LABEL_REQUEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    LEGAL_BASIS_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    OFFICIAL_FIELD_NUMBER: _ClassVar[int]
    REPLY_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    holder_state: str
    label_request_sha256: bytes
    issued_at_unix_ms: int
    purpose: str
    legal_basis: str
    unit: str
    official: str
    reply_public_key: bytes
    def __init__(self, round_id: _Optional[str] = ..., holder_state: _Optional[str] = ..., label_request_sha256: _Optional[bytes] = ..., issued_at_unix_ms: _Optional[int] = ..., purpose: _Optional[str] = ..., legal_basis: _Optional[str] = ..., unit: _Optional[str] = ..., official: _Optional[str] = ..., reply_public_key: _Optional[bytes] = ...) -> None: ...

class FuzzyReleaseRequest(_message.Message):
    __slots__ = ("header", "release", "label_request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    RELEASE_FIELD_NUMBER: _ClassVar[int]
    LABEL_REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: RequestHeader
    release: SignedEnvelope
    label_request: bytes
    def __init__(self, header: _Optional[_Union[RequestHeader, _Mapping]] = ..., release: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., label_request: _Optional[bytes] = ...) -> None: ...

class FuzzyReleaseResponse(_message.Message):
    __slots__ = ("label_response", "sealed_label_response", "attestation", "audit_seq", "audit_hash", "audit_signature")
    LABEL_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SEALED_LABEL_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ATTESTATION_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    AUDIT_HASH_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    label_response: bytes
    sealed_label_response: bytes
    attestation: SignedEnvelope
    audit_seq: int
    audit_hash: str
    audit_signature: bytes
    def __init__(self, label_response: _Optional[bytes] = ..., sealed_label_response: _Optional[bytes] = ..., attestation: _Optional[_Union[SignedEnvelope, _Mapping]] = ..., audit_seq: _Optional[int] = ..., audit_hash: _Optional[str] = ..., audit_signature: _Optional[bytes] = ...) -> None: ...
