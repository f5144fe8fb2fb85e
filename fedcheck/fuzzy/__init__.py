"""Encrypted similarity checks (Paillier): fuzzy names with birth-year agreement, and face embeddings.

Transport-free roles: :class:`FuzzyQuerier` owns the key, encrypts travellers and decodes hit bits;
:class:`FuzzyHolder` validates ciphertexts, scores them against its list (shuffled, blinded, re-randomised)
and releases labels only through the audited follow-up. Protocol: docs/fuzzy.md; leakage:
docs/threat-model.md ("Fuzzy checks (Paillier)").
"""

from __future__ import annotations

from fedcheck.fuzzy._paillier import ALLOWED_KEY_BITS, PublicKey, QuerierKey
from fedcheck.fuzzy.holder import FuzzyHolder, HolderEntry, HolderLimits, entries_from_records
from fedcheck.fuzzy.messages import (
    FuzzyParams,
    HitClaim,
    LabelRequest,
    LabelResponse,
    ReleasedLabel,
    ScoreRequest,
    ScoreResponse,
)
from fedcheck.fuzzy.querier import FuzzyQuerier, FuzzyResult, Traveller

__all__ = [
    "ALLOWED_KEY_BITS",
    "FuzzyHolder",
    "FuzzyParams",
    "FuzzyQuerier",
    "FuzzyResult",
    "HitClaim",
    "HolderEntry",
    "HolderLimits",
    "LabelRequest",
    "LabelResponse",
    "PublicKey",
    "QuerierKey",
    "ReleasedLabel",
    "ScoreRequest",
    "ScoreResponse",
    "Traveller",
    "entries_from_records",
]
