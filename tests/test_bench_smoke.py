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
