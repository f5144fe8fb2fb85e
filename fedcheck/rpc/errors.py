"""The one table from :mod:`fedcheck.errors` to gRPC status codes, and back.

Why one table: every servicer answers errors the same way, and every client turns a status back into the same
typed exception, so a refusal keeps its reason code across the coordinator hop. Messages are the exceptions'
own (already sanitised by contract: no identities, no secrets); :class:`~fedcheck.errors.VerificationError`
stays opaque. The reason code and retry-after hint travel as trailing metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, NoReturn

import grpc

from fedcheck import errors as e
from fedcheck.rpc.serde import CODE_PATTERN

__all__ = [
    "INVALID_REASON",
    "MAX_DETAIL_CHARS",
    "MAX_RETRY_AFTER_S",
    "REASONS_KEY",
    "REASON_KEY",
    "RETRY_AFTER_KEY",
    "STATUS_TABLE",
    "abort",
    "from_rpc_error",
    "relayed_reason",
    "relayed_reasons",
    "status_for",
]

_log = logging.getLogger(__name__)

#: Trailing-metadata key carrying :attr:`FedcheckError.reason`.
REASON_KEY = "fedcheck-reason"
#: Trailing-metadata key carrying :attr:`BudgetExhausted.retry_after_s`.
RETRY_AFTER_KEY = "fedcheck-retry-after"
#: Trailing-metadata key carrying every reason code (:attr:`FedcheckError.reasons`, comma-separated).
REASONS_KEY = "fedcheck-reasons"

#: What a peer's reason code that is not a short code (``serde.CODE_PATTERN``) is relayed and audited as.
INVALID_REASON = "holder_invalid_reason"
#: A peer's status message is cut to this many characters before it is relayed.
MAX_DETAIL_CHARS = 300
#: A peer's retry-after hint is capped here (a year): ``HolderResult.retry_after_s`` is a uint32 on the wire.
MAX_RETRY_AFTER_S = 366 * 86400
_MAX_REASONS = 32

#: Most specific class first; :func:`status_for` walks the exception's MRO.
STATUS_TABLE: dict[type[e.FedcheckError], grpc.StatusCode] = {
    e.BudgetExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.LimitExceeded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    e.InvalidElement: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidCiphertext: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidRecord: grpc.StatusCode.INVALID_ARGUMENT,
    e.FormatError: grpc.StatusCode.INVALID_ARGUMENT,
    e.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    e.VerificationError: grpc.StatusCode.INVALID_ARGUMENT,
    e.UnsupportedVersion: grpc.StatusCode.FAILED_PRECONDITION,
    e.PreconditionFailed: grpc.StatusCode.FAILED_PRECONDITION,
    e.ConfigError: grpc.StatusCode.FAILED_PRECONDITION,
    e.PolicyDenied: grpc.StatusCode.PERMISSION_DENIED,
    e.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    e.NotFound: grpc.StatusCode.NOT_FOUND,
    e.IntegrityError: grpc.StatusCode.DATA_LOSS,
    e.Aborted: grpc.StatusCode.ABORTED,
    e.Unavailable: grpc.StatusCode.UNAVAILABLE,
    e.FedcheckError: grpc.StatusCode.INTERNAL,
}

_REVERSE: dict[grpc.StatusCode, type[e.FedcheckError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: e.InvalidInput,
    grpc.StatusCode.FAILED_PRECONDITION: e.PreconditionFailed,
    grpc.StatusCode.RESOURCE_EXHAUSTED: e.LimitExceeded,
    grpc.StatusCode.PERMISSION_DENIED: e.PolicyDenied,
    grpc.StatusCode.UNAUTHENTICATED: e.Unauthenticated,
    grpc.StatusCode.NOT_FOUND: e.NotFound,
    grpc.StatusCode.DATA_LOSS: e.IntegrityError,
    grpc.StatusCode.UNAVAILABLE: e.Unavailable,
    grpc.StatusCode.ABORTED: e.Aborted,
    grpc.StatusCode.DEADLINE_EXCEEDED: e.Unavailable,
    grpc.StatusCode.CANCELLED: e.Unavailable,
}

#: Reason codes that come back as their specific class (not only the status' default).
_BY_REASON: dict[str, type[e.FedcheckError]] = {
    "UnsupportedVersion": e.UnsupportedVersion,
    "unsupported_version": e.UnsupportedVersion,
    "InvalidElement": e.InvalidElement,
    "invalid_element": e.InvalidElement,
}


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The status code of ``exc`` (INTERNAL for anything that is not a FedcheckError)."""
    for cls in type(exc).__mro__:
        code = STATUS_TABLE.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    """End the call with the mapped status; unexpected exceptions become a bare INTERNAL."""
    if not isinstance(exc, e.FedcheckError):
        _log.error("internal error in handler", exc_info=exc)
        context.abort(grpc.StatusCode.INTERNAL, "internal error")
    metadata: list[tuple[str, str]] = [(REASON_KEY, exc.reason)]
    if len(exc.reasons) > 1:
        metadata.append((REASONS_KEY, ",".join(exc.reasons)))
    if isinstance(exc, (e.BudgetExhausted, e.Aborted)):
        metadata.append((RETRY_AFTER_KEY, str(int(exc.retry_after_s))))
    context.set_trailing_metadata(tuple(metadata))
    message = "verification failed" if isinstance(exc, e.VerificationError) else exc.message
    context.abort(status_for(exc), message)


def relayed_reason(value: str) -> str:
    """A peer's reason code as it may be relayed and audited: itself if it is a short code
    (``serde.CODE_PATTERN``), else :data:`INVALID_REASON`."""
    return value if CODE_PATTERN.match(value) else INVALID_REASON


def relayed_reasons(values: Iterable[str]) -> tuple[str, ...]:
    """A peer's reason codes as they may be relayed: the short codes among them (at most 32, in order,
    without repeats), with :data:`INVALID_REASON` once in place of everything else."""
    out: list[str] = []
    for value in values:
        code = relayed_reason(value)
        if code not in out:
            out.append(code)
    return tuple(out[:_MAX_REASONS])


def _retry_after(value: str | None, default: int) -> int:
    if value is None:
        return default
    try:
        return min(max(0, int(value)), MAX_RETRY_AFTER_S)
    except ValueError:
        return default


def from_rpc_error(err: grpc.RpcError) -> e.FedcheckError:
    """Rebuild the typed exception a peer raised (status, message, reason, retry-after).

    What the peer sent is not trusted: reason codes that are not short codes become
    :data:`INVALID_REASON` (they end up in the coordinator's audit entry and the querier's wire validation
    refuses them), the message is cut to :data:`MAX_DETAIL_CHARS` and the retry-after hint is capped."""
    code: grpc.StatusCode = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (err.details() if isinstance(err, grpc.Call) else None) or code.name.lower()
    details = str(details)[:MAX_DETAIL_CHARS]
    trailing = err.trailing_metadata() if isinstance(err, grpc.Call) else None
    meta: dict[str, str] = {}
    pairs: Any = trailing or ()
    for key, value in pairs:
        if isinstance(value, str):
            meta[str(key)] = value
    reason = relayed_reason(meta.get(REASON_KEY) or code.name.lower())
    reasons = relayed_reasons(r for r in meta.get(REASONS_KEY, "").split(",") if r)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and RETRY_AFTER_KEY in meta:
        retry = _retry_after(meta[RETRY_AFTER_KEY], 0)
        return e.BudgetExhausted(details, retry_after_s=retry, reason=reason, reasons=reasons)
    if code == grpc.StatusCode.ABORTED:
        retry = _retry_after(meta.get(RETRY_AFTER_KEY), 1)
        return e.Aborted(details, retry_after_s=retry, reason=reason, reasons=reasons)
    cls = _BY_REASON.get(reason) or _REVERSE.get(code, e.FedcheckError)
    if cls is e.Unavailable and code == grpc.StatusCode.DEADLINE_EXCEEDED:
        reason = "deadline"
    return cls(details, reason=reason, reasons=reasons)
