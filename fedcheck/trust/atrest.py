"""Encryption at rest: an operator key-encryption key (KEK) wraps random data-encryption keys (DEKs).

Why this exists: a node's disk holds the watchlist store and its secrets (OPRF epoch keys, the TLS private
key, the audit signing key). A copied disk or backup must not disclose them. The operator supplies a KEK
that never touches the disk next to the data (``file:PATH`` on a separate mount / secret store, or
``env:VAR``); every store or secret file gets its own random DEK, and only the DEK wrapped under the KEK is
stored. Rotating the KEK re-wraps DEKs; data is not re-encrypted.

KEK text format (file contents or environment value): exactly 32 random bytes, written either as 64 hex
digits or as base64 (standard or URL-safe alphabet, padding optional). Surrounding whitespace is ignored.
``fedcheck pki`` can print a fresh one (:func:`generate_kek_text`).

Formats (all AEAD is AES-256-GCM from ``cryptography``; 96-bit random nonces; the 2**32-messages-per-DEK
bound of random nonces is far beyond any node's store)::

    store blob    b"FCE1" | dek_id(8) | nonce(12) | ciphertext+tag      AAD = b"FCE1" | dek_id | caller aad
    keyring file  JSON {format, kek_id, active, deks: {dek_id_hex: b64(nonce | wrapped DEK+tag)}}
                  DEK wrap AAD = b"fedcheck-dek-v1" | kek_id | dek_id
    sealed file   b"FCF1" | kek_id(8) | wrap nonce(12) | wrapped DEK+tag(48) | nonce(12) | ciphertext+tag
                  DEK wrap AAD = b"fedcheck-file-dek-v1" | kek_id ; data AAD = b"FCF1" | caller aad

This module must never log, ``repr`` or put into an exception any key byte. Every failure to open (wrong
KEK, wrong AAD, tampered blob, unknown key id) is the same opaque
:class:`fedcheck.errors.VerificationError`; a caller that knows which file and which setting were involved
wraps the opening in :func:`explain_kek_mismatch` (or, for a key file given on a command line or in a config
table, :func:`explain_unsealing`), which names them. :func:`load_kek` errors name the KEK file or variable
(and, given, the setting and config file), never the spec value.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
from collections.abc import Container, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedcheck.errors import ConfigError, FedcheckError, IntegrityError, VerificationError

__all__ = [
    "KEY_SIZE",
    "EnvelopeSealer",
    "KeyEncryptionKey",
    "Sealer",
    "atomic_write",
    "explain_kek_mismatch",
    "explain_unsealing",
    "generate_kek_text",
    "is_sealed_file",
    "kek_location",
    "load_kek",
    "open_bytes",
    "open_sealed_file",
    "rewrap_sealed_file",
    "seal_bytes",
    "seal_file",
]

log = logging.getLogger(__name__)

KEY_SIZE = 32
_NONCE = 12
_ID = 8
_TAG = 16
_BLOB_MAGIC = b"FCE1"
_FILE_MAGIC = b"FCF1"
_KEYRING_FORMAT = "fedcheck-keyring-v1"


@runtime_checkable
class Sealer(Protocol):
    """What stores need: authenticated encryption bound to a context string (``aad``)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Return the plaintext or raise :class:`VerificationError` (wrong key, wrong aad, tampered)."""
        ...


class KeyEncryptionKey:
    """A 256-bit KEK. ``key_id`` is a public fingerprint (hash of the key); the key bytes never leave via
    repr.
    """

    __slots__ = ("_aead", "_key", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_SIZE:
            raise ConfigError(f"key-encryption key must be {KEY_SIZE} bytes", reason="bad_kek")
        self._key = bytes(key)
        self._aead = AESGCM(self._key)
        #: 8-byte public identifier, stored in wrapped keys so a wrong KEK is reported before any AEAD call
        self.key_id: bytes = hashlib.sha256(b"fedcheck-kek-id-v1\x00" + self._key).digest()[:_ID]

    @classmethod
    def generate(cls) -> KeyEncryptionKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    @classmethod
    def from_text(cls, text: str) -> KeyEncryptionKey:
        """Parse 64 hex digits or base64 (standard/URL-safe, padding optional) of exactly 32 bytes."""
        value = text.strip()
        raw: bytes | None = None
        if len(value) == 2 * KEY_SIZE:
            try:
                raw = bytes.fromhex(value)
            except ValueError:
                raw = None
        if raw is None:
            padded = value + "=" * (-len(value) % 4)
            try:
                alt = b"-_" if ("-" in value or "_" in value) else None
                raw = base64.b64decode(padded, altchars=alt, validate=True)
            except (binascii.Error, ValueError):
                raw = None
        if raw is None or len(raw) != KEY_SIZE:
            raise ConfigError(
                f"key-encryption key must be {KEY_SIZE} bytes as 64 hex digits or base64", reason="bad_kek"
            )
        return cls(raw)

    def to_text(self) -> str:
        """Hex form, for writing a freshly generated KEK to the operator's secret store."""
        return self._key.hex()

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, dek, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        if len(wrapped) != _NONCE + KEY_SIZE + _TAG:
            raise VerificationError()
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise VerificationError() from None

    def same_key(self, other: KeyEncryptionKey) -> bool:
        return hmac.compare_digest(self._key, other._key)

    def __repr__(self) -> str:
        return f"KeyEncryptionKey(key_id={self.key_id.hex()})"

    def __reduce__(self) -> str | tuple[object, ...]:  # never pickle key bytes by accident
        raise TypeError("KeyEncryptionKey cannot be pickled")


def generate_kek_text() -> str:
    """A fresh KEK in the text format :func:`load_kek` reads (64 hex digits)."""
    return KeyEncryptionKey.generate().to_text()


def load_kek(spec: str, *, setting: str = "", source: Path | str | None = None) -> KeyEncryptionKey:
    """Load the operator KEK from ``file:PATH`` or ``env:VAR`` (see module docstring for the text format).

    A KEK file readable by group or others is refused: the KEK protects every other secret of the node.

    ``setting`` (e.g. ``"node.kek"``, ``"--new-kek"``) and ``source`` (the config file it was read from) only
    make the errors say where the spec came from; every error names the KEK file or variable, never the spec
    value itself (an operator may have pasted the key in place of its path).
    """
    origin = _kek_origin(setting, source)
    kind, sep, where = spec.partition(":")
    if kind not in ("file", "env") or not sep or not where:
        message = _bad_spec_message(spec, kind if sep else "", setting, source)
        raise ConfigError(message, reason="bad_kek_spec")
    if kind == "file":
        path = Path(where)
        try:
            st = path.stat()
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError):
            raise ConfigError(
                f"KEK file {path}{origin} missing or unreadable", reason="bad_kek_spec"
            ) from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"KEK file {path}{origin} must not be accessible by group or others (chmod 600)",
                reason="kek_perms",
            )
        return _kek_from_text(text, f"KEK file {path}{origin}")
    value = os.environ.get(where)
    if not value:
        raise ConfigError(
            f"KEK environment variable {where}{origin} is not set (or empty)", reason="bad_kek_spec"
        )
    return _kek_from_text(value, f"KEK environment variable {where}{origin}")


def _kek_origin(setting: str, source: Path | str | None) -> str:
    """`` (node.kek in /etc/fedcheck/node.toml)``, `` (--new-kek)`` or ``""``."""
    if setting and source:
        return f" ({setting} in {source})"
    if setting or source:
        return f" ({setting or 'kek'}{' in ' + str(source) if source else ''})"
    return ""


def _kek_from_text(text: str, what: str) -> KeyEncryptionKey:
    try:
        return KeyEncryptionKey.from_text(text)
    except ConfigError:
        raise ConfigError(
            f"{what} does not hold a key-encryption key: it must be {KEY_SIZE} random bytes written as 64 "
            "hex digits or base64 (`fedcheck pki gen-kek --out PATH` writes one)",
            reason="bad_kek",
        ) from None


def _bad_spec_message(spec: str, scheme: str, setting: str, source: Path | str | None) -> str:
    """Why ``spec`` is no KEK spec, without echoing it (it may be the key itself)."""
    text = f"{setting or 'the KEK spec'}{f' in {source}' if source else ''} must be 'file:PATH' or 'env:VAR'"
    if scheme and scheme not in ("file", "env"):
        return text + f", not {scheme[:16]!r}:..."
    if scheme:
        return text + f": '{scheme}:' names no {'file' if scheme == 'file' else 'environment variable'}"
    try:
        KeyEncryptionKey.from_text(spec)
    except ConfigError:
        return text + (
            ": the value has no 'file:' or 'env:' prefix (for a KEK file write file:PATH; in a config file a "
            "relative PATH is relative to that file)"
        )
    return text + (
        ": the value looks like the key itself, which must not sit in a config file or on a command line: "
        "write it to a file only the node can read (chmod 600) and give file:PATH"
    )


def kek_location(spec: str) -> str:
    """``KEK file PATH`` / ``KEK environment variable VAR`` for a valid spec (never the key)."""
    kind, _, where = spec.partition(":")
    if kind == "file":
        return f"KEK file {where}"
    if kind == "env":
        return f"KEK environment variable {where}"
    return "the KEK"


@contextlib.contextmanager
def explain_kek_mismatch(
    what: str, spec: str, *, setting: str = "", source: Path | str | None = None, reason: str = "kek_mismatch"
) -> Iterator[None]:
    """Around opening something sealed under the KEK of ``spec``: a :class:`VerificationError` (wrong KEK, or
    the file altered) stays one, but names ``what`` (e.g. ``store keyring /var/fedcheck/keyring.json``), the
    KEK file or variable, the setting and the config file, and the usual cause (a KEK rotated with
    ``rotate-kek`` while the config still names the old one)."""
    named = f"{setting}{f' in {source}' if source else ''}" if setting else ""
    kek = f"the KEK of {named} ({kek_location(spec)})" if named else kek_location(spec)
    fix = f"{setting} must name the new KEK" if setting else "give the new KEK"
    mismatch = f"it is sealed under another KEK (after a `rotate-kek`, {fix}), or the file was altered"
    with explain_unsealing(what, kek, mismatch=mismatch, reason=reason, error=VerificationError):
        yield


@contextlib.contextmanager
def explain_unsealing(
    what: str,
    kek: str,
    *,
    mismatch: str,
    reason: str,
    sealed: str = "",
    error: type[FedcheckError] = ConfigError,
    name_errors: Container[str] | None = (),
) -> Iterator[None]:
    """Around opening one sealed file (a private key: :func:`fedcheck.trust.pki.load_private_key_pem`; a
    keyring): its opaque errors name the file and the KEK that was tried, in one wording everywhere.

    * :class:`VerificationError` (sealed under another KEK, or altered) -> ``error`` with ``reason``:
      ``"{what} cannot be opened with {kek}: {mismatch}"`` (``kek`` e.g. ``"the KEK of --kek"``);
    * :class:`ConfigError` ``kek_required`` (sealed, no KEK given), when ``sealed`` says how to give one ->
      ``ConfigError`` ``kek_required``: ``"{what} is sealed: {sealed}"``;
    * any other :class:`ConfigError` whose reason is in ``name_errors`` (``None``: every reason) ->
      ``"{what}: {message}"``, same reason. Everything else passes unchanged."""
    try:
        yield
    except VerificationError:
        raise error(f"{what} cannot be opened with {kek}: {mismatch}", reason=reason) from None
    except ConfigError as exc:
        if exc.reason == "kek_required" and sealed:
            raise ConfigError(f"{what} is sealed: {sealed}", reason="kek_required") from None
        if name_errors is None or exc.reason in name_errors:
            raise ConfigError(f"{what}: {exc.message}", reason=exc.reason) from None
        raise


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` durably: temp file in the same directory, fsync, rename, fsync directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# ----------------------------------------------------------------------------------------------------
# Self-contained sealed blobs / files (one secret each: OPRF key, TLS key, audit signing key)
# ----------------------------------------------------------------------------------------------------

_FILE_HEADER = len(_FILE_MAGIC) + _ID + _NONCE + KEY_SIZE + _TAG


def _file_wrap_aad(kek_id: bytes) -> bytes:
    return b"fedcheck-file-dek-v1\x00" + kek_id


def seal_bytes(plaintext: bytes, kek: KeyEncryptionKey, *, aad: bytes = b"") -> bytes:
    """Seal one secret under a fresh DEK wrapped by ``kek`` (the ``sealed file`` format)."""
    dek = AESGCM.generate_key(bit_length=256)
    wrapped = kek.wrap(dek, _file_wrap_aad(kek.key_id))
    nonce = secrets.token_bytes(_NONCE)
    ct = AESGCM(dek).encrypt(nonce, plaintext, _FILE_MAGIC + aad)
    return _FILE_MAGIC + kek.key_id + wrapped + nonce + ct


def _split_sealed(blob: bytes) -> tuple[bytes, bytes, bytes]:
    if len(blob) < _FILE_HEADER + _NONCE + _TAG or not blob.startswith(_FILE_MAGIC):
        raise VerificationError()
    kek_id = blob[4 : 4 + _ID]
    wrapped = blob[4 + _ID : _FILE_HEADER]
    return kek_id, wrapped, blob[_FILE_HEADER:]


def open_bytes(blob: bytes, kek: KeyEncryptionKey, *, aad: bytes = b"") -> bytes:
    """Open a :func:`seal_bytes` blob; any failure (wrong KEK, aad, tampering) is :class:`VerificationError`.
    """
    kek_id, wrapped, body = _split_sealed(blob)
    if not hmac.compare_digest(kek_id, kek.key_id):
        raise VerificationError()
    dek = kek.unwrap(wrapped, _file_wrap_aad(kek_id))
    try:
        return AESGCM(dek).decrypt(body[:_NONCE], body[_NONCE:], _FILE_MAGIC + aad)
    except InvalidTag:
        raise VerificationError() from None


def is_sealed_file(path: Path) -> bool:
    """True when ``path`` starts with the sealed-file magic (used to accept legacy plaintext PEM keys)."""
    with open(path, "rb") as fh:
        return fh.read(len(_FILE_MAGIC)) == _FILE_MAGIC


def seal_file(path: Path, plaintext: bytes, kek: KeyEncryptionKey, *, aad: bytes = b"") -> Path:
    """Write ``plaintext`` sealed under ``kek`` to ``path`` atomically with mode 0600."""
    atomic_write(Path(path), seal_bytes(plaintext, kek, aad=aad))
    return Path(path)


def open_sealed_file(path: Path, kek: KeyEncryptionKey, *, aad: bytes = b"") -> bytes:
    """Read and open a sealed file. Missing file -> ConfigError; anything else wrong -> VerificationError."""
    try:
        blob = Path(path).read_bytes()
    except OSError:
        raise ConfigError("sealed file missing or unreadable", reason="sealed_file_unreadable") from None
    return open_bytes(blob, kek, aad=aad)


def rewrap_sealed_file(path: Path, old_kek: KeyEncryptionKey, new_kek: KeyEncryptionKey) -> None:
    """KEK rotation for one sealed file: re-wrap its DEK under ``new_kek``; the data ciphertext is unchanged.
    """
    blob = Path(path).read_bytes()
    kek_id, wrapped, body = _split_sealed(blob)
    if not hmac.compare_digest(kek_id, old_kek.key_id):
        raise VerificationError()
    dek = old_kek.unwrap(wrapped, _file_wrap_aad(kek_id))
    new_wrapped = new_kek.wrap(dek, _file_wrap_aad(new_kek.key_id))
    atomic_write(Path(path), _FILE_MAGIC + new_kek.key_id + new_wrapped + body)


# ----------------------------------------------------------------------------------------------------
# Envelope sealer for stores (many blobs under one DEK, keyring file holds wrapped DEKs)
# ----------------------------------------------------------------------------------------------------


def _dek_aad(kek_id: bytes, dek_id: bytes) -> bytes:
    return b"fedcheck-dek-v1\x00" + kek_id + dek_id


class EnvelopeSealer:
    """A :class:`Sealer` for one store: random DEK(s) in a keyring file, wrapped under the operator KEK.

    Create with :meth:`create` / :meth:`load` / :meth:`open_or_create`. Blobs carry the id of the DEK that
    sealed them, so after :meth:`rotate_dek` old blobs still open while new ones use the new DEK.
    :meth:`rotate_kek` re-wraps every DEK under a new KEK and rewrites the keyring atomically; blobs are
    untouched.
    Thread-safe.
    """

    def __init__(
        self, keyring_path: Path, kek: KeyEncryptionKey, deks: dict[bytes, bytes], active: bytes
    ) -> None:
        self._path = Path(keyring_path)
        self._kek = kek
        self._deks = {k: AESGCM(v) for k, v in deks.items()}
        self._raw = dict(deks)
        self._active = active
        self._lock = threading.Lock()

    # -- construction --------------------------------------------------------------------------------------
    @classmethod
    def create(cls, keyring_path: Path, kek: KeyEncryptionKey) -> EnvelopeSealer:
        path = Path(keyring_path)
        if path.exists():
            raise ConfigError("keyring already exists", reason="keyring_exists")
        dek_id = secrets.token_bytes(_ID)
        sealer = cls(path, kek, {dek_id: AESGCM.generate_key(bit_length=256)}, dek_id)
        sealer._save()
        return sealer

    @classmethod
    def load(cls, keyring_path: Path, kek: KeyEncryptionKey) -> EnvelopeSealer:
        """Load the keyring; a wrong KEK raises :class:`VerificationError`, a corrupt file IntegrityError."""
        path = Path(keyring_path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("format") != _KEYRING_FORMAT:
                raise ValueError
            kek_id = bytes.fromhex(doc["kek_id"])
            active = bytes.fromhex(doc["active"])
            wrapped = {bytes.fromhex(k): base64.b64decode(v) for k, v in doc["deks"].items()}
        except FileNotFoundError:
            raise ConfigError("keyring file missing", reason="keyring_missing") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, binascii.Error):
            raise IntegrityError("keyring file is corrupt", reason="keyring_corrupt") from None
        if not hmac.compare_digest(kek_id, kek.key_id):
            raise VerificationError()
        deks = {dek_id: kek.unwrap(w, _dek_aad(kek_id, dek_id)) for dek_id, w in wrapped.items()}
        if active not in deks:
            raise IntegrityError("keyring file is corrupt", reason="keyring_corrupt")
        return cls(path, kek, deks, active)

    @classmethod
    def open_or_create(cls, keyring_path: Path, kek: KeyEncryptionKey) -> EnvelopeSealer:
        if Path(keyring_path).exists():
            return cls.load(keyring_path, kek)
        return cls.create(keyring_path, kek)

    def _save(self) -> None:
        kek_id = self._kek.key_id
        doc = {
            "format": _KEYRING_FORMAT,
            "kek_id": kek_id.hex(),
            "active": self._active.hex(),
            "deks": {
                dek_id.hex(): base64.b64encode(self._kek.wrap(dek, _dek_aad(kek_id, dek_id))).decode("ascii")
                for dek_id, dek in self._raw.items()
            },
        }
        atomic_write(self._path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8"))

    # -- Sealer --------------------------------------------------------------------------------------------
    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        with self._lock:
            dek_id = self._active
            aead = self._deks[dek_id]
        header = _BLOB_MAGIC + dek_id
        nonce = secrets.token_bytes(_NONCE)
        return header + nonce + aead.encrypt(nonce, plaintext, header + aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < 4 + _ID + _NONCE + _TAG or not blob.startswith(_BLOB_MAGIC):
            raise VerificationError()
        header = blob[: 4 + _ID]
        with self._lock:
            aead = self._deks.get(header[4:])
        if aead is None:
            raise VerificationError()
        body = blob[len(header) :]
        try:
            return aead.decrypt(body[:_NONCE], body[_NONCE:], header + aad)
        except InvalidTag:
            raise VerificationError() from None

    # -- rotation ------------------------------------------------------------------------------------------
    def rotate_kek(self, new_kek: KeyEncryptionKey) -> None:
        """Re-wrap all DEKs under ``new_kek`` (atomic keyring rewrite). Stored blobs stay valid as they are.
        """
        with self._lock:
            old = self._kek
            self._kek = new_kek
            try:
                self._save()
            except BaseException:
                self._kek = old
                raise

    def rotate_dek(self) -> bytes:
        """Start sealing with a fresh DEK (old DEKs kept for reading). Returns the new DEK id."""
        with self._lock:
            dek_id = secrets.token_bytes(_ID)
            dek = AESGCM.generate_key(bit_length=256)
            self._raw[dek_id] = dek
            self._deks[dek_id] = AESGCM(dek)
            previous = self._active
            self._active = dek_id
            try:
                self._save()
            except BaseException:
                self._active = previous
                del self._raw[dek_id], self._deks[dek_id]
                raise
            return dek_id

    @property
    def kek_id(self) -> bytes:
        return self._kek.key_id

    @property
    def active_dek_id(self) -> bytes:
        return self._active

    def __repr__(self) -> str:
        return f"EnvelopeSealer(keyring={self._path.name!r}, deks={len(self._raw)})"
