"""``fedcheck demo``: the README's main job — a four-State federation on loopback, one screening round.

Why a library module: the demo is what a new operator or evaluator runs first, so it drives the same
commands an operator would (``node dev-secrets``, ``watchlist import``, ``coordinator serve``,
``node serve``, a query round) as separate processes with mutual TLS, using the configurations in
``nodes/``. It then checks the planted hits it knows about and says so, and always shuts every process
down (SIGTERM → graceful drain), even on error or Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedcheck.demo.data import DemoData, make_demo_data
from fedcheck.errors import Unavailable
from fedcheck.node.config import NodeConfig
from fedcheck.records import PersonRecord, write_jsonl

__all__ = ["DemoResult", "run_demo"]

REPO = Path(__file__).resolve().parents[2]
HOLDERS = ("FRA", "KEN", "UNX")
QUERIER = "DEU"


@dataclass
class DemoResult:
    found: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.missed and not self.unexpected


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _fedcheck(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "fedcheck", *args], cwd=REPO, text=True,
                          capture_output=True, env=_env())
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"`fedcheck {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), NO_PROGRESS="1")


def _config(name: str) -> Path:
    if name == "coordinator":
        return REPO / "nodes" / "coordinator" / "coordinator.toml"
    return REPO / "nodes" / name / "node.toml"


@contextmanager
def _processes(var: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 15
        for name, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                _say(f"{name} did not stop in time and was killed")
        if procs:
            _say("all processes stopped")


def _start(name: str, var: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
    kind = ["coordinator", "serve"] if name == "coordinator" else ["node", "serve"]
    log = open(var / f"{name}.stderr", "ab")  # noqa: SIM115 - handed to the child process
    procs[name] = subprocess.Popen([sys.executable, "-m", "fedcheck", *kind, "--config", str(_config(name))],
                                   cwd=REPO, stdout=log, stderr=log, env=_env())


def _alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def _write_inputs(data: DemoData, var: Path) -> dict[str, Path]:
    inputs = var / "demo-inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    files = {}
    for state in ("FRA", "KEN"):
        files[state] = inputs / f"{state}-watchlist.jsonl"
        write_jsonl(data.watchlists[state], files[state])
    files["manifest"] = inputs / "manifest-LH1234.jsonl"
    write_jsonl(data.manifest, files["manifest"])
    return files


def run_demo(*, travellers: int = 300, var: Path | None = None, mode: str = "exact") -> DemoResult:
    from fedcheck.node.app import load_tls, open_querier
    from fedcheck.node.config import load_node_config
    from fedcheck.node.querier import QueryOptions
    from fedcheck.rpc.health import wait_serving
    from fedcheck.screening.inputs import load_manifest
    from fedcheck.trust.atrest import load_kek

    t_start = time.perf_counter()
    var = var or REPO / "var"
    if var.exists():
        shutil.rmtree(var)
    var.mkdir(parents=True)
    _say(f"federation: coordinator + holders {', '.join(HOLDERS)} + querying State {QUERIER} (mutual TLS)")
    _fedcheck("node", "dev-secrets", "--out", str(var), "--states", ",".join((*HOLDERS, QUERIER)))
    _say("development CA, certificates and key-encryption keys created under var/")

    data = make_demo_data(travellers=travellers)
    files = _write_inputs(data, var)
    for state in ("FRA", "KEN"):
        out = _fedcheck("watchlist", "import", "--config", str(_config(state)), str(files[state]))
        _say(f"{state}: {_last_line(out.stdout or out.stderr)}")
    un = REPO / "data" / "un-sc-consolidated-2018-10-29.xml"
    out = _fedcheck("watchlist", "import", "--config", str(_config("UNX")), str(un), "--format", "un-xml")
    _say(f"UNX (UN Security Council Consolidated List, 2018-10-29): {_last_line(out.stdout or out.stderr)}")

    result = DemoResult()
    with _processes(var) as procs:
        for name in ("coordinator", *HOLDERS, QUERIER):
            _start(name, var, procs)
        qcfg = load_node_config(_config(QUERIER))
        tls = load_tls(qcfg, load_kek(qcfg.kek))
        for name in ("coordinator", *HOLDERS, QUERIER):
            cfg_addr = qcfg.coordinator if name == "coordinator" else \
                load_node_config(_config(name)).listen
            try:
                wait_serving(cfg_addr, tls, timeout=60.0, alive=_alive(procs[name]))
            except Unavailable as exc:
                raise Unavailable(f"{name}: {exc.message}; see {var / (name + '.stderr')}",
                                  reason=exc.reason) from None
        _say(f"all nodes SERVING after {time.perf_counter() - t_start:.1f}s (epoch indexes built)")

        manifest = load_manifest(files["manifest"])
        _say(f"{QUERIER} screens flight LH1234: {len(manifest)} travellers against {', '.join(HOLDERS)} "
             f"({mode} mode)")
        _say(f"  (the same round from a shell: fedcheck query --config nodes/{QUERIER}/node.toml "
             f"--manifest {files['manifest'].relative_to(REPO)})")
        q = qcfg.querier
        runner, close = open_querier(qcfg)
        try:
            report = runner.run(manifest, QueryOptions(
                mode=mode, states=HOLDERS, purpose=q.purpose, legal_basis=q.legal_basis, unit=q.unit,
                official=q.official, deadline_seconds=q.deadline_seconds, round_id=""))
        finally:
            close()
        print()
        print(report.to_table())
        print()
        if mode == "exact":
            _fuzzy_secondary(manifest, data, qcfg, result)
    if mode == "exact":
        got = {(t.traveller, h.state) for t in report.travellers for h in t.hits}
        for p in data.planted:
            tag = f"{p.traveller}@{p.state} ({p.how})"
            if p.fuzzy_only:
                if (p.traveller, p.state) in got:
                    result.unexpected.append(tag + " found by exact keys")
                else:
                    _say(f"expected miss for exact keys: {tag} — needs the fuzzy check")
                continue
            (result.found if (p.traveller, p.state) in got else result.missed).append(tag)
        planted = {(p.traveller, p.state) for p in data.planted}
        result.unexpected += [f"{t}@{s}" for t, s in sorted(got - planted)]
        _say(f"planted hits found: {len(result.found)}/{len(result.found) + len(result.missed)}; "
             f"unexpected hits: {len(result.unexpected)}")
        for m in result.missed:
            _say(f"MISSED {m}")
        for u in result.unexpected:
            _say(f"UNEXPECTED {u}")
    result.seconds = time.perf_counter() - t_start
    _say(f"done in {result.seconds:.1f}s; audit logs, metrics and node logs are under var/")
    return result


#: Size of the "secondary screening" group an officer sends to the fuzzy check. Small on purpose: with
#: per-pair blinding (pack_size=1, the safe construction) a traveller costs ~1 000 encryptions and each
#: holder ~0.3 ms per (traveller, entry) pair on one core.
FUZZY_GROUP_SIZE = 8


def _fuzzy_secondary(manifest: Sequence[PersonRecord], data: DemoData, qcfg: NodeConfig,
                     result: DemoResult) -> None:
    """A fuzzy round for the group against every holder, then the follow-up of its hits (labels)."""
    from fedcheck.node.app import open_querier
    from fedcheck.node.fuzzyquery import FuzzyOptions, FuzzyQueryRunner
    from fedcheck.node.querier import QueryOptions

    # the planted FRA/KEN travellers (incl. the typo exact keys miss), filled up with travellers on no list
    planted = {p.traveller for p in data.planted}
    ids = [p.traveller for p in data.planted if p.state in ("FRA", "KEN")]
    fill = max(0, FUZZY_GROUP_SIZE - len(ids))
    ids += [r.record_id for r in manifest if r.record_id not in planted][:fill]
    group = [r for r in manifest if r.record_id in set(ids)]
    _say(f"{QUERIER} secondary screening: {len(group)} travellers "
         f"({group[0].record_id}..{group[-1].record_id}) by encrypted name similarity "
         f"(Paillier 2048-bit, threshold 0.8) against {', '.join(HOLDERS)}, then follow-up of the hits")
    _say(f"  (from a shell: fedcheck query --config nodes/{QUERIER}/node.toml --manifest FILE --mode fuzzy "
         "--follow-up)")
    q = qcfg.querier
    runner, close = open_querier(qcfg)
    t0 = time.perf_counter()
    try:
        fuzzy = FuzzyQueryRunner.for_runner(runner)
        report = fuzzy.run(group, QueryOptions(
            mode="exact", states=HOLDERS, purpose=q.purpose, legal_basis=q.legal_basis, unit=q.unit,
            official=q.official, deadline_seconds=max(q.deadline_seconds, 45.0)), FuzzyOptions(),
            follow_up=True)
        fuzzy.close()
    finally:
        close()
    print()
    print(report.to_table())
    print()
    got = {(t.traveller, h.state, h.label.get("reference", "")) for t in report.travellers for h in t.hits}
    ken = {r.record_id: r for r in data.watchlists["KEN"]}
    for p in data.planted:
        if not p.fuzzy_only:
            continue
        listed = ken.get("KEN-00007")  # make_demo_data plants the typo of ken[7] (KEN-00007)
        ref = listed.label.reference if listed is not None else ""
        tag = f"{p.traveller}@{p.state} ({p.how})"
        if (p.traveller, p.state, ref) in got:
            result.found.append(tag + " by the fuzzy check")
            _say(f"fuzzy check found {tag}: label {ref} released after the follow-up")
        else:
            result.missed.append(tag + " (fuzzy)")
    _say(f"fuzzy round + follow-up took {time.perf_counter() - t0:.1f}s")


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def main(argv: Sequence[str] | None = None) -> int:
    result = run_demo()
    return 0 if result.ok else 1
