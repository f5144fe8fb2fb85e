"""The fan-out both coordinator round kinds share: submitter check, parallel holder calls, deadline, statuses.

Why one place: an exact round (``BlindEvaluate``) and a fuzzy round (``FuzzyScore``) reach their holders the
same way -- every target asked in parallel with the remaining time as its deadline, a State that is not a
member or does not answer in time reported as such, one State down never blocking the others, metadata kept
and the round audited before the answer leaves. Only the holder call and the round's audit entry differ, so
those are what the round engines pass in (:mod:`fedcheck.coordinator.rounds`,
:mod:`fedcheck.coordinator.fuzzy`).

Once the holders were asked, their answers are charged to the querier's budgets, so nothing a holder returns
may cost the querier the other holders' answers: a holder's reason codes are relayed only as short codes,
an audit entry the log refuses (a value it will not store) is replaced by a reduced entry (what the
coordinator itself derived plus what was already validated -- each State's status with its relayed reason
code, the well-formed audit heads (``anchors``) -- never other holder-supplied text,
``reasons = [audit_reduced, <why>]``), and when even that cannot be appended the answer is held
(:class:`AuditPending`, kept in the engine's :class:`AuditBacklog`) instead of finding its round id spent.

A held entry is not left waiting for a resubmission that may never come: the backlog appends it at the next
successful append of any entry (another round, a refusal), and a background retry does so every few seconds
while something is held. A resubmission of the byte-identical request (the shipped querier sends it again
by itself, :func:`fedcheck.node.querier.collect_held`) then collects the answer, without asking the holders
again. An entry still not appended when its answer expires (result TTL) or the coordinator stops is appended
in its reduced form (``reasons = [audit_reduced, audit_pending_expired | coordinator_stopped]``); if even that
fails, an ERROR line names the round id, the querier State and the reason (never a payload).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fedcheck.errors import (
    BudgetExhausted,
    FedcheckError,
    InvalidInput,
    PreconditionFailed,
    Unauthenticated,
    Unavailable,
)
from fedcheck.node import metrics
from fedcheck.rpc import serde
from fedcheck.rpc.clients import NodeTransport
from fedcheck.rpc.errors import MAX_RETRY_AFTER_S, relayed_reason, relayed_reasons
from fedcheck.rpc.messages import (
    Evaluation,
    FuzzyReleaseReply,
    FuzzyScore,
    HolderResult,
    HolderStatus,
    RoundPayload,
    RoundResult,
    SignedEnvelope,
)
from fedcheck.trust.pki import PeerIdentity, RevocationList, verify_payload

if TYPE_CHECKING:
    from fedcheck.coordinator.rounds import RoundStore

__all__ = [
    "AnchoredAnswer",
    "AuditBacklog",
    "AuditPending",
    "HolderCall",
    "anchor_fields",
    "answers",
    "append_audit",
    "ask_holder",
    "holder_status",
    "holder_statuses",
    "reduced_round_event",
    "round_event",
    "round_outcome",
    "run_round",
    "submitter",
    "well_formed_head",
]

_log = logging.getLogger("fedcheck.coordinator")

#: One holder's call: ``(state, transport, timeout_seconds) -> HolderResult`` with status OK and the answer
#: set (latency is filled in by :func:`ask_holder`); raising a :class:`FedcheckError` maps to a status.
HolderCall = Callable[[str, NodeTransport, float], HolderResult]

#: Appends one audit event durably before returning (``AuditLog.append``).
AuditFn = Callable[[Mapping[str, Any]], object]

#: A holder answer carrying its signed audit head (``audit_seq`` / ``audit_hash`` / ``audit_signature``)
AnchoredAnswer = Evaluation | FuzzyScore | FuzzyReleaseReply

#: default seconds between background attempts to append held audit entries
AUDIT_RETRY_SECONDS = 5.0

_T = TypeVar("_T")


class AuditPending(Unavailable, Generic[_T]):
    """The holders answered (and charged the querier) but the coordinator's audit entry could not be appended.

    The answer (``value``) does not leave unaudited; the round engine keeps this exception in its
    :class:`AuditBacklog` for the result TTL, which appends ``event`` (or ``reduced``) as soon as the log
    takes it again and hands the answer to a resubmission of the same request -- so the round id is not spent
    on a failure after the fan-out, and the entry is not lost."""

    def __init__(
        self, value: _T, audit: AuditFn, event: Mapping[str, Any], reduced: Mapping[str, Any]
    ) -> None:
        super().__init__(
            "the holders answered but the coordinator could not record the round in its audit log yet; "
            "resubmit the same request (same round id and payload) to collect the answer",
            reason="audit_pending",
        )
        self.value = value
        self._audit = audit
        #: the full audit entry and its reduced form (appended if the log refuses the full one)
        self.event = event
        self.reduced = reduced

    def retry(self) -> _T:
        """Append the held entry now and return the answer; raises a new :class:`AuditPending` if it still
        cannot be appended."""
        return finish_audit(self.value, self._audit, self.event, self.reduced)


@dataclass
class _Held:
    digest: str
    expires: float
    pending: AuditPending[Any]
    audited: bool = False


class AuditBacklog:
    """Answers held because their audit entry could not be appended (:class:`AuditPending`), until collected.

    Every audit append of the engines goes through :meth:`sink`, which after a successful append also
    appends the held entries (:meth:`flush`); while anything is held a background thread retries every
    ``retry_seconds`` and expires what is due. :meth:`collect` (an identical resubmission) appends the entry
    if that has not happened yet and returns the answer. An entry still not appended at expiry or
    :meth:`close` is appended in its reduced form, marked ``reasons = [audit_reduced, <why>]``; when even
    that fails an ERROR line names round id, querier and holder State (never payloads). Appends of held
    entries are serialised, so an entry is never appended twice."""

    def __init__(self, audit: AuditFn | None, *, retry_seconds: float = AUDIT_RETRY_SECONDS) -> None:
        self._audit = audit
        self._retry = retry_seconds
        #: guards ``_held`` and ``_thread`` (never held across an append)
        self._lock = threading.Lock()
        #: serialises the appends of held entries (flush, collect, expiry)
        self._append_lock = threading.RLock()
        self._held: dict[Hashable, _Held] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the engines' audit sink ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether there is an audit log to append to at all."""
        return self._audit is not None

    def sink(self, event: Mapping[str, Any]) -> object:
        """Append ``event`` (raises like the audit log), then the held entries the log takes again."""
        if self._audit is None:
            return None
        out = self._audit(event)
        if self.waiting():
            try:
                self.flush()
            except Exception:  # the caller's entry is appended; a held one stays held
                _log.exception("held audit entries could not be flushed")
        return out

    def waiting(self) -> int:
        """How many held entries are not appended yet."""
        with self._lock:
            return sum(1 for h in self._held.values() if not h.audited)

    # -- holding and collecting ----------------------------------------------------------------------------

    def hold(self, key: Hashable, digest: str, pending: AuditPending[Any], ttl_seconds: float) -> None:
        """Keep ``pending`` (an answer whose entry could not be appended) under ``key`` for ``ttl_seconds``;
        ``digest`` is the submitted payload's (a resubmission must match it)."""
        with self._lock:
            self._held[key] = _Held(digest, time.monotonic() + ttl_seconds, pending)
            if self._retry > 0 and not self._stop.is_set() and self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="audit-backlog", daemon=True)
                self._thread.start()

    def digest(self, key: Hashable) -> str | None:
        """The payload digest of the answer held under ``key``, or ``None``."""
        with self._lock:
            held = self._held.get(key)
            return None if held is None else held.digest

    def collect(self, key: Hashable) -> object | None:
        """The answer held under ``key`` (``None`` if none), once its entry is appended -- now, if no flush
        did it yet (raises a new :class:`AuditPending` if that still fails; the answer stays held). The
        entry stays until :meth:`discard` or expiry, so concurrent identical resubmissions get it too."""
        with self._append_lock:
            with self._lock:
                held = self._held.get(key)
            if held is None:
                return None
            value: object = held.pending.value
            if held.audited:
                return value
            if self._audit is None:
                raise held.pending
            finish_audit(value, self._audit, held.pending.event, held.pending.reduced)
            with self._lock:
                held.audited = True
        if self.waiting():  # a successful append: the log takes entries again
            self.flush()
        return value

    def collect_round(self, key: Hashable) -> RoundResult:
        """The round answer held under ``key`` (:meth:`collect`), for an identical resubmission of a round
        whose holders are not asked again; :class:`PreconditionFailed` ``round_expired`` if it is no longer
        held (expired meanwhile: its entry was appended or logged)."""
        value = self.collect(key)  # AuditPending if its entry still cannot be appended
        if not isinstance(value, RoundResult):
            raise PreconditionFailed(
                "round results are no longer held; submit a new round id", reason="round_expired"
            )
        return value

    def discard(self, key: Hashable) -> None:
        """Forget a collected answer (the engine keeps it with its results from now on)."""
        with self._lock:
            held = self._held.get(key)
            if held is not None and held.audited:
                del self._held[key]

    # -- flushing, expiry ----------------------------------------------------------------------------------

    def flush(self) -> int:
        """Append the held entries not appended yet (oldest first); returns how many were. Stops at the
        first failure other than a refused value (the log is still failing: the rest stay held)."""
        if self._audit is None:
            return 0
        done = 0
        with self._append_lock:
            with self._lock:
                todo = [h for h in self._held.values() if not h.audited]
            for held in todo:
                with self._lock:
                    if held.audited:
                        continue
                try:
                    append_audit(self._audit, held.pending.event, held.pending.reduced)
                except InvalidInput:
                    continue  # this entry is refused even reduced; at expiry: reduced again, or logged
                except Exception:
                    break
                with self._lock:
                    held.audited = True
                done += 1
        if done:
            _log.info("held audit entries appended", extra={"count": done})
        return done

    def expire(self, now: float | None = None) -> None:
        """Drop what is due: an answer whose entry was appended simply goes; one whose entry was not gets
        the reduced entry appended (``audit_pending_expired``), or an ERROR line."""
        self._drop(now if now is not None else time.monotonic(), "audit_pending_expired")

    def close(self) -> None:
        """Stop the background retry; append what is still held (flush, then reduced entries marked
        ``coordinator_stopped``, else ERROR lines)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10.0)
        try:
            self.flush()
        except Exception:
            _log.exception("held audit entries could not be flushed")
        self._drop(float("inf"), "coordinator_stopped")

    def _drop(self, now: float, why: str) -> None:
        with self._lock:  # the common case, on every submission: nothing due, no waiting for a flush
            if not any(h.expires < now for h in self._held.values()):
                return
        with self._append_lock:
            with self._lock:
                due = [(k, h) for k, h in self._held.items() if h.expires < now]
                for k, _ in due:
                    del self._held[k]
            for _, held in due:
                if not held.audited:
                    self._record_lost(held.pending, why)

    def _record_lost(self, pending: AuditPending[Any], why: str) -> None:
        event = pending.event
        where = {
            "round_id": str(event.get("round_id", "")),
            "partner": str(event.get("querier", "")),
            "state": str(event.get("holder", "")),
            "reason": why,
        }
        try:
            if self._audit is None:
                raise RuntimeError("no audit log")
            self._audit({**pending.reduced, "reasons": ["audit_reduced", why]})
        except Exception as exc:
            _log.error(
                "held audit entry lost: neither the entry nor its reduced form could be appended, though the"
                " request was answered (and charged) by the holders",
                extra={**where, "status": str(getattr(exc, "reason", type(exc).__name__))},
            )
            return
        _log.warning(
            "held audit entry recorded in its reduced form; its answer was not collected", extra=where
        )

    def _loop(self) -> None:
        while not self._stop.wait(self._retry):
            try:
                self.expire()
                self.flush()
            except Exception:
                _log.exception("held audit entries could not be flushed")
            with self._lock:
                if not any(not h.audited for h in self._held.values()):
                    self._thread = None
                    return
        with self._lock:
            self._thread = None


def refusal_event(peer: PeerIdentity, round_id: str, exc: FedcheckError) -> dict[str, Any]:
    """The coordinator's audit entry for a submission it refused itself (round, index relay, follow-up)."""
    return {
        "type": "refusal", "peer": peer.name, "querier": peer.state, "round_id": round_id or "",
        "outcome": "refused", "status": exc.status, "reason": exc.reason,
    }


def append_audit(audit: AuditFn, event: Mapping[str, Any], reduced: Mapping[str, Any]) -> None:
    """Append ``event``; if the audit log refuses it (:class:`InvalidInput`: a value it will not store, e.g.
    something a holder returned), append ``reduced`` instead -- marked ``reasons = [audit_reduced, <why>]`` --
    like the holders' refusal audit (:class:`fedcheck.node.gate.RequestGate`). Other failures propagate."""
    try:
        audit(event)
        return
    except InvalidInput as exc:
        why = exc.reason
    _log.warning(
        "audit event refused by the audit log; recording the reduced event",
        extra={"round_id": str(event.get("round_id", "")), "reason": why},
    )
    audit({**reduced, "reasons": ["audit_reduced", why]})


def finish_audit(value: _T, audit: AuditFn, event: Mapping[str, Any], reduced: Mapping[str, Any]) -> _T:
    """:func:`append_audit`, then ``value``; if nothing could be appended, an :class:`AuditPending` holding
    ``value``."""
    try:
        append_audit(audit, event, reduced)
    except Exception as exc:
        _log.error(
            "audit entry could not be appended; holding the answer for a resubmission",
            extra={"round_id": str(event.get("round_id", "")), "reason": getattr(exc, "reason", "internal")},
            exc_info=not isinstance(exc, FedcheckError),
        )
        raise AuditPending(value, audit, event, reduced) from exc
    return value


def submitter(
    peer: PeerIdentity,
    env: SignedEnvelope,
    *,
    ca_pem: bytes,
    crl: Callable[[], RevocationList | None],
    verify: bool,
    what: str,
) -> PeerIdentity:
    """The verified signer of a submitted ``env``, which must be the submitting node itself (``verify`` off:
    the TLS peer, for tests and demos without a PKI). ``what`` names the signed thing in the error."""
    if not verify:
        return peer
    querier = verify_payload(env.certificate_pem, ca_pem, crl(), env.payload, env.signature)
    if querier.state != peer.state or querier.role != "node":
        raise Unauthenticated(f"the {what} must be signed by the submitting node", reason="identity_mismatch")
    return querier


def holder_status(exc: FedcheckError) -> HolderStatus:
    """A holder's error as its per-State status: timeouts and outages are not refusals."""
    if isinstance(exc, Unavailable):
        return HolderStatus.TIMEOUT if exc.reason == "deadline" else HolderStatus.UNAVAILABLE
    return HolderStatus.REFUSED


def ask_holder(state: str, transport: NodeTransport, call: HolderCall, deadline: float) -> HolderResult:
    """Run one holder call with what is left until ``deadline`` (unix seconds); never raises."""
    t0 = time.time()
    timeout = deadline - t0
    if timeout <= 0:
        return HolderResult(state, HolderStatus.TIMEOUT, "deadline", "the round's deadline has passed")
    try:
        answer = call(state, transport, timeout)
    except FedcheckError as exc:
        status = holder_status(exc)
        # what the holder sent is relayed to the querier and audited: short codes only, bounded numbers
        # (from_rpc_error does the same for gRPC holders; in-process transports come through here only)
        retry = exc.retry_after_s if isinstance(exc, BudgetExhausted) else 0
        return HolderResult(
            state,
            status,
            relayed_reason(exc.reason),
            exc.message[:300],
            min(max(0, int(retry)), MAX_RETRY_AFTER_S),
            latency_ms=int((time.time() - t0) * 1000),
            reasons=relayed_reasons(exc.reasons),
            code=exc.status if status is HolderStatus.REFUSED else "",
        )
    except Exception:  # a transport bug must not sink the round
        _log.exception("holder call failed", extra={"state": state})
        return HolderResult(
            state,
            HolderStatus.UNAVAILABLE,
            "internal",
            "holder call failed",
            latency_ms=int((time.time() - t0) * 1000),
        )
    return replace(answer, latency_ms=int((time.time() - t0) * 1000))


def run_round(
    *,
    nodes: Mapping[str, NodeTransport],
    pool: ThreadPoolExecutor,
    store: RoundStore,
    audit: Callable[[Mapping[str, Any]], object] | None,
    querier: PeerIdentity,
    payload: RoundPayload,
    max_deadline_seconds: float,
    items: Mapping[str, int],
    call: HolderCall,
    checks: Mapping[str, bool] | None = None,
    all_reasons: bool = True,
) -> RoundResult:
    """Ask every target in parallel until the round's deadline (capped at ``max_deadline_seconds``), then
    keep the metadata and append the round's audit entry (:func:`round_event` with ``checks`` and
    ``all_reasons``) to the audit log before the answer leaves. ``checks`` (State -> head signature
    verified, filled in by ``call``; ``None`` when no holder audit key is configured) is read after the
    fan-out.

    After the fan-out nothing loses the answers: a metadata write failure is logged, an audit entry the log
    refuses is replaced by the reduced one (:func:`append_audit`), and when no entry can be appended the
    result is raised held in :class:`AuditPending` for the engine to keep."""
    started = time.time()
    deadline = min(payload.deadline_unix_ms / 1000, started + max_deadline_seconds)
    futures: dict[str, Future[HolderResult]] = {}
    for t in payload.targets:
        transport = nodes.get(t.state)
        if transport is not None:
            futures[t.state] = pool.submit(ask_holder, t.state, transport, call, deadline)
    wait_futures(list(futures.values()), timeout=max(0.0, deadline - time.time()) + 0.5)
    results: list[HolderResult] = []
    for t in payload.targets:
        f = futures.get(t.state)
        if f is None:
            results.append(
                HolderResult(
                    t.state,
                    HolderStatus.UNAVAILABLE,
                    "unknown_state",
                    "State is not a member of this federation",
                )
            )
        elif not f.done():
            results.append(
                HolderResult(
                    t.state,
                    HolderStatus.TIMEOUT,
                    "deadline",
                    "holder did not answer before the deadline",
                    latency_ms=int((time.time() - started) * 1000),
                )
            )
        else:
            results.append(f.result())
    result = RoundResult(payload.round_id, tuple(results), int(started * 1000), int(time.time() * 1000))
    try:
        store.finish(result, items, querier.state)
    except Exception:  # round metadata; the audit entry below is the record that must exist
        _log.exception("round metadata could not be stored", extra={"round_id": payload.round_id})
    if audit is not None:  # durable before the answer leaves
        reduced = reduced_round_event(querier, payload, result, items)
        try:
            event: Mapping[str, Any] = round_event(
                querier, payload, result, items, checks, all_reasons=all_reasons
            )
        except Exception:  # building the entry from what the holders returned failed: record the reduced one
            _log.exception("round audit event could not be built", extra={"round_id": payload.round_id})
            event = {**reduced, "reasons": ["audit_reduced", "event_error"]}
        finish_audit(result, audit, event, reduced)
    for h in results:
        metrics.ROUNDS.labels(role="coordinator", state=h.state, status=str(h.status)).inc()
    metrics.ROUND_SECONDS.labels(role="coordinator").observe(time.time() - started)
    _log.info(
        "round finished",
        extra={
            "round_id": payload.round_id,
            "partner": querier.state,
            "mode": payload.mode,
            "targets": {h.state: str(h.status) for h in results},
            "ms": result.finished_unix_ms - result.started_unix_ms,
        },
    )
    return result


def round_event(
    querier: PeerIdentity,
    payload: RoundPayload,
    result: RoundResult,
    items: Mapping[str, int],
    checks: Mapping[str, bool] | None = None,
    *,
    all_reasons: bool = True,
) -> dict[str, Any]:
    """The coordinator's audit entry for a round of either kind: the shared fields, each State's status
    (:func:`holder_statuses`), the outcome (:func:`round_outcome`) and the holders' audit heads
    (:func:`anchor_fields`; ``checks`` -- State -> head signature verified, ``None`` when no holder audit key
    is configured -- adds ``anchors_verified`` / ``anchors_unverified``; States without a configured key are
    in neither). Never a payload."""
    event = _round_fields(querier, payload, result, items, all_reasons=all_reasons)
    event.update(anchor_fields(answers(result), checks))
    return event


def reduced_round_event(
    querier: PeerIdentity, payload: RoundPayload, result: RoundResult, items: Mapping[str, int]
) -> dict[str, Any]:
    """The round's audit entry without anything a holder returned beyond what was validated on arrival:
    the shared fields of :func:`round_event` (the declared texts among them passed the audit log's own rules
    at the wire), each State's status with its relayed reason code (a short code), the outcome, and the
    well-formed audit heads (``anchors``). Building it never raises."""
    event = _round_fields(querier, payload, result, items, all_reasons=False)
    try:
        event.update(anchor_fields(answers(result)))
    except Exception:  # the anchors are oversight evidence; never worth the entry
        _log.exception("round audit anchors could not be read", extra={"round_id": payload.round_id})
    return event


def _round_fields(
    querier: PeerIdentity,
    payload: RoundPayload,
    result: RoundResult,
    items: Mapping[str, int],
    *,
    all_reasons: bool,
) -> dict[str, Any]:
    """What every round entry holds, full or reduced: who asked, why, of whom, how much, per-State status,
    latency and outcome, duration."""
    return {
        "type": "round",
        "round_id": payload.round_id,
        "querier": querier.state,
        "cert_serial": str(querier.serial),
        "unit": payload.unit,
        "official": payload.official,
        "purpose": payload.purpose,
        "legal_basis": payload.legal_basis,
        "mode": payload.mode,
        "targets": [t.state for t in payload.targets],
        "items": sum(items.values()),
        "items_by_state": dict(items),
        "holders": holder_statuses(result, all_reasons=all_reasons),
        "outcome": round_outcome(result),
        "latency_ms": {h.state: h.latency_ms for h in result.results},
        "duration_ms": result.finished_unix_ms - result.started_unix_ms,
    }


def holder_statuses(result: RoundResult, *, all_reasons: bool = True) -> dict[str, str]:
    """State -> ``status`` or ``status/<reason>`` (at most 200 characters). The reason codes are relayed
    codes already (:func:`ask_holder`, :func:`fedcheck.rpc.errors.from_rpc_error`, or the coordinator's
    own, e.g. ``deadline``); ``all_reasons`` lists all of a refusal's codes comma-separated, else only the
    first."""
    out: dict[str, str] = {}
    for h in result.results:
        codes = (h.reasons or (h.reason,)) if all_reasons else (h.reason,)
        out[h.state] = (str(h.status) + (f"/{','.join(codes)}" if h.reason else ""))[:200]
    return out


def round_outcome(result: RoundResult) -> str:
    """``ok`` when every State answered, ``failed`` when none did, else ``partial``."""
    ok = sum(1 for h in result.results if h.status is HolderStatus.OK)
    return "ok" if ok == len(result.results) else ("partial" if ok else "failed")


def answers(result: RoundResult) -> dict[str, Evaluation | FuzzyScore]:
    """State -> the answer of every holder that answered (an exact evaluation or fuzzy scores)."""
    out: dict[str, Evaluation | FuzzyScore] = {}
    for h in result.results:
        answer = h.evaluation if h.evaluation is not None else h.fuzzy
        if answer is not None:
            out[h.state] = answer
    return out


def anchor_fields(
    answered: Mapping[str, AnchoredAnswer], checks: Mapping[str, bool] | None = None
) -> dict[str, Any]:
    """The audit-entry fields of the holders' heads: ``anchors`` (State -> ``SEQ:HASH``, as received) and,
    when ``checks`` is given (State -> :func:`fedcheck.coordinator.rounds.check_anchor` result; ``None`` when
    no holder audit key is configured), ``anchors_verified`` / ``anchors_unverified`` among the States that
    answered."""
    fields: dict[str, Any] = {
        "anchors": {s: f"{a.audit_seq}:{a.audit_hash}" for s, a in answered.items() if well_formed_head(a)}
    }
    if checks is not None:
        fields["anchors_verified"] = sorted(s for s, ok in checks.items() if ok and s in answered)
        fields["anchors_unverified"] = sorted(s for s, ok in checks.items() if not ok and s in answered)
    return fields


def well_formed_head(answer: AnchoredAnswer) -> bool:
    """Whether ``answer`` carries an audit head that may be stored and audited (``serde.check_audit_head``;
    answers over gRPC are checked on arrival, in-process transports are not)."""
    if not answer.audit_hash:
        return False
    try:
        serde.check_audit_head(answer.audit_seq, answer.audit_hash, answer.audit_signature)
    except (FedcheckError, TypeError):
        return False
    return True
