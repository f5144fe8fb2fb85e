"""Malformed and adversarial messages as data (``bad_inputs.json``), with the generator that writes them.

Why data: an evaluator reads the file to see exactly what the suite sends and which gRPC status each message
must
get, and another implementation's test suite can reuse it. It follows Wycheproof's shape (groups of tests
with a
``tcId``, ``comment``, ``flags`` and ``result`` valid/invalid/acceptable) and adds ``name`` (the stable case
id
suffix) and ``expected`` (the status codes that pass).

The invalid ristretto255 encodings are derived here from their definition (RFC 9496 §4.3.1: a field element
``s`` must be canonical, i.e. ``< p``, and non-negative, i.e. even, and the decoding's square root must exist)
rather than copied from anywhere; ``tests/test_conformance_vectors.py`` checks each one independently against
libsodium's decoder and that the committed file equals what :func:`generate` produces.

Run ``python -m fedcheck.conformance.bad_inputs`` to rewrite the file after changing the generator.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BAD_INPUTS_PATH",
    "BadInput",
    "generate",
    "invalid_encodings",
    "load_bad_inputs",
    "main",
    "ristretto_decodes",
]

#: The committed data file.
BAD_INPUTS_PATH = Path(__file__).with_name("bad_inputs.json")

_P = 2**255 - 19
#: Encoding of the ristretto255 generator (the ristretto encoding of the Ed25519 base point).
GENERATOR_HEX = "e2f2ae0a6abc4e71a884a961c500515f58e30b6aa582dd8db6a65945e08d2d76"
_IDENTITY_HEX = "00" * 32
#: Every status listed here means "the node refused"; anything else in ``expected`` is spelled out.
_STALE = ["FAILED_PRECONDITION", "INVALID_ARGUMENT", "UNAUTHENTICATED", "PERMISSION_DENIED"]


def _le(n: int) -> str:
    return n.to_bytes(32, "little").hex()


def _inv(x: int) -> int:
    return pow(x, _P - 2, _P)


_D = (-121665 * _inv(121666)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _neg(x: int) -> bool:
    return (x % _P) & 1 == 1


def _abs(x: int) -> int:
    return (-x) % _P if _neg(x) else x % _P


def _sqrt_ratio_m1(u: int, v: int) -> tuple[bool, int]:
    r = (u * pow(v, 3, _P)) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    check = v * r * r % _P
    correct = check == u % _P
    flipped = check == (-u) % _P
    flipped_i = check == (-u * _SQRT_M1) % _P
    if flipped or flipped_i:
        r = r * _SQRT_M1 % _P
    return correct or flipped, _abs(r)


def ristretto_decodes(hex_value: str) -> bool:
    """RFC 9496 §4.3.1 Decode, written out with Python integers: True when the bytes are a valid encoding.

    Deliberately independent of libsodium, so the data file's verdicts are checked by two implementations.
    (The identity decodes; the OPRF rejects it separately.)
    """
    data = bytes.fromhex(hex_value)
    if len(data) != 32:
        return False
    s = int.from_bytes(data, "little")
    if s >= _P or _neg(s):
        return False
    ss = s * s % _P
    u1 = (1 - ss) % _P
    u2 = (1 + ss) % _P
    u2_sqr = u2 * u2 % _P
    v = (-(_D * u1 * u1) - u2_sqr) % _P
    was_square, invsqrt = _sqrt_ratio_m1(1, v * u2_sqr % _P)
    den_x = invsqrt * u2 % _P
    den_y = invsqrt * den_x * v % _P
    x = _abs(2 * s * den_x)
    y = u1 * den_y % _P
    t = x * y % _P
    return was_square and not _neg(t) and y != 0


def invalid_encodings() -> list[tuple[str, str, str, list[str]]]:
    """``(name, comment, hex, flags)`` for 32-byte strings that are not valid ristretto255 elements."""
    out: list[tuple[str, str, str, list[str]]] = [
        ("identity", "canonical encoding of the identity element (RFC 9497 §3.3: must be rejected)",
         _IDENTITY_HEX, ["Identity"]),
        ("identity_high_bit", "identity with bit 255 set", "00" * 31 + "80", ["NonCanonical"]),
        ("s_equals_p", "field element s = p (non-canonical encoding of 0)", _le(_P), ["NonCanonical"]),
        ("s_p_plus_1", "field element s = p + 1 (non-canonical encoding of 1)", _le(_P + 1),
         ["NonCanonical"]),
        ("s_p_plus_2", "field element s = p + 2 (>= p, even)", _le(_P + 2), ["NonCanonical"]),
        ("s_2_255_minus_1", "s = 2^255 - 1 (all bits but the top one)", _le(2**255 - 1), ["NonCanonical"]),
        ("s_all_ones", "all 256 bits set", "ff" * 32, ["NonCanonical"]),
        ("generator_high_bit", "the generator's encoding with bit 255 set",
         GENERATOR_HEX[:-2] + f"{int(GENERATOR_HEX[-2:], 16) | 0x80:02x}", ["NonCanonical"]),
        ("s_one", "s = 1: a negative (odd) field element", _le(1), ["Negative"]),
        ("s_three", "s = 3: a negative (odd) field element", _le(3), ["Negative"]),
        ("s_p_minus_2", "s = p - 2: a negative (odd) field element", _le(_P - 2), ["Negative"]),
        ("generator_low_bit", "the generator's encoding with its lowest bit flipped (odd, negative)",
         f"{int(GENERATOR_HEX[:2], 16) ^ 1:02x}" + GENERATOR_HEX[2:], ["Negative"]),
    ]
    # small even field elements whose decoding fails the square-root / sign checks (not on the group)
    found = 0
    s = 2
    while found < 4:
        h = _le(s)
        if not ristretto_decodes(h):
            out.append((f"not_on_group_s{s}", f"s = {s}: canonical and even, but decodes to no group element",
                        h, ["NotOnGroup"]))
            found += 1
        s += 2
    return out


def _element_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = [
        {"name": "valid_generator", "comment": "control: the group generator is a valid blinded element",
         "flags": ["Valid"], "blinded": [GENERATOR_HEX], "result": "valid", "expected": ["OK"]},
        {"name": "valid_random", "comment": "control: two freshly blinded elements",
         "flags": ["Valid"], "blinded": ["$valid", "$valid"], "result": "valid", "expected": ["OK"]},
    ]
    for name, comment, value, flags in invalid_encodings():
        tests.append({"name": name, "comment": comment, "flags": flags, "blinded": [value],
                      "result": "invalid", "expected": ["INVALID_ARGUMENT"]})
    tests += [
        {"name": "identity_last_in_batch", "comment": "two valid elements then the identity: the whole batch "
         "is refused, not the valid part evaluated", "flags": ["Identity", "Batch"],
         "blinded": ["$valid", "$valid",
                     _IDENTITY_HEX], "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "non_canonical_first_in_batch", "comment": "a non-canonical element before valid ones",
         "flags": ["NonCanonical", "Batch"], "blinded": [_le(_P), "$valid"], "result": "invalid",
         "expected": ["INVALID_ARGUMENT"]},
        {"name": "length_0", "comment": "empty element", "flags": ["WrongLength"], "blinded": [""],
         "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "length_1", "comment": "1-byte element", "flags": ["WrongLength"], "blinded": ["e2"],
         "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "length_31", "comment": "the generator truncated to 31 bytes", "flags": ["WrongLength"],
         "blinded": [GENERATOR_HEX[:62]], "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "length_33", "comment": "the generator with a trailing zero byte", "flags": ["WrongLength"],
         "blinded": [GENERATOR_HEX + "00"], "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "length_64", "comment": "two elements concatenated into one field", "flags": ["WrongLength"],
         "blinded": [GENERATOR_HEX * 2], "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
    ]
    return tests


def _batch_tests() -> list[dict[str, Any]]:
    return [
        {"name": "batch_over_limit", "comment": "max_batch + 1 valid elements (NodeInfo.limits.max_batch)",
         "flags": ["BatchLimit"], "count": "max_batch+1", "result": "invalid",
         "expected": ["RESOURCE_EXHAUSTED"]},
        {"name": "batch_far_over_limit", "comment": "2 * max_batch + 7 valid elements",
         "flags": ["BatchLimit"], "count": "2*max_batch+7", "result": "invalid",
         "expected": ["RESOURCE_EXHAUSTED"]},
        {"name": "batch_at_limit", "comment": "exactly max_batch valid elements are evaluated (run only when "
         "max_batch <= 2048, it spends budget)", "flags": ["BatchLimit", "Valid"], "count": "max_batch",
         "result": "valid", "expected": ["OK"]},
        {"name": "batch_empty",
         "comment": "no elements: refused or answered empty, never an error of the node",
         "flags": ["Empty"], "count": "0", "result": "acceptable", "expected": ["INVALID_ARGUMENT", "OK"]},
    ]


def _version_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = []
    for rpc in ("GetNodeInfo", "GetIndex", "BlindEvaluate"):
        short = {"GetNodeInfo": "info", "GetIndex": "index", "BlindEvaluate": "evaluate"}[rpc]
        for version, label in ((None, "missing_header"), (0, "v0"), (2, "v2"), (999, "v999"),
                               (4294967295, "vmax")):
            tests.append({
                "name": f"version_{short}_{label}",
                "comment": f"{rpc} with " + ("no RequestHeader" if version is None else
                                             f"protocol_version {version}"),
                "flags": ["ProtocolVersion"], "rpc": rpc, "protocol_version": version,
                "result": "invalid", "expected": ["FAILED_PRECONDITION"],
            })
    return tests


def _round_tests() -> list[dict[str, Any]]:
    def t(name: str, comment: str, mutation: dict[str, Any], expected: list[str], flags: list[str],
          needs: list[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": name, "comment": comment, "flags": flags, "mutation": mutation,
                             "result": "invalid", "expected": expected}
        if needs:
            d["needs"] = needs
        return d

    return [
        t("round_count_mismatch", "RoundTarget.count is one more than the elements sent",
          {"target_count": "+1"}, ["INVALID_ARGUMENT"], ["RoundBinding"]),
        t("round_hash_mismatch", "RoundTarget.batch_sha256 does not cover the elements sent",
          {"target_batch_sha256": "00" * 32}, ["INVALID_ARGUMENT"], ["RoundBinding"]),
        t("round_hash_short", "RoundTarget.batch_sha256 of 31 bytes",
          {"target_batch_sha256": "00" * 31}, ["INVALID_ARGUMENT"], ["RoundBinding"]),
        t("round_other_state", "the signed round names another holder only",
          {"target_state": "ZZQ"}, ["INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND",
                                    "FAILED_PRECONDITION"],
          ["RoundBinding"]),
        t("round_unknown_epoch", "the round binds an epoch the node never had",
          {"target_epoch_id": "conformance-no-such-epoch"}, ["FAILED_PRECONDITION", "NOT_FOUND"],
          ["Epoch"]),
        t("round_mode_unspecified", "Mode MODE_UNSPECIFIED", {"mode": 0}, ["INVALID_ARGUMENT"], ["Mode"]),
        t("round_mode_unknown", "an undefined Mode value", {"mode": 7}, ["INVALID_ARGUMENT"], ["Mode"]),
        t("round_stale", "issued a day ago", {"issued_at_unix_ms": "-86400000"}, _STALE, ["Freshness"]),
        t("round_from_future", "issued a day from now", {"issued_at_unix_ms": "+86400000"}, _STALE,
          ["Freshness"]),
        t("round_deadline_passed", "deadline a minute ago", {"deadline_unix_ms": "-60000"},
          ["DEADLINE_EXCEEDED", "FAILED_PRECONDITION", "INVALID_ARGUMENT"], ["Freshness"]),
        t("round_payload_garbage", "signed bytes that are not a RoundPayload", {"payload": "garbage"},
          ["INVALID_ARGUMENT"], ["Malformed"]),
        t("round_envelope_missing", "no SignedEnvelope at all", {"envelope": "missing"},
          ["INVALID_ARGUMENT", "UNAUTHENTICATED"], ["Malformed"]),
        t("round_signature_flipped", "one bit of the signature flipped", {"signature": "flip"},
          ["UNAUTHENTICATED"], ["Signature"], ["tls"]),
        t("round_signature_missing", "payload and certificate without a signature", {"signature": "empty"},
          ["UNAUTHENTICATED", "INVALID_ARGUMENT"], ["Signature"], ["tls"]),
        t("round_payload_tampered", "purpose changed after signing", {"payload": "tamper"},
          ["UNAUTHENTICATED"], ["Signature"], ["tls"]),
        t("round_foreign_signer", "signed by a self-made certificate that claims the partner's name",
          {"signer": "self_signed"}, ["UNAUTHENTICATED"], ["Signature"], ["tls"]),
        t("round_garbage_certificate", "certificate_pem is not a certificate",
          {"certificate": "garbage"}, ["UNAUTHENTICATED", "INVALID_ARGUMENT"], ["Signature"], ["tls"]),
    ]


def _index_tests() -> list[dict[str, Any]]:
    def t(name: str, comment: str, mutation: dict[str, Any], expected: list[str], flags: list[str],
          needs: list[str] | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": name, "comment": comment, "flags": flags, "mutation": mutation,
                             "result": "invalid", "expected": expected}
        if needs:
            d["needs"] = needs
        return d

    return [
        t("index_offset_beyond_end", "resume offset past the end of the index", {"offset": "total+1"},
          ["INVALID_ARGUMENT", "OUT_OF_RANGE"], ["Resume"]),
        t("index_offset_huge", "resume offset 2^63", {"offset": str(2**63)},
          ["INVALID_ARGUMENT", "OUT_OF_RANGE"], ["Resume"]),
        t("index_unknown_epoch", "an epoch the node never had", {"epoch_id": "conformance-no-such-epoch"},
          ["NOT_FOUND", "FAILED_PRECONDITION"], ["Epoch"]),
        t("index_other_holder", "request addressed to another State", {"holder_state": "ZZQ"},
          ["INVALID_ARGUMENT", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION"], ["Binding"]),
        t("index_stale", "issued a day ago", {"issued_at_unix_ms": "-86400000"}, _STALE, ["Freshness"]),
        t("index_payload_garbage", "signed bytes that are not an IndexRequestPayload", {"payload": "garbage"},
          ["INVALID_ARGUMENT"], ["Malformed"]),
        t("index_signature_flipped", "one bit of the signature flipped", {"signature": "flip"},
          ["UNAUTHENTICATED"], ["Signature"], ["tls"]),
        t("index_foreign_signer", "signed by a self-made certificate that claims the partner's name",
          {"signer": "self_signed"}, ["UNAUTHENTICATED"], ["Signature"], ["tls"]),
    ]


def _paillier_tests() -> list[dict[str, Any]]:
    return [
        {"name": "paillier_zero", "comment": "ciphertext 0 (not a unit mod n^2)", "flags": ["OutOfRange"],
         "ciphertext": "0", "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "paillier_n_squared", "comment": "ciphertext n^2 (out of range)", "flags": ["OutOfRange"],
         "ciphertext": "n2", "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "paillier_above_n_squared", "comment": "ciphertext n^2 + 1", "flags": ["OutOfRange"],
         "ciphertext": "n2+1", "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
        {"name": "paillier_multiple_of_n", "comment": "ciphertext n (shares a factor with n^2)",
         "flags": ["NotAUnit"], "ciphertext": "n", "result": "invalid", "expected": ["INVALID_ARGUMENT"]},
    ]


def generate() -> dict[str, Any]:
    """The whole data file as a JSON-ready dict (deterministic)."""
    groups: list[dict[str, Any]] = [
        {"type": "BlindedElement", "rpc": "BlindEvaluate",
         "comment": "blinded elements in an otherwise valid, signed round ($valid = freshly blinded element)",
         "tests": _element_tests()},
        {"type": "BatchSize", "rpc": "BlindEvaluate",
         "comment": "batch sizes relative to the advertised limit",
         "tests": _batch_tests()},
        {"type": "ProtocolVersion", "rpc": "*", "comment": "RequestHeader.protocol_version on every RPC",
         "tests": _version_tests()},
        {"type": "RoundBinding", "rpc": "BlindEvaluate",
         "comment": "mutations of the signed RoundPayload of a valid two-element batch",
         "tests": _round_tests()},
        {"type": "IndexRequest", "rpc": "GetIndex", "comment": "mutations of a valid signed GetIndex request",
         "tests": _index_tests()},
        {"type": "PaillierCiphertext", "rpc": "fuzzy", "requires": "fuzzy",
         "comment": "out-of-range Paillier ciphertexts (run only when the node advertises fuzzy matching)",
         "tests": _paillier_tests()},
    ]
    tc = 0
    for g in groups:
        for test in g["tests"]:
            tc += 1
            test["tcId"] = tc
    return {
        "algorithm": "fedcheck.v1 Node service",
        "schema": "fedcheck_conformance_bad_inputs_v1.json",
        "generatorVersion": "1",
        "numberOfTests": tc,
        "header": [
            "Malformed and adversarial requests for a fedcheck node, with the gRPC status each must get.",
            "Generated by fedcheck.conformance.bad_inputs; hex strings are raw field bytes; '$valid' is a "
            "freshly blinded element; counts are expressions over NodeInfo.limits.max_batch.",
        ],
        "notes": {
            "Identity": "the identity element; RFC 9497 requires servers to reject it",
            "NonCanonical": "an encoding >= p or with bit 255 set (RFC 9496 §4.3.1)",
            "Negative": "an odd (negative) field element; canonical encodings are non-negative",
            "NotOnGroup": "canonical and non-negative, but the decoding fails",
            "WrongLength": "an element that is not 32 bytes",
            "BatchLimit": "batch size relative to NodeInfo.limits.max_batch",
            "ProtocolVersion": "RequestHeader missing or naming a version the node does not speak",
            "RoundBinding": "the signed round does not bind the batch sent",
            "Signature": "the querier's signature or certificate is not acceptable",
            "Freshness": "issued_at / deadline outside the acceptable window",
            "OutOfRange": "Paillier ciphertext outside [1, n^2)",
        },
        "testGroups": groups,
    }


@dataclass(frozen=True)
class BadInput:
    """One test of the data file, with its group's fields resolved."""

    tc_id: int
    name: str
    group: str
    rpc: str
    comment: str
    flags: tuple[str, ...]
    result: str
    expected: tuple[str, ...]
    needs: tuple[str, ...]
    data: dict[str, Any]


def load_bad_inputs(path: Path = BAD_INPUTS_PATH) -> list[BadInput]:
    """Parse the data file (the committed one by default)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return list(_iter(doc))


def _iter(doc: dict[str, Any]) -> Iterator[BadInput]:
    for g in doc["testGroups"]:
        for t in g["tests"]:
            rpc = t.get("rpc", g["rpc"])
            needs = list(t.get("needs", []))
            if "requires" in g:
                needs.append(g["requires"])
            yield BadInput(
                tc_id=int(t["tcId"]),
                name=str(t["name"]),
                group=str(g["type"]),
                rpc=str(rpc),
                comment=str(t["comment"]),
                flags=tuple(t.get("flags", ())),
                result=str(t["result"]),
                expected=tuple(t["expected"]),
                needs=tuple(needs),
                data=t,
            )


def render() -> str:
    return json.dumps(generate(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Rewrite the committed data file (or the path given)."""
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else BAD_INPUTS_PATH
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
