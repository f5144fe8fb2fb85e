"""Holder role: validate an encrypted query, score it against every list entry, return blinded slots.

For each pack of travellers and each list entry (shuffled per pack) the holder multiplies the pack's
ciphertexts for the entry's bigrams (sparse 0/1, no exponentiation), the threshold offset for the entry's |Y|
and the birth-year offset, raises the result to a fresh secret ``r`` (per entry and pack), adds per-slot noise
``ρ < r`` and the slot offset, Horner-packs ``E`` entries into one ciphertext and re-randomises it. A slot
decrypts to ``2^(w-1) + r·m + ρ``: its top bit is the hit bit. It never sees a plaintext and never learns
which pair hit unless the querier follows up (:meth:`FuzzyHolder.release`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedcheck.errors import InvalidInput, LimitExceeded, NotFound
from fedcheck.fuzzy._paillier import (
    ALLOWED_KEY_BITS,
    PublicKey,
    Rerandomiser,
    ciphertexts_from_bytes,
    rerand_window,
)
from fedcheck.fuzzy.encoding import (
    FACE_Q,
    MAX_BIGRAMS,
    NAME_DIMS,
    name_bigrams,
    quantise_face,
)
from fedcheck.fuzzy.messages import (
    FuzzyParams,
    LabelRequest,
    LabelResponse,
    ReleasedLabel,
    ScoreRequest,
    ScoreResponse,
)
from fedcheck.records.model import PersonRecord

__all__ = [
    "CLAIMS_PER_TRAVELLER",
    "HIT_MARGIN_BOUND",
    "MARGIN_BITS",
    "FuzzyHolder",
    "HolderEntries",
    "HolderEntry",
    "HolderLimits",
    "entries_from_records",
]

_log = logging.getLogger("fedcheck.fuzzy.holder")

#: Bits (incl. sign) of an honest margin m: names |m| <= 255, faces |m| <= 2^15 + threshold.
MARGIN_BITS = {"name": 9, "face": 17}
MIN_BLIND_BITS = 8
#: Exclusive upper bound of an honest *hit* margin, what a follow-up claim must prove ``0 <= m < bound``:
#: names ``m = |X∩Y| - T <= 127 - 1`` (a hit has no DOB penalty, ``T >= 1``); faces ``m <= x_q·y_q <= 64²``
#: (``‖x_q‖ <= 48 + sqrt(1024)/2``). The tighter the range, the fewer forged values pass (threat model).
HIT_MARGIN_BOUND = {"name": 128, "face": 4096}
#: Claims a round accepts in all its follow-ups together, per traveller of the round (default of
#: ``HolderLimits.claims_per_traveller``). An honest traveller rarely hits more than a few entries of one list
#: (name variants x birth years of one listed person); every claim beyond is, against a malicious querier,
#: one more label it may obtain (docs/threat-model.md "Follow-up").
CLAIMS_PER_TRAVELLER = 4


@dataclass(frozen=True)
class HolderEntry:
    """One scored item: a (name variant, birth year) of a list record, or a face embedding."""

    record_id: str
    label: dict[str, Any]
    dims: tuple[int, ...]
    coefs: tuple[int, ...] = ()
    year: int | None = None


class HolderEntries(list[HolderEntry]):
    """What :func:`entries_from_records` returns: the entries, and ``skipped_faces``, how many listed face
    embeddings could not be used (zero, or a norm that under/overflows) and were left out."""

    skipped_faces: int = 0


def entries_from_records(records: Iterable[PersonRecord], *, kind: str = "name") -> HolderEntries:
    """Expand records into entries: one per (primary name or alias) × birth year (all years of a range).

    Names with no letters are skipped; names longer than ``MAX_BIGRAMS`` bigrams are skipped too (counted by
    the caller via the length difference), never truncated, so a decision is never made on a partial name.
    Faces :func:`~fedcheck.fuzzy.encoding.quantise_face` cannot use (zero vector, norm under/overflowing,
    non-finite values) are skipped and counted in ``skipped_faces`` (one warning per call, no record data):
    one bad listed face must not stop face screening against the others, and is the holder's fault, never
    the querier's.
    """
    out = HolderEntries()
    for rec in records:
        label = rec.label.to_dict()
        if kind == "face":
            if rec.face_embedding is not None:
                try:
                    q = quantise_face(rec.face_embedding)
                except InvalidInput:
                    out.skipped_faces += 1
                    continue
                nz = np.flatnonzero(q)
                out.append(HolderEntry(rec.record_id, label, tuple(int(i) for i in nz),
                                       tuple(int(q[i]) for i in nz)))
            continue
        known = sorted({y for bd in rec.birth_dates for y in bd.years()})
        years: list[int | None] = list(known) if known else [None]
        seen: set[frozenset[int]] = set()
        for pn in rec.names:
            try:
                bg = name_bigrams(pn.full_name)
            except LimitExceeded:
                continue
            if not bg or bg in seen:
                continue
            seen.add(bg)
            dims = tuple(sorted(bg))
            out.extend(HolderEntry(rec.record_id, label, dims, (), y) for y in years)
    if out.skipped_faces:
        _log.warning(
            "%d listed face embedding(s) cannot be scored (not 16..1024 dimensions, zero vector, norm out of "
            "range or non-finite values) and are left out of face screening; correct them in the watchlist",
            out.skipped_faces,
        )
    return out


@dataclass(frozen=True)
class HolderLimits:
    """Per-query limits enforced before any work (RESOURCE_EXHAUSTED / INVALID_ARGUMENT)."""

    max_travellers: int = 1000
    max_packs: int = 1000
    key_bits: frozenset[int] = ALLOWED_KEY_BITS
    #: travellers per pack; > 1 shares ``r`` across a pack, which voids the follow-up proof (threat model)
    max_pack_size: int = 256
    #: rounds kept for follow-ups (oldest forgotten first); each keeps a 32-byte seed and a claim count
    max_open_rounds: int = 4096
    #: follow-up claims a round accepts per traveller, all its follow-ups together (the only bound on what a
    #: malicious querier gets, with budget and audit; docs/threat-model.md "Follow-up"). Offline screening
    #: against one's own list raises it: there the querier is the holder.
    claims_per_traveller: int = CLAIMS_PER_TRAVELLER


@dataclass
class _Round:
    """A scored round: shuffles and blinding are *derived* from ``seed`` (ChaCha20), never stored."""

    params: FuzzyParams
    seed: bytes
    entry_count: int
    traveller_count: int
    blind_bits: int
    claims: int = 0  # claims checked so far, all follow-ups of the round
    #: serialises the round's follow-ups: claim count and closure are decided one request at a time
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pack_count(self) -> int:
        return math.ceil(self.traveller_count / self.params.pack_size)

    @property
    def perms(self) -> npt.NDArray[np.int64]:
        """Shuffles of every pack, shape ``(packs, entries)`` (recomputed: for tests and analysis)."""
        return np.stack([_perm(self.seed, i, self.entry_count) for i in range(self.pack_count)])


# Worker state, inherited through fork so ciphertexts are not pickled per task.
_STATE: dict[str, Any] = {}


class FuzzyHolder:
    """Scores encrypted queries against a fixed list of entries; keeps per-round blinding for follow-ups."""

    def __init__(
        self,
        entries: Sequence[HolderEntry],
        *,
        kind: str = "name",
        face_dims: int = 128,
        workers: int | None = None,
        limits: HolderLimits = HolderLimits(),
        mp_context: str = "fork",
    ) -> None:
        if kind not in MARGIN_BITS:
            raise InvalidInput("kind: must be 'name' or 'face'", reason="bad_kind")
        self.kind = kind
        self.dims = NAME_DIMS if kind == "name" else face_dims
        self.entries = list(entries)
        self.workers = workers or os.cpu_count() or 1
        self.limits = limits
        #: "fork" shares the round's state with workers for free; a process that runs other threads (a gRPC
        #: server) must use "forkserver": forking it can deadlock the child (locks held by other threads)
        self.mp_context = mp_context
        self._rounds: dict[bytes, _Round] = {}
        lens = [len(e.dims) for e in self.entries]
        if any(d < 0 or d >= self.dims for e in self.entries for d in e.dims):
            raise InvalidInput("entries: dimension out of range", reason="bad_entry")
        if kind == "name" and any(n > MAX_BIGRAMS for n in lens):
            raise LimitExceeded("entries: name too long", reason="name_too_long")
        if kind == "face" and any(abs(c) > FACE_Q for e in self.entries for c in e.coefs):
            raise InvalidInput("entries: face coefficient out of range", reason="bad_entry")
        self._offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
        self._flat = np.array([d for e in self.entries for d in e.dims], dtype=np.int64)
        self._coefs = np.array([c for e in self.entries for c in e.coefs], dtype=np.int64)
        self._sizes = np.array(lens, dtype=np.int64)
        self._years = [e.year for e in self.entries]
        # Names: the product T[|Y|]·Π C_d of every entry follows a shared-prefix plan (see _name_plan).
        self._plan = _name_plan(self._entry_symbols()) if kind == "name" else None

    def _entry_symbols(self) -> list[tuple[int, ...]]:
        """Per entry the ciphertext indices whose product it needs: its bigrams and ``dims + |Y|`` (the
        threshold-table row, which follows the ``dims`` bigram ciphertexts in every pack)."""
        return [(*(int(d) for d in e.dims), self.dims + len(e.dims)) for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    # ------------------------------------------------------------------ scoring
    def _check(self, req: ScoreRequest, pk: PublicKey) -> int:
        p = req.params
        if pk.key_bits not in self.limits.key_bits:
            raise InvalidInput("public_key: modulus size not allowed", reason="bad_key_size")
        if p.kind != self.kind or p.dims != self.dims:
            raise InvalidInput("params: kind or dims do not match this list", reason="bad_params")
        if req.traveller_count > self.limits.max_travellers or req.pack_count > self.limits.max_packs:
            raise LimitExceeded("request: too many travellers", reason="batch_too_large")
        if self.kind == "name" and p.size_table <= int(self._sizes.max(initial=0)):
            raise InvalidInput("size_table: does not cover the list", reason="bad_params")
        if self.kind == "face" and p.size_table != 1:
            raise InvalidInput("size_table: must be 1 for faces", reason="bad_params")
        blind_bits = p.slot_bits - MARGIN_BITS[self.kind]
        if blind_bits < MIN_BLIND_BITS:
            raise InvalidInput("slot_bits: too small to blind the margin", reason="bad_slot_bits")
        if p.pack_size * p.slot_bits > pk.key_bits - 2:
            raise InvalidInput("pack_size: slots exceed the plaintext", reason="bad_pack_size")
        if p.pack_size > self.limits.max_pack_size:
            raise InvalidInput("pack_size: shared blinding not allowed by this holder",
                               reason="pack_size_not_allowed")
        expected = req.pack_count * p.ciphertexts_per_pack * pk.ciphertext_bytes
        if len(req.ciphertexts) != expected:
            raise InvalidInput("ciphertexts: count does not match the layout", reason="bad_count")
        return blind_bits

    def validate(self, request: ScoreRequest) -> None:
        """Every check :meth:`score` makes, without scoring or keeping round state.

        Why separate: a node validates a request completely *before* it charges the partner's budget (a
        malformed request must cost nothing), then scores. Costs one gcd per ciphertext.
        """
        if len(request.round_id) != 16:
            raise InvalidInput("round_id: must be 16 bytes", reason="bad_field")
        if request.round_id in self._rounds:
            raise InvalidInput("round_id: already used", reason="round_reused")
        if len(request.public_key) not in {k // 8 for k in self.limits.key_bits}:
            raise InvalidInput("public_key: modulus size not allowed", reason="bad_key_size")
        pk = PublicKey._unchecked(int.from_bytes(request.public_key, "big"))
        self._check(request, pk)
        ciphertexts_from_bytes(request.ciphertexts, pk.ciphertext_bytes, pk.n)

    def score(self, request: ScoreRequest) -> ScoreResponse:
        """Validate ``request`` (raises InvalidInput/InvalidCiphertext/LimitExceeded) and score it."""
        if len(request.round_id) != 16:
            raise InvalidInput("round_id: must be 16 bytes", reason="bad_field")
        if request.round_id in self._rounds:
            raise InvalidInput("round_id: already used", reason="round_reused")
        if len(request.public_key) not in {k // 8 for k in self.limits.key_bits}:
            raise InvalidInput("public_key: modulus size not allowed", reason="bad_key_size")
        pk = PublicKey._unchecked(int.from_bytes(request.public_key, "big"))
        blind_bits = self._check(request, pk)
        p = request.params
        cts = ciphertexts_from_bytes(request.ciphertexts, pk.ciphertext_bytes, pk.n)
        packs, n_entries, k, w = request.pack_count, len(self.entries), p.pack_size, p.slot_bits
        blocks = max(1, (pk.key_bits - 2) // (k * w))
        # shuffles and blinding come from a fresh 256-bit secret (ChaCha20 keystream): 32 bytes per round
        seed = os.urandom(32)
        while len(self._rounds) >= self.limits.max_open_rounds:
            del self._rounds[next(iter(self._rounds))]  # oldest first
        self._rounds[request.round_id] = _Round(p, seed, n_entries, request.traveller_count, blind_bits)

        per_pack = p.ciphertexts_per_pack
        outs_per_pack = math.ceil(n_entries / blocks) if n_entries else 0
        state = {
            "n": gmpy2.mpz(pk.n), "n2": gmpy2.mpz(pk.n) ** 2, "width": pk.ciphertext_bytes,
            "cts": [[gmpy2.mpz(c) for c in cts[i * per_pack : (i + 1) * per_pack]] for i in range(packs)],
            "params": p, "blocks": blocks, "seed": seed, "blind_bits": blind_bits, "n_entries": n_entries,
            "offsets": self._offsets, "flat": self._flat, "coefs": self._coefs, "sizes": self._sizes,
            "years": self._years, "kind": self.kind, "plan": self._plan,
            "rerand_table": Rerandomiser(pk.n, window=rerand_window(packs * outs_per_pack)).table,
        }
        units: list[tuple[int, int, int]] = []
        chunk = max(1, math.ceil(outs_per_pack * packs / (self.workers * 8)))
        for pk_i in range(packs):
            units.extend((pk_i, s, min(s + chunk, outs_per_pack)) for s in range(0, outs_per_pack, chunk))
        _STATE.clear()
        _STATE.update(state)
        try:
            if self.workers <= 1 or len(units) <= 1:
                _init_worker()
                parts = [_score_unit(u) for u in units]
            else:
                ctx = multiprocessing.get_context(self.mp_context)
                if self.mp_context == "fork":
                    pool = ctx.Pool(self.workers, initializer=_init_worker)
                else:  # workers do not inherit memory: hand them the round's state once each
                    pool = ctx.Pool(self.workers, initializer=_init_worker_with, initargs=(state,))
                with pool:
                    parts = pool.map(_score_unit, units, chunksize=1)
        finally:
            _STATE.clear()
        return ScoreResponse(request.round_id, n_entries, blocks, b"".join(parts))

    # ------------------------------------------------------------------ follow-up
    def release(self, request: LabelRequest) -> LabelResponse:
        """Release the labels of proven hits (see :meth:`release_with_records`)."""
        return self.release_with_records(request)[0]

    def release_with_records(self, request: LabelRequest) -> tuple[LabelResponse, tuple[str, ...]]:
        """Check every claim; release labels only if *all* are valid; return the released record ids too.

        The record ids are for the holder's own audit; the response carries only the (already
        audience-narrowed) label fields, never an internal id. A claim is valid iff its proof is the exact
        slot value ``2^(w-1) + r·m + ρ`` for this pair's derived ``r, ρ`` with ``0 <= m < HIT_MARGIN_BOUND``.
        Bounds (docs/threat-model.md, "Follow-up"): claims per round (all its requests) <=
        ``CLAIMS_PER_TRAVELLER`` × travellers (``LimitExceeded``, nothing released); a request with any
        invalid claim releases nothing and **closes the round** (its references become meaningless), so
        a querier gets one wrong guess per round, each round charged and audited.
        """
        rnd = self._rounds.get(request.round_id)
        if rnd is None:
            raise NotFound("round: unknown or closed", reason="unknown_round")
        with rnd.lock:  # concurrent follow-ups of one round: one at a time, and never after it was closed
            if self._rounds.get(request.round_id) is not rnd:
                raise NotFound("round: unknown or closed", reason="unknown_round")
            return self._release_locked(rnd, request)

    def check_claims(self, round_id: bytes, count: int) -> None:
        """Raise (``unknown_round`` / ``too_many_claims``) if ``count`` more claims cannot be checked for
        this round now: lets a caller refuse before charging anything (the release re-checks under lock)."""
        rnd = self._rounds.get(round_id)
        if rnd is None:
            raise NotFound("round: unknown or closed", reason="unknown_round")
        cap = self.limits.claims_per_traveller
        if rnd.claims + count > cap * rnd.traveller_count:
            raise LimitExceeded(f"claims: at most {cap} per traveller of the round", reason="too_many_claims")

    def _release_locked(self, rnd: _Round, request: LabelRequest) -> tuple[LabelResponse, tuple[str, ...]]:
        p = rnd.params
        cap = self.limits.claims_per_traveller
        if rnd.claims + len(request.claims) > cap * rnd.traveller_count:
            raise LimitExceeded(f"claims: at most {cap} per traveller of the round", reason="too_many_claims")
        bound = HIT_MARGIN_BOUND[self.kind]
        rnd.claims += len(request.claims)
        valid: list[tuple[int, int, int]] = []  # (claim index, pack, position)
        for i, c in enumerate(request.claims):
            pack, slot = divmod(c.traveller, p.pack_size)
            if c.traveller >= rnd.traveller_count or c.reference >= rnd.entry_count:
                continue
            r, rho = _blinding(rnd.seed, pack, c.reference, 1, p.pack_size, rnd.blind_bits)
            if _claim_ok(c.proof, int(r[0]), int(rho[0, slot]), p.slot_bits, bound):
                valid.append((i, pack, c.reference))
        rejected = len(request.claims) - len(valid)
        if rejected:
            self.close_round(request.round_id)
            return LabelResponse(request.round_id, (), rejected), ()
        perms: dict[int, npt.NDArray[np.int64]] = {}
        released: list[ReleasedLabel] = []
        records: list[str] = []
        for i, pack, pos in valid:
            if pack not in perms:
                perms[pack] = _perm(rnd.seed, pack, rnd.entry_count)
            e = self.entries[int(perms[pack][pos])]
            c = request.claims[i]
            released.append(ReleasedLabel(c.traveller, c.reference, dict(e.label)))
            records.append(e.record_id)
        return LabelResponse(request.round_id, tuple(released), 0), tuple(records)

    def close_round(self, round_id: bytes) -> None:
        """Forget a round's shuffles and blinding: its references become meaningless."""
        self._rounds.pop(round_id, None)


def _claim_ok(proof: int, r: int, rho: int, slot_bits: int, bound: int) -> bool:
    """``proof`` is exactly the slot value ``2^(w-1) + r·m + ρ`` of a hit, ``0 <= m < bound``.

    From a miss value ``v' = 2^(w-1) + r·m' + ρ`` the querier gets a valid proof only as ``v' + r·j``
    (``j = m - m'``): it must guess a multiple of the unknown ``r``; any offset ``d`` is a multiple of at most
    a few dozen of the ``2^(b-1)`` possible ``r`` (docs/threat-model.md, "Follow-up").
    """
    half = 1 << (slot_bits - 1)
    if not half <= proof < half << 1:  # a decrypted w-bit slot with its top (hit) bit set
        return False
    diff = proof - half - rho
    return diff >= 0 and diff % r == 0 and diff // r < bound


# Per-round secrets, derived: a ChaCha20 keystream keyed by the round's 32-byte seed, one stream per
# (pack, purpose) (nonce = block counter ‖ pack ‖ purpose), seekable so a follow-up recomputes one value.
_PERM, _R, _RHO = 1, 2, 3


def _stream(seed: bytes, pack: int, purpose: int, offset: int, length: int) -> bytes:
    block, skip = divmod(offset, 64)
    nonce = block.to_bytes(4, "little") + struct.pack("<QI", pack, purpose)
    enc = Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()
    return enc.update(bytes(skip + length))[skip:]


def _u64(seed: bytes, pack: int, purpose: int, start: int, count: int) -> npt.NDArray[np.uint64]:
    raw = _stream(seed, pack, purpose, 8 * start, 8 * count)
    return np.frombuffer(raw, dtype="<u8").astype(np.uint64)


def _perm(seed: bytes, pack: int, n_entries: int) -> npt.NDArray[np.int64]:
    """The pack's shuffle: argsort of ``n_entries`` keystream words (ties: probability < n²/2^65)."""
    return np.argsort(_u64(seed, pack, _PERM, 0, n_entries), kind="stable").astype(np.int64)


def _blinding(
    seed: bytes, pack: int, start: int, count: int, k: int, blind_bits: int
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """``r`` (shape ``count``) uniform in ``[2^(b-1), 2^b)`` and ``ρ`` (``count × k``) in ``[0, r)`` for
    shuffled positions ``start..start+count`` of ``pack`` (ρ's modulo bias < 2^(b-64))."""
    r = (np.uint64(1) << np.uint64(blind_bits - 1)) | (
        _u64(seed, pack, _R, start, count) >> np.uint64(64 - blind_bits + 1)
    )
    rho = _u64(seed, pack, _RHO, start * k, count * k).reshape(count, k) % r[:, None]
    return r, rho


def _init_worker_with(state: dict[str, Any]) -> None:
    _STATE.clear()
    _STATE.update(state)
    _init_worker()


def _init_worker() -> None:
    _STATE["rerand"] = Rerandomiser(int(_STATE["n"]), table=_STATE["rerand_table"])
    _STATE["perm_pack"] = None
    if _STATE.get("plan") is not None:  # plain lists: no numpy scalars in the per-pair loop
        _STATE["plan_lists"] = tuple(a.tolist() for a in _STATE["plan"])


#: Shared-prefix products kept per worker for the current pack, at most this many (≈ 32 MB at 2048 bits);
#: beyond, a product is recomputed from its nearest cached ancestor (same value, more multiplications).
_NODE_CACHE_MAX = 1 << 16


def _name_plan(keys: list[tuple[int, ...]]) -> tuple[npt.NDArray[np.int64], ...]:
    """Shared-prefix plan for the entry products ``Π_{s ∈ key} C_s`` (multiplication commutes, so any order
    gives the same ciphertext).

    Each key is ordered by descending symbol frequency in the list; the keys are sorted, and every prefix
    that two sorted-adjacent keys share (a branching node of their trie, e.g. the common bigrams of several
    names, or a whole name repeated for each birth year) becomes a *node*, computed once per pack from its
    longest node prefix (its parent). An entry starts from its deepest node and multiplies the rest: on the
    UN list ≈ 30 % fewer multiplications than one product per entry. Returns flat arrays (cheap to hand to
    forkserver workers): node parent (-1: none), node symbol offsets and symbols (beyond the parent),
    entry node (-1: none), entry symbol offsets and symbols (beyond the node).
    """
    freq: dict[int, int] = {}
    for k in keys:
        for x in k:
            freq[x] = freq.get(x, 0) + 1
    ordered = [tuple(sorted(k, key=lambda x: (-freq[x], x))) for k in keys]
    order = sorted(range(len(keys)), key=ordered.__getitem__)

    def lcp(a: tuple[int, ...], b: tuple[int, ...]) -> int:
        i, m = 0, min(len(a), len(b))
        while i < m and a[i] == b[i]:
            i += 1
        return i

    shared = [0] * (len(keys) + 1)  # shared[j]: lcp of sorted positions j-1 and j
    for j in range(1, len(order)):
        shared[j] = lcp(ordered[order[j - 1]], ordered[order[j]])
    node_id: dict[tuple[int, ...], int] = {}
    entry_depth = [0] * len(keys)
    for j, e in enumerate(order):
        depth = max(shared[j], shared[j + 1])
        entry_depth[e] = depth
        if depth:
            node_id.setdefault(ordered[e][:depth], len(node_id))
    nodes = sorted(node_id, key=node_id.__getitem__)
    n_parent: list[int] = []
    n_off: list[int] = [0]
    n_syms: list[int] = []
    for prefix in nodes:
        par, pdepth = -1, 0
        for cut in range(len(prefix) - 1, 0, -1):
            if prefix[:cut] in node_id:
                par, pdepth = node_id[prefix[:cut]], cut
                break
        n_parent.append(par)
        n_syms.extend(prefix[pdepth:])
        n_off.append(len(n_syms))
    e_node: list[int] = []
    e_off: list[int] = [0]
    e_syms: list[int] = []
    for e, k in enumerate(ordered):
        depth = entry_depth[e]
        e_node.append(node_id[k[:depth]] if depth else -1)
        e_syms.extend(k[depth:])
        e_off.append(len(e_syms))
    return tuple(np.asarray(a, dtype=np.int64) for a in (n_parent, n_off, n_syms, e_node, e_off, e_syms))


def _node_value(i: int, cts: list[Any], n2: Any, cache: dict[int, Any], plan: tuple[list[int], ...]) -> Any:
    v = cache.get(i)
    if v is not None:
        return v
    parent, off, syms = plan[0], plan[1], plan[2]
    par = parent[i]
    v = _node_value(par, cts, n2, cache, plan) if par >= 0 else None
    for x in syms[off[i] : off[i + 1]]:
        v = cts[x] if v is None else v * cts[x] % n2
    if len(cache) < _NODE_CACHE_MAX:
        cache[i] = v
    return v
#: Horner shifts of more squarings than this go through one ``powmod`` call (less interpreter overhead);
#: shorter ones are plain Python squarings (``powmod`` pays ≈ 2 multiplications of Montgomery conversion).
_POWMOD_SQUARINGS = 32


def _score_unit(unit: tuple[int, int, int]) -> bytes:
    """Score outputs ``start..stop`` of ``pack``.

    Per block (entry at a shuffled position) ``acc ← acc^(2^(k w)) · A^r``, evaluated as one left-to-right
    chain: ``acc^(2^(k w − L + 1)) · A`` then, per remaining bit of ``r`` (``L`` bits), square and multiply
    by ``A`` if the bit is set. The k·w squarings of the shift thus also raise ``A`` to ``r``: the same value
    as ``acc^(2^(k w)) · powmod(A, r)`` without the ≈ L squarings of a separate exponentiation.
    """
    pack, start, stop = unit
    s = _STATE
    n, n2, p = s["n"], s["n2"], s["params"]
    cts: list[Any] = s["cts"][pack]
    dims, size_table = p.dims, p.size_table
    table, years_ct = cts[dims : dims + size_table], cts[dims + size_table :]
    n_entries = s["n_entries"]
    if s.get("perm_pack") != pack:  # units of one pack mostly reach the same worker in a row
        s["perm"], s["perm_pack"] = _perm(s["seed"], pack, n_entries).tolist(), pack
        s["node_cache"] = {}
    perm: list[int] = s["perm"]
    cache: dict[int, Any] = s["node_cache"]
    blocks, k, w = s["blocks"], p.pack_size, p.slot_bits
    first = start * blocks
    last = min(stop * blocks, n_entries)
    r_row, rho_row = _blinding(s["seed"], pack, first, last - first, k, s["blind_bits"])
    r_list: list[int] = r_row.tolist()
    # slot additions, all blocks of the unit at once: little-endian w-bit slots, block 0 most significant
    wb = w // 8
    slot_bytes = (rho_row + (np.uint64(1) << np.uint64(w - 1))).astype("<u8").view(np.uint8)
    slot_bytes = slot_bytes.reshape(last - first, k, 8)[:, :, :wb]
    years = s["years"]
    offsets, flat, coefs = s["offsets"], s["flat"], s["coefs"]
    plan: tuple[list[int], ...] = s.get("plan_lists", ())
    year_base, year_count = p.year_base, p.year_count
    kw = k * w
    rerand: Rerandomiser = s["rerand"]
    face = s["kind"] == "face"
    width = s["width"]
    out: list[bytes] = []
    for o in range(start, stop):
        lo, hi = o * blocks, min((o + 1) * blocks, n_entries)
        acc: Any = None
        for pos in range(lo, hi):
            e = perm[pos]
            if face:
                a, b = int(offsets[e]), int(offsets[e + 1])
                base = table[0] * _face_product(cts, flat[a:b].tolist(), coefs[a:b].tolist(), n2) % n2
            else:
                node = plan[3][e]
                base = _node_value(node, cts, n2, cache, plan) if node >= 0 else None
                for x in plan[5][plan[4][e] : plan[4][e + 1]]:
                    base = cts[x] if base is None else base * cts[x] % n2
            a_ct = base
            yr = years[e]
            if not face and yr is not None and 0 <= yr - year_base < year_count:
                a_ct = a_ct * years_ct[yr - year_base] % n2
            r = r_list[pos - first]
            if acc is None:
                acc = gmpy2.powmod(a_ct, r, n2)
                continue
            bits = bin(r)[3:]  # r without its leading 1
            lead = kw - len(bits)  # squarings before A's leading bit enters the chain
            if lead < 0:  # never for honest parameters (k·w >= b): the plain two-step form
                acc = gmpy2.powmod(acc, 1 << kw, n2) * gmpy2.powmod(a_ct, r, n2) % n2
                continue
            if lead > _POWMOD_SQUARINGS:
                acc = gmpy2.powmod(acc, 1 << lead, n2)
            else:
                for _ in range(lead):
                    acc = acc * acc % n2
            acc = acc * a_ct % n2
            for bit in bits:
                acc = acc * acc % n2
                if bit == "1":
                    acc = acc * a_ct % n2
        add = int.from_bytes(slot_bytes[lo - first : hi - first][::-1].tobytes(), "little")
        acc = acc * (1 + n * add) % n2 * rerand.factor() % n2
        out.append(int(acc).to_bytes(width, "big"))
    return b"".join(out)


def _face_product(cts: list[Any], dims: Sequence[int], coefs: Sequence[int], n2: Any) -> Any:
    """``Π C_d^{y_d}`` for small signed ``y_d`` by value buckets: ~|dims| + 4·FACE_Q multiplications."""
    result = gmpy2.mpz(1)
    for sign in (1, -1):
        buckets = [gmpy2.mpz(1)] * (FACE_Q + 1)
        for d, c in zip(dims, coefs, strict=True):
            if c * sign > 0:
                buckets[c * sign] = buckets[c * sign] * cts[d] % n2
        running, acc = gmpy2.mpz(1), gmpy2.mpz(1)
        for v in range(FACE_Q, 0, -1):
            running = running * buckets[v] % n2
            acc = acc * running % n2
        result = result * (acc if sign == 1 else gmpy2.invert(acc, n2)) % n2
    return result


