"""Querier-side key bookkeeping: travellers -> unique match keys -> back to travellers.

Why: a manifest yields several keys per traveller and the same key may come from two travellers (families
share a surname and birth year; a duplicated booking). Each distinct key is blinded once; hits map back to
every traveller that produced it through an integer owner array (numpy), not per-hit dict lookups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fedcheck.records import DEFAULT_KEY_TYPES, KeyType, PersonRecord, match_keys

__all__ = ["QueryKeys", "query_keys"]


@dataclass(frozen=True)
class QueryKeys:
    """Distinct keys to blind, and for each (key, traveller) pair the owning traveller index."""

    keys: list[bytes]
    key_types: list[str]
    pair_key: npt.NDArray[np.int64]  # index into ``keys``
    pair_owner: npt.NDArray[np.int64]  # index into the manifest

    def owners_of(self, key_positions: Sequence[int]) -> list[list[int]]:
        """Travellers owning each key position (vectorised over all pairs)."""
        if not key_positions:
            return []
        pos = np.asarray(key_positions, dtype=np.int64)
        order = np.argsort(self.pair_key, kind="stable")
        sorted_keys = self.pair_key[order]
        lo = np.searchsorted(sorted_keys, pos, side="left")
        hi = np.searchsorted(sorted_keys, pos, side="right")
        return [self.pair_owner[order[a:b]].tolist() for a, b in zip(lo, hi, strict=True)]


def query_keys(
    manifest: Sequence[PersonRecord], key_types: Sequence[KeyType] = DEFAULT_KEY_TYPES
) -> QueryKeys:
    index: dict[bytes, int] = {}
    keys: list[bytes] = []
    types: list[str] = []
    pair_key: list[int] = []
    pair_owner: list[int] = []
    for owner, record in enumerate(manifest):
        for mk in match_keys(record, key_types):
            pos = index.get(mk.value)
            if pos is None:
                pos = index[mk.value] = len(keys)
                keys.append(mk.value)
                types.append(str(mk.key_type))
            pair_key.append(pos)
            pair_owner.append(owner)
    return QueryKeys(
        keys, types, np.asarray(pair_key, dtype=np.int64), np.asarray(pair_owner, dtype=np.int64)
    )
