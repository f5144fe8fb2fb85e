"""`fedcheck bench psi` runs end to end at toy sizes and prints the figures docs/benchmarks.md records."""

from __future__ import annotations

import pytest

from fedcheck.cli.main import main


def test_bench_psi_prints_ratio_to_raw_and_index_figures(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "psi", "--sizes", "500", "--queries", "100", "--micro", "200", "--no-openmined"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "raw libsodium crypto_scalarmult_ristretto255" in out
    assert "ratio to raw" in out
    row = [ln.split() for ln in out.splitlines() if ln.split()[:1] == ["500"]]
    assert row and float(row[0][4]) > 16  # bytes per entry: 8-byte tag + 8-byte offset + sealed label


def test_bench_similarity_floor_prints_measured_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    """The floor table is derived from primitives timed in the same run; a wider slot can only cost more."""
    rc = main(["bench", "similarity", "--skip", "throughput,faces,e2e,quality"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "CRT decryption" in out and "naive phe" in out
    rows = [ln.split("|") for ln in out.splitlines() if ln.startswith("| ") and "×" in ln]
    assert len(rows) == 4
    ratios = [float(r[5].strip().rstrip("×").replace(",", "")) for r in rows]
    per_core = [float(r[4].strip().replace(",", "")) for r in rows]
    assert all(v > 0 for v in ratios + per_core)
    assert ratios[0] > ratios[1]  # 17-bit slots beat 24-bit slots with per-pair blinding
    assert ratios[2] > ratios[1]  # dropping the per-pair Horner shift (shared blinding) is cheaper
    assert ratios[3] == max(ratios)  # a bare hit bit bounds everything
