"""Encryption at rest: sealed files, envelope sealer, KEK loading and rotation."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from fedcheck.errors import ConfigError, VerificationError
from fedcheck.trust.atrest import (
    EnvelopeSealer,
    KeyEncryptionKey,
    Sealer,
    generate_kek_text,
    load_kek,
    open_bytes,
    open_sealed_file,
    rewrap_sealed_file,
    seal_bytes,
    seal_file,
)

SECRET = b"oprf-epoch-key-0123456789abcdef"


def test_kek_text_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = os.urandom(32)
    hex_kek = KeyEncryptionKey.from_text(raw.hex())
    b64_kek = KeyEncryptionKey.from_text(base64.b64encode(raw).decode())
    url_kek = KeyEncryptionKey.from_text(base64.urlsafe_b64encode(raw).decode().rstrip("="))
    assert hex_kek.key_id == b64_kek.key_id == url_kek.key_id
    assert hex_kek.same_key(b64_kek)
    path = tmp_path / "kek"
    path.write_text(raw.hex() + "\n")
    path.chmod(0o600)
    assert load_kek(f"file:{path}").key_id == hex_kek.key_id
    monkeypatch.setenv("FEDCHECK_TEST_KEK", base64.b64encode(raw).decode())
    assert load_kek("env:FEDCHECK_TEST_KEK").key_id == hex_kek.key_id
    assert len(generate_kek_text()) == 64


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32, "a" * 10, base64.b64encode(b"x" * 31).decode()])
def test_kek_bad_text(text: str) -> None:
    with pytest.raises(ConfigError):
        KeyEncryptionKey.from_text(text)


def test_kek_bad_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDCHECK_TEST_MISSING", raising=False)
    for spec in ["nothing", "file:", "vault:x", "env:FEDCHECK_TEST_MISSING", f"file:{tmp_path / 'none'}"]:
        with pytest.raises(ConfigError):
            load_kek(spec)
    loose = tmp_path / "loose"
    loose.write_text(generate_kek_text())
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_kek(f"file:{loose}")


def test_kek_never_in_repr_or_errors() -> None:
    kek = KeyEncryptionKey.generate()
    assert kek.to_text() not in repr(kek)
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(kek)


def test_sealed_bytes_roundtrip_and_failures() -> None:
    kek, other = KeyEncryptionKey.generate(), KeyEncryptionKey.generate()
    blob = seal_bytes(SECRET, kek, aad=b"ctx")
    assert SECRET not in blob
    assert open_bytes(blob, kek, aad=b"ctx") == SECRET
    with pytest.raises(VerificationError):
        open_bytes(blob, other, aad=b"ctx")
    with pytest.raises(VerificationError):
        open_bytes(blob, kek, aad=b"other")
    for i in (0, 5, 20, 60, len(blob) - 1):
        tampered = bytearray(blob)
        tampered[i] ^= 1
        with pytest.raises(VerificationError):
            open_bytes(bytes(tampered), kek, aad=b"ctx")
    with pytest.raises(VerificationError):
        open_bytes(blob[:30], kek, aad=b"ctx")


def test_sealed_file_unreadable_without_kek_and_rewrap(tmp_path: Path) -> None:
    old, new = KeyEncryptionKey.generate(), KeyEncryptionKey.generate()
    path = seal_file(tmp_path / "oprf.key.sealed", SECRET, old)
    assert path.stat().st_mode & 0o077 == 0
    assert SECRET not in path.read_bytes()
    body_before = path.read_bytes()[-(len(SECRET) + 16) :]
    rewrap_sealed_file(path, old, new)
    assert path.read_bytes()[-(len(SECRET) + 16) :] == body_before  # data not re-encrypted
    assert open_sealed_file(path, new) == SECRET
    with pytest.raises(VerificationError):
        open_sealed_file(path, old)
    with pytest.raises(ConfigError):
        open_sealed_file(tmp_path / "missing", new)


def test_envelope_sealer(tmp_path: Path) -> None:
    kek = KeyEncryptionKey.generate()
    ring = tmp_path / "store.keyring"
    sealer = EnvelopeSealer.create(ring, kek)
    assert isinstance(sealer, Sealer)
    blob = sealer.seal(b"record payload", b"row:1")
    assert sealer.open(blob, b"row:1") == b"record payload"
    with pytest.raises(VerificationError):
        sealer.open(blob, b"row:2")  # AAD binds blob to its row
    tampered = bytearray(blob)
    tampered[-1] ^= 0x80
    with pytest.raises(VerificationError):
        sealer.open(bytes(tampered), b"row:1")
    with pytest.raises(ConfigError):
        EnvelopeSealer.create(ring, kek)
    # reload from the keyring with the right and the wrong KEK
    assert EnvelopeSealer.load(ring, kek).open(blob, b"row:1") == b"record payload"
    with pytest.raises(VerificationError):
        EnvelopeSealer.load(ring, KeyEncryptionKey.generate())
    # a different store's DEK cannot open this blob
    other = EnvelopeSealer.create(tmp_path / "other.keyring", kek)
    with pytest.raises(VerificationError):
        other.open(blob, b"row:1")
    assert kek.to_text() not in ring.read_text()


def test_envelope_kek_and_dek_rotation(tmp_path: Path) -> None:
    old, new = KeyEncryptionKey.generate(), KeyEncryptionKey.generate()
    ring = tmp_path / "store.keyring"
    sealer = EnvelopeSealer.create(ring, old)
    blob1 = sealer.seal(b"one", b"")
    sealer.rotate_kek(new)
    assert sealer.open(blob1, b"") == b"one"
    with pytest.raises(VerificationError):
        EnvelopeSealer.load(ring, old)
    reloaded = EnvelopeSealer.load(ring, new)
    assert reloaded.open(blob1, b"") == b"one"
    first = reloaded.active_dek_id
    assert reloaded.rotate_dek() != first
    blob2 = reloaded.seal(b"two", b"")
    again = EnvelopeSealer.open_or_create(ring, new)
    assert again.open(blob1, b"") == b"one"
    assert again.open(blob2, b"") == b"two"
    assert blob2[4:12] == again.active_dek_id
