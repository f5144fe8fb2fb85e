"""One typed exception hierarchy for all of fedcheck.

Protocol cores raise these; :mod:`fedcheck.rpc.errors` maps them to gRPC status codes in one table, and the
CLI maps them to exit codes. Messages must never contain secrets, identities or key material: they say
*what* was wrong with an input (field, size, limit), not what the input was.

Tree::

    FedcheckError                      (status: INTERNAL)
     +-- InvalidInput                  INVALID_ARGUMENT   malformed field, wrong size, bad file
     |    +-- InvalidElement           INVALID_ARGUMENT   not a canonical, non-identity group element
     |    +-- InvalidCiphertext        INVALID_ARGUMENT   Paillier ciphertext out of range / wrong key
     |    +-- InvalidRecord            INVALID_ARGUMENT   identity record violates the data model
     |    +-- FormatError              INVALID_ARGUMENT   input file (CSV, JSONL, XML, PAXLST, MRZ) malformed
     +-- UnsupportedVersion            FAILED_PRECONDITION protocol version not spoken here
     +-- PreconditionFailed            FAILED_PRECONDITION e.g. epoch changed, index not ready
     +-- LimitExceeded                 RESOURCE_EXHAUSTED batch too large
     |    +-- BudgetExhausted          RESOURCE_EXHAUSTED partner's query budget spent (retry_after_s)
     +-- PolicyDenied                  PERMISSION_DENIED  holder policy refuses partner/mode/purpose
     +-- Unauthenticated               UNAUTHENTICATED    no/invalid/revoked peer certificate
     +-- NotFound                      NOT_FOUND          unknown round, reference, State
     +-- VerificationError             (opaque)           proof or AEAD check failed; says nothing more
     +-- IntegrityError                DATA_LOSS          stored data or audit chain corrupted
     +-- ConfigError                   (CLI only)         operator configuration invalid
     +-- Unavailable                   UNAVAILABLE        peer down, deadline passed
          +-- Aborted                  ABORTED            identical request still in progress (retry)
          +-- StorageUnavailable       UNAVAILABLE        node's own database locked or failing (retry)
"""

from __future__ import annotations

__all__ = [
    "Aborted",
    "BudgetExhausted",
    "ConfigError",
    "FedcheckError",
    "FormatError",
    "IntegrityError",
    "InvalidCiphertext",
    "InvalidElement",
    "InvalidInput",
    "InvalidRecord",
    "LimitExceeded",
    "NotFound",
    "PolicyDenied",
    "PreconditionFailed",
    "StorageUnavailable",
    "Unauthenticated",
    "Unavailable",
    "UnsupportedVersion",
    "VerificationError",
]


class FedcheckError(Exception):
    """Base class. ``status`` names the gRPC status code the transport layer uses (no grpc import here)."""

    status: str = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, reasons: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        #: short machine-readable reason code, e.g. ``"batch_too_large"``
        self.reason = reason or type(self).__name__
        #: every reason code found (a policy refusal lists all of them); starts with :attr:`reason`
        self.reasons: tuple[str, ...] = tuple(reasons) or (self.reason,)


class InvalidInput(FedcheckError):
    status = "INVALID_ARGUMENT"


class InvalidElement(InvalidInput):
    """A group element that is not canonical, not on the group, or the identity."""


class InvalidCiphertext(InvalidInput):
    """A Paillier ciphertext outside ``[1, n^2)``, not a unit, or under an unexpected key."""


class InvalidRecord(InvalidInput):
    """An identity record that violates the canonical data model."""


class FormatError(InvalidInput):
    """A malformed input file or message; the message names the line/segment/field."""


class UnsupportedVersion(FedcheckError):
    status = "FAILED_PRECONDITION"


class PreconditionFailed(FedcheckError):
    status = "FAILED_PRECONDITION"


class LimitExceeded(FedcheckError):
    status = "RESOURCE_EXHAUSTED"


class BudgetExhausted(LimitExceeded):
    """The partner's budget for the current period is spent; ``retry_after_s`` says when it resets."""

    def __init__(
        self, message: str, *, retry_after_s: int, reason: str | None = None, reasons: tuple[str, ...] = ()
    ) -> None:
        super().__init__(message, reason=reason or "budget_exhausted", reasons=reasons)
        self.retry_after_s = retry_after_s


class PolicyDenied(FedcheckError):
    status = "PERMISSION_DENIED"


class Unauthenticated(FedcheckError):
    status = "UNAUTHENTICATED"


class NotFound(FedcheckError):
    status = "NOT_FOUND"


class VerificationError(FedcheckError):
    """Opaque: a proof, MAC or AEAD check failed. Deliberately carries no detail."""

    status = "INVALID_ARGUMENT"

    def __init__(self, message: str = "verification failed", *, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)


class IntegrityError(FedcheckError):
    status = "DATA_LOSS"


class ConfigError(FedcheckError):
    status = "FAILED_PRECONDITION"


class Unavailable(FedcheckError):
    status = "UNAVAILABLE"


class Aborted(Unavailable):
    """A concurrent, identical request is still being processed; retry after ``retry_after_s`` seconds."""

    status = "ABORTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: int = 1,
        reason: str | None = None,
        reasons: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, reason=reason or "aborted", reasons=reasons)
        self.retry_after_s = retry_after_s


class StorageUnavailable(Unavailable):
    """The node's own database failed (locked, I/O error, disk full) before anything was charged or recorded.

    Why a type: raised at the storage boundary (replay guard, budget ledger) instead of a bare
    ``sqlite3.Error``, so the services audit the refusal like any other and the caller gets ``UNAVAILABLE``
    ``storage_unavailable`` (retry later), not an unaudited ``INTERNAL``."""

    def __init__(
        self, message: str = "the node's storage is unavailable; retry later", *, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason or "storage_unavailable")
