"""bad_inputs.json: the committed file equals the generator output; element verdicts agree between
decoders."""

from __future__ import annotations

import json
import secrets

import pytest

from fedcheck.conformance import bad_inputs as bi
from fedcheck.crypto import oprf
from fedcheck.errors import FedcheckError


def _libsodium_accepts(data: bytes) -> bool:
    try:
        oprf.deserialize_element(data)
    except FedcheckError:
        return False
    return True


def test_committed_file_matches_generator() -> None:
    assert bi.BAD_INPUTS_PATH.read_text(encoding="utf-8") == bi.render(), \
        "run python -m fedcheck.conformance.bad_inputs"


def test_file_is_wycheproof_shaped_with_unique_ids() -> None:
    doc = json.loads(bi.BAD_INPUTS_PATH.read_text(encoding="utf-8"))
    tests = [t for g in doc["testGroups"] for t in g["tests"]]
    assert doc["numberOfTests"] == len(tests)
    assert [t["tcId"] for t in tests] == list(range(1, len(tests) + 1))
    assert len({t["name"] for t in tests}) == len(tests)
    for t in tests:
        assert t["result"] in ("valid", "invalid", "acceptable")
        assert t["expected"] and all(s.isupper() for s in t["expected"])
        assert set(t.get("flags", [])) <= set(doc["notes"]) | {"Valid", "Batch", "Empty", "Mode", "Malformed",
                                                                "Epoch", "Resume", "Binding", "NotAUnit"}


def test_generator_decodes_as_valid() -> None:
    assert bi.ristretto_decodes(bi.GENERATOR_HEX)
    assert bytes.fromhex(bi.GENERATOR_HEX) == oprf.GENERATOR


@pytest.mark.parametrize("name,comment,hex_value,flags", bi.invalid_encodings())
def test_invalid_encoding_rejected_by_both_decoders(name: str, comment: str, hex_value: str,
                                                    flags: list[str]) -> None:
    data = bytes.fromhex(hex_value)
    assert not _libsodium_accepts(data), f"{name}: libsodium path accepts it"
    if "Identity" in flags:
        assert bi.ristretto_decodes(hex_value)  # a valid encoding, rejected by the OPRF's identity rule
    else:
        assert not bi.ristretto_decodes(hex_value), f"{name}: the RFC 9496 decoder accepts it"


def test_reference_decoder_agrees_with_libsodium_on_random_strings() -> None:
    for _ in range(400):
        raw = bytearray(secrets.token_bytes(32))
        raw[31] &= 0x7F
        raw[0] &= 0xFE  # mostly non-negative candidates, so both outcomes occur
        assert _libsodium_accepts(bytes(raw)) == bi.ristretto_decodes(bytes(raw).hex())
    for _ in range(100):
        pk = oprf.generate_key_pair().pk
        assert bi.ristretto_decodes(pk.hex())


def test_loader_resolves_group_fields() -> None:
    rows = bi.load_bad_inputs()
    by = {r.name: r for r in rows}
    assert by["identity"].rpc == "BlindEvaluate" and by["identity"].expected == ("INVALID_ARGUMENT",)
    assert "fuzzy" in by["paillier_zero"].needs
    assert "tls" in by["round_signature_flipped"].needs
    assert by["version_info_v2"].rpc == "GetNodeInfo"
