"""Append-only, hash-chained, Ed25519-signed audit log with a signed head, crash recovery and retention.

Why this exists: every request and round a node or the coordinator handles must be accountable to an
oversight body (Eurodac-style: purpose, time, data used, unit and official responsible), without the log
itself becoming a store of personal data. Events are checked against an allow-list of fields and must never
hold plaintext identities or key material (:func:`check_event`).

File layout (``<log>`` is e.g. ``audit.jsonl``)::

    <log>              JSON lines {"seq", "time", "prev_hash", "event", "hash", "signature"}
                       hash = SHA-256("fedcheck-audit-v1\\0" | canonical JSON of seq, time, prev_hash, event)
                       signature = Ed25519("fedcheck-audit-entry-v1\\0" | hash); first prev_hash = 64 zeros
    <log>.head         signed {seq, hash} of the last acknowledged entry, replaced atomically on every append
    <log>.checkpoint   signed {seq, hash} of the last entry removed by retention pruning
    <log>.lock         single-writer lock (flock)

Detection: modification breaks an entry's hash/signature; reordering, insertion and deletion break ``seq`` /
``prev_hash``; deleting the first entries is caught by ``seq`` not starting at 1 (or at the checkpoint);
tail truncation is caught by the signed head, which is always at least as far as the last *acknowledged*
entry. Rolling back log *and* head together to an older consistent state needs an external anchor: the head
hash sent off the node (to the coordinator / oversight body), passed to :func:`verify_log` as
``expected_head``.

Durability: :meth:`AuditLog.append` writes the line with one ``write`` on an ``O_APPEND`` descriptor,
``fsync``s it, then replaces the head (fsync + rename + directory fsync) before returning -- so an entry is
durable before the answer leaves the node. A crash can leave only an unacknowledged, torn last line; opening
the log drops it (never anything at or before the head) and the chain still verifies.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import datetime as dt
import fcntl
import hashlib
import hmac
import io
import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedcheck.errors import ConfigError, IntegrityError, InvalidInput
from fedcheck.trust.atrest import KeyEncryptionKey, atomic_write, is_sealed_file, open_sealed_file, seal_bytes

__all__ = [
    "ALLOWED_EVENT_FIELDS",
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "SignedHead",
    "VerifyReport",
    "append_event",
    "audit_text_problem",
    "check_event",
    "ensure_signing_key",
    "export_report",
    "generate_signing_key",
    "is_refusal",
    "load_public_key",
    "load_signing_key",
    "open_audit_log",
    "read_entries",
    "save_signing_key",
    "verify_head_signature",
    "verify_log",
]

GENESIS_HASH = "0" * 64
_ENTRY_CTX = b"fedcheck-audit-entry-v1\x00"
_HASH_CTX = b"fedcheck-audit-v1\x00"
_HEAD_CTX = b"fedcheck-audit-head-v1\x00"
_CHECKPOINT_CTX = b"fedcheck-audit-checkpoint-v1\x00"
_KEY_AAD = b"fedcheck-audit-signing-key-v1"
_ENTRY_KEYS = frozenset({"seq", "time", "prev_hash", "event", "hash", "signature"})
_TAIL_WINDOW = 1 << 20

#: Fields an event may carry. Anything else is refused: no names, dates of birth, document numbers, keys.
ALLOWED_EVENT_FIELDS: frozenset[str] = frozenset(
    {
        "type",  # request, round, refusal, policy, budget, index, admin, startup, key_rotation, retention
        "round_id",
        "request_id",
        "partner",  # the other State (from its verified certificate)
        "querier",
        "holder",
        "holders",
        "targets",
        "peer",  # "<role>.<STATE>" of the TLS peer
        "role",  # certificate role of the request's signer: node, or evaluator (conformance suite)
        "cert_serial",
        "unit",  # submitting unit (organisational code)
        "official",  # pseudonymous official / operator id
        "purpose",
        "legal_basis",  # reference to the legal basis, e.g. "Reg-2018/1862 art.36"
        "mode",
        "modes",
        "key_types",
        "label_fields",
        "batch_size",
        "items",
        "evaluated",
        "hits",
        "count",
        "human_review",
        "excluded",
        "outcome",  # ok | refused | error | timeout
        "status",  # gRPC-style status name
        "reason",
        "reasons",
        "narrowed",
        "decision",
        "duration_ms",
        "latency_ms",
        "epoch_id",
        "budget_remaining",
        "retry_after_s",
        "index_digest",
        "index_size",
        "offset",  # byte offset a (resumed) index download starts at
        "key_id",  # public fingerprint of a key, never key bytes
        "component",
        "version",
        "counts",
        "pruned",
        "checkpoint_seq",
        "anchors",  # audit heads (State -> "SEQ:HASH") the coordinator received with a round's answers
        "anchors_verified",  # States whose head signature matched the coordinator's configured audit key
        "anchors_unverified",  # States whose head was missing or did not match it (oversight evidence)
        "items_by_state",
        "replayed",  # an exact duplicate answered again without charging budget
        "references",  # list references released by a fuzzy follow-up (bounded: see _check_references)
        # the querying State's own log (``audit-querier.jsonl``, fedcheck.node.querier): counts per target
        "travellers",  # manifest size (a count, never identities)
        "statuses",  # State -> outcome text of a round ("ok", "ok (cached)", "refused (reason)", ...)
        "epochs",  # State -> epoch id the round (or the cached results) belong to
        "hits_by_state",  # State -> number of hits reported
        "excluded_by_state",  # State -> travellers kept away from it by the querier policy
        "cached",  # True when results were served from the querier's cache (no request reached the holder)
        "cached_by_state",  # State -> match keys answered from the cache
        "sub_rounds",  # fuzzy: number of signed sub-rounds
    }
)
_MAX_STR = 256
_MAX_LIST = 256
# long runs of base64/hex alphabet look like key material, ciphertexts or encoded blobs
_BLOB_RE = re.compile(r"[A-Za-z0-9+/=_-]{80,}")
#: a released list reference: one short token (no spaces, so a "GIVEN FAMILY" name cannot pass as one)
_REFERENCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/#-]{0,63}$")
#: = fedcheck.node.fuzzy.MAX_RELEASE_CLAIMS (claims per follow-up; each releases at most one reference)
_MAX_REFERENCES = 4000


def audit_text_problem(value: str) -> str | None:
    """Why ``value`` may not be stored as an audit string value, or ``None`` if it may.

    The one rule set for strings that end up in audit events: wire validation of caller-supplied text that
    is audited (``unit``, ``official``, ``legal_basis``, ``purpose`` in :mod:`fedcheck.rpc.serde`) calls this
    too, so a request whose text passes the wire checks can always be audited (and one that cannot be audited
    is refused at the wire, before any decision).
    """
    if len(value) > _MAX_STR:
        return f"longer than {_MAX_STR} characters"
    if "-----BEGIN" in value or _BLOB_RE.search(value):
        return "looks like key material or an encoded blob (PEM, or 80+ base64/hex characters in a row)"
    if any(ord(c) < 0x20 for c in value):
        return "control characters"
    return None


def check_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """Validate an event against the allow-list and the value rules; return a plain-dict copy.

    Values: str (<= 256 chars, no PEM blocks or long encoded runs), int, float, bool, None, lists of those, or
    one level of mapping ``str -> scalar`` (e.g. counts by status). Raises :class:`InvalidInput` naming the
    *field*, never its value.
    """
    if not isinstance(event, Mapping):
        raise InvalidInput("audit event must be a mapping", reason="audit_event")
    if not isinstance(event.get("type"), str) or not event["type"]:
        raise InvalidInput("audit event needs a 'type'", reason="audit_event")
    out: dict[str, Any] = {}
    for key, value in event.items():
        if key not in ALLOWED_EVENT_FIELDS:
            raise InvalidInput(f"audit event field {key!r} is not allowed", reason="audit_field")
        out[key] = _check_references(value) if key == "references" else _check_value(value, key, depth=0)
    return out


def _check_references(value: Any) -> list[str]:
    """``references``: at most 4000 short reference tokens (``[A-Za-z0-9._:/#-]``, <= 64 chars)."""
    if not isinstance(value, (list, tuple)) or len(value) > _MAX_REFERENCES:
        raise InvalidInput(
            f"audit event field 'references': must be a list of at most {_MAX_REFERENCES} references",
            reason="audit_value",
        )
    for v in value:
        if not isinstance(v, str) or not _REFERENCE_RE.match(v):
            raise InvalidInput("audit event field 'references': each must be a short reference token",
                               reason="audit_value")
    return [str(v) for v in value]


def _check_scalar(value: Any, key: str) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidInput(f"audit event field {key!r}: non-finite number", reason="audit_value")
        return value
    if isinstance(value, str):
        problem = audit_text_problem(value)
        if problem is not None:
            raise InvalidInput(f"audit event field {key!r}: {problem}", reason="audit_value")
        return value
    raise InvalidInput(f"audit event field {key!r}: unsupported type", reason="audit_value")


def _check_value(value: Any, key: str, *, depth: int) -> Any:
    if isinstance(value, (list, tuple, frozenset, set)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        if len(items) > _MAX_LIST:
            raise InvalidInput(f"audit event field {key!r}: list too long", reason="audit_value")
        return [_check_scalar(v, key) for v in items]
    if isinstance(value, Mapping):
        if depth > 0 or len(value) > _MAX_LIST:
            raise InvalidInput(
                f"audit event field {key!r}: nested too deep or too large", reason="audit_value"
            )
        return {str(_check_scalar(str(k), key)): _check_scalar(v, key) for k, v in value.items()}
    return _check_scalar(value, key)


# ----------------------------------------------------------------------------------------------------
# entries
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    prev_hash: str
    event: Mapping[str, Any]
    hash: str
    signature: str

    def to_line(self) -> bytes:
        doc = {
            "seq": self.seq,
            "time": self.time,
            "prev_hash": self.prev_hash,
            "event": self.event,
            "hash": self.hash,
            "signature": self.signature,
        }
        return (json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")

    @property
    def timestamp(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.time.replace("Z", "+00:00"))


def _entry_hash(seq: int, time: str, prev_hash: str, event: Mapping[str, Any]) -> str:
    body = json.dumps(
        {"seq": seq, "time": time, "prev_hash": prev_hash, "event": event},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return hashlib.sha256(_HASH_CTX + body).hexdigest()


def _parse_line(line: bytes) -> AuditEntry:
    """Parse one line (without the newline); ValueError on any structural problem."""
    doc = json.loads(line.decode("utf-8"))
    if not isinstance(doc, dict) or set(doc) != _ENTRY_KEYS:
        raise ValueError("bad entry keys")
    seq, time, prev, event, h, sig = (
        doc[k] for k in ("seq", "time", "prev_hash", "event", "hash", "signature")
    )
    if not (isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1):
        raise ValueError("bad seq")
    if not (isinstance(time, str) and isinstance(prev, str) and isinstance(h, str) and isinstance(sig, str)):
        raise ValueError("bad field types")
    if not isinstance(event, dict):
        raise ValueError("bad event")
    return AuditEntry(seq, time, prev, event, h, sig)


def _entry_valid(entry: AuditEntry, public_key: Ed25519PublicKey) -> bool:
    expected = _entry_hash(entry.seq, entry.time, entry.prev_hash, entry.event)
    if not hmac.compare_digest(expected, entry.hash):
        return False
    try:
        sig = base64.b64decode(entry.signature, validate=True)
        if base64.b64encode(sig).decode("ascii") != entry.signature:  # non-canonical encoding is an edit too
            return False
        public_key.verify(sig, _ENTRY_CTX + bytes.fromhex(entry.hash))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _sign_anchor(key: Ed25519PrivateKey, ctx: bytes, seq: int, h: str, extra: Mapping[str, Any]) -> bytes:
    sig = key.sign(ctx + seq.to_bytes(8, "big") + bytes.fromhex(h))
    doc = {"seq": seq, "hash": h, **extra, "signature": base64.b64encode(sig).decode("ascii")}
    return json.dumps(doc, sort_keys=True).encode("utf-8")


@dataclass(frozen=True)
class SignedHead:
    """A log head (seq, hash) with the log key's Ed25519 signature (the ``.head`` file's format).

    Sent off the node with every evaluation reply, so the coordinator / oversight body holds an external
    anchor: the log must still contain entry ``seq`` with ``hash`` (:func:`verify_log` ``expected_head``).
    """

    seq: int
    hash: str
    signature: bytes

    @property
    def anchor(self) -> str:
        """``SEQ:HASH``, the form ``fedcheck audit verify --expected-head`` takes."""
        return f"{self.seq}:{self.hash}"


def verify_head_signature(public_key: Ed25519PublicKey, head: SignedHead) -> bool:
    """True when ``head.signature`` is the log key's signature over (seq, hash)."""
    try:
        public_key.verify(head.signature, _HEAD_CTX + head.seq.to_bytes(8, "big") + bytes.fromhex(head.hash))
    except (InvalidSignature, ValueError, OverflowError):
        return False
    return True


def _read_anchor(path: Path, ctx: bytes, public_key: Ed25519PublicKey) -> tuple[int, str] | None:
    """(seq, hash) of a signed head/checkpoint file; None if absent; IntegrityError if forged or corrupt."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    what = path.suffix.lstrip(".")
    try:
        doc = json.loads(raw)
        seq, h, sig = int(doc["seq"]), str(doc["hash"]), base64.b64decode(doc["signature"], validate=True)
        signed = ctx + seq.to_bytes(8, "big") + bytes.fromhex(h)
    except (ValueError, KeyError, TypeError, binascii.Error, OverflowError):
        raise IntegrityError(
            f"audit {what} file is corrupt (not a well-formed signed {what})", reason="audit_anchor"
        ) from None
    try:
        public_key.verify(sig, signed)
    except InvalidSignature:
        # well-formed, but not this key's signature: another key was given, or the file was forged
        raise IntegrityError(
            f"audit {what} file: signature does not verify under the given public key (wrong key, or a "
            f"forged {what})",
            reason="audit_anchor_signature",
        ) from None
    return seq, h


def _utc_now_text(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _head_path(path: Path) -> Path:
    return path.with_name(path.name + ".head")


def _checkpoint_path(path: Path) -> Path:
    return path.with_name(path.name + ".checkpoint")


# ----------------------------------------------------------------------------------------------------
# the writer
# ----------------------------------------------------------------------------------------------------


class AuditLog:
    """The single writer of one audit log. Thread-safe; a second process opening the same log is refused
    (after waiting up to ``lock_timeout`` seconds for the writer to close it; default: refused at once).

    ``retention_days`` (e.g. 730-1095) enables :meth:`prune_expired`; pruned entries can be archived first.
    """

    def __init__(
        self,
        path: Path | str,
        signing_key: Ed25519PrivateKey,
        *,
        retention_days: int | None = None,
        clock: Callable[[], float] | None = None,
        lock_timeout: float = 0.0,
    ) -> None:
        import time as _time

        self._path = Path(path)
        self._key = signing_key
        self._pub = signing_key.public_key()
        self._retention_days = retention_days
        self._clock = clock or _time.time
        self._lock = threading.Lock()
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._lockfd = os.open(self._path.with_name(self._path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        deadline = _time.monotonic() + max(0.0, lock_timeout)
        while True:  # a short-lived writer (fedcheck query) may hold the lock for one append: wait for it
            try:
                fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if _time.monotonic() >= deadline:
                    os.close(self._lockfd)
                    raise ConfigError(
                        "audit log is in use by another process", reason="audit_locked"
                    ) from None
                _time.sleep(0.05)
        try:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._seq, self._last_hash = self._recover()
        except BaseException:
            self._close_fds()
            raise

    # -- recovery ----------------------------------------------------------------------------------
    def _recover(self) -> tuple[int, str]:
        """Find the last valid entry, drop an unacknowledged torn tail, reconcile with head and checkpoint."""
        head = _read_anchor(_head_path(self._path), _HEAD_CTX, self._pub)
        checkpoint = _read_anchor(_checkpoint_path(self._path), _CHECKPOINT_CTX, self._pub)
        base_seq, base_hash = checkpoint if checkpoint else (0, GENESIS_HASH)
        size = os.fstat(self._fd).st_size
        last: AuditEntry | None = None
        keep = 0
        if size:
            start = max(0, size - _TAIL_WINDOW)
            with open(self._path, "rb") as fh:
                fh.seek(start)
                tail = fh.read()
            offset = start
            if start:  # the window starts mid-line: skip to the next line
                cut = tail.find(b"\n") + 1
                if cut == 0:
                    raise IntegrityError("audit log tail is corrupt", reason="audit_corrupt")
                offset, tail = start + cut, tail[cut:]
            lines = tail[: tail.rfind(b"\n") + 1].split(b"\n")[:-1]  # bytes after the last newline are torn
            end = sum(len(ln) + 1 for ln in lines)
            for ln in reversed(lines):
                try:
                    entry: AuditEntry | None = _parse_line(ln)
                except (ValueError, UnicodeDecodeError):
                    entry = None
                if entry is not None and _entry_valid(entry, self._pub):
                    last, keep = entry, offset + end
                    break
                end -= len(ln) + 1
            if last is None and start:
                raise IntegrityError("audit log tail is corrupt", reason="audit_corrupt")
        last_seq, last_hash = (last.seq, last.hash) if last else (base_seq, base_hash)
        if head is None and last is not None:
            raise IntegrityError("audit head file missing", reason="audit_head_missing")
        if head is not None:
            # everything up to the head was acknowledged: it must all still be here
            if last_seq < head[0]:
                raise IntegrityError("audit log is missing acknowledged entries", reason="audit_truncated")
            if last_seq == head[0] and not hmac.compare_digest(last_hash, head[1]):
                raise IntegrityError("audit log does not match its signed head", reason="audit_head_mismatch")
        if keep < size:  # torn or invalid tail beyond the head: never acknowledged, drop it
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        if head is None or head[0] != last_seq:
            self._write_head(last_seq, last_hash)
        return last_seq, last_hash

    def _write_head(self, seq: int, h: str) -> bytes:
        doc = _sign_anchor(self._key, _HEAD_CTX, seq, h, {})
        atomic_write(_head_path(self._path), doc, mode=0o644)
        return base64.b64decode(json.loads(doc)["signature"])

    # -- writing -------------------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        """Validate, chain, sign and durably append ``event``; returns only once it is on disk with the head.
        """
        return self.append_anchored(event)[0]

    def append_anchored(self, event: Mapping[str, Any]) -> tuple[AuditEntry, SignedHead]:
        """:meth:`append`, also returning the signed head that acknowledges this very entry."""
        clean = check_event(event)
        with self._lock:
            if self._fd < 0:
                raise ConfigError("audit log is closed", reason="audit_closed")
            seq = self._seq + 1
            time = _utc_now_text(self._clock())
            h = _entry_hash(seq, time, self._last_hash, clean)
            sig = base64.b64encode(self._key.sign(_ENTRY_CTX + bytes.fromhex(h))).decode("ascii")
            entry = AuditEntry(seq, time, self._last_hash, clean, h, sig)
            line = entry.to_line()
            before = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, line)
                if written != len(line):
                    raise OSError("short write")
                os.fsync(self._fd)
            except OSError:
                try:
                    os.ftruncate(self._fd, before)
                    os.fsync(self._fd)
                except OSError:
                    pass
                raise IntegrityError(
                    "audit entry could not be written durably", reason="audit_write"
                ) from None
            # the line is durable: it is part of the chain from now on, whatever happens to the head (a
            # head that lags behind the log is what recovery and verify_log expect after a crash; reusing
            # this seq for the next entry would look like tampering)
            self._seq, self._last_hash = seq, h
            try:
                head_sig = self._write_head(seq, h)
            except (OSError, ValueError):
                raise IntegrityError(
                    "audit entry written but its signed head could not be updated", reason="audit_head_write"
                ) from None
            return entry, SignedHead(seq, h, head_sig)

    @property
    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last acknowledged entry: publish it off-node as the external anchor."""
        with self._lock:
            return self._seq, self._last_hash

    @property
    def signed_head(self) -> SignedHead:
        """The current head with its signature (what :meth:`append_anchored` returns for the last entry)."""
        with self._lock:
            seq, h = self._seq, self._last_hash
        # Ed25519 is deterministic: this is the signature in the .head file
        return SignedHead(seq, h, self._key.sign(_HEAD_CTX + seq.to_bytes(8, "big") + bytes.fromhex(h)))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._pub

    # -- retention -----------------------------------------------------------------------------------
    def prune_expired(self, *, archive: Path | None = None) -> int:
        """Remove entries older than ``retention_days`` (no-op without retention)."""
        if self._retention_days is None:
            return 0
        cutoff = dt.datetime.fromtimestamp(self._clock(), dt.UTC) - dt.timedelta(days=self._retention_days)
        return self.prune(before=cutoff, archive=archive)

    def prune(self, *, before: dt.datetime, archive: Path | None = None) -> int:
        """Remove the prefix of entries timestamped before ``before``, keeping the log verifiable.

        Order (crash-safe): append removed lines to ``archive`` (fsync) if given; write a signed checkpoint
        with the (seq, hash) of the last removed entry; atomically replace the log by its remaining lines.
        A crash between the last two steps leaves the full log, which still verifies against the checkpoint.
        """
        with self._lock:
            removed: list[bytes] = []
            remaining = io.BytesIO()
            last_removed: AuditEntry | None = None
            with open(self._path, "rb") as fh:
                pruning = True
                for raw in fh:
                    if pruning:
                        entry = _parse_line(raw.rstrip(b"\n"))
                        if entry.timestamp < before:
                            removed.append(raw)
                            last_removed = entry
                            continue
                        pruning = False
                    remaining.write(raw)
            if last_removed is None:
                return 0
            if archive is not None:
                with open(archive, "ab") as out:
                    out.writelines(removed)
                    out.flush()
                    os.fsync(out.fileno())
            atomic_write(
                _checkpoint_path(self._path),
                _sign_anchor(
                    self._key,
                    _CHECKPOINT_CTX,
                    last_removed.seq,
                    last_removed.hash,
                    {"pruned_through": last_removed.time, "at": _utc_now_text(self._clock())},
                ),
                mode=0o644,
            )
            atomic_write(self._path, remaining.getvalue())
            os.close(self._fd)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND, 0o600)
            return len(removed)

    # -- lifecycle -----------------------------------------------------------------------------------
    def _close_fds(self) -> None:
        for name in ("_fd", "_lockfd"):
            fd = getattr(self, name, -1)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, name, -1)

    def close(self) -> None:
        with self._lock:
            self._close_fds()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AuditLog({self._path.name!r}, seq={self._seq})"


def open_audit_log(
    path: Path, signing_key: Ed25519PrivateKey, *, retention_days: int | None, owner: str, data_dir: Path
) -> AuditLog:
    """The running ``owner``'s (``node``, ``coordinator``) :class:`AuditLog`. Its lock also keeps a second
    ``owner`` off ``data_dir``: ``audit_locked`` then names the log and asks whether one is running there."""
    try:
        return AuditLog(path, signing_key, retention_days=retention_days)
    except ConfigError as exc:
        if exc.reason != "audit_locked":
            raise
        raise ConfigError(
            f"audit log {path} is in use by another process: is another {owner} already running on data_dir "
            f"{data_dir}?",
            reason="audit_locked",
        ) from None


def append_event(
    path: Path | str,
    signing_key: Ed25519PrivateKey,
    event: Mapping[str, Any],
    *,
    lock_timeout: float = 10.0,
) -> SignedHead:
    """Open the log at ``path``, durably append one ``event`` and close it again; returns the signed head.

    For short-lived writers that share a log (several ``fedcheck query`` commands of one node writing its
    querier log): the single-writer lock is held only for this one append, and a writer that finds it taken
    waits up to ``lock_timeout`` seconds (then ``ConfigError`` ``audit_locked``).
    """
    with AuditLog(path, signing_key, lock_timeout=lock_timeout) as log:
        return log.append_anchored(event)[1]


# ----------------------------------------------------------------------------------------------------
# reading and verification
# ----------------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    """Result of :func:`verify_log`. ``ok`` is False when any error was found; ``errors`` say where and what.
    """

    ok: bool = True
    entries: int = 0
    first_seq: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    head_seq: int | None = None
    checkpoint_seq: int | None = None
    torn_tail: bool = False
    unacknowledged: int = 0
    errors: list[str] = field(default_factory=list)

    def fail(self, message: str) -> None:
        self.ok = False
        if len(self.errors) < 100:
            self.errors.append(message)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_entries(path: Path | str) -> Iterator[AuditEntry]:
    """Parse complete lines (no signature checks; use :func:`verify_log` for that). Skips a torn last line."""
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                return
            try:
                yield _parse_line(raw[:-1])
            except (ValueError, UnicodeDecodeError):
                continue


def verify_log(
    path: Path | str,
    public_key: Ed25519PublicKey,
    *,
    expected_head: tuple[int, str] | None = None,
    require_head: bool = True,
) -> VerifyReport:
    """Verify every entry, the chain, the start (genesis or signed checkpoint) and the end (signed head).

    ``expected_head`` is an external anchor (seq, hash) the log must still contain -- it detects a rollback of
    log and head together. Errors name line numbers and seq values only.
    """
    p = Path(path)
    report = VerifyReport()
    try:
        head = _read_anchor(_head_path(p), _HEAD_CTX, public_key)
        checkpoint = _read_anchor(_checkpoint_path(p), _CHECKPOINT_CTX, public_key)
    except IntegrityError as exc:
        report.fail(exc.message)
        return report
    report.head_seq = head[0] if head else None
    report.checkpoint_seq = checkpoint[0] if checkpoint else None
    anchors: dict[int, str] = {}
    if head:
        anchors[head[0]] = head[1]
    if expected_head:
        anchors.setdefault(expected_head[0], expected_head[1])
    if checkpoint:
        anchors.setdefault(checkpoint[0], checkpoint[1])
    seen_anchor: set[int] = set()
    prev: AuditEntry | None = None
    if not p.exists():
        report.fail("audit log file missing")
        return report
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.endswith(b"\n"):
                report.torn_tail = True  # a crash mid-append: never acknowledged
                break
            try:
                entry = _parse_line(raw[:-1])
            except (ValueError, UnicodeDecodeError):
                report.fail(f"line {lineno}: not a well-formed entry")
                prev = None
                continue
            report.entries += 1
            if raw != entry.to_line():
                report.fail(f"line {lineno} (seq {entry.seq}): not in canonical form (edited)")
            if not _entry_valid(entry, public_key):
                report.fail(
                    f"line {lineno} (seq {entry.seq}): hash or signature invalid (modified or forged)"
                )
            if prev is None and report.entries == 1:
                report.first_seq = entry.seq
                if entry.seq == 1:
                    if entry.prev_hash != GENESIS_HASH:
                        report.fail("line 1: first entry does not start the chain")
                elif checkpoint and entry.seq == checkpoint[0] + 1:
                    if not hmac.compare_digest(entry.prev_hash, checkpoint[1]):
                        report.fail("line 1: does not continue from the signed retention checkpoint")
                elif not (checkpoint and entry.seq <= checkpoint[0]):
                    report.fail(f"line 1: log starts at seq {entry.seq}: earlier entries deleted")
            elif prev is not None:
                if entry.seq != prev.seq + 1:
                    report.fail(
                        f"line {lineno}: seq {entry.seq} follows {prev.seq} (reordered, inserted or deleted)"
                    )
                if not hmac.compare_digest(entry.prev_hash, prev.hash):
                    report.fail(
                        f"line {lineno} (seq {entry.seq}): chain broken (previous entry changed or removed)"
                    )
            if entry.seq in anchors:
                seen_anchor.add(entry.seq)
                if not hmac.compare_digest(entry.hash, anchors[entry.seq]):
                    report.fail(f"seq {entry.seq}: does not match its signed anchor")
            prev = entry
    if prev is not None:
        report.last_seq, report.last_hash = prev.seq, prev.hash
    elif checkpoint:
        report.last_seq, report.last_hash = checkpoint
    if head is None:
        if require_head and report.entries:
            report.fail("signed head missing: tail truncation cannot be ruled out")
    else:
        if head[0] == 0:
            # the genesis head a fresh log is opened with (no entry acknowledged yet): nothing to find in the
            # log, but it must be the genesis hash, and cannot precede a retention checkpoint
            if not hmac.compare_digest(head[1], GENESIS_HASH):
                report.fail("signed head seq 0 is not the genesis head")
            elif checkpoint:
                report.fail("signed head seq 0 precedes the retention checkpoint")
        elif report.last_seq < head[0]:
            report.fail(f"log ends at seq {report.last_seq} but the signed head is seq {head[0]} (truncated)")
        elif head[0] not in seen_anchor and not (checkpoint and head == checkpoint):
            report.fail(f"signed head seq {head[0]} not found in the log")
        report.unacknowledged = max(0, report.last_seq - head[0])
    if expected_head is not None:
        if expected_head[0] == 0:
            if not hmac.compare_digest(expected_head[1], GENESIS_HASH):
                report.fail("external anchor seq 0 is not the genesis hash")
        elif report.last_seq < expected_head[0]:
            report.fail(f"log ends before the external anchor seq {expected_head[0]} (rolled back)")
        elif expected_head[0] not in seen_anchor and report.first_seq <= expected_head[0]:
            report.fail(f"external anchor seq {expected_head[0]} not found in the log")
    return report


# ----------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------

_REFUSAL_STATUSES = frozenset({"PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "UNAUTHENTICATED"})


def is_refusal(event: Mapping[str, Any]) -> bool:
    """True for events that record a refused request (policy, budget or authentication)."""
    return (
        event.get("type") == "refusal"
        or event.get("outcome") == "refused"
        or str(event.get("status", "")) in _REFUSAL_STATUSES
    )


def export_report(
    path: Path | str,
    public_key: Ed25519PublicKey,
    *,
    fmt: str = "json",
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    expected_head: tuple[int, str] | None = None,
) -> str:
    """Oversight report: verification result, counts by type/partner/purpose/outcome/mode, and every refusal.

    ``fmt`` is ``"json"`` or ``"csv"`` (``section,key,value`` rows, then refusal rows).
    """
    if fmt not in ("json", "csv"):
        raise InvalidInput("report format must be json or csv", reason="bad_format")
    verification = verify_log(path, public_key, expected_head=expected_head)
    counts: dict[str, Counter[str]] = {
        k: Counter() for k in ("type", "partner", "purpose", "outcome", "mode")
    }
    items: Counter[str] = Counter()
    refusals: list[dict[str, Any]] = []
    total = 0
    for entry in read_entries(path):
        ts = entry.timestamp
        if (since and ts < since) or (until and ts >= until):
            continue
        total += 1
        ev = entry.event
        partner = str(ev.get("partner") or ev.get("querier") or ev.get("holder") or "")
        # a querying node's own round (audit-querier.jsonl) names its holders in targets/statuses
        raw_statuses, raw_targets = ev.get("statuses"), ev.get("targets")
        statuses: dict[str, Any] = raw_statuses if isinstance(raw_statuses, dict) else {}
        targets = [str(t) for t in raw_targets] if isinstance(raw_targets, list) else []
        partners = [partner] if partner else targets
        for name, value in (
            ("type", ev.get("type")),
            ("purpose", ev.get("purpose")),
            ("outcome", ev.get("outcome") or ev.get("status")),
            ("mode", ev.get("mode")),
        ):
            if value:
                counts[name][str(value)] += 1
        for p in partners:
            counts["partner"][p] += 1
        by_state = ev.get("items_by_state")
        if not partner and isinstance(by_state, dict):
            for state, v in by_state.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    items[str(state)] += v
        else:
            for k in ("items", "evaluated", "batch_size"):
                v = ev.get(k)
                if isinstance(v, int) and not isinstance(v, bool) and partner:
                    items[partner] += v
                    break
        if is_refusal(ev):
            refused = {str(s): str(v) for s, v in statuses.items() if "refused" in str(v)}
            refusals.append(
                {
                    "seq": entry.seq,
                    "time": entry.time,
                    "partner": partner or ",".join(refused or targets),
                    "purpose": ev.get("purpose", ""),
                    "status": ev.get("status", ""),
                    "reason": ev.get("reason")
                    or ",".join(ev.get("reasons", []) or [])
                    or "; ".join(f"{s}: {v}" for s, v in refused.items()),
                    "unit": ev.get("unit", ""),
                    "official": ev.get("official", ""),
                }
            )
    doc: dict[str, Any] = {
        "log": Path(path).name,
        "generated": _utc_now_text(dt.datetime.now(dt.UTC).timestamp()),
        "period": {
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
        },
        "verification": {
            "ok": verification.ok,
            "entries": verification.entries,
            "first_seq": verification.first_seq,
            "last_seq": verification.last_seq,
            "last_hash": verification.last_hash,
            "errors": verification.errors,
        },
        "entries_in_period": total,
        "counts": {k: dict(sorted(v.items())) for k, v in counts.items()},
        "items_by_partner": dict(sorted(items.items())),
        "refusals": refusals,
    }
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["section", "key", "value"])
    for k, v in doc["verification"].items():
        w.writerow(["verification", k, ";".join(v) if isinstance(v, list) else v])
    w.writerow(["summary", "entries_in_period", total])
    for section, counter in doc["counts"].items():
        for key, value in counter.items():
            w.writerow([f"count_by_{section}", key, value])
    for key, value in doc["items_by_partner"].items():
        w.writerow(["items_by_partner", key, value])
    w.writerow([])
    w.writerow(["refusal_seq", "time", "partner", "purpose", "status", "reason", "unit", "official"])
    for r in refusals:
        w.writerow(
            [
                r["seq"],
                r["time"],
                r["partner"],
                r["purpose"],
                r["status"],
                r["reason"],
                r["unit"],
                r["official"],
            ]
        )
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# signing keys
# ----------------------------------------------------------------------------------------------------


def generate_signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_signing_key(path: Path | str, key: Ed25519PrivateKey, kek: KeyEncryptionKey | None) -> Path:
    """Write the private key sealed under ``kek`` (plaintext PKCS#8 only without a KEK, for development) and
    the public key next to it as ``<path>.pub.pem`` (give that to the oversight body). Returns the public
    key path.
    """
    p = Path(path)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(p, seal_bytes(pem, kek, aad=_KEY_AAD) if kek is not None else pem)
    pub = p.with_name(p.name + ".pub.pem")
    atomic_write(
        pub,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        mode=0o644,
    )
    return pub


def ensure_signing_key(path: Path | str, kek: KeyEncryptionKey | None) -> bool:
    """Create the audit signing key at ``path`` (and its directory) when there is none yet, as
    :func:`save_signing_key` writes it: on the first start of a node or coordinator, or the first query of a
    node (normally ``fedcheck node dev-secrets`` or ``audit keygen`` made it). True when it was created."""
    p = Path(path)
    if p.exists():
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    save_signing_key(p, generate_signing_key(), kek)
    return True


def load_signing_key(path: Path | str, kek: KeyEncryptionKey | None) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        sealed = is_sealed_file(p)
    except OSError:
        raise ConfigError("audit signing key missing or unreadable", reason="key_unreadable") from None
    if sealed:
        if kek is None:
            raise ConfigError("audit signing key is sealed: a KEK is required", reason="kek_required")
        pem = open_sealed_file(p, kek, aad=_KEY_AAD)
    else:
        pem = p.read_bytes()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("audit signing key is not a PEM private key", reason="key_format") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("audit signing key is not Ed25519", reason="key_format")
    return key


def load_public_key(path: Path | str) -> Ed25519PublicKey:
    """The log's Ed25519 public key (the ``.pub.pem`` beside its signing key). Errors name ``path`` and say
    what is wrong: missing or unreadable, a private key instead, another PEM object, not PEM at all."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"audit public key {p} does not exist", reason="key_unreadable") from None
    except OSError as exc:
        what = "is a directory" if p.is_dir() else f"cannot be read ({exc.strerror or exc})"
        raise ConfigError(f"audit public key {p} {what}", reason="key_unreadable") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        problem = _not_a_public_key(p, data)
        raise ConfigError(f"audit public key {p}: {problem}", reason="key_format") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(
            f"audit public key {p} is a public key but not Ed25519 ({type(key).__name__})",
            reason="key_format",
        )
    return key


def _not_a_public_key(path: Path, data: bytes) -> str:
    """Why ``data`` is no PEM public key, judged from its PEM label or magic (nothing of it is echoed)."""
    if is_sealed_file(path):
        return (
            "is a sealed private key (the signing key itself), not a public key: give the .pub.pem written "
            "next to it"
        )
    text = data.decode("ascii", errors="replace")
    label = re.search(r"-----BEGIN ([A-Z0-9 ]+)-----", text)
    if label is None:
        return (
            "is not PEM (expected a '-----BEGIN PUBLIC KEY-----' file: the .pub.pem next to the signing key)"
        )
    if "PRIVATE KEY" in label.group(1):
        return (
            "is a private key (the signing key itself), not a public key: give the .pub.pem written next to "
            "it, and keep the private key away from the oversight body"
        )
    return f"is PEM but a {label.group(1)}, not a public key (expected '-----BEGIN PUBLIC KEY-----')"
