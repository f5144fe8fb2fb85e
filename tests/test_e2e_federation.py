"""End to end over real gRPC with mutual TLS: three node processes and a coordinator on loopback."""

from __future__ import annotations

import hashlib
import json
import re
import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fedcheck.node.app import open_querier
from fedcheck.node.config import load_node_config
from fedcheck.node.querier import QueryOptions, QueryRunner
from fedcheck.records.keys import match_keys
from fedcheck.screening.report import ScreenReport
from tests.conftest import Federation


@contextmanager
def querier(federation: Federation, state: str = "FRA") -> Iterator[QueryRunner]:
    runner, close = open_querier(load_node_config(federation.fed.node_configs[state]))  # type: ignore[attr-defined]
    try:
        yield runner
    finally:
        close()


def expected_pairs(federation: Federation, querier_state: str = "FRA") -> set[tuple[str, str]]:
    """Plain intersection: (traveller, State) whenever a key of the traveller is on the State's list."""
    out: set[tuple[str, str]] = set()
    for state, records in federation.watchlists.items():
        if state == querier_state:
            continue
        listed = {mk.value for r in records for mk in match_keys(r)}  # type: ignore[arg-type]
        for t in federation.manifest:
            if any(mk.value in listed for mk in match_keys(t)):  # type: ignore[arg-type]
                out.add((t.record_id, state))  # type: ignore[attr-defined]
    return out


def hit_pairs(report: ScreenReport) -> set[tuple[str, str]]:
    return {(t.traveller, h.state) for t in report.travellers for h in t.hits}


def test_exact_round_matches_plain_intersection(federation: Federation) -> None:
    with querier(federation) as q:
        report = q.run(federation.manifest, QueryOptions(legal_basis="test-basis"))  # type: ignore[arg-type]
    assert report.statuses == {"KEN": "ok", "UNX": "ok"}
    expected = expected_pairs(federation)
    assert expected, "demo data must contain hits"
    assert hit_pairs(report) == expected
    labels = [h.label for t in report.travellers for h in t.hits]
    assert all("reference" in lab for lab in labels)


def test_recheck_uses_cache_and_burns_no_budget(federation: Federation) -> None:
    with querier(federation) as q:
        q.run(federation.manifest, QueryOptions(legal_basis="b"))  # type: ignore[arg-type]
        first = q.last_round
        report = q.run(federation.manifest, QueryOptions(legal_basis="b"))  # type: ignore[arg-type]
    assert report.statuses == {"KEN": "ok (cached)", "UNX": "ok (cached)"}
    assert q.last_round is first  # no new round was submitted
    assert hit_pairs(report) == expected_pairs(federation)


def test_cardinality_mode_counts_only(federation: Federation) -> None:
    with querier(federation) as q:
        report = q.run(
            federation.manifest, QueryOptions(mode="cardinality", states=("UNX",), legal_basis="b")
        )  # type: ignore[arg-type]
    assert report.statuses == {"UNX": "ok"}
    assert not any(t.hits for t in report.travellers)
    assert len(report.counts) == 1 and report.counts[0].hits > 0


def test_query_cli_json_and_exit_code(federation: Federation) -> None:
    import subprocess
    import sys

    from fedcheck.records.io import write_jsonl

    path = federation.root / "manifest.jsonl"
    write_jsonl(federation.manifest, path)  # type: ignore[arg-type]
    cfg = str(federation.fed.node_configs["KEN"])  # type: ignore[attr-defined]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedcheck",
            "query",
            "--config",
            cfg,
            "--manifest",
            str(path),
            "--format",
            "json",
            "--states",
            "UNX,FRA",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["statuses"] == {"FRA": "ok", "UNX": "ok"}
    got = {(t["traveller"], h["state"]) for t in doc["travellers"] for h in t["hits"]}
    assert got == expected_pairs(federation, "KEN")


def test_idempotent_resubmission_and_reused_id(federation: Federation) -> None:
    from fedcheck.errors import PreconditionFailed

    round_id = f"idem-{uuid.uuid4().hex[:8]}"
    with querier(federation, "UNX") as q:
        q.run(federation.manifest[:20], QueryOptions(legal_basis="b", round_id=round_id))  # type: ignore[arg-type]
        first = q.last_round
        assert first is not None and not first.replayed
        # same signed payload again (re-sign the identical bytes): stored result, holders not asked again
        assert q.last_request is not None
        again = q._coord.submit_round(q.last_request, timeout=20)
        assert again.replayed and again.results == first.results
        # a different payload under the same id is refused
        with pytest.raises(PreconditionFailed) as exc:
            q.run(federation.manifest[20:40], QueryOptions(legal_basis="b", round_id=round_id))  # type: ignore[arg-type]
        assert exc.value.reason == "round_id_reused"


def test_metrics_increase_after_round(federation: Federation) -> None:
    port = federation.fed.metrics_ports["KEN"]  # type: ignore[attr-defined]

    def evaluated() -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        m = re.search(r'^fedcheck_items_evaluated_total\{partner="UNX"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    before = evaluated()
    with querier(federation, "UNX") as q:
        q.run(federation.manifest[40:60], QueryOptions(legal_basis="b", states=("KEN",)))  # type: ignore[arg-type]
    assert evaluated() > before
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for name in (
        "fedcheck_requests_total",
        "fedcheck_request_seconds_bucket",
        "fedcheck_index_size",
        "fedcheck_epoch_age_seconds",
        "fedcheck_budget_remaining_items",
        "fedcheck_batch_size_bucket",
    ):
        assert name in text


def test_deadline_expiry_marks_frozen_holder_timeout(federation: Federation) -> None:
    """UNX answers NodeInfo, then freezes (SIGSTOP) before the round: the round ends at its deadline with UNX
    timed out and FRA answered."""
    proc = federation.procs["UNX"]
    try:
        with querier(federation, "KEN") as q:
            inner = q._coord.list_nodes

            def list_then_freeze(*, timeout: float) -> list:  # type: ignore[type-arg]
                nodes = inner(timeout=timeout)
                proc.send_signal(signal.SIGSTOP)
                return nodes

            q._coord.list_nodes = list_then_freeze  # type: ignore[method-assign]
            t0 = time.time()
            report = q.run(
                federation.manifest[60:80],  # type: ignore[arg-type]
                QueryOptions(mode="cardinality", legal_basis="b", deadline_seconds=2.0),
            )
            elapsed = time.time() - t0
        assert report.statuses["FRA"].startswith("ok")
        assert report.statuses["UNX"].startswith("timeout"), report.statuses
        assert elapsed < 10
    finally:
        proc.send_signal(signal.SIGCONT)


def test_logs_free_of_manifest_names(federation: Federation) -> None:
    names = {t.names[0].full_name for t in federation.manifest}  # type: ignore[attr-defined]
    names |= {tok for n in names for tok in n.split() if len(tok) > 5}
    logs = "".join(p.read_text(errors="replace") for p in federation.root.rglob("*.log"))
    logs += "".join(p.read_text(errors="replace") for p in federation.root.glob("*.stderr"))
    assert "round_id" in logs
    leaked = [n for n in names if n in logs]
    assert not leaked


def test_node_killed_mid_round_then_restarted_intact(federation: Federation) -> None:
    """Kill KEN hard while a round is being prepared: the round completes with KEN unavailable; after a
    restart
    KEN serves the same epoch (watchlist and index intact)."""
    import threading

    from fedcheck.rpc.clients import GrpcNodeClient, make_channel

    fed = federation.fed
    tls = federation.tls("UNX")
    client = GrpcNodeClient(make_channel(f"127.0.0.1:{fed.node_ports['KEN']}", tls))  # type: ignore[attr-defined, arg-type]
    before = client.node_info(timeout=5)
    client.close()

    results: list[ScreenReport] = []

    def run() -> None:
        with querier(federation, "UNX") as q:
            results.append(
                q.run(
                    federation.manifest[80:120],  # type: ignore[arg-type]
                    QueryOptions(legal_basis="b", deadline_seconds=10),
                )
            )

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.05)
    federation.stop("KEN", signal.SIGKILL)
    t.join(60)
    report = results[0]
    assert report.statuses["FRA"] == "ok"
    assert report.statuses["KEN"].startswith("unavailable") or report.statuses["KEN"] == "ok"
    with querier(federation, "UNX") as q:
        again = q.run(
            federation.manifest[0:40], QueryOptions(mode="cardinality", legal_basis="b", deadline_seconds=10)
        )  # type: ignore[arg-type]
    assert again.statuses["KEN"].startswith("unavailable")
    assert again.statuses["FRA"].startswith("ok")

    federation.start("KEN")
    federation.wait_serving("KEN")
    client = GrpcNodeClient(make_channel(f"127.0.0.1:{fed.node_ports['KEN']}", tls))  # type: ignore[attr-defined, arg-type]
    after = client.node_info(timeout=5)
    client.close()
    assert after.epoch_id == before.epoch_id
    assert after.epoch_public_key == before.epoch_public_key
    assert after.index_size == before.index_size > 0
    _ = hashlib
