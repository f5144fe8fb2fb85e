"""Key-encryption-key rotation for a stopped node or coordinator.

Why one function: a node and the coordinator seal the same kinds of secrets (store keyring, TLS key,
audit signing key) under an operator KEK, and rotating must be the same careful, restartable procedure
for both: refuse while the service runs (it holds the audit-log lock), re-wrap every data key under the
new KEK without re-encrypting data, and finish an interrupted earlier run instead of failing on it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Mapping
from pathlib import Path

from fedcheck.errors import ConfigError, VerificationError
from fedcheck.trust.atrest import EnvelopeSealer, KeyEncryptionKey, is_sealed_file, rewrap_sealed_file

__all__ = ["rotate_kek"]


def _refuse_if_running(lock_path: Path, what: str) -> None:
    if not lock_path.exists():
        return
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ConfigError(f"stop the {what} before rotating its KEK", reason=f"{what}_running") from None
    finally:
        os.close(fd)


def rotate_kek(
    old: KeyEncryptionKey,
    new: KeyEncryptionKey,
    *,
    sealed_files: Mapping[str, Path],
    keyring: Path | None = None,
    lock_path: Path | None = None,
    what: str = "node",
) -> dict[str, str]:
    """Re-wrap ``keyring`` and every sealed file under ``new``; returns what happened to each, by name."""
    if old.same_key(new):
        raise ConfigError("the new KEK is the current KEK", reason="kek_unchanged")
    if lock_path is not None:
        _refuse_if_running(lock_path, what)
    done: dict[str, str] = {}
    if keyring is not None and keyring.exists():
        try:
            EnvelopeSealer.load(keyring, old).rotate_kek(new)
            done["keyring"] = "rewrapped"
        except VerificationError:
            EnvelopeSealer.load(keyring, new)  # already rotated (an interrupted earlier run), else raises
            done["keyring"] = "already under the new KEK"
    for name, path in sealed_files.items():
        if not path.exists() or not is_sealed_file(path):
            done[name] = "absent or not sealed (skipped)"
            continue
        try:
            rewrap_sealed_file(path, old, new)
            done[name] = "rewrapped"
        except VerificationError:
            rewrap_sealed_file(path, new, new)  # opens only if already under the new KEK
            done[name] = "already under the new KEK"
    return done
