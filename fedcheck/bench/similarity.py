"""``fedcheck bench similarity``: Paillier similarity throughput vs naive phe and TenSEAL, end-to-end
figures, and matching quality on the UN list (plaintext reference, identical decisions by test).

Prints a Markdown report (pasted into docs/benchmarks.md) and writes the DET plot when matplotlib exists.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from fedcheck.fuzzy import FuzzyHolder, FuzzyQuerier, HolderEntry, QuerierKey, Traveller
from fedcheck.fuzzy.encoding import NAME_DIMS, name_bigrams, quantise_face
from fedcheck.fuzzy.holder import entries_from_records
from fedcheck.fuzzy.reference import name_margins

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--list", default="data/un-sc-consolidated-2018-10-29.xml")
    parser.add_argument("--e2e-entries", type=int, default=1000, help="measured fraction of the 10^4 list")
    parser.add_argument("--plot", default="docs/matching-quality.png")
    parser.add_argument("--skip", default="", help="comma list of: floor,throughput,faces,e2e,quality")


def _line(s: str = "") -> None:
    print(s, flush=True)


def _names_and_years(path: str) -> tuple[list[Any], list[str]]:
    from fedcheck.records.io import read_records

    recs = read_records(path).records
    return recs, [r.names[0].full_name for r in recs if r.names]


def _random_names(pool: list[str], count: int, rng: random.Random) -> list[str]:
    toks = [t for n in pool for t in n.split() if len(t) > 2]
    return [" ".join(rng.sample(toks, rng.choice([2, 3]))) for _ in range(count)]


# --------------------------------------------------------------------------- throughput
def _ours(key: QuerierKey, kind: str, travellers: list[Traveller], entries: list[HolderEntry],
          pack_size: int, theta: str) -> dict[str, float]:
    q = FuzzyQuerier(key, kind=kind, pack_size=pack_size, workers=1, threshold=theta)
    h = FuzzyHolder(entries, kind=kind, workers=1)
    t0 = time.perf_counter()
    req = q.build_request(travellers)
    t1 = time.perf_counter()
    resp = h.score(req)
    t2 = time.perf_counter()
    res = q.decide(req, resp)
    t3 = time.perf_counter()
    return {"enc": t1 - t0, "holder": t2 - t1, "dec": t3 - t2, "pairs": res.pairs,
            "req_bytes": len(req.to_bytes()), "resp_bytes": len(resp.to_bytes()),
            "travellers": len(travellers), "entries": len(entries)}


def _naive_phe(key: QuerierKey, x: list[int], ys: list[list[int]]) -> float:
    """Seconds per pair: one EncryptedNumber per coordinate, Python dot product, one decryption per pair
    (traveller encryption amortised over ``len(ys)`` pairs)."""
    pub, priv = key.phe_keys()
    t0 = time.perf_counter()
    enc = [pub.encrypt(v) for v in x]
    t1 = time.perf_counter()
    for y in ys:
        acc = enc[0] * y[0]
        for c, v in zip(enc[1:], y[1:], strict=True):
            acc = acc + c * v
        priv.decrypt(acc)
    t2 = time.perf_counter()
    return (t2 - t1) / len(ys) + (t1 - t0) / 10_000


def _naive_names(key: QuerierKey, names: list[str]) -> float:
    """Seconds per pair of the naive phe baseline on dense 0/1 bigram vectors: ``names[0]`` against
    ``names[1:4]``."""

    def dense(name: str) -> list[int]:
        v = [0] * NAME_DIMS
        for d in name_bigrams(name):
            v[d] = 1
        return v

    return _naive_phe(key, dense(names[0]), [dense(n) for n in names[1:4]])


def _tenseal(xs: np.ndarray, ys: np.ndarray) -> float | None:
    """Seconds per pair for CKKS enc.matmul (encrypted traveller vector × plaintext entry matrix)."""
    try:
        import tenseal as ts
    except ImportError:
        return None
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    mat = ys.T.tolist()
    t0 = time.perf_counter()
    for x in xs:
        enc = ts.ckks_vector(ctx, x.tolist())
        enc.matmul(mat).decrypt()
    return (time.perf_counter() - t0) / (len(xs) * len(ys))


def _rate(r: dict[str, float], list_entries: int = 10_000) -> float:
    """Pairs per second per core, encryption amortised as if the list had ``list_entries`` entries."""
    per_pair = (r["holder"] + r["dec"]) / r["pairs"] + r["enc"] / (r["travellers"] * list_entries)
    return 1.0 / per_pair


def bench_throughput(key: QuerierKey, names: list[str], rng: random.Random, faces: bool) -> None:
    sample = rng.sample(names, 300)
    if faces:
        g = np.random.default_rng(1)
        tx = g.normal(size=(4, 128))
        ey = g.normal(size=(300, 128))
        entries = []
        for i, v in enumerate(ey):
            qv = quantise_face(v)
            nz = np.flatnonzero(qv)
            entries.append(HolderEntry(f"f{i}", {}, tuple(int(d) for d in nz), tuple(int(qv[d]) for d in nz)))
        trav = [Traveller(face=list(v)) for v in tx]
        a = _ours(key, "face", trav[:1], entries, 1, "0.5")
        b = _ours(key, "face", trav, entries, 4, "0.5")
        naive = _naive_phe(key, [int(v) for v in quantise_face(tx[0])],
                           [[int(v) for v in quantise_face(y)] for y in ey[:3]])
        tsp = _tenseal(tx / np.linalg.norm(tx, axis=1, keepdims=True),
                       ey / np.linalg.norm(ey, axis=1, keepdims=True))
        _line("\n### Faces, 128-d, per core (1 worker)\n")
        _line("| engine | pairs/s per core | vs naive phe | vs TenSEAL |")
        _line("|---|---:|---:|---:|")
        for label, r in (("fedcheck pack_size=1 (per-pair blinding, default)", a),
                         ("fedcheck pack_size=4 (shared blinding)", b)):
            rate = _rate(r)
            ts_ratio = f"{rate * tsp:.0f}×" if tsp else "n/a"
            _line(f"| {label} | {rate:,.0f} | {rate * naive:,.0f}× | {ts_ratio} |")
        _line(f"| naive phe (EncryptedNumber per coordinate) | {1 / naive:,.1f} | 1× | |")
        if tsp:
            _line(f"| TenSEAL CKKS enc.matmul (N=8192) | {1 / tsp:,.0f} | {naive / tsp:,.0f}× | 1× |")
        return
    entries = entries_from_names(sample)
    a = _ours(key, "name", [Traveller(n) for n in rng.sample(names, 2)], entries, 1, "0.8")
    b = _ours(key, "name", [Traveller(n) for n in rng.sample(names, 85)], entries[:100], 85, "0.8")
    naive = _naive_names(key, sample)
    _line("\n### Names (bigram Dice + birth year), per core (1 worker)\n")
    _line("| engine | pairs/s per core | vs naive phe | measured on |")
    _line("|---|---:|---:|---|")
    for label, r in (("fedcheck pack_size=1 (per-pair blinding, default)", a),
                     ("fedcheck pack_size=85 (shared blinding, opt-in)", b)):
        rate = _rate(r)
        _line(f"| {label} | {rate:,.0f} | {rate * naive:,.0f}× | {r['travellers']:.0f}×{r['entries']:.0f} "
              f"(enc {r['enc']:.1f}s, holder {r['holder']:.2f}s, dec {r['dec']:.2f}s) |")
    _line(f"| naive phe (729 EncryptedNumbers, Python dot, 1 decrypt/pair) | {1 / naive:,.2f} | 1× | 1×3 |")


def entries_from_names(names: list[str]) -> list[HolderEntry]:
    return [HolderEntry(f"n{i}", {}, tuple(sorted(name_bigrams(n)))) for i, n in enumerate(names)]


# --------------------------------------------------------------------------- floor
def _time_per_call(fn: Any, count: int) -> float:
    t0 = time.perf_counter()
    fn(count)
    return (time.perf_counter() - t0) / count


def bench_floor(key: QuerierKey, names: list[str], rng: random.Random) -> dict[str, float]:
    """Lower bounds on per-pair cost of the packed, per-pair-blinded construction, from the primitives.

    Why: the issue's targets (>= 1000x naive phe, 3*10^6 pairs in < 30 s) are ratios of the same run; this
    section measures the two costs no implementation of the construction can avoid — the querier decrypts
    ``w`` plaintext bits per pair (CRT decryption costs a fixed time per ciphertext of ``key_bits`` bits)
    and, with per-pair blinding, the holder's Horner shift squares ``w`` times per pair — and prints the best
    ratio those floors allow, beside the naive baseline measured in the same run.
    """
    import gmpy2

    from fedcheck.fuzzy.holder import MARGIN_BITS, MIN_BLIND_BITS

    bits = key.public.key_bits
    cts = key.encrypt_many([rng.getrandbits(bits - 2) for _ in range(24)])
    dec = _time_per_call(lambda c: key.decrypt_many(cts[:c]), len(cts))
    n2 = gmpy2.mpz(key.public.n) ** 2
    a, b = gmpy2.mpz(cts[0]), gmpy2.mpz(cts[1])

    def _muls(c: int) -> None:
        x = a
        for _ in range(c):
            x = x * b % n2

    mul = _time_per_call(_muls, 20_000)
    naive = _naive_names(key, names)
    per_bit = dec / bits
    w_min = MARGIN_BITS["name"] + MIN_BLIND_BITS
    _line(f"\n### Floors of the construction (names, {bits}-bit key, 1 core)\n")
    _line(f"Measured in this run: CRT decryption {dec * 1e3:.2f} ms per ciphertext = "
          f"{per_bit * 1e6:.2f} µs per plaintext bit; {2 * bits}-bit modular multiplication "
          f"{mul * 1e6:.2f} µs; naive phe {naive * 1e3:.1f} ms per pair. The 1000× target needs "
          f"≤ {naive / 1000 * 1e6:.1f} µs per pair in total; 3·10^6 pairs in 30 s on 2 cores needs "
          "≤ 20 µs per pair per core.\n")
    _line("| slot bits per pair (w) | querier decryption floor (µs/pair) "
          "| + holder Horner floor, w squarings (µs/pair) | best pairs/s per core "
          "| best ratio to naive phe | 3·10^6 pairs, 2 cores (s) |")
    _line("|---|---:|---:|---:|---:|---:|")
    out: dict[str, float] = {"dec_s": dec, "mul_s": mul, "naive_s": naive}
    w_label = (f"{w_min} (minimum the holder accepts: {MARGIN_BITS['name']} margin + "
               f"{MIN_BLIND_BITS} blinding)")
    rows = ((w_label, w_min, True), ("24 (default)", 24, True),
            ("24, shared blinding (no Horner shift per pair)", 24, False),
            ("1 (a bare hit bit: not reachable with Paillier, shown as the absolute bound)", 1, False))
    for label, w, horner in rows:
        dec_pp = per_bit * w
        hold_pp = mul * w if horner else 0.0
        best = 1.0 / (dec_pp + hold_pp)
        _line(f"| {label} | {dec_pp * 1e6:.1f} | {hold_pp * 1e6:.1f} | {best:,.0f} | {naive * best:,.0f}× | "
              f"{3e6 * (dec_pp + hold_pp) / 2:,.0f} |")
        out[f"ratio_w{w}{'_h' if horner else ''}"] = naive * best
    return out


# --------------------------------------------------------------------------- end to end
def bench_e2e(key: QuerierKey, names: list[str], rng: random.Random, fraction_entries: int) -> None:
    _line("\n### End to end, 300 travellers, 2 workers per side\n")
    _line("| mode | list | measured | enc (s) | holder (s) | decrypt (s) | total (s) | wire (MB) |")
    _line("|---|---:|---|---:|---:|---:|---:|---:|")
    pool = [rng.choice(names) for _ in range(fraction_entries)]
    entries = [HolderEntry(f"n{i}", {}, tuple(sorted(name_bigrams(n))), (), rng.choice([None, 1970]))
               for i, n in enumerate(pool)]
    trav_all = [Traveller(n, rng.choice([None, 1970])) for n in rng.sample(names, 300)]
    for k, n_trav in ((85, 300), (1, 4)):
        q = FuzzyQuerier(key, pack_size=k, workers=2)
        h = FuzzyHolder(entries, workers=2)
        trav = trav_all[:n_trav]
        t0 = time.perf_counter()
        req = q.build_request(trav)
        t1 = time.perf_counter()
        resp = h.score(req)
        t2 = time.perf_counter()
        q.decide(req, resp)
        t3 = time.perf_counter()
        enc_t, hold_t, dec_t = t1 - t0, t2 - t1, t3 - t2
        req_b, resp_b = len(req.to_bytes()), len(resp.to_bytes())
        for list_size in (10_000, 100_000):
            scale_e = list_size / fraction_entries
            scale_t = 300 / n_trav
            enc = enc_t * scale_t
            hold, dec = hold_t * scale_e * scale_t, dec_t * scale_e * scale_t
            wire = (req_b * scale_t + resp_b * scale_e * scale_t) / 1e6
            label = "shared blinding (85/pack)" if k > 1 else "per-pair blinding (default)"
            _line(f"| {label} | {list_size:,} | {n_trav}×{fraction_entries}, extrapolated | {enc:.1f} | "
                  f"{hold:.1f} | {dec:.1f} | {enc + hold + dec:.1f} | {wire:.1f} |")


# --------------------------------------------------------------------------- quality
_TRANSLIT = [("MOHAMMED", "MUHAMMAD"), ("MOHAMMAD", "MOHAMED"), ("MUHAMMAD", "MOHAMMED"), ("OU", "U"),
             ("KH", "H"), ("EE", "I"), ("YU", "IU"), ("Q", "K"), ("J", "DJ"), ("SH", "SCH"), ("AL ", "EL "),
             ("Y", "I"), ("OO", "U"), ("DH", "D"), ("AI", "AY"), ("V", "W")]


def make_variant(name: str, rng: random.Random) -> tuple[str, str]:
    toks = name.split()
    kind = rng.choice(["translit", "order", "drop", "typo", "typo2", "combo"])
    s = " ".join(toks)
    if kind in ("translit", "combo"):
        opts = [p for p in _TRANSLIT if p[0] in s]
        if opts:
            a, b = rng.choice(opts)
            s = s.replace(a, b, 1)
    toks = s.split()
    if kind in ("order", "combo") and len(toks) > 1:
        rng.shuffle(toks)
    if kind == "drop" and len(toks) > 2:
        toks.pop(rng.randrange(len(toks)))
    if kind in ("typo", "typo2", "combo"):
        for _ in range(2 if kind == "typo2" else 1):
            i = rng.randrange(len(toks))
            t = toks[i]
            j = rng.randrange(len(t))
            op = rng.randrange(3)
            t = t[:j] + rng.choice("ABCDEFGHIJKLMNOPRSTUVWYZ") + t[j + 1:] if op == 0 else (
                t[:j] + t[j + 1:] if op == 1 and len(t) > 2 else t[:j] + t[j] + t[j:])
            toks[i] = t
    return " ".join(toks), kind


def bench_quality(path: str, rng: random.Random, plot: str) -> None:
    from fedcheck.records.normalise import normalise_name

    recs, _ = _names_and_years(path)
    ents = entries_from_records(recs)
    rec_of = [e.record_id for e in ents]
    ent_sets = [frozenset(e.dims) for e in ents]
    ent_names = [normalise_name(pn.full_name) for r in recs for pn in r.names]
    ent_name_rec = [r.record_id for r in recs for _ in r.names]
    primaries = [(r.record_id, normalise_name(r.names[0].full_name)) for r in recs if r.names]
    queries = []
    for rid, nm in primaries:
        for _ in range(3):
            v, kind = make_variant(nm, rng)
            queries.append((rid, v, kind))
    listed_tokens = {t for _, nm in primaries for t in nm.split()}
    pool_first = ["JOHN", "MARIA", "WEI", "FATIMA", "OLUWASEUN", "PRIYA", "CARLOS", "ANNA", "YUKI", "AHMET",
                  "ELENA", "DMITRI", "AISHA", "LUCA", "SOPHIE", "HIROSHI", "NGUYEN", "OMAR", "LEILA", "PAVEL",
                  "MOHAMMED", "ALI", "HASSAN", "ABDUL", "IBRAHIM", "YUSUF", "KIM", "LEE", "PARK", "MUSA"]
    pool_last = ["SMITH", "MUELLER", "CHEN", "OKAFOR", "SHARMA", "GARCIA", "KOWALSKI", "TANAKA", "YILMAZ",
                 "IVANOVA", "ROSSI", "MARTIN", "HAQ", "RAHMAN", "KHAN", "AHMED", "NOVAK", "SILVA", "LEE",
                 "HUSSEIN", "ABDULLAH", "CHOI", "PETROV", "DIALLO", "TRAORE", "BAKR", "NASSER", "SALEH"]
    others: list[str] = []
    while len(others) < 10_000:
        first, mid, last = rng.choice(pool_first), rng.choice([*pool_first, ""]), rng.choice(pool_last)
        others.append(" ".join(filter(None, (first, mid, last))))
    others += [" ".join(rng.sample(sorted(listed_tokens), 2)) for _ in range(2000)]  # shared-token decoys
    thresholds = ["0.5", "0.6", "0.65", "0.7", "0.75", "0.8", "0.85", "0.9"]
    q_sets = [name_bigrams(v) for _, v, _ in queries]
    o_sets = [name_bigrams(v) for v in others]
    from rapidfuzz import fuzz, process

    rf_q = process.cdist([v for _, v, _ in queries], ent_names, scorer=fuzz.token_sort_ratio, workers=-1)
    rf_o = process.cdist(others, ent_names, scorer=fuzz.token_sort_ratio, workers=-1)
    ent_name_rec_arr = np.array(ent_name_rec)
    q_rid = np.array([rid for rid, _, _ in queries])
    rec_arr = np.array(rec_of)
    _line(f"\n### Matching quality: UN list ({len(recs)} records, {len(ent_names)} names), "
          f"{len(queries)} listed variants, {len(others)} non-listed travellers\n")
    _line("| θ | Dice recall | Dice false matches /10^4 | rapidfuzz token_sort recall | rapidfuzz FM /10^4 |")
    _line("|---:|---:|---:|---:|---:|")
    det: dict[str, list[tuple[float, float]]] = {"dice": [], "rapidfuzz": []}
    by_kind: dict[str, list[float]] = {}
    for th in thresholds:
        theta = Fraction(th)
        mq = name_margins(q_sets, [None] * len(q_sets), ent_sets, [None] * len(ent_sets), theta) >= 0
        mo = name_margins(o_sets, [None] * len(o_sets), ent_sets, [None] * len(ent_sets), theta) >= 0
        recall = float(np.mean([(mq[i] & (rec_arr == q_rid[i])).any() for i in range(len(queries))]))
        fm = float(mo.any(axis=1).mean() * 1e4)
        rq = rf_q >= float(theta) * 100
        r_recall = float(np.mean([(rq[i] & (ent_name_rec_arr == q_rid[i])).any()
                                  for i in range(len(queries))]))
        r_fm = float((rf_o >= float(theta) * 100).any(axis=1).mean() * 1e4)
        det["dice"].append((fm, 1 - recall))
        det["rapidfuzz"].append((r_fm, 1 - r_recall))
        _line(f"| {th} | {recall:.3f} | {fm:,.0f} | {r_recall:.3f} | {r_fm:,.0f} |")
        if th == "0.7":
            for kind in sorted({k for _, _, k in queries}):
                idx = [i for i, (_, _, k) in enumerate(queries) if k == kind]
                by_kind[kind] = [float(np.mean([(mq[i] & (rec_arr == q_rid[i])).any() for i in idx]))]
    kinds = ", ".join(f"{k} {v[0]:.3f}" for k, v in by_kind.items())
    _line(f"\nRecall by variant kind at θ = 0.7 (Dice): {kinds}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _line("(matplotlib not installed: no plot)")
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, pts in det.items():
        xs, ys = zip(*pts, strict=True)
        ax.plot([max(x, 0.5) for x in xs], ys, marker="o", label=label)
        for (x, y), th in zip(pts, thresholds, strict=True):
            ax.annotate(th, (max(x, 0.5), y), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("false matches per 10^4 non-listed travellers")
    ax.set_ylabel("miss rate on listed variants")
    ax.set_title("UN list: bigram Dice (encrypted decision) vs rapidfuzz")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot, dpi=110)
    _line(f"\nPlot: {plot}")


def run(args: argparse.Namespace) -> int:
    skip = set(filter(None, args.skip.split(",")))
    rng = random.Random(2024)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    _line(f"## Similarity bench — {time.strftime('%Y-%m-%d')}, nproc={os.cpu_count()}, CPU {cpu}, "
          f"key {args.key_bits} bits")
    recs, names = _names_and_years(args.list)
    if {"floor", "throughput", "faces", "e2e"} - skip:
        key = QuerierKey.generate(args.key_bits)
    if "floor" not in skip:
        bench_floor(key, names, rng)
    if "throughput" not in skip:
        bench_throughput(key, names, rng, faces=False)
    if "faces" not in skip:
        bench_throughput(key, names, rng, faces=True)
    if "e2e" not in skip:
        bench_e2e(key, names, rng, args.e2e_entries)
    if "quality" not in skip:
        bench_quality(args.list, rng, args.plot)
    del recs
    return 0
