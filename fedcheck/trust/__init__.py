"""Trust and governance: who may ask what, proven how, within which limits, and accounted for where.

Modules (import them directly; this package imports nothing eagerly):

- :mod:`fedcheck.trust.pki`     federation CA, certificates bound to ``<role>.<STATE>``, CRL, signatures
- :mod:`fedcheck.trust.atrest`  operator KEK, envelope encryption of stores and secret files, KEK rotation
- :mod:`fedcheck.trust.policy`  per-holder/per-partner policy decisions and querier-side safeguards (TOML)
- :mod:`fedcheck.trust.budget`  persistent per-partner query budgets (SQLite, WAL)
- :mod:`fedcheck.trust.audit`   hash-chained, signed, crash-safe audit log; verification and oversight reports

Nothing in this package logs or raises with identities, secrets or key material in a message.
"""

from __future__ import annotations

__all__ = ["atrest", "audit", "budget", "pki", "policy"]
