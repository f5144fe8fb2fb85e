"""PersonRecord <-> JSON bytes for storage, independent of any input file format.

Why here: the store must round-trip every field of the canonical record (so a restart rebuilds the same
index), whatever reader produced it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fedcheck.errors import IntegrityError, InvalidRecord
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument

__all__ = ["record_from_json", "record_to_json"]

_log = logging.getLogger(__name__)


def record_to_json(r: PersonRecord) -> bytes:
    doc: dict[str, Any] = {
        "id": r.record_id,
        "names": [[n.full_name, n.given_names, n.surname, n.script, n.quality] for n in r.names],
        "dob": [[d.year, d.month, d.day, d.year_to] for d in r.birth_dates],
        "sex": r.sex,
        "nat": list(r.nationalities),
        "pob": r.place_of_birth,
        "docs": [[d.doc_type, d.number, d.issuer] for d in r.documents],
        "face": list(r.face_embedding) if r.face_embedding is not None else None,
        "label": r.label.to_dict(),
        "flags": sorted(r.flags),
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def record_from_json(data: bytes) -> PersonRecord:
    """Rebuild a stored record through the model's validation.

    A face embedding that an earlier version accepted but the model now refuses (zero, or a norm out of
    floating-point range: ``bad_embedding``) is dropped with a warning instead of failing the record: one such
    row must not make the whole list unreadable after an upgrade (epoch builds and fuzzy rounds read every
    record). Re-importing the list clears it. Any other invalid field is corruption.
    """
    try:
        doc = json.loads(data)
        fields: dict[str, Any] = {
            "record_id": doc["id"],
            "names": tuple(PersonName(*n) for n in doc["names"]),
            "birth_dates": tuple(BirthDate(*d) for d in doc["dob"]),
            "sex": doc["sex"],
            "nationalities": tuple(doc["nat"]),
            "place_of_birth": doc["pob"],
            "documents": tuple(TravelDocument(*d) for d in doc["docs"]),
            "face_embedding": tuple(doc["face"]) if doc["face"] is not None else None,
            "label": Label.from_dict(doc["label"]),
            "flags": frozenset(doc["flags"]),
        }
        try:
            return PersonRecord(**fields)
        except InvalidRecord as exc:
            if fields["face_embedding"] is None or exc.reason != "bad_embedding":
                raise
            _log.warning(
                "stored record has a face embedding this version refuses (zero or out-of-range norm): "
                "the face is ignored; re-import the list to clear this",
                extra={"reason": "stored_face_dropped"},
            )
            return PersonRecord(**{**fields, "face_embedding": None})
    except (ValueError, KeyError, TypeError, InvalidRecord):
        raise IntegrityError("stored record is corrupt", reason="record_corrupt") from None
