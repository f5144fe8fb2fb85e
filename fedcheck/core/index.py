"""The exact-match index as numpy arrays: sorted 64-bit tags, label offsets, one label blob.

Why: a querier downloads the holder's index once per epoch and looks up a whole batch of tags with two
``np.searchsorted`` calls — no per-item dict lookups — and the index serialises to a flat, integrity-checked
byte string whose size per entry is documented (``docs/protocol.md``).

Layout of :meth:`ExactIndex.to_bytes` (all integers little-endian)::

    magic "FCIX" | version u16 | flags u16 | len(epoch_id) u16 | epoch_id (UTF-8) | public key (32)
    | salt (16) | n u64 | blob_len u64 | tags n*u64 (sorted) | offsets (n+1)*i64 | blob
    | SHA-256 of everything before

Entry ``i`` owns ``blob[offsets[i]:offsets[i+1]]`` (empty when the index carries no labels).
This module is pure (numpy + hashlib): it never sees a key, a match key or a plaintext label.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedcheck.errors import FormatError, IntegrityError, UnsupportedVersion

__all__ = [
    "FLAG_LABELS",
    "INDEX_MAGIC",
    "INDEX_VERSION",
    "ExactIndex",
    "index_entry_count",
    "lookup_ranges",
    "tags_from_bytes",
]

INDEX_MAGIC = b"FCIX"
INDEX_VERSION = 1
#: flags bit 0: entries carry sealed labels (exact mode); clear for tag-only (cardinality) indexes
FLAG_LABELS = 1
_HEAD = struct.Struct("<4sHHH")
_COUNTS = struct.Struct("<QQ")
_PK_SIZE = 32
_SALT_SIZE = 16
_DIGEST_SIZE = 32

U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]
IntpArray = npt.NDArray[np.intp]


def index_entry_count(data: bytes) -> int:
    """Number of entries ``n`` from a serialised index's header, without parsing (or checking) the rest."""
    try:
        _, _, _, elen = _HEAD.unpack_from(data, 0)
        (n, _blob_len) = _COUNTS.unpack_from(data, _HEAD.size + elen + _PK_SIZE + _SALT_SIZE)
    except struct.error:
        raise FormatError("index header truncated or malformed") from None
    return int(n)


def tags_from_bytes(data: bytes) -> U64Array:
    """8-byte big-endian tags (as produced by :func:`fedcheck.crypto.labels.tag_digests`) -> uint64 array."""
    return np.frombuffer(data, dtype=">u8").astype(np.uint64)


def lookup_ranges(sorted_tags: U64Array, query: U64Array) -> tuple[IntpArray, IntpArray]:
    """All (query position, index entry) pairs with equal tags, vectorised.

    Two binary searches give each query's range of equal tags; ranges are expanded with ``np.repeat``.
    Ranges longer than one only arise from 64-bit tag collisions.
    """
    left = np.searchsorted(sorted_tags, query, side="left")
    right = np.searchsorted(sorted_tags, query, side="right")
    counts = right - left
    qpos = np.repeat(np.arange(query.shape[0], dtype=np.intp), counts)
    if qpos.size == 0:
        return qpos, np.empty(0, dtype=np.intp)
    starts = np.repeat(left, counts)
    # offset of each pair within its range: 0, 1, ... per query
    run_start = np.repeat(np.cumsum(counts) - counts, counts)
    within = np.arange(qpos.size, dtype=np.intp) - run_start
    return qpos, (starts + within).astype(np.intp)


@dataclass(frozen=True, eq=False)
class ExactIndex:
    """An immutable exact-match index for one epoch and one audience."""

    epoch_id: str
    public_key: bytes
    salt: bytes = field(repr=False)
    tags: U64Array = field(repr=False)
    offsets: I64Array = field(repr=False)
    blob: bytes = field(repr=False)
    has_labels: bool = True

    def __post_init__(self) -> None:
        if len(self.public_key) != _PK_SIZE or len(self.salt) != _SALT_SIZE:
            raise FormatError("index public key or salt has the wrong size")
        n = self.tags.shape[0]
        if self.tags.dtype != np.uint64 or self.offsets.dtype != np.int64 or self.offsets.shape != (n + 1,):
            raise FormatError("index arrays have the wrong type or shape")
        if n and bool(np.any(self.tags[1:] < self.tags[:-1])):
            raise FormatError("index tags are not sorted")
        if (
            self.offsets[0] != 0
            or self.offsets[-1] != len(self.blob)
            or bool(np.any(np.diff(self.offsets) < 0))
        ):
            raise FormatError("index label offsets are inconsistent")
        if not self.has_labels and len(self.blob):
            raise FormatError("tag-only index carries labels")

    def __len__(self) -> int:
        return int(self.tags.shape[0])

    def label(self, i: int) -> bytes:
        """The sealed label of entry ``i`` (empty in a tag-only index)."""
        return self.blob[int(self.offsets[i]) : int(self.offsets[i + 1])]

    def lookup(self, query_tags: U64Array) -> tuple[IntpArray, IntpArray]:
        """``(query positions, entry indices)`` of all tag matches; see :func:`lookup_ranges`."""
        return lookup_ranges(self.tags, query_tags)

    def _body(self) -> bytes:
        cached: bytes | None = self.__dict__.get("_body_cache")
        if cached is None:
            eid = self.epoch_id.encode()
            flags = FLAG_LABELS if self.has_labels else 0
            cached = b"".join(
                (
                    _HEAD.pack(INDEX_MAGIC, INDEX_VERSION, flags, len(eid)),
                    eid,
                    self.public_key,
                    self.salt,
                    _COUNTS.pack(len(self), len(self.blob)),
                    self.tags.astype("<u8").tobytes(),
                    self.offsets.astype("<i8").tobytes(),
                    self.blob,
                )
            )
            object.__setattr__(self, "_body_cache", cached)
        return cached

    def to_bytes(self) -> bytes:
        body = self._body()
        return body + hashlib.sha256(body).digest()

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of the serialised index body: what a holder announces and a querier checks."""
        return hashlib.sha256(self._body()).hexdigest()

    @property
    def size_bytes(self) -> int:
        return len(self._body()) + _DIGEST_SIZE

    @property
    def bytes_per_entry(self) -> float:
        """Serialised size divided by entries (header amortised): 16 bytes of arrays + the sealed label."""
        return self.size_bytes / max(1, len(self))

    @classmethod
    def from_bytes(cls, data: bytes) -> ExactIndex:
        """Parse and integrity-check a serialised index (bad digest -> :class:`IntegrityError`)."""
        data = bytes(data)
        if len(data) < _HEAD.size + _DIGEST_SIZE or data[:4] != INDEX_MAGIC:
            raise FormatError("not a fedcheck exact-match index")
        _, version, flags, elen = _HEAD.unpack_from(data, 0)
        if version != INDEX_VERSION:
            raise UnsupportedVersion(f"index version {version} not supported")
        body, digest = data[:-_DIGEST_SIZE], data[-_DIGEST_SIZE:]
        if hashlib.sha256(body).digest() != digest:
            raise IntegrityError("index digest mismatch")
        pos = _HEAD.size
        try:
            epoch_id = body[pos : pos + elen].decode()
            pos += elen
            pk = body[pos : pos + _PK_SIZE]
            salt = body[pos + _PK_SIZE : pos + _PK_SIZE + _SALT_SIZE]
            pos += _PK_SIZE + _SALT_SIZE
            n, blob_len = _COUNTS.unpack_from(body, pos)
            pos += _COUNTS.size
        except (UnicodeDecodeError, struct.error):
            raise FormatError("index header truncated or malformed") from None
        if len(body) != pos + 8 * n + 8 * (n + 1) + blob_len:
            raise FormatError("index length does not match its header")
        tags = np.frombuffer(body, dtype="<u8", count=n, offset=pos).astype(np.uint64)
        pos += 8 * n
        offsets = np.frombuffer(body, dtype="<i8", count=n + 1, offset=pos).astype(np.int64)
        pos += 8 * (n + 1)
        return cls(
            epoch_id=epoch_id,
            public_key=pk,
            salt=salt,
            tags=tags,
            offsets=offsets,
            blob=body[pos:],
            has_labels=bool(flags & FLAG_LABELS),
        )
