"""Transport-free protocol roles (state machines over domain messages, no gRPC): exact-match OPRF-PSI in
:mod:`fedcheck.protocol.exact`."""

from __future__ import annotations

__all__ = ["exact"]
