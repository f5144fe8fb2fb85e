from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HolderStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLDER_STATUS_UNSPECIFIED: _ClassVar[HolderStatus]
    HOLDER_STATUS_OK: _ClassVar[HolderStatus]
    HOLDER_STATUS_TIMEOUT: _ClassVar[HolderStatus]
    HOLDER_STATUS_UNAVAILABLE: _ClassVar[HolderStatus]
    HOLDER_STATUS_REFUSED: _ClassVar[HolderStatus]
HOLDER_STATUS_UNSPECIFIED: HolderStatus
HOLDER_STATUS_OK: HolderStatus
HOLDER_STATUS_TIMEOUT: HolderStatus
HOLDER_STATUS_UNAVAILABLE: HolderStatus
HOLDER_STATUS_REFUSED: HolderStatus

class HolderBatch(_message.Message):
    __slots__ = ("state", "blinded")
    STATE_FIELD_NUMBER: _ClassVar[int]
    BLINDED_FIELD_NUMBER: _ClassVar[int]
    state: str
    blinded: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, state: _Optional[str] = ..., blinded: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SubmitRoundRequest(_message.Message):
    __slots__ = ("header", "round", "batches")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.RequestHeader
    round: _common_pb2.SignedEnvelope
    batches: _containers.RepeatedCompositeFieldContainer[HolderBatch]
    def __init__(self, header: _Optional[_Union[_common_pb2.RequestHeader, _Mapping]] = ..., round: _Optional[_Union[_common_pb2.SignedEnvelope, _Mapping]] = ..., batches: _Optional[_Iterable[_Union[HolderBatch, _Mapping]]] = ...) -> None: ...

class HolderResult(_message.Message):
    __slots__ = ("state", "status", "reason", "message", "retry_after_s", "evaluation", "latency_ms", "reasons", "code", "fuzzy")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_S_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    FUZZY_FIELD_NUMBER: _ClassVar[int]
    state: str
    status: HolderStatus
    reason: str
    message: str
    retry_after_s: int
    evaluation: _common_pb2.BlindEvaluateResponse
    latency_ms: int
    reasons: _containers.RepeatedScalarFieldContainer[str]
    code: str
    fuzzy: _common_pb2.FuzzyScoreResponse
    def __init__(self, state: _Optional[str] = ..., status: _Optional[_Union[HolderStatus, str]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., retry_after_s: _Optional[int] = ..., evaluation: _Optional[_Union[_common_pb2.BlindEvaluateResponse, _Mapping]] = ..., latency_ms: _Optional[int] = ..., reasons: _Optional[_Iterable[str]] = ..., code: _Optional[str] = ..., fuzzy: _Optional[_Union[_common_pb2.FuzzyScoreResponse, _Mapping]] = ...) -> None: ...

class RoundResult(_message.Message):
    __slots__ = ("round_id", "results", "started_unix_ms", "finished_unix_ms", "replayed")
    ROUND_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    round_id: str
    results: _containers.RepeatedCompositeFieldContainer[HolderResult]
    started_unix_ms: int
    finished_unix_ms: int
    replayed: bool
    def __init__(self, round_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[HolderResult, _Mapping]]] = ..., started_unix_ms: _Optional[int] = ..., finished_unix_ms: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.RequestHeader
    def __init__(self, header: _Optional[_Union[_common_pb2.RequestHeader, _Mapping]] = ...) -> None: ...

class NodeEntry(_message.Message):
    __slots__ = ("state", "reachable", "info")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    state: str
    reachable: bool
    info: _common_pb2.NodeInfo
    def __init__(self, state: _Optional[str] = ..., reachable: _Optional[bool] = ..., info: _Optional[_Union[_common_pb2.NodeInfo, _Mapping]] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeEntry]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeEntry, _Mapping]]] = ...) -> None: ...

class RelayIndexRequest(_message.Message):
    __slots__ = ("header", "state", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.RequestHeader
    state: str
    request: _common_pb2.GetIndexRequest
    def __init__(self, header: _Optional[_Union[_common_pb2.RequestHeader, _Mapping]] = ..., state: _Optional[str] = ..., request: _Optional[_Union[_common_pb2.GetIndexRequest, _Mapping]] = ...) -> None: ...

class FuzzyBatch(_message.Message):
    __slots__ = ("states", "score_request")
    STATES_FIELD_NUMBER: _ClassVar[int]
    SCORE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[str]
    score_request: bytes
    def __init__(self, states: _Optional[_Iterable[str]] = ..., score_request: _Optional[bytes] = ...) -> None: ...

class SubmitFuzzyRoundRequest(_message.Message):
    __slots__ = ("header", "round", "batches")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.RequestHeader
    round: _common_pb2.SignedEnvelope
    batches: _containers.RepeatedCompositeFieldContainer[FuzzyBatch]
    def __init__(self, header: _Optional[_Union[_common_pb2.RequestHeader, _Mapping]] = ..., round: _Optional[_Union[_common_pb2.SignedEnvelope, _Mapping]] = ..., batches: _Optional[_Iterable[_Union[FuzzyBatch, _Mapping]]] = ...) -> None: ...

class RelayFuzzyReleaseRequest(_message.Message):
    __slots__ = ("header", "state", "request")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.RequestHeader
    state: str
    request: _common_pb2.FuzzyReleaseRequest
    def __init__(self, header: _Optional[_Union[_common_pb2.RequestHeader, _Mapping]] = ..., state: _Optional[str] = ..., request: _Optional[_Union[_common_pb2.FuzzyReleaseRequest, _Mapping]] = ...) -> None: ...

class GetCrlRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: _common_pb2.RequestHeader
    def __init__(self, header: _Optional[_Union[_common_pb2.RequestHeader, _Mapping]] = ...) -> None: ...

class CrlResponse(_message.Message):
    __slots__ = ("crl",)
    CRL_FIELD_NUMBER: _ClassVar[int]
    crl: bytes
    def __init__(self, crl: _Optional[bytes] = ...) -> None: ...
