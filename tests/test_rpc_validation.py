"""Every validation error path of the node and coordinator services, and mTLS failures, over real gRPC."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedcheck._proto.fedcheck.v1 import common_pb2 as pb
from fedcheck._proto.fedcheck.v1 import node_pb2_grpc
from fedcheck.rpc import serde
from fedcheck.rpc.clients import CHANNEL_OPTIONS, make_channel
from fedcheck.rpc.messages import RoundPayload, RoundTarget
from fedcheck.rpc.tls import TlsIdentity
from fedcheck.trust.pki import sign_payload
from tests.conftest import Federation


@pytest.fixture(scope="module")
def node(federation: Federation) -> Iterator[tuple[node_pb2_grpc.NodeStub, TlsIdentity, str, Federation]]:
    tls = federation.tls("FRA")
    assert isinstance(tls, TlsIdentity)
    channel = make_channel(f"127.0.0.1:{federation.fed.node_ports['KEN']}", tls)  # type: ignore[attr-defined]
    stub = node_pb2_grpc.NodeStub(channel)
    info = stub.GetNodeInfo(pb.NodeInfoRequest(header=serde.header()), timeout=5)
    yield stub, tls, info.epoch_id, federation
    channel.close()


def _request(
    tls: TlsIdentity,
    epoch_id: str,
    blinded: list[bytes],
    *,
    payload: bytes | None = None,
    version: int = 1,
    signature: bytes | None = None,
) -> pb.BlindEvaluateRequest:
    now = int(time.time() * 1000)
    if payload is None:
        payload = serde.round_payload_to_bytes(
            RoundPayload(
                "r-1",
                "border-screening",
                "basis",
                "exact",
                (RoundTarget("KEN", epoch_id, len(blinded), hashlib.sha256(b"".join(blinded)).digest()),),
                now + 10_000,
                now,
            )
        )
    sig = signature if signature is not None else sign_payload(tls.key_pem, payload)
    return pb.BlindEvaluateRequest(
        header=pb.RequestHeader(protocol_version=version),
        round=pb.SignedEnvelope(payload=payload, signature=sig, certificate_pem=tls.cert_pem),
        blinded=blinded,
    )


def _code(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as exc:
        call()  # type: ignore[operator]
    return exc.value.code(), exc.value.details()  # type: ignore[attr-defined]


def _good_element() -> bytes:
    from fedcheck.protocol.exact import ExactQuerier, Mode

    return ExactQuerier().blind([b"some key"], mode=Mode.EXACT).blinded[0]


def test_unknown_version_is_failed_precondition(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    code, msg = _code(
        lambda: stub.BlindEvaluate(_request(tls, epoch, [_good_element()], version=99), timeout=5)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "version" in msg
    code, _ = _code(lambda: stub.GetNodeInfo(pb.NodeInfoRequest(), timeout=5))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_oversized_batch_is_resource_exhausted(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    el = _good_element()
    code, msg = _code(lambda: stub.BlindEvaluate(_request(tls, epoch, [el] * 4097), timeout=10))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "4096" in msg


@pytest.mark.parametrize(
    "element,why",
    [
        (b"\x01" * 31, "length"),
        (bytes(32), "identity"),
        (b"\xff" * 32, "non-canonical"),
    ],
)
def test_bad_elements_are_invalid_argument(node, element: bytes, why: str) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    code, msg = _code(lambda: stub.BlindEvaluate(_request(tls, epoch, [element]), timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, why
    assert msg


def test_malformed_payload_is_invalid_argument(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    code, msg = _code(
        lambda: stub.BlindEvaluate(
            _request(tls, epoch, [_good_element()], payload=b"\xff\xff\xff garbage"), timeout=5
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "payload" in msg


def test_batch_not_matching_signature_is_invalid_argument(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    req = _request(tls, epoch, [_good_element()])
    del req.blinded[:]
    req.blinded.append(_good_element())
    code, _ = _code(lambda: stub.BlindEvaluate(req, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_signature_is_unauthenticated(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    code, _ = _code(
        lambda: stub.BlindEvaluate(
            _request(tls, epoch, [_good_element()], signature=b"\x30\x06\x02\x01\x01\x02\x01\x01"), timeout=5
        )
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_stale_epoch_is_failed_precondition(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, _, _ = node
    code, msg = _code(
        lambda: stub.BlindEvaluate(_request(tls, "KEN-old-epoch", [_good_element()]), timeout=5)
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "epoch" in msg


def test_valid_request_is_evaluated_with_proof(node) -> None:  # type: ignore[no-untyped-def]
    stub, tls, epoch, _ = node
    reply = stub.BlindEvaluate(_request(tls, epoch, [_good_element()] * 3), timeout=5)
    assert len(reply.evaluated) == 3 and reply.proof and reply.epoch_id == epoch


def test_round_id_reuse_with_other_payload_is_refused(node) -> None:  # type: ignore[no-untyped-def]
    from fedcheck.errors import PreconditionFailed
    from fedcheck.rpc.clients import GrpcCoordinatorClient
    from fedcheck.rpc.messages import SignedEnvelope, SubmitRoundRequest

    _, tls, epoch, federation = node
    client = GrpcCoordinatorClient(make_channel(f"127.0.0.1:{federation.fed.coordinator_port}", tls))

    def submit(blinded: list[bytes]) -> object:
        req = _request(tls, epoch, blinded)
        env = SignedEnvelope(req.round.payload, req.round.signature, req.round.certificate_pem)
        return client.submit_round(SubmitRoundRequest(env, {"KEN": tuple(blinded)}, "r-1"), timeout=10)

    submit([_good_element()])
    with pytest.raises(PreconditionFailed) as exc:
        submit([_good_element(), _good_element()])
    assert exc.value.reason == "round_id_reused"
    client.close()


def test_wrong_ca_is_rejected(node, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from fedcheck.trust.pki import create_ca, issue_certificate

    _, _, _, federation = node
    create_ca(tmp_path / "ca", federation="EVIL")
    files = issue_certificate(tmp_path / "ca", tmp_path / "out", role="node", state="FRA")
    real = federation.tls("FRA")
    rogue = TlsIdentity(files.cert.read_bytes(), files.key.read_bytes(), real.ca_pem)
    channel = make_channel(f"127.0.0.1:{federation.fed.node_ports['KEN']}", rogue)
    stub = node_pb2_grpc.NodeStub(channel)
    code, _ = _code(lambda: stub.GetNodeInfo(pb.NodeInfoRequest(header=serde.header()), timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_no_client_certificate_is_rejected(node) -> None:  # type: ignore[no-untyped-def]
    _, tls, _, federation = node
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca_pem)
    channel = grpc.secure_channel(
        f"127.0.0.1:{federation.fed.node_ports['KEN']}", creds, options=CHANNEL_OPTIONS
    )
    stub = node_pb2_grpc.NodeStub(channel)
    code, _ = _code(lambda: stub.GetNodeInfo(pb.NodeInfoRequest(header=serde.header()), timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_plaintext_client_is_rejected(node) -> None:  # type: ignore[no-untyped-def]
    _, _, _, federation = node
    channel = grpc.insecure_channel(f"127.0.0.1:{federation.fed.node_ports['KEN']}")
    stub = node_pb2_grpc.NodeStub(channel)
    code, _ = _code(lambda: stub.GetNodeInfo(pb.NodeInfoRequest(header=serde.header()), timeout=3))
    assert code == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_index_download_resumes_by_offset(node) -> None:  # type: ignore[no-untyped-def]
    from fedcheck.core.index import ExactIndex
    from fedcheck.rpc.messages import IndexRequest

    stub, tls, epoch, _ = node

    def chunks(offset: int) -> list[pb.IndexChunk]:
        payload = serde.index_request_to_bytes(IndexRequest("KEN", epoch, int(time.time() * 1000)))
        req = pb.GetIndexRequest(
            header=serde.header(),
            request=pb.SignedEnvelope(
                payload=payload, signature=sign_payload(tls.key_pem, payload), certificate_pem=tls.cert_pem
            ),
            offset=offset,
        )
        return list(stub.GetIndex(req, timeout=10))

    full = chunks(0)
    data = b"".join(c.data for c in full)
    assert full[-1].last and hashlib.sha256(data).digest() == full[-1].index_sha256
    assert all(hashlib.sha256(c.data).digest() == c.chunk_sha256 for c in full)
    resumed = chunks(len(data) // 2)
    assert data[: len(data) // 2] + b"".join(c.data for c in resumed) == data
    assert len(ExactIndex.from_bytes(data)) > 0


def test_a_batch_refused_while_parsing_is_audited_at_the_holder() -> None:
    """batch_too_large (and other framing refusals) happen in the servicer before the service's own checks;
    they must still be audited and counted at the holder, naming the verified TLS peer."""
    from fedcheck.errors import LimitExceeded
    from fedcheck.rpc.servicers import NodeServicer
    from fedcheck.trust.pki import PeerIdentity

    refused: list[tuple[str, str, str]] = []

    class Handler:
        max_batch = 2

        def refuse_malformed(self, peer: PeerIdentity, kind: str, exc: LimitExceeded) -> None:
            refused.append((peer.state, kind, exc.reason))

    class Verifier:
        def identify(self, context: object, roles: object = ()) -> PeerIdentity:
            return PeerIdentity("node", "FRA", 7)

    servicer = NodeServicer(Handler(), Verifier())  # type: ignore[arg-type]
    with pytest.raises(LimitExceeded):
        servicer._parsed(PeerIdentity("node", "FRA", 7), "request", lambda: (_ for _ in ()).throw(
            LimitExceeded("batch of 3 elements exceeds the limit of 2", reason="batch_too_large")))
    assert refused == [("FRA", "request", "batch_too_large")]
