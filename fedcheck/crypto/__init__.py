"""Thin wrappers over libsodium (ristretto255, via ``rbcl``) and ``cryptography``: RFC 9497 OPRF/VOPRF
(:mod:`fedcheck.crypto.oprf`) and the tags/sealed labels of the exact-match index
(:mod:`fedcheck.crypto.labels`). No hand-written curve or hash arithmetic lives here."""

from __future__ import annotations

__all__ = ["labels", "oprf"]
