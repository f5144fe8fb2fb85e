"""Transport-free messages of the fuzzy (Paillier) check, each with ``to_bytes``/``from_bytes``.

Every field is a plain int, str or bytes so a proto can carry it one-to-one (see docs/fuzzy.md): the key as
``n`` big-endian, ciphertexts concatenated at fixed width ``2·key_bits/8``. ``from_bytes`` checks framing
and sizes only; the holder validates the ciphertext values themselves (range, unit) on receipt.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass
from typing import Any

from fedcheck.errors import FormatError, InvalidInput, LimitExceeded

__all__ = [
    "MAX_MESSAGE_BYTES",
    "FuzzyParams",
    "HitClaim",
    "LabelRequest",
    "LabelResponse",
    "ReleasedLabel",
    "ScoreRequest",
    "ScoreResponse",
]

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
_MAGIC = b"FCFZ"
_VERSION = 1
KINDS = ("name", "face")


def _frame(kind: str, header: dict[str, Any], blob: bytes = b"") -> bytes:
    head = json.dumps({"kind": kind, **header}, separators=(",", ":"), sort_keys=True).encode()
    return _MAGIC + struct.pack(">BI", _VERSION, len(head)) + head + blob


def _unframe(data: bytes, kind: str) -> tuple[dict[str, Any], bytes]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise LimitExceeded("message: too large", reason="message_too_large")
    if len(data) < 9 or data[:4] != _MAGIC:
        raise FormatError("message: bad magic", reason="bad_magic")
    version, hlen = struct.unpack(">BI", data[4:9])
    if version != _VERSION:
        raise FormatError("message: unsupported version", reason="bad_version")
    if hlen > 1 << 20 or 9 + hlen > len(data):
        raise FormatError("message: bad header length", reason="bad_header")
    try:
        header = json.loads(data[9 : 9 + hlen])
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested JSON
        raise FormatError("message: header is not JSON", reason="bad_header") from exc
    if not isinstance(header, dict) or header.get("kind") != kind:
        raise FormatError("message: unexpected message kind", reason="bad_kind")
    return header, data[9 + hlen :]


def _int(h: dict[str, Any], key: str, lo: int, hi: int) -> int:
    v = h.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise InvalidInput(f"{key}: out of range", reason="bad_field")
    return v


def _hex(h: dict[str, Any], key: str, max_len: int) -> bytes:
    v = h.get(key)
    if not isinstance(v, str) or len(v) > 2 * max_len:
        raise InvalidInput(f"{key}: malformed", reason="bad_field")
    try:
        return bytes.fromhex(v)
    except ValueError as exc:
        raise InvalidInput(f"{key}: malformed", reason="bad_field") from exc


@dataclass(frozen=True)
class FuzzyParams:
    """Public layout of a query, chosen by the querier and checked by the holder.

    ``pack_size`` travellers share one plaintext (slots of ``slot_bits``). ``pack_size == 1`` (default) gives
    every (traveller, entry) pair its own blinding factor; ``> 1`` is faster but lets the querier compare the
    margins of the travellers of one pack against the same entry (docs/threat-model.md).
    """

    kind: str
    dims: int
    size_table: int
    year_base: int
    year_count: int
    pack_size: int
    slot_bits: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput("kind: must be 'name' or 'face'", reason="bad_kind")
        if not 1 <= self.dims <= 1024 or not 1 <= self.size_table <= 256 or not 0 <= self.year_count <= 256:
            raise LimitExceeded("params: dimension limits exceeded", reason="bad_dims")
        if not 1800 <= self.year_base <= 2100:
            raise InvalidInput("year_base: out of range", reason="bad_field")
        if self.slot_bits % 8 or not 16 <= self.slot_bits <= 64:
            raise InvalidInput("slot_bits: must be a multiple of 8 in [16, 64]", reason="bad_slot_bits")
        if not 1 <= self.pack_size <= 256:
            raise InvalidInput("pack_size: out of range", reason="bad_pack_size")

    @property
    def ciphertexts_per_pack(self) -> int:
        return self.dims + self.size_table + self.year_count

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> FuzzyParams:
        if not isinstance(d, dict):
            raise InvalidInput("params: malformed", reason="bad_field")
        kind = d.get("kind")
        if not isinstance(kind, str):
            raise InvalidInput("kind: malformed", reason="bad_field")
        return cls(
            kind=kind,
            dims=_int(d, "dims", 1, 1024),
            size_table=_int(d, "size_table", 1, 256),
            year_base=_int(d, "year_base", 1800, 2100),
            year_count=_int(d, "year_count", 0, 256),
            pack_size=_int(d, "pack_size", 1, 256),
            slot_bits=_int(d, "slot_bits", 16, 64),
        )


@dataclass(frozen=True)
class ScoreRequest:
    """Querier -> holder: public key, layout and ``packs × ciphertexts_per_pack`` ciphertexts.

    Per pack, in order: ``dims`` encoding ciphertexts, ``size_table`` threshold offsets (indexed by the
    entry's |Y|), ``year_count`` birth-year offsets (indexed by entry year - ``year_base``).
    """

    round_id: bytes
    public_key: bytes
    params: FuzzyParams
    traveller_count: int
    ciphertexts: bytes

    @property
    def pack_count(self) -> int:
        return math.ceil(self.traveller_count / self.params.pack_size)

    def to_bytes(self) -> bytes:
        head = {
            "round_id": self.round_id.hex(),
            "public_key": self.public_key.hex(),
            "params": self.params.to_dict(),
            "traveller_count": self.traveller_count,
        }
        return _frame("score_request", head, self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ScoreRequest:
        h, blob = _unframe(data, "score_request")
        return cls(
            round_id=_hex(h, "round_id", 64),
            public_key=_hex(h, "public_key", 512),
            params=FuzzyParams.from_dict(h.get("params")),
            traveller_count=_int(h, "traveller_count", 1, 1 << 20),
            ciphertexts=blob,
        )


@dataclass(frozen=True)
class ScoreResponse:
    """Holder -> querier: per pack, ``ceil(entry_count / blocks_per_ciphertext)`` ciphertexts, pack-major.

    Block ``j`` of output ``o`` of a pack holds the pack's slots against the entry at shuffled position
    ``o·blocks_per_ciphertext + j`` (block 0 in the most significant bits).
    """

    round_id: bytes
    entry_count: int
    blocks_per_ciphertext: int
    ciphertexts: bytes

    def to_bytes(self) -> bytes:
        head = {
            "round_id": self.round_id.hex(),
            "entry_count": self.entry_count,
            "blocks_per_ciphertext": self.blocks_per_ciphertext,
        }
        return _frame("score_response", head, self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> ScoreResponse:
        h, blob = _unframe(data, "score_response")
        return cls(
            round_id=_hex(h, "round_id", 64),
            entry_count=_int(h, "entry_count", 0, 1 << 24),
            blocks_per_ciphertext=_int(h, "blocks_per_ciphertext", 1, 4096),
            ciphertexts=blob,
        )


@dataclass(frozen=True)
class HitClaim:
    """A hit the querier decided to follow up: traveller index, opaque round-scoped reference, and the
    decrypted slot value as proof (the holder checks it against its blinding, so references cannot be
    guessed or replayed into another round)."""

    traveller: int
    reference: int
    proof: int


@dataclass(frozen=True)
class LabelRequest:
    """Querier -> holder follow-up; this message (not the score round) is what the holder audits."""

    round_id: bytes
    claims: tuple[HitClaim, ...]

    def to_bytes(self) -> bytes:
        claims = [[c.traveller, c.reference, c.proof] for c in self.claims]
        return _frame("label_request", {"round_id": self.round_id.hex(), "claims": claims})

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelRequest:
        h, _ = _unframe(data, "label_request")
        raw = h.get("claims")
        if not isinstance(raw, list) or len(raw) > 10_000:
            raise LimitExceeded("claims: too many or malformed", reason="bad_claims")
        claims = []
        for c in raw:
            if not (isinstance(c, list) and len(c) == 3
                    and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in c)):
                raise InvalidInput("claims: malformed", reason="bad_claims")
            claims.append(HitClaim(c[0], c[1], c[2]))
        return cls(round_id=_hex(h, "round_id", 64), claims=tuple(claims))


@dataclass(frozen=True)
class ReleasedLabel:
    """One verified claim: the entry's label, only the fields disclosed to the partner (no internal ids)."""

    traveller: int
    reference: int
    label: dict[str, Any]


@dataclass(frozen=True)
class LabelResponse:
    round_id: bytes
    released: tuple[ReleasedLabel, ...]
    rejected: int

    def to_bytes(self) -> bytes:
        rel = [asdict(r) for r in self.released]
        return _frame("label_response", {"round_id": self.round_id.hex(), "released": rel,
                                         "rejected": self.rejected})

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelResponse:
        h, _ = _unframe(data, "label_response")
        rel = h.get("released")
        if not isinstance(rel, list):
            raise InvalidInput("released: malformed", reason="bad_field")
        if len(rel) > 10_000:
            raise LimitExceeded("released: too many", reason="bad_field")
        out = []
        for r in rel:
            if not isinstance(r, dict) or not isinstance(r.get("label"), dict):
                raise FormatError("released: malformed", reason="bad_field")
            out.append(ReleasedLabel(_int(r, "traveller", 0, 1 << 20), _int(r, "reference", 0, 1 << 24),
                                     dict(r["label"])))
        return cls(round_id=_hex(h, "round_id", 64), released=tuple(out),
                   rejected=_int(h, "rejected", 0, 1 << 20))
