"""Deterministic sample data for the demo federation and tests.

Why: ``make demo`` must show a realistic round without shipping personal data beyond the public UN list.
Synthetic States' watchlists and the flight manifest are generated from a seed, so every run (and every
test) sees the same travellers and the same expected hits. The manifest plants a handful of true hits:
exact name + date of birth, transliteration variants of UN-listed names (absorbed by phonetic keys),
document-number hits with a different name spelling, swapped name order, and a typo that only the fuzzy
check can find. ``expected_hits`` says which traveller must hit which State, so tests assert outcomes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from fedcheck.records import (
    BirthDate,
    Label,
    PersonName,
    PersonRecord,
    TravelDocument,
    normalise_name,
    read_records,
)

__all__ = [
    "UN_LIST_PATH",
    "DemoData",
    "PlantedHit",
    "make_demo_data",
    "synthetic_watchlist",
    "transliteration_variant",
]

#: The real UN Security Council list snapshot shipped with the project (public data).
UN_LIST_PATH = Path(__file__).resolve().parents[2] / "data" / "un-sc-consolidated-2018-10-29.xml"

_GIVEN = {
    "FRA": ["JEAN", "MARIE", "LUC", "CAMILLE", "PIERRE", "SOPHIE", "NICOLAS", "CLAIRE", "ANTOINE", "JULIE"],
    "KEN": ["WANJIRU", "OTIENO", "KAMAU", "AKINYI", "MWANGI", "NJERI", "OCHIENG", "WAMBUI", "KIPCHOGE"],
    "DEU": ["HANS", "ANNA", "JUERGEN", "KATRIN", "STEFAN", "MONIKA", "LUKAS", "SABINE"],
    "IND": ["RAHUL", "PRIYA", "ANIL", "SUNITA", "VIKRAM", "DEEPA", "ARJUN", "KAVITA"],
    "BRA": ["JOAO", "ANA", "PEDRO", "MARIANA", "LUCAS", "FERNANDA", "RAFAEL", "BEATRIZ"],
    "EGY": ["AHMED", "FATMA", "MAHMOUD", "NOUR", "YOUSSEF", "MONA", "KARIM", "HODA"],
    "CHN": ["WEI", "FANG", "LEI", "JING", "HAO", "YAN", "TAO", "LING"],
}
_SURNAME = {
    "FRA": ["MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "PETIT", "DURAND", "LEROY", "MOREAU"],
    "KEN": ["MUTUA", "KARIUKI", "ODHIAMBO", "WAFULA", "CHEPKOECH", "NDUNGU", "KIPLAGAT", "OMONDI"],
    "DEU": ["MUELLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER"],
    "IND": ["SHARMA", "PATEL", "SINGH", "KUMAR", "GUPTA", "REDDY", "IYER", "NAIR"],
    "BRA": ["SILVA", "SANTOS", "OLIVEIRA", "SOUZA", "LIMA", "PEREIRA", "COSTA", "RIBEIRO"],
    "EGY": ["HASSAN", "IBRAHIM", "MOSTAFA", "SAYED", "FARAG", "SHERIF", "GABER", "SALEH"],
    "CHN": ["WANG", "LI", "ZHANG", "LIU", "CHEN", "YANG", "HUANG", "ZHAO"],
}

#: Travellers who are on no list draw from separate pools, so random collisions with the synthetic
#: watchlists (same name and birth year) cannot create accidental hits in the demo.
_TRAVELLER_GIVEN = ["ALICE", "BRUNO", "CHIARA", "DARIO", "ELENA", "FABIO", "GIULIA", "HUGO", "IRENE",
                    "JONAS", "KAREN", "LEON", "MARTA", "NILS", "OLGA", "PAULO", "ROSA", "SVEN", "TERESA",
                    "VIKTOR", "YARA", "ZORAN", "ASTRID", "BORIS", "CELINE", "DMITRI", "EMMA", "FELIX"]
_TRAVELLER_SURNAME = ["ANDERSSON", "BIANCHI", "CARVALHO", "DVORAK", "EKSTROM", "FONTAINE", "GALLO",
                      "HALVORSEN", "IVANOVA", "JANSSEN", "KOWALSKI", "LINDQVIST", "MARINO", "NOVAK",
                      "OKONKWO", "PETROVIC", "QUINTERO", "ROSSI", "SORENSEN", "TANAKA", "URIBE",
                      "VASQUEZ", "WOJCIK", "YILMAZ", "ZEMAN", "AALTO", "BRENNAN", "CASTILLO"]
_TRAVELLER_COUNTRIES = ["ITA", "SWE", "PRT", "CZE", "NOR", "POL", "JPN", "TUR", "COL", "IRL", "NLD"]

#: Common Latin renderings of the same Arabic/Persian name (what a departure-control system sees).
_VARIANTS = {
    "MOHAMMED": "MUHAMMAD", "MUHAMMAD": "MOHAMAD", "MOHAMED": "MUHAMMAD", "MOHAMMAD": "MOHAMMED",
    "YUSUF": "YOUSSEF", "YOUSEF": "YUSUF", "OMAR": "UMAR", "UMAR": "OMAR", "UTHMAN": "OTHMAN",
    "HUSSEIN": "HUSSAIN", "HUSAYN": "HUSSEIN", "ABDULLAH": "ABDALLAH", "ABDALLAH": "ABDULLAH",
    "HASAN": "HASSAN", "HASSAN": "HASAN", "AHMAD": "AHMED", "AHMED": "AHMAD", "KHALID": "KHALED",
    "SULAYMAN": "SULEIMAN", "SALIH": "SALEH", "IBRAHIM": "EBRAHIM", "MUSTAFA": "MOSTAFA",
}


def transliteration_variant(full_name: str) -> str | None:
    """Return the name with one token swapped for a common alternative spelling, or None if none applies."""
    found = _variant(full_name)
    return found[0] if found else None


def _variant(full_name: str) -> tuple[str, str] | None:
    tokens = normalise_name(full_name).split()
    for i, tok in enumerate(tokens):
        alt = _VARIANTS.get(tok)
        if alt is not None:
            return " ".join([*tokens[:i], alt, *tokens[i + 1 :]]), tok
    return None


@dataclass(frozen=True)
class PlantedHit:
    """A traveller the demo expects to hit ``state`` (and why)."""

    traveller: str
    state: str
    how: str
    fuzzy_only: bool = False


@dataclass
class DemoData:
    watchlists: dict[str, list[PersonRecord]]
    manifest: list[PersonRecord]
    planted: list[PlantedHit] = field(default_factory=list)


def _person(rng: random.Random, country: str, idx: int, prefix: str) -> PersonRecord:
    given = rng.choice(_GIVEN[country])
    surname = rng.choice(_SURNAME[country])
    year = rng.randint(1950, 2004)
    dob = BirthDate(year, rng.randint(1, 12), rng.randint(1, 28))
    doc = TravelDocument("P", f"{country[:2]}{rng.randrange(10**7):07d}", country)
    return PersonRecord(
        record_id=f"{prefix}{idx:05d}",
        names=(PersonName(f"{given} {surname}", given_names=given, surname=surname),),
        birth_dates=(dob,),
        sex=rng.choice(["M", "F"]),
        nationalities=(country,),
        documents=(doc,),
    )


def _swap_first_consonants(word: str) -> str:
    """A keying slip that reorders consonants, so phonetic keys (which drop vowels) differ too."""
    pos = [i for i, c in enumerate(word) if c not in "AEIOUY"]
    if len(pos) < 2:
        return word + "X"
    chars = list(word)
    a, b = pos[0], pos[1]
    chars[a], chars[b] = chars[b], chars[a]
    return "".join(chars)


def _traveller(rng: random.Random, idx: int) -> PersonRecord:
    country = rng.choice(_TRAVELLER_COUNTRIES)
    given, surname = rng.choice(_TRAVELLER_GIVEN), rng.choice(_TRAVELLER_SURNAME)
    return PersonRecord(
        record_id=f"m{idx:05d}",
        names=(PersonName(f"{given} {surname}", given_names=given, surname=surname),),
        birth_dates=(BirthDate(rng.randint(1940, 2010), rng.randint(1, 12), rng.randint(1, 28)),),
        sex=rng.choice(["M", "F"]),
        nationalities=(country,),
        documents=(TravelDocument("P", f"X{rng.randrange(10**8):08d}", country),),
    )


def synthetic_watchlist(state: str, size: int, seed: int) -> list[PersonRecord]:
    """A deterministic synthetic watchlist for ``state`` (people of several nationalities)."""
    rng = random.Random(f"watchlist/{state}/{seed}")
    countries = sorted(_GIVEN)
    out = []
    for i in range(size):
        person = _person(rng, rng.choice(countries), i, f"{state}-")
        label = Label(category=rng.choice(["wanted", "stolen-document", "sanctions"]),
                      reference=f"{state}/{2020 + i % 5}/{i:05d}", listing_date="2024-01-15")
        out.append(replace(person, label=label))
    return out


def _un_records(path: Path) -> list[PersonRecord]:
    result = read_records(path, "un-xml")
    return sorted(result.records, key=lambda r: r.label.reference)


def make_demo_data(*, travellers: int = 300, seed: int = 2026, un_path: Path = UN_LIST_PATH) -> DemoData:
    """Watchlists for FRA, KEN and UNX (the real UN list) and a flight manifest with planted hits."""
    rng = random.Random(f"manifest/{seed}")
    fra = synthetic_watchlist("FRA", 2000, seed)
    ken = synthetic_watchlist("KEN", 1500, seed)
    un = _un_records(un_path)
    manifest: list[PersonRecord] = []
    planted: list[PlantedHit] = []

    def add(record: PersonRecord, state: str | None, how: str, fuzzy_only: bool = False) -> None:
        tid = f"T{len(manifest) + 1:03d}"
        manifest.append(replace(record, record_id=tid, label=Label()))
        if state is not None:
            planted.append(PlantedHit(tid, state, how, fuzzy_only))

    exact_dob = [r for r in un if any(d.day is not None for d in r.birth_dates)]
    # 1. UN-listed person, name and exact date of birth as listed.
    add(exact_dob[0], "UNX", "name + exact date of birth")
    # 2-3. UN-listed people travelling under a transliteration variant of their name.
    swapped: set[str] = set()  # one example per spelling family, for a varied demo
    for rec in un:
        found = _variant(rec.names[0].full_name)
        if found and found[1] not in swapped and rec.birth_dates and rec.nationalities and len(swapped) < 4:
            add(replace(rec, names=(PersonName(found[0]),), documents=()), "UNX",
                f"transliteration variant ({found[1]} -> {_VARIANTS[found[1]]})")
            swapped.add(found[1])
            swapped.add(_VARIANTS[found[1]])
    # 4. UN-listed document number, with a different spelling of the name.
    with_doc = [r for r in un if any(d.number and d.issuer for d in r.documents)]
    doc_rec = with_doc[0]
    add(replace(doc_rec, names=(PersonName("JOHN DOE"),), birth_dates=()), "UNX", "document number")
    # 5. FRA-listed person, name order swapped (keys sort tokens).
    f = fra[10]
    n = f.names[0]
    add(replace(f, names=(PersonName(f"{n.surname} {n.given_names}"),)), "FRA", "name order swapped")
    # 6. FRA-listed stolen document used by someone else.
    f2 = fra[20]
    add(replace(_traveller(rng, 0), documents=f2.documents), "FRA", "document number")
    # 7. KEN-listed person, exact.
    add(ken[5], "KEN", "name + exact date of birth")
    # 8. KEN-listed person with a typo in the surname: only the fuzzy check can find it.
    k = ken[7]
    kn = k.names[0]
    typo = _swap_first_consonants(kn.surname)
    add(replace(k, names=(PersonName(f"{kn.given_names} {typo}"),), documents=()), "KEN", "typo", True)
    # Fill with travellers who are on no list.
    i = 1
    while len(manifest) < travellers:
        add(_traveller(rng, i), None, "")
        i += 1
    return DemoData({"FRA": fra, "KEN": ken, "UNX": un}, manifest, planted)
