"""fedcheck: federated, privacy-preserving watchlist checks.

Layers (dependencies run one way): ``cli -> node/coordinator -> rpc -> protocol -> crypto/core/records``.
Only :mod:`fedcheck.rpc` touches the generated protobuf package :mod:`fedcheck._proto`.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
