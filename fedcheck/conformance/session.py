"""The suite's side of the wire: channels, signed requests and raw calls against the node under test.

Why the suite speaks protobuf directly instead of going through :mod:`fedcheck.rpc`: it must be able to send
what
a correct client never would (wrong versions, tampered signatures, identity elements, oversized batches) and
it
must not inherit the bugs of the implementation it judges. So this is the one place in the suite that builds
and parses generated messages; cases ask it for "a round like this, but with X changed" and get back either
the
response or the status the node ended the call with.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc as node_grpc
from fedcheck.conformance.model import CaseSkipped
from fedcheck.conformance.profile import Profile
from fedcheck.errors import ConfigError

if TYPE_CHECKING:
    from fedcheck.trust.pki import RevocationList

__all__ = [
    "DEV_IDENTITY_KEY",
    "PROTOCOL_VERSION",
    "Call",
    "IndexDownload",
    "Session",
    "TargetConfig",
    "cert_name",
    "status_name",
]

#: Metadata with which an insecure-dev client names itself (only nodes started with the dev flag read it).
DEV_IDENTITY_KEY = "fedcheck-dev-identity"
#: Wire protocol version this suite speaks.
PROTOCOL_VERSION = 1

T = TypeVar("T")


def status_name(code: grpc.StatusCode | None) -> str:
    """``"OK"`` for None, else the status' canonical name (``"INVALID_ARGUMENT"``)."""
    return "OK" if code is None else code.name


@dataclass(frozen=True)
class TargetConfig:
    """Where the node under test is and who the suite is when it talks to it.

    ``cert``/``key`` are the TLS client identity (normally an ``evaluator`` certificate of the federation CA,
    ``fedcheck pki issue --role evaluator``; a ``node`` certificate works too);
    ``partner_cert``/``partner_key`` sign round and index requests as the test partner State the node's policy
    knows (default: the TLS identity). Without TLS material, ``insecure_dev`` must be set explicitly; signed
    requests still need ``cert``/``key`` (or the partner pair) then, because a node verifies request
    signatures against the federation CA even in insecure-dev mode. Keys may be sealed
    (``fedcheck.trust.atrest``): ``kek`` is the operator KEK spec (``file:PATH`` or ``env:VAR``) that opens
    them; ``coordinator_kek`` opens ``coordinator_key`` (a member's node key, often sealed under that member's
    KEK rather than the evaluator's) and defaults to ``kek``.
    """

    target: str
    ca: Path | None = None
    #: federation CRL (PEM, signed by ``ca``): the node's signed epoch announcements are checked against it
    #: (without it, revocation of the node certificate is not checked)
    crl: Path | None = None
    #: the State the evaluator means to test (``--expect-state``); NodeInfo is unsigned, so without it a node
    #: that claims another member's State and signs with that member's certificate is not caught
    expect_state: str | None = None
    cert: Path | None = None
    key: Path | None = None
    partner_cert: Path | None = None
    partner_key: Path | None = None
    #: a valid federation node certificate of a State the node's policy does NOT list (policy cases)
    stranger_cert: Path | None = None
    stranger_key: Path | None = None
    insecure_dev: bool = False
    #: identity claimed in insecure-dev mode (metadata), e.g. ``evaluator.EVA``; default: the
    #: ``<role>.<STATE>`` of the TLS client certificate (else of the partner certificate), else
    #: ``evaluator.EVA``
    dev_identity: str | None = None
    #: KEK spec (``file:PATH`` | ``env:VAR``) opening sealed private keys; plain PEM keys need none
    kek: str | None = None
    #: coordinator under test (``HOST:PORT``): enables the ``coordinator.*`` cases
    coordinator: str | None = None
    #: node certificate of a federation member that submits the coordinator cases' rounds (the coordinator
    #: takes rounds only from nodes); default: the partner pair when it is a node certificate
    coordinator_cert: Path | None = None
    coordinator_key: Path | None = None
    #: KEK spec opening ``coordinator_key`` (default: ``kek``)
    coordinator_kek: str | None = None
    #: TLS name of the coordinator's certificate (default: the host part of ``coordinator``)
    coordinator_server_name: str | None = None
    #: TLS name to check the server certificate against (default: the host part of ``target``)
    server_name: str | None = None
    timeout_s: float = 20.0
    #: how long the epoch-rotation case may wait for the node to announce a new epoch (0 = only what it sees)
    epoch_wait_s: float = 0.0
    purpose: str = "conformance"
    legal_basis: str = "conformance-test"
    #: the budget case exhausts the partner's budget only when it is at most this many items
    budget_cap: int = 20_000
    #: in-process runs only: called by the epoch case to make the node start a new epoch
    rotate_hook: Callable[[], object] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.insecure_dev and self.ca is None:
            raise ConfigError("--ca (with --cert/--key) is required unless --insecure-dev is given",
                              reason="tls_required")
        if (self.cert is None) != (self.key is None):
            raise ConfigError("--cert and --key go together", reason="tls_files")
        if (self.partner_cert is None) != (self.partner_key is None):
            raise ConfigError("--partner-cert and --partner-key go together", reason="tls_files")
        if (self.stranger_cert is None) != (self.stranger_key is None):
            raise ConfigError("--stranger-cert and --stranger-key go together", reason="tls_files")
        if (self.coordinator_cert is None) != (self.coordinator_key is None):
            raise ConfigError("--coordinator-cert and --coordinator-key go together", reason="tls_files")


@dataclass
class Call:
    """Outcome of one RPC: the response, or the status the node ended the call with."""

    response: Any = None
    code: grpc.StatusCode | None = None
    details: str = ""
    trailing: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.code is None

    @property
    def status(self) -> str:
        return status_name(self.code)

    def describe(self) -> str:
        return "OK" if self.ok else f"{self.status} ({self.details!r})"


@dataclass(frozen=True)
class IndexDownload:
    """A complete index download: the bytes, the chunks' metadata and the integrity checks' verdicts."""

    data: bytes
    epoch_id: str
    public_key: bytes
    chunks: int
    total_bytes: int
    index_sha256: bytes
    problems: tuple[str, ...]
    #: the holder's signed epoch announcement carried by the last chunk (None when it carried none)
    announcement: pb.SignedEnvelope | None = None


def _read(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError:
        raise ConfigError("a certificate or key file is missing or unreadable", reason="tls_files") from None


def _load_crl(path: Path | None, ca_pem: bytes | None) -> RevocationList | None:
    """The federation CRL (:class:`fedcheck.trust.pki.RevocationList`), checked against the CA when one is
    given; None without ``--crl``."""
    if path is None:
        return None
    from fedcheck.trust.pki import load_crl

    return load_crl(Path(path), ca_pem=ca_pem)


def _read_key(path: Path | None, kek: Any, *, option: str = "--key", kek_option: str = "--kek",
              other: str | None = None) -> bytes | None:
    """PKCS#8 PEM of a private key file, plain or sealed under ``kek`` (fedcheck.trust.atrest).

    Errors name the key file, its option (``option``) and the option of the KEK that was meant to open it
    (``kek_option``; ``other`` is the option that gives this key a KEK of its own, if not used): a key sealed
    under another KEK would otherwise be only "verification failed"."""
    if path is None:
        return None
    from fedcheck.trust.atrest import explain_unsealing
    from fedcheck.trust.pki import load_private_key_pem

    with explain_unsealing(
        f"{option} {path}",
        f"the KEK of {kek_option}",
        mismatch=f"it is sealed under another KEK{f' (give that one with {other})' if other else ''}, or the "
        "file was altered",
        sealed=f"give the KEK that opens it with {f'{other} (or {kek_option})' if other else kek_option}",
        reason="key_unsealable",
        name_errors=None,
    ):
        return load_private_key_pem(Path(path), kek)


class Session:
    """One run's connection to the node under test, plus the state cases share (node info, index cache)."""

    def __init__(self, config: TargetConfig, profile: Profile) -> None:
        self.config = config
        self.profile = profile
        from fedcheck.trust.atrest import load_kek

        kek = load_kek(config.kek) if config.kek else None
        coordinator_kek = load_kek(config.coordinator_kek) if config.coordinator_kek else kek
        self._ca = _read(config.ca)
        self.crl = _load_crl(config.crl, self._ca)
        self._cert = _read(config.cert)
        self._key = _read_key(config.key, kek)
        self.partner_cert_pem = _read(config.partner_cert) or self._cert
        self.partner_key_pem = _read_key(config.partner_key, kek, option="--partner-key") or self._key
        self.stranger_cert_pem = _read(config.stranger_cert)
        self.stranger_key_pem = _read_key(config.stranger_key, kek, option="--stranger-key")
        self.coordinator_cert_pem = _read(config.coordinator_cert)
        self.coordinator_key_pem = _read_key(
            config.coordinator_key, coordinator_kek, option="--coordinator-key",
            kek_option="--coordinator-kek" if config.coordinator_kek else "--kek",
            other=None if config.coordinator_kek else "--coordinator-kek")
        if self.coordinator_cert_pem is None and _role_of(self.partner_cert_pem) == "node":
            self.coordinator_cert_pem, self.coordinator_key_pem = self.partner_cert_pem, self.partner_key_pem
        self.dev_identity = config.dev_identity or _name_of(self._cert) or _name_of(self.partner_cert_pem) \
            or "evaluator.EVA"
        self.channel = self.open_channel()
        self.node = node_grpc.NodeStub(self.channel)
        self._info: pb.NodeInfo | None = None
        #: NodeInfo snapshots seen during the run: (monotonic time, info)
        self.info_history: list[pb.NodeInfo] = []
        self._index: dict[str, IndexDownload] = {}
        #: free-form shared state between cases (e.g. exact-mode outputs reused by the cardinality cases)
        self.memo: dict[str, Any] = {}

    # -- channels -------------------------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes | None:
        """The federation CA certificate (``--ca``), also in insecure-dev mode when given."""
        return self._ca

    @property
    def partner_state(self) -> str | None:
        """The State of the certificate that signs the suite's requests (the test partner's code)."""
        ident = _identity(self.partner_cert_pem)
        return ident[1] if ident else None

    @property
    def tls(self) -> bool:
        return self._ca is not None and not self.config.insecure_dev

    def _options(self, server_name: str | None = None) -> list[tuple[str, Any]]:
        opts: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        name = server_name if server_name is not None else self.config.server_name
        if name:
            opts.append(("grpc.ssl_target_name_override", name))
        return opts

    def coordinator_channel(self, *, plaintext: bool = False, client_cert: bool = True,
                            as_member: bool = False) -> grpc.Channel:
        """A channel to ``--coordinator``: with the TLS client identity (``--cert``), none, or (``as_member``)
        the member node certificate that submits rounds."""
        addr = self.config.coordinator
        if not addr:
            raise CaseSkipped("no --coordinator given")
        opts = self._options(self.config.coordinator_server_name or "")
        if plaintext or not self.tls:
            return grpc.insecure_channel(addr, options=opts)
        if as_member:
            if self.coordinator_cert_pem is None:
                raise CaseSkipped("needs a member node certificate (--coordinator-cert/--coordinator-key, "
                                  "or a node certificate as --partner-cert)")
            creds = grpc.ssl_channel_credentials(self._ca, private_key=self.coordinator_key_pem,
                                                 certificate_chain=self.coordinator_cert_pem)
        elif client_cert and self._cert is not None:
            creds = grpc.ssl_channel_credentials(self._ca, private_key=self._key,
                                                 certificate_chain=self._cert)
        else:
            creds = grpc.ssl_channel_credentials(self._ca)
        return grpc.secure_channel(addr, creds, options=opts)

    def open_channel(
        self, *, plaintext: bool = False, client_cert: bool = True, client_pair: tuple[bytes,
                                                                                       bytes] | None = None
    ) -> grpc.Channel:
        """A new channel to the target; the variants exist for the transport cases (plain text, no client
        certificate, a foreign certificate)."""
        if plaintext or not self.tls:
            return grpc.insecure_channel(self.config.target, options=self._options())
        if client_pair is not None:
            key, cert = client_pair
            creds = grpc.ssl_channel_credentials(self._ca, private_key=key, certificate_chain=cert)
        elif client_cert and self._cert is not None:
            creds = grpc.ssl_channel_credentials(self._ca, private_key=self._key,
                                                 certificate_chain=self._cert)
        else:
            creds = grpc.ssl_channel_credentials(self._ca)
        return grpc.secure_channel(self.config.target, creds, options=self._options())

    def close(self) -> None:
        self.channel.close()
        for value in self.memo.values():  # channels cases opened for the run (e.g. to the coordinator)
            if isinstance(value, grpc.Channel):
                value.close()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((DEV_IDENTITY_KEY, self.dev_identity),) if self.config.insecure_dev else ()

    def invoke(self, fn: Callable[..., T], request: Any, *, timeout: float | None = None,
               metadata: tuple[tuple[str, str], ...] | None = None) -> Call:
        """Run a unary call and capture its outcome instead of raising."""
        try:
            resp = fn(request, timeout=timeout or self.config.timeout_s,
                      metadata=self.metadata if metadata is None else metadata)
        except grpc.RpcError as err:
            return self._failed(err)
        return Call(response=resp)

    def dev_metadata(self, cert_pem: bytes | None) -> tuple[tuple[str, str], ...] | None:
        """Insecure-dev metadata naming ``cert_pem``'s identity (None = the session's default metadata)."""
        name = _name_of(cert_pem)
        return ((DEV_IDENTITY_KEY, name),) if self.config.insecure_dev and name else None

    def invoke_stream(self, fn: Callable[..., Iterator[T]], request: Any,
                      metadata: tuple[tuple[str, str], ...] | None = None) -> tuple[list[T], Call]:
        """Run a server-streaming call; returns the messages received and how the stream ended."""
        got: list[T] = []
        md = self.metadata if metadata is None else metadata
        try:
            for msg in fn(request, timeout=self.config.timeout_s, metadata=md):
                got.append(msg)
        except grpc.RpcError as err:
            return got, self._failed(err)
        return got, Call(response=got)

    @staticmethod
    def _failed(err: grpc.RpcError) -> Call:
        if isinstance(err, grpc.Call):
            trailing = {k: v for k, v in (err.trailing_metadata() or ()) if isinstance(v, str)}
            return Call(code=err.code(), details=err.details() or "", trailing=trailing)
        return Call(code=grpc.StatusCode.UNKNOWN, details=str(err))

    # -- node info ------------------------------------------------------------------------------------------

    def header(self, version: int = PROTOCOL_VERSION, round_id: str = "") -> pb.RequestHeader:
        return pb.RequestHeader(protocol_version=version, round_id=round_id)

    def get_info(self) -> Call:
        call = self.invoke(self.node.GetNodeInfo, pb.NodeInfoRequest(header=self.header()))
        if call.ok:
            self._info = call.response
            self.info_history.append(call.response)
        return call

    def info(self, *, refresh: bool = False) -> pb.NodeInfo:
        """The node's description (cached); a case that needs it skips when the node will not give it."""
        if self._info is None or refresh:
            call = self.get_info()
            if not call.ok:
                raise CaseSkipped(f"GetNodeInfo failed: {call.describe()}")
        assert self._info is not None
        return self._info

    # -- signed requests ------------------------------------------------------------------------------------

    @property
    def has_partner(self) -> bool:
        has_pair = self.partner_cert_pem is not None and self.partner_key_pem is not None
        return self.config.insecure_dev or has_pair

    def require_partner(self) -> None:
        if not self.has_partner:
            raise CaseSkipped("needs test-partner credentials (--partner-cert/--partner-key or --cert/--key)")

    def sign(self, payload: bytes, *, cert_pem: bytes | None = None, key_pem: bytes | None = None
             ) -> pb.SignedEnvelope:
        """Envelope signed with the test partner's key (or the given pair); unsigned in insecure-dev mode
        without partner credentials."""
        cert = cert_pem or self.partner_cert_pem
        key = key_pem or self.partner_key_pem
        if cert is None or key is None:
            return pb.SignedEnvelope(payload=payload)
        from fedcheck.trust.pki import sign_payload

        return pb.SignedEnvelope(payload=payload, signature=sign_payload(key, payload), certificate_pem=cert)

    def round_payload(self, blinded: Sequence[bytes], mode: int, **overrides: Any) -> pb.RoundPayload:
        """A well-formed RoundPayload for a batch sent to this node; ``overrides`` replace single fields
        (and ``target_*`` fields of the node's RoundTarget)."""
        info = self.info()
        now = int(time.time() * 1000)
        target = pb.RoundTarget(
            state=overrides.pop("target_state", info.state),
            epoch_id=overrides.pop("target_epoch_id", info.epoch_id),
            count=overrides.pop("target_count", len(blinded)),
            batch_sha256=overrides.pop("target_batch_sha256", hashlib.sha256(b"".join(blinded)).digest()),
        )
        fields: dict[str, Any] = {
            "round_id": str(uuid.uuid4()),
            "purpose": self.config.purpose,
            "legal_basis": self.config.legal_basis,
            "mode": mode,
            "targets": [target],
            "deadline_unix_ms": now + int(self.config.timeout_s * 1000),
            "issued_at_unix_ms": now,
            "unit": "conformance-unit",
            "official": "conformance-official",
        }
        fields.update(overrides)
        return pb.RoundPayload(**fields)

    def blind_evaluate(
        self,
        blinded: Sequence[bytes],
        mode: int = pb.MODE_EXACT,
        *,
        payload: pb.RoundPayload | None = None,
        envelope: pb.SignedEnvelope | None = None,
        version: int = PROTOCOL_VERSION,
        with_header: bool = True,
    ) -> Call:
        """Send one BlindEvaluate; by default a correctly signed, correctly bound round for ``blinded``."""
        if envelope is None:
            payload = payload or self.round_payload(blinded, mode)
            envelope = self.sign(payload.SerializeToString())
        round_id = payload.round_id if payload is not None else ""
        req = pb.BlindEvaluateRequest(round=envelope, blinded=list(blinded))
        if with_header:
            req.header.CopyFrom(self.header(version, round_id))
        return self.invoke(self.node.BlindEvaluate, req)

    # -- index ----------------------------------------------------------------------------------------------

    def index_request(self, epoch_id: str = "", *, offset: int = 0, version: int = PROTOCOL_VERSION,
                      envelope: pb.SignedEnvelope | None = None, issued_at_ms: int | None = None,
                      holder_state: str | None = None) -> pb.GetIndexRequest:
        if envelope is None:
            payload = pb.IndexRequestPayload(
                holder_state=holder_state if holder_state is not None else self.info().state,
                epoch_id=epoch_id,
                issued_at_unix_ms=issued_at_ms if issued_at_ms is not None else int(time.time() * 1000),
            )
            envelope = self.sign(payload.SerializeToString())
        return pb.GetIndexRequest(header=self.header(version), request=envelope, offset=offset)

    def download_index(self, epoch_id: str = "", *, offset: int = 0, refresh: bool = False) -> IndexDownload:
        """Download (and cache) the index, checking every integrity field the proto defines."""
        key = f"{epoch_id}@{offset}"
        if not refresh and key in self._index:
            return self._index[key]
        chunks, call = self.invoke_stream(self.node.GetIndex, self.index_request(epoch_id, offset=offset))
        if not call.ok:
            raise IndexUnavailable(call)
        problems: list[str] = []
        data = bytearray()
        if not chunks:
            problems.append("stream ended without any chunk")
        epochs = {c.epoch_id for c in chunks}
        keys = {bytes(c.epoch_public_key) for c in chunks}
        totals = {c.total_bytes for c in chunks}
        digests = {bytes(c.index_sha256) for c in chunks}
        for what, vals in (("epoch_id", epochs), ("epoch_public_key", keys), ("total_bytes", totals),
                           ("index_sha256", digests)):
            if len(vals) > 1:
                problems.append(f"{what} changes within one download")
        expected_offset = offset
        for i, c in enumerate(chunks):
            if c.offset != expected_offset:
                problems.append(f"chunk {i} has offset {c.offset}, expected {expected_offset}")
            if hashlib.sha256(c.data).digest() != bytes(c.chunk_sha256):
                problems.append(f"chunk {i} fails its chunk_sha256")
            if c.last and i != len(chunks) - 1:
                problems.append(f"chunk {i} says last but more followed")
            data += c.data
            expected_offset = c.offset + len(c.data)
        if chunks and not chunks[-1].last:
            problems.append("stream ended without a chunk marked last (truncated)")
        total = chunks[0].total_bytes if chunks else 0
        if chunks and expected_offset != total:
            problems.append(f"stream ended at byte {expected_offset} of {total} (truncated)")
        digest = bytes(chunks[0].index_sha256) if chunks else b""
        if offset == 0 and chunks and hashlib.sha256(bytes(data)).digest() != digest:
            problems.append("the whole index fails index_sha256")
        dl = IndexDownload(
            data=bytes(data),
            epoch_id=chunks[0].epoch_id if chunks else "",
            public_key=bytes(chunks[0].epoch_public_key) if chunks else b"",
            chunks=len(chunks),
            total_bytes=total,
            index_sha256=digest,
            problems=tuple(problems),
            announcement=chunks[-1].announcement if chunks and chunks[-1].HasField("announcement") else None,
        )
        self._index[key] = dl
        return dl


def _identity(pem: bytes | None) -> tuple[str, str] | None:
    if pem is None:
        return None
    from fedcheck.trust.pki import identity_from_cert

    try:
        ident = identity_from_cert(pem)
    except Exception:  # a garbage file is reported by the cases that use it
        return None
    return ident.role, ident.state


def _role_of(pem: bytes | None) -> str | None:
    ident = _identity(pem)
    return ident[0] if ident else None


def cert_name(pem: bytes | None) -> str | None:
    """``<role>.<STATE>`` of a federation certificate (None when absent or not one)."""
    ident = _identity(pem)
    return f"{ident[0]}.{ident[1]}" if ident else None


_name_of = cert_name


class IndexUnavailable(CaseSkipped):
    """The node refused the index download; cases that need the index cannot judge the node's answers."""

    def __init__(self, call: Call) -> None:
        super().__init__(f"GetIndex failed: {call.describe()}")
        self.call = call
