"""The suite's cases, one module per group; importing this package fills
:data:`~fedcheck.conformance.model.REGISTRY`.

Why modules per group: a reviewer checking, say, the OPRF cases reads one file next to the spec section it
cites.
"""

from __future__ import annotations

from fedcheck.conformance.cases import (  # noqa: F401 - imported for their registrations
    bad_input,
    budget,
    cardinality,
    coordinator,
    exact,
    fuzzy,
    index,
    oprf,
    policy,
    services,
    transport,
    version,
)

__all__: list[str] = []
