"""The committed generated code must be exactly what ``make proto`` produces from ``proto/``."""

from __future__ import annotations

from pathlib import Path

from fedcheck.rpc.protogen import OUTPUT_ROOT, generate


def test_generated_code_has_not_drifted(tmp_path: Path) -> None:
    out = tmp_path / "_proto"
    fresh = {p.relative_to(out): p.read_bytes() for p in generate(out)}
    committed = {
        p.relative_to(OUTPUT_ROOT): p.read_bytes()
        for p in OUTPUT_ROOT.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert set(fresh) == set(committed), "file set differs: run `make proto`"
    drifted = [str(k) for k in fresh if fresh[k] != committed[k]]
    assert not drifted, f"generated code drifted from proto/ (run `make proto`): {drifted}"


def test_every_proto_field_is_commented() -> None:
    root = Path(__file__).resolve().parents[1] / "proto" / "fedcheck" / "v1"
    for proto in root.glob("*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            if s and "=" in s and s.endswith(";") and not s.startswith(("//", "syntax", "package", "option")):
                assert lines[i - 1].strip().startswith("//"), f"{proto.name}:{i + 1} lacks a comment"
