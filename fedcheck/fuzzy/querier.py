"""Querier role: own the Paillier key, encode and encrypt travellers, decode hit bits, follow up hits.

The querier packs ``pack_size`` travellers per plaintext (slots of ``slot_bits``); per pack it sends one
ciphertext per encoding dimension, a threshold table indexed by the entry's |Y| (so the holder never learns
θ or |X|) and a birth-year table. Decryption is CRT on the key owner's p, q, spread over all cores.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from fedcheck.errors import InvalidInput
from fedcheck.fuzzy._paillier import QuerierKey, ciphertexts_from_bytes, ciphertexts_to_bytes
from fedcheck.fuzzy.encoding import (
    DOB_PENALTY,
    MAX_BIGRAMS,
    NAME_DIMS,
    face_threshold,
    name_bigrams,
    parse_threshold,
    quantise_face,
    threshold_table,
    year_penalties,
)
from fedcheck.fuzzy.messages import FuzzyParams, HitClaim, LabelRequest, ScoreRequest, ScoreResponse

__all__ = ["DUMMY_NAME_MARGIN", "DUMMY_TRAVELLER", "FuzzyQuerier", "FuzzyResult", "Traveller"]

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Traveller:
    """What the querier screens: a name (names mode) and optional birth year, or a face embedding."""

    name: str = ""
    year: int | None = None
    face: Sequence[float] | None = None
    #: a placeholder that can never hit (see :data:`DUMMY_TRAVELLER`)
    dummy: bool = False


#: Stands in for a traveller the querier's policy keeps away from one State (a protected national), so that
#: every target gets the same traveller count and layout. Encrypted like any traveller (fresh ciphertexts),
#: its encoding is an all-zero vector: names with every threshold-table row and no year offsets set so that
#: its margin against *every* entry is :data:`DUMMY_NAME_MARGIN`; faces with the round's own threshold
#: (``x·y = 0 < ceil(θ·s²)``). Both margins are negative and within the honest range the holder's blinding
#: assumes (``MARGIN_BITS``), so each slot decrypts as a miss and never spills into a neighbouring slot.
DUMMY_TRAVELLER = Traveller(dummy=True)
#: the most negative honest name margin: empty intersection, largest threshold (|X| = |Y| = 127, θ = 1) and
#: the birth-year penalty: ``0 - 127 - 128 = -255``
DUMMY_NAME_MARGIN = -MAX_BIGRAMS + DOB_PENALTY


@dataclass(frozen=True)
class FuzzyResult:
    """Hits as ``(traveller, reference, proof)``; ``reference`` is opaque and valid for this round only."""

    hits: tuple[HitClaim, ...]
    pairs: int


class FuzzyQuerier:
    """Builds a :class:`ScoreRequest` and turns the :class:`ScoreResponse` into hit bits."""

    def __init__(
        self,
        key: QuerierKey | None = None,
        *,
        kind: str = "name",
        key_bits: int = 2048,
        threshold: float | str | Fraction = "0.8",
        year_tolerance: int = 0,
        pack_size: int = 1,
        slot_bits: int | None = None,
        year_base: int = 1900,
        year_count: int = 131,
        size_table: int = 128,
        face_dims: int = 128,
        workers: int | None = None,
    ) -> None:
        self.key = key or QuerierKey.generate(key_bits)
        self.kind = kind
        self.theta = parse_threshold(threshold)
        self.year_tolerance = year_tolerance
        w = slot_bits or (24 if kind == "name" else 32)
        self.params = FuzzyParams(
            kind=kind,
            dims=NAME_DIMS if kind == "name" else face_dims,
            size_table=size_table if kind == "name" else 1,
            year_base=year_base,
            year_count=year_count if kind == "name" else 0,
            pack_size=pack_size,
            slot_bits=w,
        )
        if pack_size * w > self.key.public.key_bits - 2:
            raise InvalidInput("pack_size: slots exceed the plaintext", reason="bad_pack_size")
        self.workers = workers or os.cpu_count() or 1

    # ------------------------------------------------------------------ encode
    def encode(self, travellers: Sequence[Traveller]) -> list[list[int]]:
        """Per pack, the signed slot values of each ciphertext (dims, size table, year table)."""
        p, k = self.params, self.params.pack_size
        rows: list[list[int]] = []  # per traveller, per ciphertext position
        for t in travellers:
            if t.dummy:
                row = self._dummy_row()
            elif self.kind == "name":
                bg = name_bigrams(t.name)
                x = [0] * p.dims
                for d in bg:
                    x[d] = 1
                row = x + threshold_table(len(bg), self.theta, p.size_table)
                row += year_penalties(t.year, self.year_tolerance, p.year_base, p.year_count)
            else:
                if t.face is None:
                    raise InvalidInput("traveller: face embedding missing", reason="bad_traveller")
                q = quantise_face(t.face)
                if q.size != p.dims:
                    raise InvalidInput("traveller: face dimension mismatch", reason="bad_traveller")
                row = [int(v) for v in q] + [-face_threshold(self.theta)]
            rows.append(row)
        packs: list[list[int]] = []
        for start in range(0, len(rows), k):
            group = rows[start : start + k]
            packs.append([
                sum(r[c] << (p.slot_bits * i) for i, r in enumerate(group))
                for c in range(p.ciphertexts_per_pack)
            ])
        return packs

    def _dummy_row(self) -> list[int]:
        """The encoding of :data:`DUMMY_TRAVELLER`: zeros, and a margin that is negative for every entry."""
        p = self.params
        if self.kind == "name":
            return [0] * p.dims + [DUMMY_NAME_MARGIN] * p.size_table + [0] * p.year_count
        return [0] * p.dims + [-face_threshold(self.theta)]

    def build_request(self, travellers: Sequence[Traveller]) -> ScoreRequest:
        if not travellers:
            raise InvalidInput("travellers: empty batch", reason="empty_batch")
        plain = [v for pack in self.encode(travellers) for v in pack]
        cts = _parallel(self.key.encrypt_many, plain, self.workers)
        width = self.key.public.ciphertext_bytes
        return ScoreRequest(
            round_id=secrets.token_bytes(16),
            public_key=self.key.public.n_bytes(),
            params=self.params,
            traveller_count=len(travellers),
            ciphertexts=ciphertexts_to_bytes(cts, width),
        )

    # ------------------------------------------------------------------ decode
    def slot_values(self, request: ScoreRequest, response: ScoreResponse) -> npt.NDArray[np.uint64]:
        """Raw decrypted slots, shape ``(traveller_count, entry_count)``; what leakage analysis looks at."""
        if response.round_id != request.round_id:
            raise InvalidInput("response: round mismatch", reason="round_mismatch")
        p, k, w = self.params, self.params.pack_size, self.params.slot_bits
        n_e, blocks = response.entry_count, response.blocks_per_ciphertext
        if blocks * k * w > self.key.public.key_bits - 2:
            raise InvalidInput("response: layout exceeds the plaintext", reason="bad_layout")
        outs = math.ceil(n_e / blocks) if n_e else 0
        width = self.key.public.ciphertext_bytes
        cts = ciphertexts_from_bytes(response.ciphertexts, width, self.key.public.n, check_units=False)
        if len(cts) != outs * request.pack_count:
            raise InvalidInput("response: ciphertext count mismatch", reason="bad_count")
        plains = _parallel(self.key.decrypt_many, cts, self.workers)
        wb = w // 8
        weights = (np.uint64(1) << (np.arange(wb, dtype=np.uint64) * np.uint64(8)))
        result = np.zeros((request.pack_count * k, n_e), dtype=np.uint64)
        for pack in range(request.pack_count):
            for o in range(outs):
                nb = min(blocks, n_e - o * blocks)
                m = plains[pack * outs + o]
                raw = np.frombuffer(m.to_bytes(nb * k * wb, "little"), dtype=np.uint8)
                vals = (raw.reshape(nb, k, wb).astype(np.uint64) * weights).sum(axis=2, dtype=np.uint64)
                vals = vals[::-1]  # block 0 is most significant
                result[pack * k : (pack + 1) * k, o * blocks : o * blocks + nb] = vals.T
        del p
        return result[: request.traveller_count]

    def decide(self, request: ScoreRequest, response: ScoreResponse) -> FuzzyResult:
        """Hit bit per pair = top bit of its slot; returns only the hits."""
        vals = self.slot_values(request, response)
        top = np.uint64(1) << np.uint64(self.params.slot_bits - 1)
        ti, ei = np.nonzero(vals >= top)
        hits = tuple(HitClaim(int(t), int(e), int(vals[t, e])) for t, e in zip(ti, ei, strict=True))
        return FuzzyResult(hits, int(vals.size))

    @staticmethod
    def follow_up(round_id: bytes, hits: Sequence[HitClaim]) -> LabelRequest:
        """The separate, audited label request for the hits the querier chooses to pursue."""
        return LabelRequest(round_id, tuple(hits))


def _parallel(fn: Callable[[Sequence[_T]], list[_R]], items: Sequence[_T], workers: int) -> list[_R]:
    """Split ``items`` into ``workers`` contiguous chunks and map ``fn`` over them in forked processes."""
    if workers <= 1 or len(items) < 2 * workers:
        return fn(items)
    size = math.ceil(len(items) / (workers * 4))
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        parts: list[Any] = pool.map(fn, chunks, chunksize=1)
    return [x for part in parts for x in part]
