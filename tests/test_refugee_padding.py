"""Refugee protection must not leak through batch sizes (security audit, HIGH).

A protected traveller (refugee/asylum flag) is excluded from the round for their State of nationality. The
signed round payload lists every target's batch size, and every holder (and the coordinator) reads it: the
querier pads the excluded keys with blinded random dummies so each target's batch has the size it would have
had without the exclusion. In-process federation: querier FRA, holders DEU and ITA (same watchlist).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fedcheck.coordinator.rounds import RoundEngine, RoundStore
from fedcheck.node.announce import AnnouncementSigner
from fedcheck.node.querier import QuerierCache, QueryOptions, QueryRunner
from fedcheck.node.replay import ReplayGuard
from fedcheck.node.service import NodeService
from fedcheck.protocol.exact import BlindedBatch, ExactQuerier, Mode
from fedcheck.records.keys import match_keys
from fedcheck.records.model import BirthDate, PersonName, PersonRecord, TravelDocument
from fedcheck.rpc import serde
from fedcheck.rpc.clients import InMemoryCoordinatorClient, InMemoryNodeClient
from fedcheck.screening.report import ScreenReport
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey
from fedcheck.trust.budget import BudgetLedger
from fedcheck.trust.pki import PeerIdentity, create_ca, issue_certificate
from fedcheck.trust.policy import HolderPolicy, QuerierPolicy
from tests.test_security_review import StubEpochs, _records

HOLDERS = ("DEU", "ITA")
COORD = PeerIdentity("coordinator", "FED", 1)


@dataclass
class Fed:
    root: Path
    ca: bytes
    certs: dict[str, tuple[bytes, bytes]]
    engine: RoundEngine
    #: per holder, per round: the targets/counts of the signed payload it had to verify
    payload_counts: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    #: per holder, per round: the blinded elements it evaluated
    received: dict[str, list[list[bytes]]] = field(default_factory=dict)
    #: every querier.blind call: (keys given, batch)
    blinds: list[tuple[list[bytes], BlindedBatch]] = field(default_factory=list)

    def runner(self) -> QueryRunner:
        d = Path(tempfile.mkdtemp(dir=self.root))
        sealer = EnvelopeSealer.open_or_create(d / "kr.json", KeyEncryptionKey.generate())
        cache = QuerierCache(d / "qc.sqlite", sealer)
        return QueryRunner(
            state="FRA",
            coordinator=InMemoryCoordinatorClient(self.engine, PeerIdentity("node", "FRA", 2)),
            cache=cache,
            cert_pem=self.certs["FRA"][0],
            key_pem=self.certs["FRA"][1],
            ca_pem=self.ca,
            crl=lambda: None,
            policy=QuerierPolicy(),
        )

    def keys_sent_to(self, state: str, round_no: int = -1) -> list[bytes]:
        """The querier-side inputs (real keys and dummies) of the batch ``state`` evaluated."""
        got = self.received[state][round_no]
        matches = [keys for keys, batch in self.blinds if batch.blinded == got]
        assert len(matches) == 1
        return matches[0]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, dict[str, tuple[bytes, bytes]]]:
    d = tmp_path_factory.mktemp("refugee-pki")
    create_ca(d / "ca", federation="FED")
    certs = {}
    for s in ("FRA", *HOLDERS):
        f = issue_certificate(d / "ca", d / s, role="node", state=s)
        certs[s] = (f.cert.read_bytes(), f.key.read_bytes())
    return d, (d / "ca" / "ca.crt.pem").read_bytes(), certs


def _federation(
    pki: tuple[Path, bytes, dict[str, tuple[bytes, bytes]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    modes: list[str],
) -> Iterator[Fed]:
    _, ca, certs = pki
    pol = HolderPolicy.from_toml({"policy": {"holder": {"partners": {"FRA": {
        "modes": modes, "key_types": ["document", "name_dob"], "purposes": ["border"]}}}}})
    nodes = {}
    fed_holder: dict[str, Any] = {}
    for s in HOLDERS:
        svc = NodeService(
            state=s, epochs=StubEpochs(pol, _records(), epoch_id=f"{s}-e1"), policy=pol,
            budget=BudgetLedger(tmp_path / f"{s}b.sqlite", pol.budget_limits()), audit=lambda e: None,
            ca_pem=ca, crl=lambda: None, max_batch=4096, index_chunk_bytes=1 << 16,
            replay=ReplayGuard(tmp_path / f"{s}r.sqlite", window_seconds=600),
            announcer=AnnouncementSigner(s, *certs[s]),
        )
        orig = svc.blind_evaluate

        def spy(peer: Any, req: Any, _s: str = s, _o: Callable[..., Any] = orig) -> Any:
            p = serde.round_payload_from_bytes(req.round.payload)
            fed_holder["fed"].payload_counts.setdefault(_s, []).append({t.state: t.count for t in p.targets})
            fed_holder["fed"].received.setdefault(_s, []).append(list(req.blinded))
            return _o(peer, req)

        monkeypatch.setattr(svc, "blind_evaluate", spy)
        nodes[s] = InMemoryNodeClient(svc, COORD)
    engine = RoundEngine(nodes, RoundStore(tmp_path / "rounds.sqlite"), ca_pem=ca, crl=lambda: None)
    fed = Fed(tmp_path, ca, certs, engine)
    fed_holder["fed"] = fed
    real_blind = ExactQuerier.blind

    def blind(self: ExactQuerier, keys: list[bytes], *, mode: Mode) -> BlindedBatch:
        batch = real_blind(self, keys, mode=mode)
        fed.blinds.append((list(keys), batch))
        return batch

    monkeypatch.setattr(ExactQuerier, "blind", blind)
    yield fed
    engine.close()


@pytest.fixture
def exact_fed(pki: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fed]:
    yield from _federation(pki, tmp_path, monkeypatch, ["exact"])


@pytest.fixture
def card_fed(pki: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fed]:
    yield from _federation(pki, tmp_path, monkeypatch, ["cardinality"])


def _listed_as_traveller(i: int, nat: str, flags: frozenset[str] = frozenset()) -> PersonRecord:
    """A traveller matching watchlist entry ``w{i}`` of :func:`_records` (name + date of birth + document)."""
    return PersonRecord(
        f"listed{i}", (PersonName(f"LISTED PERSON {i}"),), birth_dates=(BirthDate(1970 + i, 1, 2),),
        documents=(TravelDocument("passport", f"P{i:06d}", "DEU"),), nationalities=(nat,), flags=flags,
    )


def _clean(i: int) -> PersonRecord:
    return PersonRecord(
        f"t{i}", (PersonName(f"TRAVELLER NUMBER {i}"),), birth_dates=(BirthDate(1980, 1, 1 + i),),
        documents=(TravelDocument("passport", f"X{i:06d}", "FRA"),), nationalities=("FRA",),
    )


def _manifest(refugee_flag: bool = True, with_refugee: bool = True) -> list[PersonRecord]:
    out = [_clean(i) for i in range(4)] + [_listed_as_traveller(0, "FRA"), _listed_as_traveller(1, "ESP")]
    if with_refugee:
        out.append(_listed_as_traveller(5, "ITA", frozenset({"refugee"}) if refugee_flag else frozenset()))
    return out


REFUGEE = "listed5"
OPTS = QueryOptions(states=HOLDERS, purpose="border", legal_basis="LB-1")


def _hits(report: ScreenReport, traveller: str) -> set[tuple[str, str, str]]:
    tr = next(t for t in report.travellers if t.traveller == traveller)
    return {(h.state, h.key_type, h.label.get("reference", "")) for h in tr.hits}


def _others(report: ScreenReport) -> dict[str, list[Any]]:
    return {t.traveller: sorted(map(repr, t.hits)) for t in report.travellers if t.traveller != REFUGEE}


def test_signed_counts_equal_and_refugee_keys_never_reach_the_state_of_nationality(exact_fed: Fed) -> None:
    refugee_keys = {k.value for k in match_keys(_manifest()[-1])}
    base = exact_fed.runner().run(_manifest(refugee_flag=False), OPTS)
    unfiltered = exact_fed.payload_counts["ITA"][-1]
    assert unfiltered["DEU"] == unfiltered["ITA"] > 0

    rep = exact_fed.runner().run(_manifest(), OPTS)
    assert rep.statuses == {"DEU": "ok", "ITA": "ok"}
    assert rep.details["ITA"]["excluded"] == 1 and "excluded" not in rep.details.get("DEU", {})
    # what every holder (and the coordinator) reads: the same counts as without the exclusion
    for s in HOLDERS:
        assert exact_fed.payload_counts[s][-1] == unfiltered
        assert len(exact_fed.received[s][-1]) == unfiltered[s]
    # ITA evaluated none of the refugee's keys; DEU evaluated them all
    ita_inputs, deu_inputs = exact_fed.keys_sent_to("ITA"), exact_fed.keys_sent_to("DEU")
    assert not refugee_keys & set(ita_inputs)
    assert refugee_keys <= set(deu_inputs)
    assert len(ita_inputs) == len(deu_inputs)
    # results: refugee checked at DEU only; everybody else exactly as without the flag
    assert _hits(rep, REFUGEE) and all(s == "DEU" for s, _, _ in _hits(rep, REFUGEE))
    assert {s for s, _, _ in _hits(base, REFUGEE)} == {"DEU", "ITA"}
    assert _hits(rep, REFUGEE) == {h for h in _hits(base, REFUGEE) if h[0] == "DEU"}
    assert _others(rep) == _others(base)
    assert _hits(rep, "listed0") and _hits(rep, "t0") == set()


def test_repeat_round_pads_like_the_unfiltered_repeat_and_never_fakes_a_cached_miss(exact_fed: Fed) -> None:
    runner = exact_fed.runner()
    first = runner.run(_manifest(), OPTS)
    rounds = len(exact_fed.received["ITA"])
    # the unfiltered repeat is answered from the cache: no round; the padded one must not send either
    again = runner.run(_manifest(), OPTS)
    assert len(exact_fed.received["ITA"]) == rounds and len(exact_fed.received["DEU"]) == rounds
    assert again.statuses == {"DEU": "ok (cached)", "ITA": "ok (cached)"}
    assert _others(again) == _others(first) and _hits(again, REFUGEE) == _hits(first, REFUGEE)
    # flag lifted: the refugee's keys go to ITA for real (a pad mark is never read as "no hit")
    lifted = runner.run(_manifest(refugee_flag=False), OPTS)
    assert len(exact_fed.received["ITA"]) == rounds + 1
    assert "DEU" not in exact_fed.payload_counts["ITA"][-1]
    assert {s for s, _, _ in _hits(lifted, REFUGEE)} == {"DEU", "ITA"}


def test_everyone_excluded_still_sends_a_full_size_batch(exact_fed: Fed) -> None:
    only = [_manifest()[-1]]
    rep = exact_fed.runner().run(only, OPTS)
    n = len(match_keys(only[0]))
    assert exact_fed.payload_counts["ITA"][-1] == {"DEU": n, "ITA": n}
    assert rep.statuses == {"DEU": "ok", "ITA": "ok"}
    assert {s for s, _, _ in _hits(rep, REFUGEE)} == {"DEU"}


def test_cardinality_counts_unchanged_by_padding(card_fed: Fed) -> None:
    card = QueryOptions(states=HOLDERS, purpose="border", legal_basis="LB-1", mode="cardinality")

    def run(manifest: list[PersonRecord]) -> tuple[dict[str, int], dict[str, int]]:
        rep = card_fed.runner().run(manifest, card)
        assert rep.statuses == {"DEU": "ok", "ITA": "ok"}
        return {c.state: c.hits for c in rep.counts}, card_fed.payload_counts["ITA"][-1]

    base, base_sizes = run(_manifest(refugee_flag=False))
    without, _ = run(_manifest(with_refugee=False))
    flagged, sizes = run(_manifest())
    assert sizes == base_sizes and sizes["DEU"] == sizes["ITA"]
    assert flagged["DEU"] == base["DEU"]
    assert flagged["ITA"] == without["ITA"] < base["ITA"]  # the refugee's keys were not evaluated by ITA
    assert not {k.value for k in match_keys(_manifest()[-1])} & set(card_fed.keys_sent_to("ITA"))
