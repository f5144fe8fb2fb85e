"""FollowTheMoney / OpenSanctions entity streams (JSON Lines) -> canonical watchlist records.

Parses the documented FtM schema directly instead of depending on the ``followthemoney`` package (see
``docs/formats.md``: it pulls ~35 packages and ~275 MB into the node for a handful of properties here).

Only ``Person`` entities become records. ``Passport`` and ``Identification`` entities (flat, linked by
``holder``; or nested inside a person as OpenSanctions' nested export does) become the holder's documents.
Everything else is counted and skipped with a reason. Repeated ids are FtM *fragments* of one entity and are
merged, so the result depends only on the set of statements: re-importing a file changes nothing.
Messages name lines and property names only, never values.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fedcheck.errors import FormatError, InvalidInput
from fedcheck.formats._common import country_from_alpha2
from fedcheck.records.io import ReadResult, Rejection, open_input
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.records.normalise import detect_script

__all__ = ["DROP_REASONS", "SKIP_REASONS", "FtmImport", "entity_to_record", "read_ftm", "read_ftm_lines"]

#: name properties -> PersonName.quality. ``weakAlias`` is FtM's "low-quality alias".
NAME_PROPERTIES = (("name", "good"), ("alias", "good"), ("previousName", "good"), ("weakAlias", "low"))
DOCUMENT_SCHEMATA = frozenset({"Passport", "Identification"})
#: topics in order of precedence for ``Label.category`` (FtM topic vocabulary).
CATEGORY_TOPICS = (
    "sanction",
    "sanction.linked",
    "sanction.counter",
    "crime.terror",
    "crime.war",
    "wanted",
    "crime",
    "debarment",
    "role.pep",
    "role.rca",
    "poi",
)
_GENDER = {"male": "M", "female": "F", "m": "M", "f": "F"}


#: Reason codes in :attr:`FtmImport.skipped` (entities/lines not imported, none of them an error).
SKIP_REASONS = ("not_person", "fragment_merged", "document_unlinked", "not_target")
#: Reason codes in :attr:`FtmImport.dropped` (values left out of a record that was still imported).
DROP_REASONS = (
    "nationality_unmapped",
    "birth_date_unparsed",
    "document_country_unmapped",
    "document_unusable",
)


@dataclass
class FtmImport:
    """Outcome of one FtM import: records, rejected lines (errors) and counters.

    ``read`` counts non-blank lines; ``skipped`` counts entities not imported by reason code (see
    :data:`SKIP_REASONS`), ``schemata`` every schema seen, ``dropped`` values left out of imported records.
    """

    records: list[PersonRecord] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    read: int = 0
    documents_linked: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    schemata: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def imported(self) -> int:
        return len(self.records)

    def stats(self) -> dict[str, int]:
        """Flat counters: ``read``, ``imported``, ``rejected``, ``skipped``, ``skipped_<reason>``, ...``"""
        out = {
            "read": self.read,
            "imported": self.imported,
            "rejected": len(self.rejected),
            "skipped": sum(self.skipped.values()),
            "documents_linked": self.documents_linked,
        }
        out.update({f"skipped_{k}": self.skipped[k] for k in SKIP_REASONS})
        out.update({k: self.dropped[k] for k in DROP_REASONS})
        return out

    def to_read_result(self) -> ReadResult:
        """The shape ``records.io.read_records`` returns, counters in ``stats``."""
        return ReadResult(records=list(self.records), rejected=list(self.rejected), stats=self.stats())


def _values(props: Mapping[str, Any], name: str) -> list[Any]:
    v = props.get(name, [])
    return v if isinstance(v, list) else [v]


def _strings(props: Mapping[str, Any], name: str) -> list[str]:
    return [s.strip() for s in _values(props, name) if isinstance(s, str) and s.strip()]


def _dedupe_key(value: object) -> Hashable:
    """A hashable stand-in for a property value: the value itself, or canonical JSON for lists/objects."""
    if isinstance(value, Hashable):  # str, int, float, bool, None: equal values hash alike
        return value
    return ("\x00json", json.dumps(value, sort_keys=True, ensure_ascii=False))


def _merge(into: dict[str, list[Any]], seen: dict[str, set[Hashable]], props: Mapping[str, Any]) -> None:
    """Append each new value of ``props`` to ``into``, keeping first-seen order; linear in the values."""
    for key, values in props.items():
        bucket = into.setdefault(key, [])
        known = seen.setdefault(key, set())
        for v in values if isinstance(values, list) else [values]:
            k = _dedupe_key(v)
            if k not in known:
                known.add(k)
                bucket.append(v)


@dataclass
class _Entity:
    schema: str
    line: int
    props: dict[str, list[Any]] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    #: dedupe sets behind ``props`` and ``datasets`` (merging fragments stays linear in their size)
    seen: dict[str, set[Hashable]] = field(default_factory=dict)
    seen_datasets: set[str] = field(default_factory=set)
    first_seen: str = ""
    target: bool | None = None


def _document(schema: str, props: Mapping[str, Any], result: FtmImport) -> list[TravelDocument]:
    numbers = _strings(props, "number") + _strings(props, "passportNumber")
    countries = _strings(props, "country")
    issuer = country_from_alpha2(countries[0]) if countries else None
    if countries and issuer is None:
        result.dropped["document_country_unmapped"] += 1
    kind = " ".join(_strings(props, "type")) or ("passport" if schema == "Passport" else "identification")
    docs: list[TravelDocument] = []
    for number in dict.fromkeys(numbers):
        try:
            docs.append(TravelDocument(kind[:64], number, issuer))
        except InvalidInput:
            result.dropped["document_unusable"] += 1
    return docs


def _category(topics: list[str], datasets: list[str]) -> str:
    for topic in CATEGORY_TOPICS:
        if topic in topics:
            return topic
    if topics:
        return sorted(topics)[0]
    return datasets[0] if datasets else ""


def entity_to_record(
    entity_id: str,
    props: Mapping[str, Any],
    *,
    documents: Iterable[TravelDocument] = (),
    datasets: Iterable[str] = (),
    first_seen: str = "",
    result: FtmImport | None = None,
) -> PersonRecord:
    """Map one (merged) FtM ``Person`` to a record; ``label.reference`` is the entity id.

    Raises :class:`fedcheck.errors.InvalidInput` when the person has no usable name.
    """
    result = result if result is not None else FtmImport()
    names: dict[str, PersonName] = {}
    first, middle, last = (
        _strings(props, "firstName"),
        _strings(props, "middleName") + _strings(props, "secondName"),
        _strings(props, "lastName"),
    )
    given = " ".join(first[:1] + middle[:1])
    surname = last[0] if len(last) == 1 else ""
    for prop, quality in NAME_PROPERTIES:
        for text in _strings(props, prop):
            key = " ".join(text.casefold().split())
            if key in names:
                continue
            split = prop == "name" and not names and surname and surname.casefold() in key
            names[key] = PersonName(
                text,
                given_names=given if split else "",
                surname=surname if split else "",
                script=detect_script(text),
                quality=quality,
            )
    if not names and (given or last):
        built = " ".join(x for x in (given, last[0] if last else "") if x)
        names[built.casefold()] = PersonName(built, given_names=given, surname=last[0] if last else "")
    if not names:
        raise InvalidInput("Person has no name, alias, firstName or lastName", reason="missing_name")

    births: list[BirthDate] = []
    for text in _strings(props, "birthDate"):
        try:
            births.append(BirthDate.parse(text[:10]))
        except InvalidInput:
            result.dropped["birth_date_unparsed"] += 1
    nationalities: list[str] = []
    for code in _strings(props, "nationality") + _strings(props, "citizenship"):
        alpha3 = country_from_alpha2(code)
        if alpha3 is None:
            result.dropped["nationality_unmapped"] += 1
        elif alpha3 not in nationalities:
            nationalities.append(alpha3)
    genders = {_GENDER.get(g.lower()) for g in _strings(props, "gender")} - {None}
    docs: list[TravelDocument] = []
    for number in _strings(props, "passportNumber"):
        docs.extend(_document("Passport", {"number": [number]}, result))
    for number in _strings(props, "idNumber"):
        docs.extend(_document("Identification", {"number": [number], "type": ["national id"]}, result))
    for value in _values(props, "passport") + _values(props, "identification"):
        if not isinstance(value, Mapping):
            continue
        nested_schema = value.get("schema")
        if isinstance(nested_schema, str) and nested_schema in DOCUMENT_SCHEMATA:
            nested = value.get("properties")
            docs.extend(_document(nested_schema, nested if isinstance(nested, Mapping) else {}, result))
    docs.extend(documents)
    datasets = list(datasets)
    topics = _strings(props, "topics")
    extra: list[tuple[str, str]] = []
    if datasets:
        extra.append(("datasets", ",".join(sorted(set(datasets)))[:256]))
    if topics:
        extra.append(("topics", ",".join(sorted(set(topics)))[:256]))
    listing = (_strings(props, "createdAt") or [first_seen])[0][:10]
    places = _strings(props, "birthPlace")
    return PersonRecord(
        record_id=entity_id,
        names=tuple(names.values()),
        birth_dates=tuple(births),
        sex=genders.pop() if len(genders) == 1 else None,
        nationalities=tuple(nationalities),
        place_of_birth=places[0][:512] if places else "",
        documents=tuple(docs),
        label=Label(
            category=_category(topics, datasets)[:128],
            reference=entity_id,
            listing_date=listing if _is_listing_date(listing) else "",
            extra=tuple(extra),
        ),
    )


_LISTING_DATE_RE = re.compile(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?")


def _is_listing_date(text: str) -> bool:
    return _LISTING_DATE_RE.fullmatch(text) is not None


def _add_entity(
    obj: Any,
    lineno: int,
    result: FtmImport,
    people: dict[str, _Entity],
    doc_entities: list[tuple[_Entity, list[str]]],
) -> None:
    """File one decoded line: merge a Person fragment, queue a document, count anything else."""
    where = f"line {lineno}"
    if not isinstance(obj, dict):
        result.rejected.append(Rejection(where, "not a JSON object"))
        return
    entity_id, schema, props = obj.get("id"), obj.get("schema"), obj.get("properties", {})
    if not isinstance(entity_id, str) or not entity_id or not isinstance(schema, str):
        result.rejected.append(Rejection(where, "entity has no id or schema"))
        return
    if not isinstance(props, dict):
        result.rejected.append(Rejection(where, "properties is not an object"))
        return
    result.schemata[schema] += 1
    if schema == "Person":
        ent = people.get(entity_id)
        if ent is None:
            ent = people[entity_id] = _Entity(schema, lineno)
        else:
            result.skipped["fragment_merged"] += 1
        _merge(ent.props, ent.seen, props)
        datasets = obj.get("datasets")
        for ds in datasets if isinstance(datasets, list) else []:
            if isinstance(ds, str) and ds not in ent.seen_datasets:
                ent.seen_datasets.add(ds)
                ent.datasets.append(ds)
        seen = obj.get("first_seen")
        if isinstance(seen, str) and (not ent.first_seen or seen < ent.first_seen):
            ent.first_seen = seen
        if isinstance(obj.get("target"), bool):
            ent.target = bool(ent.target) or obj["target"]
    elif schema in DOCUMENT_SCHEMATA:
        # ``holder`` holds entity ids, or (nested exports) entity objects carrying an ``id``
        holders = [h.get("id") if isinstance(h, dict) else h for h in _values(props, "holder")]
        doc_entities.append(
            (_Entity(schema, lineno, dict(props)), [h for h in holders if isinstance(h, str)])
        )
    else:
        result.skipped["not_person"] += 1


def read_ftm_lines(lines: Iterable[str], *, targets_only: bool = False) -> FtmImport:
    """Import an FtM JSON Lines stream (see module docstring). ``targets_only`` skips OpenSanctions entities
    marked ``"target": false`` (relatives and associates that are not themselves listed).

    A line that is not a usable entity (invalid JSON, nested too deep, no id/schema) is rejected with its line
    number; the rest of the stream is still read.
    """
    result = FtmImport()
    people: dict[str, _Entity] = {}
    docs_by_holder: dict[str, list[TravelDocument]] = {}
    doc_entities: list[tuple[_Entity, list[str]]] = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        result.read += 1
        try:
            obj = json.loads(line)
        except RecursionError:
            result.rejected.append(Rejection(f"line {lineno}", "not valid JSON (nested too deep)"))
            continue
        except ValueError as exc:  # JSONDecodeError, or an integer literal over Python's digit limit
            why = (
                "not valid JSON"
                if isinstance(exc, json.JSONDecodeError)
                else "not valid JSON (number too long)"
            )
            result.rejected.append(Rejection(f"line {lineno}", why))
            continue
        try:
            _add_entity(obj, lineno, result, people, doc_entities)
        except RecursionError:  # a value nested just under json's limit may still be too deep to compare
            result.rejected.append(Rejection(f"line {lineno}", "entity nested too deep"))
    for doc, holders in doc_entities:
        if not any(h in people for h in holders):
            result.skipped["document_unlinked"] += 1
            continue
        result.documents_linked += 1
        for h in holders:
            docs_by_holder.setdefault(h, []).extend(_document(doc.schema, doc.props, result))
    for entity_id, ent in people.items():
        if targets_only and ent.target is False:
            result.skipped["not_target"] += 1
            continue
        try:
            record = entity_to_record(
                entity_id,
                ent.props,
                documents=docs_by_holder.get(entity_id, ()),
                datasets=ent.datasets,
                first_seen=ent.first_seen,
                result=result,
            )
        except InvalidInput as exc:
            result.rejected.append(Rejection(f"line {ent.line}", exc.message))
            continue
        result.records.append(record)
    result.rejected.sort(key=lambda r: int(r.where.split()[1]))
    return result


def _utf8_lines(fh: IO[bytes], name: str) -> Iterator[str]:
    """Lines of a binary stream decoded as UTF-8: BOM dropped; ``\\n``, ``\\r\\n`` and ``\\r`` end a line, as
    in text mode. Invalid UTF-8 raises :class:`FormatError` naming the line, not ``UnicodeDecodeError``.

    ``str.splitlines`` is not used: it would also split on U+2028 and U+0085, which JSON strings may contain.
    """
    count = 0
    for raw in fh:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{name}: line {count + 1}: not valid UTF-8", reason="bad_encoding") from None
        if count == 0 and text.startswith("\ufeff"):
            text = text[1:]
        body = text[:-1] if text.endswith("\n") else text
        body = body[:-1] if body.endswith("\r") else body
        for part in body.split("\r"):
            count += 1
            yield part


def read_ftm(path: str | Path, *, targets_only: bool = False) -> FtmImport:
    """Import an FtM JSON Lines file (OpenSanctions ``entities.ftm.json`` / ``targets.nested.json``).

    A file that is not UTF-8 or cannot be opened raises :class:`FormatError` naming the file (and line).
    """
    p = Path(path)
    with open_input(p) as fh:  # streamed: an OpenSanctions export is hundreds of MB
        return read_ftm_lines(_utf8_lines(fh, p.name), targets_only=targets_only)
