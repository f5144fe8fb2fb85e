"""The conformance profile: a deterministic synthetic watchlist, the probes the suite sends, and the expected
hits.

Why: a black-box suite can only judge "did it hit?" if it knows the list. The node under test imports
:func:`write_watchlist`'s file before the run; the suite regenerates the same records from the profile name
(no
file needs to travel back) and knows which of its probes must hit which entry, on which key type, with which
label, and which must not hit at all.

Determinism does not rest on :mod:`random` (whose algorithms may change between Python versions): every choice
comes from SHA-256 over the profile seed and a counter. Names are invented from syllables so they cannot
collide
with real listed persons; expected hits are computed by plain set intersection of match keys, independently of
the PSI the node runs, and the generator asserts that the probes designed as misses share no key with the
list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fedcheck.errors import ConfigError
from fedcheck.records import (
    DEFAULT_KEY_TYPES,
    BirthDate,
    KeyType,
    Label,
    MatchKey,
    PersonName,
    PersonRecord,
    TravelDocument,
    match_keys,
    write_jsonl,
)

__all__ = [
    "PROFILES",
    "Expected",
    "Probe",
    "Profile",
    "QueryKey",
    "build_profile",
    "load_profile",
    "write_watchlist",
]

#: Built-in profiles: name -> (seed, list size).
PROFILES: dict[str, tuple[str, int]] = {
    "standard": ("fedcheck-conformance-profile-v1", 160),
    "small": ("fedcheck-conformance-profile-small-v1", 40),
}

_LIST_SYLLABLES = ("ka", "ro", "vin", "tal", "mer", "su", "dan", "lo", "pek", "ri", "zan", "vo", "quil",
                   "bar",
                   "nes", "tor", "hul", "gre", "mi", "sab")
_MISS_SYLLABLES = ("xu", "ophe", "yla", "wim", "fjo", "ence", "ub", "ith", "aav", "eel", "oor", "iwa")
_NATIONS = ("FRA", "KEN", "DEU", "IND", "BRA", "EGY", "CHN", "NOR", "PER", "VNM", "GHA", "CAN")
_CATEGORIES = ("conformance-alpha", "conformance-bravo", "conformance-charlie")


class _Rng:
    """SHA-256 counter stream: stable across Python versions and platforms."""

    def __init__(self, seed: str) -> None:
        self._seed = seed.encode()
        self._n = 0

    def below(self, n: int) -> int:
        self._n += 1
        d = hashlib.sha256(self._seed + self._n.to_bytes(8, "big")).digest()
        return int.from_bytes(d[:8], "big") % n

    def choice(self, items: Sequence[str]) -> str:
        return items[self.below(len(items))]


def _word(rng: _Rng, syllables: Sequence[str], parts: int) -> str:
    return "".join(rng.choice(syllables) for _ in range(parts)).upper()


@dataclass(frozen=True)
class Expected:
    """One entry a probe must hit: the listed record (its label reference) and the key type it hits on."""

    reference: str
    key_type: str


@dataclass(frozen=True)
class Probe:
    """A traveller the suite screens. ``kind``: full | document | name_dob | near_miss | miss."""

    probe_id: str
    kind: str
    record: PersonRecord
    expected: frozenset[Expected]

    @property
    def must_hit(self) -> bool:
        return bool(self.expected)


@dataclass(frozen=True)
class QueryKey:
    """One match key the suite sends, tied back to its probe."""

    probe: int
    key: MatchKey


@dataclass(frozen=True)
class Profile:
    """A generated profile; ``labels`` maps a label reference to the full label the holder stores."""

    name: str
    seed: str
    watchlist: tuple[PersonRecord, ...]
    probes: tuple[Probe, ...]
    key_types: tuple[KeyType, ...]

    @property
    def labels(self) -> dict[str, dict[str, str]]:
        return {r.label.reference: r.label.to_dict() for r in self.watchlist}

    def query_keys(self) -> list[QueryKey]:
        """Every probe's match keys, in probe order (the suite's screening batch)."""
        return [QueryKey(i, k) for i, p in enumerate(self.probes) for k in match_keys(p.record,
                                                                                      self.key_types)]

    def index_keys(self) -> int:
        """Distinct match keys of the watchlist (a lower bound for the node's index size)."""
        return len({k.value for r in self.watchlist for k in match_keys(r, self.key_types)})


def _listed(rng: _Rng, i: int) -> PersonRecord:
    given = _word(rng, _LIST_SYLLABLES, 2)
    surname = _word(rng, _LIST_SYLLABLES, 3)
    nat = rng.choice(_NATIONS)
    year = 1950 + rng.below(50)
    dob = BirthDate(year, 1 + rng.below(12), 1 + rng.below(28))
    ref = f"CONF-{i:04d}"
    return PersonRecord(
        record_id=ref,
        names=(PersonName(f"{given} {surname}", given_names=given, surname=surname),),
        birth_dates=(dob,),
        sex="F" if rng.below(2) else "M",
        nationalities=(nat,),
        documents=(TravelDocument("P", f"CF{100000 + i:06d}{rng.below(10)}", nat),),
        label=Label(category=rng.choice(_CATEGORIES), reference=ref, listing_date="2024-01-15"),
    )


def _fresh_person(rng: _Rng, probe_id: str) -> PersonRecord:
    given = _word(rng, _MISS_SYLLABLES, 2)
    surname = _word(rng, _MISS_SYLLABLES, 3)
    nat = rng.choice(_NATIONS)
    return PersonRecord(
        record_id=probe_id,
        names=(PersonName(f"{given} {surname}", given_names=given, surname=surname),),
        birth_dates=(BirthDate(1950 + rng.below(50), 1 + rng.below(12), 1 + rng.below(28)),),
        nationalities=(nat,),
        documents=(TravelDocument("P", f"QX{rng.below(10**7):07d}", nat),),
    )


def build_profile(name: str = "standard") -> Profile:
    """Generate a built-in profile (deterministic)."""
    if name not in PROFILES:
        raise ConfigError(f"unknown conformance profile (known: {', '.join(PROFILES)})", reason="profile")
    seed, size = PROFILES[name]
    rng = _Rng(seed)
    key_types = DEFAULT_KEY_TYPES
    watchlist = tuple(_listed(rng, i) for i in range(1, size + 1))
    index: dict[bytes, set[Expected]] = {}
    for rec in watchlist:
        for k in match_keys(rec, key_types):
            index.setdefault(k.value, set()).add(Expected(rec.label.reference, str(k.key_type)))

    def expected_of(rec: PersonRecord) -> frozenset[Expected]:
        out: set[Expected] = set()
        for k in match_keys(rec, key_types):
            out |= index.get(k.value, set())
        return frozenset(out)

    n = max(2, size // 16)
    probes: list[Probe] = []

    def add(kind: str, rec: PersonRecord) -> None:
        pid = f"PROBE-{len(probes) + 1:03d}"
        rec = replace(rec, record_id=pid, label=Label())
        probes.append(Probe(pid, kind, rec, expected_of(rec)))

    stride = max(1, size // (4 * n))
    picks = [watchlist[(j * stride) % size] for j in range(4 * n)]
    for rec in picks[:n]:  # the listed person as listed: hits on every key type
        add("full", rec)
    for rec in picks[n:2 * n]:  # another name and date, same passport: document key only
        other = _fresh_person(rng, "x")
        add("document", replace(other, documents=rec.documents))
    for rec in picks[2 * n:3 * n]:  # same name and date of birth, another passport
        other = _fresh_person(rng, "x")
        add("name_dob", replace(rec, documents=other.documents))
    for rec in picks[3 * n:4 * n]:  # same name, born 3 years later, another passport: must not hit
        d = rec.birth_dates[0]
        other = _fresh_person(rng, "x")
        add("near_miss", replace(rec, birth_dates=(BirthDate(d.year + 3, d.month, d.day),),
                                 documents=other.documents))
    while sum(p.kind == "miss" for p in probes) < 3 * n:
        add("miss", _fresh_person(rng, "x"))

    for p in probes:
        if p.kind in ("miss", "near_miss") and p.expected:
            raise AssertionError(f"profile generator: {p.probe_id} ({p.kind}) collides with the list")
        if p.kind in ("full", "document", "name_dob") and not p.expected:
            raise AssertionError(f"profile generator: {p.probe_id} ({p.kind}) hits nothing")
    return Profile(name=name, seed=seed, watchlist=watchlist, probes=tuple(probes), key_types=key_types)


def load_profile(spec: str) -> Profile:
    """A built-in profile by name (the only kind so far; a file-based profile would go here)."""
    return build_profile(spec)


def write_watchlist(profile: Profile, path: Path) -> int:
    """Write the profile's watchlist as canonical JSON Lines for ``fedcheck watchlist import``."""
    return write_jsonl(profile.watchlist, path)
