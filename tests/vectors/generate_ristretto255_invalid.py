"""Generate ``ristretto255_invalid_elements.json`` (Wycheproof shape) from first principles.

Cases are constructed arithmetically (field prime p = 2^255 - 19) and classified by the independent decoder
in ``ristretto255_ref.py``; valid cases come from libsodium via fedcheck and are cross-checked by that
decoder. Run from the repository root: ``.venv/bin/python tests/vectors/generate_ristretto255_invalid.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ristretto255_ref import P, decode_reason

from fedcheck.crypto import oprf

OUT = Path(__file__).with_name("ristretto255_invalid_elements.json")


def le(n: int, size: int = 32) -> str:
    return n.to_bytes(size, "little").hex()


def main() -> None:
    cases: list[dict[str, object]] = []

    def add(comment: str, hexenc: str, result: str, flags: list[str]) -> None:
        cases.append(
            {"tcId": len(cases) + 1, "comment": comment, "element": hexenc, "result": result, "flags": flags}
        )

    # valid: base point and hash-to-group outputs (libsodium), each confirmed by the reference decoder
    add("base point", oprf.GENERATOR.hex(), "valid", [])
    for i in range(4):
        e = oprf.hash_to_group([b"fedcheck-vector-%d" % i], 1)[0]
        add(f"HashToGroup output {i}", e.hex(), "valid", [])
    # identity: valid ristretto255 encoding, but RFC 9497 DeserializeElement must reject it
    add("identity element (all zero)", "00" * 32, "invalid", ["Identity"])
    # non-canonical: s >= p, and the unused top bit set
    for k, what in ((0, "s = p"), (1, "s = p + 1"), (6, "s = p + 6"), (18, "s = 2^255 - 1")):
        add(f"non-canonical field encoding, {what}", le(P + k), "invalid", ["NonCanonical"])
    add("non-canonical: all bytes 0xff", "ff" * 32, "invalid", ["NonCanonical"])
    add("non-canonical: 0x00 then 0xff..", "00" + "ff" * 31, "invalid", ["NonCanonical"])
    g = int.from_bytes(oprf.GENERATOR, "little")
    add("base point with top bit set", le(g | (1 << 255)), "invalid", ["NonCanonical"])
    add(
        "base point + p (same field element, non-canonical)",
        le(g + P) if g + P < 2**256 else le(g),
        "invalid",
        ["NonCanonical"],
    )
    # negative field elements: s odd (e.g. -s of a valid encoding)
    add("s = 1 (negative)", le(1), "invalid", ["Negative"])
    add("s = p - 1 = -1 (negative)", le(P - 1), "invalid", ["Negative"])
    add("negated base point encoding p - s (negative)", le(P - g), "invalid", ["Negative"])
    # even, canonical s that fail decoding (non-square or negative xy), found by search with the reference
    found = 0
    seed = 0
    while found < 8:
        s = int.from_bytes(hashlib.sha512(b"fedcheck-invalid-%d" % seed).digest()[:32], "little") % P
        seed += 1
        s -= s & 1
        reason = decode_reason(bytes.fromhex(le(s)))
        if reason in ("non-square x^2", "negative xy"):
            add(
                f"even canonical s, decoding fails: {reason}",
                le(s),
                "invalid",
                ["NonSquare" if reason == "non-square x^2" else "NegativeXY"],
            )
            found += 1
    # wrong lengths
    add("31 bytes", oprf.GENERATOR[:31].hex(), "invalid", ["WrongLength"])
    add("33 bytes", (oprf.GENERATOR + b"\x00").hex(), "invalid", ["WrongLength"])
    add("empty", "", "invalid", ["WrongLength"])

    for c in cases:  # self-check every case with the independent decoder before writing
        enc = bytes.fromhex(str(c["element"]))
        ref_ok = decode_reason(enc) is None and enc != bytes(32)
        assert ref_ok == (c["result"] == "valid"), c

    doc = {
        "algorithm": "ristretto255 DeserializeElement (RFC 9497 §2.1, RFC 9496 §4.3.1)",
        "generatorVersion": "fedcheck tests/vectors/generate_ristretto255_invalid.py",
        "header": [
            "Home-made vectors in the Wycheproof shape. Invalid categories follow RFC 9496 Appendix A.2",
            "(non-canonical, negative, non-square/negative-xy) plus RFC 9497's identity rejection and",
            "wrong lengths. Every case is checked by an independent big-integer decoder",
            "(ristretto255_ref.py).",
        ],
        "numberOfTests": len(cases),
        "testGroups": [{"type": "RistrettoElementTest", "tests": cases}],
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
