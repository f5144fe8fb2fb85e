"""Exact-match results and labels against the conformance profile (issue #3 query rounds; protocol/exact).

Why: the point of a node is that listed persons hit, with the label the holder attached, and nobody else does.
The suite screens the profile's probes as a querier would (its own blinding, the node's index, proof checked)
and
compares with the expected hits computed from the profile by plain key intersection.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedcheck.conformance.cases._common import expect_ok
from fedcheck.conformance.model import CaseFailed, case, check
from fedcheck.conformance.profile import Expected
from fedcheck.conformance.session import IndexUnavailable, Session
from fedcheck.errors import FedcheckError

__all__: list[str] = []


@dataclass(frozen=True)
class _Screen:
    #: probe index -> set of (reference, key_type) hit
    hits: dict[int, set[Expected]]
    #: probe index -> labels seen (as dicts)
    labels: dict[int, list[dict[str, str]]]
    unopened: int
    keys: int


def screen(session: Session) -> _Screen:
    """Screen every probe of the profile in exact mode (cached for the run)."""
    cached = session.memo.get("exact.screen")
    if isinstance(cached, _Screen):
        return cached
    from fedcheck.protocol.exact import Evaluation, ExactIndex, ExactQuerier, Mode

    session.require_partner()
    try:
        dl = session.download_index()
    except IndexUnavailable as exc:
        raise CaseFailed(f"the test partner cannot download the index: {exc.call.describe()}") from None
    try:
        index = ExactIndex.from_bytes(dl.data)
    except FedcheckError as exc:
        raise CaseFailed(f"the index does not parse: {exc.message}") from None
    pk = bytes(session.info().epoch_public_key)
    qkeys = session.profile.query_keys()
    limit = max(1, session.info().limits.max_batch)
    querier = ExactQuerier()
    hits: dict[int, set[Expected]] = {}
    labels: dict[int, list[dict[str, str]]] = {}
    unopened = 0
    for start in range(0, len(qkeys), limit):
        part = qkeys[start:start + limit]
        batch = querier.blind([q.key.value for q in part], mode=Mode.EXACT)
        resp = expect_ok(session.blind_evaluate(batch.blinded), "exact-mode BlindEvaluate of the profile")
        try:
            result = querier.finalize(batch, Evaluation(list(resp.evaluated), bytes(resp.proof)),
                                      public_key=pk, index=index)
        except FedcheckError as exc:
            raise CaseFailed(f"finalising the profile batch failed: {exc.message} [{exc.reason}]") from None
        unopened += result.unopened
        for h in result.hits:
            probe = part[h.position].probe
            hits.setdefault(probe, set()).add(Expected(h.label.get("reference", ""), h.key_type))
            labels.setdefault(probe, []).append(dict(h.label))
    out = _Screen(hits, labels, unopened, len(qkeys))
    session.memo["exact.screen"] = out
    return out


@case("exact.profile_loaded", title="the node's index covers the conformance profile",
      spec="docs/conformance.md (profile import); common.proto NodeInfo.index_size")
def profile_loaded(session: Session) -> str:
    """NodeInfo.index_size must be at least the profile's number of distinct match keys (the node imported
    the profile watchlist before the run)."""
    want = session.profile.index_keys()
    got = session.info().index_size
    check(got >= want, f"index_size={got} < {want} match keys of profile {session.profile.name!r}: "
          "import the profile watchlist (fedcheck conformance profile --out FILE) first")
    return f"index_size={got} >= {want}"


@case("exact.must_hit", title="every listed probe hits its listed entry",
      spec="issue #3 (which States hit, on which key type, with the label); protocol/exact",
      needs=("partner",))
def must_hit(session: Session) -> str:
    """Probes copied from the list, or sharing its document or name and date of birth, must each hit the entry
    they were derived from."""
    s = screen(session)
    missed = []
    for i, p in enumerate(session.profile.probes):
        if p.must_hit and not ({e.reference for e in p.expected} & {e.reference for e in s.hits.get(i,
                                                                                                    set())}):
            missed.append(f"{p.probe_id}({p.kind})")
    n = sum(p.must_hit for p in session.profile.probes)
    check(not missed, f"{len(missed)}/{n} expected hits missing: {', '.join(missed[:8])}",
          missed=missed, unopened_labels=s.unopened)
    return f"{n}/{n} expected hits"


@case("exact.must_not_hit", title="probes that are not listed do not hit",
      spec="issue #3; protocol/exact", needs=("partner",))
def must_not_hit(session: Session) -> str:
    """Fresh travellers and near misses (same name, other birth year and passport) must produce no hit at
    all."""
    s = screen(session)
    wrong = [f"{p.probe_id}({p.kind})" for i, p in enumerate(session.profile.probes)
             if not p.must_hit and s.hits.get(i)]
    n = sum(not p.must_hit for p in session.profile.probes)
    check(not wrong, f"{len(wrong)}/{n} unlisted probes hit: {', '.join(wrong[:8])}", false_hits=wrong)
    return f"0/{n} false hits"


@case("exact.key_types", title="hits name the key type they matched on, and only expected ones",
      spec="fedcheck.records.keys KeyType; issue #3 (on which key type)", needs=("partner",))
def key_types(session: Session) -> str:
    """Every reported (entry, key type) must be one the profile expects for that probe, and a probe that
    shares only a passport with a listed person must hit on ``document`` alone."""
    s = screen(session)
    bad = []
    for i, p in enumerate(session.profile.probes):
        extra = s.hits.get(i, set()) - set(p.expected)
        if extra:
            bad.append(f"{p.probe_id}: unexpected {sorted((e.reference, e.key_type) for e in extra)[:3]}")
    check(not bad, "; ".join(bad[:5]))
    return f"{sum(len(v) for v in s.hits.values())} (entry, key type) hits, all expected"


@case("exact.labels", title="hit labels are the holder's labels (category, reference, listing date)",
      spec="fedcheck.records.model Label; issue #5 (label fields disclosed)", needs=("partner",))
def labels(session: Session) -> str:
    """Each opened label must carry ``reference`` and agree with the listed record's label on every field it
    discloses; no label may fail to open (a tag hit whose label does not open)."""
    s = screen(session)
    want = session.profile.labels
    bad: list[str] = []
    for i, labs in s.labels.items():
        pid = session.profile.probes[i].probe_id
        for lab in labs:
            ref = lab.get("reference", "")
            if ref not in want:
                bad.append(f"{pid}: label without a known reference ({sorted(lab)})")
                continue
            diff = sorted(k for k, v in lab.items() if want[ref].get(k) != v)
            if diff:
                bad.append(f"{pid}: fields {diff} differ from entry {ref}")
    check(s.unopened == 0, f"{s.unopened} index labels matched a tag but did not open")
    check(not bad, "; ".join(bad[:5]))
    return f"{sum(len(v) for v in s.labels.values())} labels match the profile"
