"""RFC 9497 ristretto255-SHA512 OPRF/VOPRF: official vectors, element validation, proofs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcheck.crypto import oprf
from fedcheck.errors import InvalidElement, InvalidInput, VerificationError

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
from ristretto255_ref import decode_reason  # noqa: E402

RFC = json.loads((VECTORS / "rfc9497-ristretto255-sha512.json").read_text())
INVALID = json.loads((VECTORS / "ristretto255_invalid_elements.json").read_text())
ELEMENT_CASES = [c for g in INVALID["testGroups"] for c in g["tests"]]
H = bytes.fromhex
L = 2**252 + 27742317777372353535851937790883648493  # ristretto255 group order


def _split(v: str) -> list[bytes]:
    return [H(x) for x in v.split(",")]


RFC_CASES = [
    pytest.param(g, v, id=f"mode{g['mode']}-batch{v['Batch']}-{i}")
    for g in RFC
    if g["mode"] in (0, 1)
    for i, v in enumerate(g["vectors"])
]


def test_vector_file_covers_both_modes_and_batches() -> None:
    assert {g["mode"] for g in RFC} >= {0, 1}
    assert any(v["Batch"] == 2 for g in RFC if g["mode"] == 1 for v in g["vectors"])
    assert len(RFC_CASES) == 5


@pytest.mark.parametrize(("group", "vec"), RFC_CASES)
def test_rfc9497_vector(group: dict[str, Any], vec: dict[str, Any]) -> None:
    mode = group["mode"]
    assert H(group["groupDST"]) == b"HashToGroup-" + oprf.context_string(mode)
    sk, pk = oprf.derive_key_pair(H(group["seed"]), H(group["keyInfo"]), mode)
    assert sk == H(group["skSm"])
    if "pkSm" in group:
        assert pk == H(group["pkSm"])
    inputs, blinds = _split(vec["Input"]), _split(vec["Blind"])
    assert len(inputs) == vec["Batch"]
    got_blinds, blinded = oprf.blind(inputs, mode, blinds=blinds)
    assert got_blinds == blinds
    assert blinded == _split(vec["BlindedElement"])
    expected_eval = _split(vec["EvaluationElement"])
    outputs = _split(vec["Output"])
    if mode == oprf.OprfMode.OPRF:
        evaluated = oprf.blind_evaluate(sk, blinded)
        assert evaluated == expected_eval
        assert oprf.finalize(inputs, blinds, evaluated, mode) == outputs
    else:
        evaluated, proof = oprf.blind_evaluate_verifiable(sk, pk, blinded, r=H(vec["Proof"]["r"]))
        assert evaluated == expected_eval
        assert proof == H(vec["Proof"]["proof"])
        assert oprf.verify_finalize(pk, inputs, blinds, evaluated, blinded, proof) == outputs
        oprf.verify_proof(oprf.GENERATOR, pk, blinded, evaluated, proof)
    assert oprf.evaluate(sk, inputs, mode) == outputs


@pytest.mark.parametrize("case", ELEMENT_CASES, ids=lambda c: f"tc{c['tcId']}")
def test_element_vectors(case: dict[str, Any]) -> None:
    enc = H(case["element"])
    valid = case["result"] == "valid"
    # the independent big-integer decoder agrees with the file (identity is decodable but RFC 9497-invalid)
    assert (decode_reason(enc) is None and enc != bytes(32)) == valid
    sk = oprf.generate_key_pair().sk
    blind = oprf.random_scalar()
    if valid:
        assert oprf.deserialize_element(enc) == enc
        assert len(oprf.blind_evaluate(sk, [enc])[0]) == 32
        assert len(oprf.unblind([blind], [enc])[0]) == 32
        return
    with pytest.raises(InvalidElement):
        oprf.deserialize_element(enc)
    with pytest.raises(InvalidElement):  # server: BlindEvaluate deserialises the blinded element
        oprf.blind_evaluate(sk, [oprf.GENERATOR, enc])
    with pytest.raises(InvalidElement):  # client: Finalize deserialises the evaluated element
        oprf.finalize([b"x"], [blind], [enc], oprf.OprfMode.OPRF)
    pk = oprf.derive_public_key(sk)
    with pytest.raises((InvalidElement, VerificationError)):
        oprf.verify_finalize(pk, [b"x"], [blind], [enc], [oprf.GENERATOR], bytes(64))


def test_libsodium_top_bit_is_rejected_here() -> None:
    """libsodium masks bit 255 when decoding; RFC 9496 does not, so we check it ourselves."""
    enc = bytearray(oprf.GENERATOR)
    enc[31] |= 0x80
    assert oprf._S.crypto_core_ristretto255_is_valid_point(bytes(enc)) == 1  # the gap we close
    with pytest.raises(InvalidElement):
        oprf.deserialize_element(bytes(enc))


def test_identity_rejected_everywhere() -> None:
    kp = oprf.generate_key_pair()
    with pytest.raises(InvalidElement):
        oprf.blind_evaluate(kp.sk, [oprf.IDENTITY])
    with pytest.raises(InvalidElement):
        oprf.blind_evaluate_verifiable(kp.sk, kp.pk, [oprf.IDENTITY])
    with pytest.raises(InvalidElement):
        oprf.finalize([b"a"], [oprf.random_scalar()], [oprf.IDENTITY], oprf.OprfMode.OPRF)
    with pytest.raises(InvalidElement):
        oprf.verify_finalize(
            oprf.IDENTITY, [b"a"], [oprf.random_scalar()], [oprf.GENERATOR], [oprf.GENERATOR], bytes(64)
        )


def _vround(n: int) -> tuple[oprf.KeyPair, list[bytes], list[bytes], list[bytes], list[bytes], bytes]:
    kp = oprf.generate_key_pair()
    inputs = [b"item-%d" % i for i in range(n)]
    blinds, blinded = oprf.blind(inputs, oprf.OprfMode.VOPRF)
    evaluated, proof = oprf.blind_evaluate_verifiable(kp.sk, kp.pk, blinded)
    return kp, inputs, blinds, blinded, evaluated, proof


def test_proof_fails_under_other_key() -> None:
    kp, inputs, blinds, blinded, evaluated, proof = _vround(5)
    other = oprf.generate_key_pair()
    with pytest.raises(VerificationError):
        oprf.verify_finalize(other.pk, inputs, blinds, evaluated, blinded, proof)
    # the holder evaluates with another key but proves with the committed one: also caught
    bad_eval = oprf.blind_evaluate(other.sk, blinded)
    with pytest.raises(VerificationError):
        oprf.verify_finalize(kp.pk, inputs, blinds, bad_eval, blinded, proof)


def test_proof_fails_on_any_change() -> None:
    kp, inputs, blinds, blinded, evaluated, proof = _vround(4)
    swapped = [evaluated[1], evaluated[0], *evaluated[2:]]
    with pytest.raises(VerificationError):
        oprf.verify_finalize(kp.pk, inputs, blinds, swapped, blinded, proof)
    flipped = bytearray(proof)
    flipped[5] ^= 1
    for bad in (bytes(flipped), proof[:63], b"", proof + b"\x00"):
        with pytest.raises(VerificationError):
            oprf.verify_proof(oprf.GENERATOR, kp.pk, blinded, evaluated, bad)
    # malleated s + L is the same scalar mod L but not canonical: refused
    s = int.from_bytes(proof[32:], "little") + L
    if s < 2**256:
        with pytest.raises(VerificationError):
            oprf.verify_proof(
                oprf.GENERATOR, kp.pk, blinded, evaluated, proof[:32] + s.to_bytes(32, "little")
            )


def test_mode_separation_and_scalar_checks() -> None:
    kp = oprf.generate_key_pair()
    assert oprf.evaluate(kp.sk, [b"x"], 0) != oprf.evaluate(kp.sk, [b"x"], 1)
    with pytest.raises(ValueError):
        oprf.context_string(2)
    with pytest.raises(InvalidInput):
        oprf.blind([b"x"], 0, blinds=[bytes(32)])
    with pytest.raises(InvalidInput):
        oprf.blind([b"x"], 0, blinds=[(L).to_bytes(32, "little")])
    with pytest.raises(InvalidInput):
        oprf.blind_evaluate(bytes(32), [oprf.GENERATOR])
    assert "sk" not in repr(kp) and kp.sk.hex() not in repr(kp)


def test_expand_message_xmd_long_output_consistent() -> None:
    out = oprf.expand_message_xmd(b"abc", b"QUUX-V01-CS02-with-expander-SHA512-256", 200)
    assert len(out) == 200
    assert out != oprf.expand_message_xmd(b"abd", b"QUUX-V01-CS02-with-expander-SHA512-256", 200)
    with pytest.raises(InvalidInput):
        oprf.expand_message_xmd(b"", b"x" * 256, 64)


def test_expand_message_xmd_rfc9380_vector() -> None:
    # RFC 9380 Appendix K.3 (expand_message_xmd, SHA-512), msg "", len_in_bytes 0x20
    dst = b"QUUX-V01-CS02-with-expander-SHA512-256"
    assert oprf.expand_message_xmd(b"", dst, 0x20).hex() == (
        "6b9a7312411d92f921c6f68ca0b6380730a1a4d982c507211a90964c394179ba"
    )


@settings(max_examples=20, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=12))
def test_verifiable_round_equals_evaluate(inputs: list[bytes]) -> None:
    kp = oprf.generate_key_pair()
    blinds, blinded = oprf.blind(inputs, oprf.OprfMode.VOPRF)
    evaluated, proof = oprf.blind_evaluate_verifiable(kp.sk, kp.pk, blinded)
    out = oprf.verify_finalize(kp.pk, inputs, blinds, evaluated, blinded, proof)
    assert out == oprf.evaluate(kp.sk, inputs, oprf.OprfMode.VOPRF)
    assert oprf.finalize(inputs, blinds, oprf.blind_evaluate(kp.sk, blinded), 1) == out
