"""Canonical identity records: the model, normalisation, match keys and record file readers (pure, no I/O
beyond the readers). Everything other packages need is re-exported here; see ``docs/data-model.md``."""

from __future__ import annotations

from fedcheck.records.io import (
    CSV_COLUMNS,
    CSV_OPTIONAL_COLUMNS,
    FORMATS,
    ReadResult,
    Rejection,
    read_records,
    record_from_dict,
    record_from_row,
    record_to_dict,
    write_jsonl,
)
from fedcheck.records.keys import (
    ALL_KEY_TYPES,
    DEFAULT_KEY_TYPES,
    KeyType,
    MatchKey,
    match_keys,
    match_keys_many,
    parse_key_types,
)
from fedcheck.records.model import BirthDate, Label, PersonName, PersonRecord, TravelDocument
from fedcheck.records.normalise import (
    detect_script,
    document_class,
    name_tokens,
    normalise_document_number,
    normalise_name,
    transliterate,
    validate_country,
)

__all__ = [
    "ALL_KEY_TYPES",
    "CSV_COLUMNS",
    "CSV_OPTIONAL_COLUMNS",
    "DEFAULT_KEY_TYPES",
    "FORMATS",
    "BirthDate",
    "KeyType",
    "Label",
    "MatchKey",
    "PersonName",
    "PersonRecord",
    "ReadResult",
    "Rejection",
    "TravelDocument",
    "detect_script",
    "document_class",
    "match_keys",
    "match_keys_many",
    "name_tokens",
    "normalise_document_number",
    "normalise_name",
    "parse_key_types",
    "read_records",
    "record_from_dict",
    "record_from_row",
    "record_to_dict",
    "transliterate",
    "validate_country",
    "write_jsonl",
]
