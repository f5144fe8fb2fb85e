"""Travellers who were never checked must never be reported as screened and clear (operator walkthrough).

* a traveller the querier's protection policy keeps out of every target is ``NOT CHECKED`` (table and
  JSON, per State with the reason), in exact and in fuzzy mode (fuzzy also reports ``excluded`` and
  ``excluded_causes``);
* manifest rows the reader rejects are listed (where and why, never their content);
* when no State answered the summary says that nothing was screened;
* in all these cases ``fedcheck query`` exits 1 ("round completed but incomplete"), 0 only when every
  traveller was checked against every requested State.

Exact mode: the in-process federation of tests/test_refugee_padding.py (querier FRA, holders DEU and ITA)
behind ``fedcheck query`` (config and querier patched in); fuzzy mode: the in-process holders of
tests/test_refugee_padding_fuzzy.py.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fedcheck.cli import query as query_cli
from fedcheck.cli.main import main as cli
from fedcheck.demo.data import make_demo_data
from fedcheck.fuzzy import QuerierKey
from fedcheck.node import app as node_app
from fedcheck.node import config as node_config
from fedcheck.node.querier import QueryRunner
from fedcheck.records.io import write_jsonl
from fedcheck.records.model import BirthDate, PersonName, PersonRecord, TravelDocument
from fedcheck.rpc.messages import NodeEntry
from fedcheck.trust.pki import create_ca, issue_certificate
from tests import test_refugee_padding as rp
from tests import test_refugee_padding_fuzzy as rpf

UNKNOWN = "excluded: protected person, nationality unknown"
OF_NATIONALITY = "excluded: protected person, State of nationality"


@pytest.fixture(scope="module")
def fed_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, dict[str, tuple[bytes, bytes]]]:
    d = tmp_path_factory.mktemp("unscreened-pki")
    create_ca(d / "ca", federation="FED")
    certs = {}
    for s in ("FRA", *rp.HOLDERS):
        f = issue_certificate(d / "ca", d / s, role="node", state=s)
        certs[s] = (f.cert.read_bytes(), f.key.read_bytes())
    return d, (d / "ca" / "ca.crt.pem").read_bytes(), certs


@pytest.fixture
def fed(fed_pki: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[rp.Fed]:
    yield from rp._federation(fed_pki, tmp_path, monkeypatch, ["exact"])


class _AllDown:
    """The coordinator's view with every holder unreachable."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def list_nodes(self, *, timeout: float) -> list[NodeEntry]:
        return [replace(e, reachable=False) for e in self._inner.list_nodes(timeout=timeout)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _query(
    fed: rp.Fed, monkeypatch: pytest.MonkeyPatch, manifest: Path, *extra: str, all_down: bool = False
) -> int:
    """``fedcheck query`` as FRA against DEU and ITA of the in-process federation."""
    cfg = SimpleNamespace(querier=SimpleNamespace(purpose="border", legal_basis="LB-1", unit="FRA-BORDER-01",
                                                  official="officer-0001", deadline_seconds=30.0))
    monkeypatch.setattr(node_config, "load_node_config", lambda path: cfg)

    def open_querier(_cfg: Any) -> tuple[QueryRunner, Any]:
        runner = fed.runner()
        if all_down:
            runner._coord = _AllDown(runner._coord)  # type: ignore[assignment]
        return runner, lambda: None

    monkeypatch.setattr(node_app, "open_querier", open_querier)
    return cli(["query", "--config", "node.toml", "--manifest", str(manifest), "--states", "DEU,ITA", *extra])


def _asylum_seeker(rid: str, i: int) -> PersonRecord:
    """Listed at both holders (entry ``w{i}``), flagged ``asylum_seeker``, nationality unknown."""
    return PersonRecord(
        rid, (PersonName(f"LISTED PERSON {i}"),), birth_dates=(BirthDate(1970 + i, 1, 2),),
        documents=(TravelDocument("passport", f"P{i:06d}", "DEU"),), flags=frozenset({"asylum_seeker"}),
    )


def _manifest(tmp_path: Path, *, protected: bool = True) -> Path:
    path = tmp_path / "m.jsonl"
    records = [rp._clean(1), _asylum_seeker("R002", 2) if protected else rp._clean(2),
               rp._listed_as_traveller(0, "FRA"), rp._clean(3)]
    write_jsonl(records, path)
    return path


def test_traveller_excluded_from_every_target_is_not_checked_exit_1(
    fed: rp.Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(tmp_path)
    assert _query(fed, monkeypatch, manifest, "--format", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    by_id = {t["traveller"]: t for t in doc["travellers"]}
    assert by_id["R002"]["hits"] == []
    assert by_id["R002"]["not_checked"] == {"DEU": UNKNOWN, "ITA": UNKNOWN}
    assert all("not_checked" not in t for rid, t in by_id.items() if rid != "R002")
    assert by_id["listed0"]["hits"]  # everybody else screened as before
    for s in ("DEU", "ITA"):
        assert doc["details"][s]["excluded"] == 1
        assert doc["details"][s]["excluded_causes"] == {"nationality_unknown": 1}
    assert doc["rejected"] == []
    assert doc["summary"] == {"travellers": 4, "fully_screened": 3, "not_fully_screened": 1, "with_hits": 1,
                              "rejected_rows": 0, "nothing_screened": False, "complete": False}

    assert _query(fed, monkeypatch, manifest) == 1
    table = capsys.readouterr().out
    assert "DEU: 1 traveller(s) not sent" in table  # existing lines kept
    assert "R002  LISTED PERSON 2  NOT CHECKED against DEU, ITA (" + UNKNOWN + ")" in table
    assert ("4 travellers: 3 fully screened against all requested States, 1 not fully screened "
            "(see NOT CHECKED), 1 with at least one hit.") in table
    assert "4 travellers screened" not in table

    assert _query(fed, monkeypatch, manifest, "--hide-names") == 1
    table = capsys.readouterr().out
    assert "R002  NOT CHECKED against DEU, ITA" in table and "LISTED PERSON 2" not in table


def test_fully_screened_manifest_exits_0(
    fed: rp.Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _query(fed, monkeypatch, _manifest(tmp_path, protected=False)) == 0
    table = capsys.readouterr().out
    assert "NOT CHECKED" not in table
    assert ("4 travellers: 4 fully screened against all requested States, 0 not fully screened, "
            "1 with at least one hit.") in table


def test_rejected_manifest_rows_are_reported_exit_1(
    fed: rp.Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.jsonl"
    other = replace(rp._clean(2), record_id="t1", names=(PersonName("SECRET DIFFERENT PERSON"),))
    write_jsonl([rp._clean(1), other], path)  # line 2: a different person under a duplicate id
    with open(path, "a", encoding="utf-8") as fh:
        fh.write('{"id": "t9", "names": SECRET-BROKEN\n')  # line 3: not JSON
    assert _query(fed, monkeypatch, path, "--format", "json") == 1
    out = capsys.readouterr().out
    doc = json.loads(out)
    assert [r["line"] for r in doc["rejected"]] == [2, 3]
    assert all(r["reason"] and r["where"] == f"line {r['line']}" for r in doc["rejected"])
    assert "duplicate" in doc["rejected"][0]["reason"]
    assert "SECRET" not in out  # never the rejected rows' content
    assert doc["summary"]["rejected_rows"] == 2 and doc["summary"]["complete"] is False
    assert [t["traveller"] for t in doc["travellers"]] == ["t1"]

    assert _query(fed, monkeypatch, path) == 1
    table = capsys.readouterr().out
    assert "2 manifest row(s) rejected, not screened: line 2 (" in table and ", line 3 (" in table
    assert "SECRET" not in table
    summary = next(x for x in table.splitlines() if x.startswith("1 travellers: "))
    assert summary.startswith("1 travellers: 1 fully screened against all requested States")
    assert summary.endswith("; 2 manifest row(s) rejected, not screened.")


def test_no_state_answered_nothing_screened_exit_1(
    fed: rp.Fed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = _manifest(tmp_path, protected=False)
    assert _query(fed, monkeypatch, manifest, all_down=True) == 1
    captured = capsys.readouterr()
    table = captured.out
    assert "no State answered: nothing was screened" in table
    assert "ALL 4 travellers NOT CHECKED against DEU, ITA (State unavailable)" in table
    assert "fully screened" not in table and "travellers screened" not in table
    assert "nothing was screened" in captured.err

    assert _query(fed, monkeypatch, manifest, "--format", "json", all_down=True) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["nothing_screened"] is True and doc["summary"]["fully_screened"] == 0
    assert all(t["not_checked"] == {"DEU": "State unavailable", "ITA": "State unavailable"}
               for t in doc["travellers"])


# ------------------------------------------------------------------------------------------------ fuzzy mode


@pytest.fixture(scope="module")
def fuzzy_key() -> QuerierKey:
    return QuerierKey.generate(rpf.KEY_BITS)


@pytest.fixture(scope="module")
def fuzzy_world() -> dict[str, Any]:
    """A refugee of nationality ITA (listed at DEU and ITA) among ordinary travellers."""
    data = make_demo_data(travellers=12)
    listed = data.watchlists["KEN"][:25]
    refugee = replace(data.manifest[0], record_id="R-1", names=listed[3].names,
                      birth_dates=listed[3].birth_dates, nationalities=("ITA",), flags=frozenset({"refugee"}))
    others = [r for r in data.manifest[1:] if r.names][:3]
    return {"manifest": [others[0], refugee, others[1], others[2]], "refugee": 1,
            "lists": {"DEU": listed, "ITA": listed[:20]}}


def test_fuzzy_exclusion_reported_like_exact(
    fuzzy_world: dict[str, Any], fuzzy_key: QuerierKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report, _, _ = rpf._run(fuzzy_world, fuzzy_key, monkeypatch, flagged=True)
    assert report.statuses == {"DEU": "ok", "ITA": "ok"}
    assert report.details["ITA"]["excluded"] == 1
    assert report.details["ITA"]["excluded_causes"] == {"state_of_nationality": 1}
    assert "excluded" not in report.details.get("DEU", {})
    refugee = report.travellers[fuzzy_world["refugee"]]
    assert refugee.traveller == "R-1" and refugee.not_checked == {"ITA": OF_NATIONALITY}
    assert [t.traveller for t in report.not_fully_screened] == ["R-1"]

    table = report.to_table(show_names=False)
    assert "ITA: 1 traveller(s) not sent (querier policy: protected person, State of nationality)" in table
    assert f"R-1  NOT CHECKED against ITA ({OF_NATIONALITY})" in table
    assert "4 travellers: 3 fully screened against all requested States, 1 not fully screened" in table

    args = argparse.Namespace(format="json", action="run", mode="fuzzy", hide_names=True)
    assert query_cli._print(args, report, "r-1") == 1
    doc = json.loads(capsys.readouterr().out)
    by_id = {t["traveller"]: t for t in doc["travellers"]}
    assert by_id["R-1"]["not_checked"] == {"ITA": OF_NATIONALITY}
    assert doc["details"]["ITA"]["excluded"] == 1

    plain, _, _ = rpf._run(fuzzy_world, fuzzy_key, monkeypatch, flagged=False)
    assert not plain.not_fully_screened and plain.complete
    assert query_cli._print(args, plain, "r-2") == 0


def test_key_type_narrowing_judges_only_the_keys_sent_in_this_round() -> None:
    """A traveller whose only key was answered from the cache (evaluated in an earlier round) is not marked
    NOT CHECKED because a later round's holder narrowed key types; one whose sent keys are all of a refused
    type is."""
    import numpy as np

    from fedcheck.node.querier import _mark_keyless
    from fedcheck.screening.manifest import QueryKeys
    from fedcheck.screening.report import TravellerResult

    travellers = [TravellerResult("A", "A"), TravellerResult("B", "B"), TravellerResult("C", "C")]
    keys = QueryKeys([b"docA", b"nameB", b"docC"], ["document", "name_dob", "document"],
                     np.array([0, 1, 2], dtype=np.int64), np.array([0, 1, 2], dtype=np.int64))
    # key 0 (A's document) came from the cache; keys 1 and 2 were sent; the holder accepts name_dob only
    _mark_keyless(travellers, "KEN", keys, ["name_dob"], sent=[1, 2])
    assert travellers[0].not_checked == {}  # cached: evaluated earlier, not judged by this round's narrowing
    assert travellers[1].not_checked == {}  # its name key was accepted
    assert travellers[2].not_checked == {"KEN": "no match key of a type the State accepts"}
