"""Benchmark of 04_retention: load 10.8M daily bars over 63 years with COPY, then archive everything older
than the cutoff, by whole-month partitions (method auto) and row by row (method rows), each from a fresh load.

    .venv/bin/python bench/bench_retention.py [--rows 10800000] [--symbols 5350] [--methods auto,rows]

Runs its own embedded PostgreSQL cluster in a temporary folder (same settings as the workbench's embedded
cluster) and prints a markdown table for BENCHMARKS.md. Synthetic bars: NYSE sessions 1962-01-02 ..
2025-10-17, each symbol trading from a random listing date to the end, rows in session order (the order a
daily fetch accumulates them). "Nothing lost" is checked after each run: hot + archive row count and a
checksum over every column equal the loaded ones, no key is in both tables, and the archived count equals
what the generator put before the cutoff.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from condvest import retention  # noqa: E402
from condvest.calendar import sessions_between  # noqa: E402
from condvest.postgres import EmbeddedCluster  # noqa: E402
from condvest.settings import Retention  # noqa: E402

AS_OF = dt.date(2025, 10, 17)
FIRST = dt.date(1962, 1, 2)
PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
CHUNK = 1_000_000


def synthetic(n_rows: int, n_symbols: int, seed: int = 42):
    """(symbol index, session index) pairs in session order, plus session timestamps (UTC microseconds)."""
    sessions = sessions_between(FIRST, AS_OF)
    n_sess = len(sessions)
    rng = np.random.default_rng(seed)
    lengths = rng.exponential(1.0, n_symbols)
    lengths = np.clip(np.round(lengths / lengths.sum() * n_rows), 1, n_sess).astype(np.int64)
    # nudge to the exact total: one row more (or less) for as many symbols as needed, repeatedly
    while (diff := n_rows - int(lengths.sum())) != 0:
        idx = np.flatnonzero(lengths < n_sess) if diff > 0 else np.flatnonzero(lengths > 1)
        lengths[idx[: abs(diff)]] += 1 if diff > 0 else -1
    starts = n_sess - lengths
    sym = np.repeat(np.arange(n_symbols, dtype=np.int32), lengths)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    sess = (np.repeat(starts, lengths) + (np.arange(len(sym)) - offsets)).astype(np.int32)
    order = np.lexsort((sym, sess))
    # 00:00 America/New_York of each session, as microseconds since 2000-01-01 UTC
    import pandas as pd

    stamps = pd.DatetimeIndex(pd.to_datetime(sessions)).tz_localize("America/New_York").tz_convert("UTC")
    micros = (stamps.tz_localize(None).values.astype("datetime64[us]") - PG_EPOCH).astype(np.int64)
    return sym[order], sess[order], micros, sessions


def tickers(n: int) -> np.ndarray:
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    i = np.arange(n)
    codes = np.stack([i // 26**3 % 26, i // 26**2 % 26, i // 26 % 26, i % 26], axis=1)
    return np.array(["".join(letters[c]) for c in codes], dtype="S4")


_ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_sym", ">i4"),
        ("sym", "S4"),
        ("l_ts", ">i4"),
        ("ts", ">i8"),
        ("l_o", ">i4"),
        ("o", ">f8"),
        ("l_h", ">i4"),
        ("h", ">f8"),
        ("l_l", ">i4"),
        ("lo", ">f8"),
        ("l_c", ">i4"),
        ("c", ">f8"),
        ("l_v", ">i4"),
        ("v", ">f8"),
    ]
)


def binary_chunk(sym, sess, micros, names, rng) -> bytes:
    n = len(sym)
    a = np.empty(n, dtype=_ROW)
    a["n"], a["l_sym"], a["sym"], a["l_ts"], a["ts"] = 7, 4, names[sym], 8, micros[sess]
    close = rng.uniform(0.01, 900.0, n).round(4)
    for f in ("l_o", "l_h", "l_l", "l_c", "l_v"):
        a[f] = 8
    a["o"], a["h"], a["lo"], a["c"] = close * 1.001, close * 1.02, close * 0.98, close
    a["v"] = rng.uniform(0, 5e6, n).round(2)
    return a.tobytes()


def load(conn, sym, sess, micros, names) -> float:
    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    for i in range(0, len(sym), CHUNK):
        with conn.cursor().copy(
            'COPY raw_ohlcv (symbol, "timestamp", open, high, low, close, volume) FROM STDIN (FORMAT BINARY)'
        ) as cp:
            cp.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
            cp.write(binary_chunk(sym[i : i + CHUNK], sess[i : i + CHUNK], micros, names, rng))
            cp.write((-1).to_bytes(2, "big", signed=True))
        print(f"  loaded {min(i + CHUNK, len(sym)):,} rows", file=sys.stderr, flush=True)
    return time.perf_counter() - t0


_CHECK = """SELECT count(*), coalesce(sum(hashtextextended(concat_ws('|', symbol, "timestamp", open, high, low,
                                                               close, volume), 0)::numeric), 0) FROM {}"""


def totals(conn) -> tuple[int, int]:
    hot = conn.execute(_CHECK.format("raw_ohlcv")).fetchone()
    arc = conn.execute(_CHECK.format("raw_ohlcv_archive")).fetchone()
    return hot[0] + arc[0], hot[1] + arc[1]


def scenario(cluster, method: str, data, expected_old: int) -> dict:
    sym, sess, micros, names = data
    name = f"bench_{method}"
    with psycopg.connect(cluster.dsn("postgres").reveal(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name}")
        c.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(cluster.dsn(name).reveal(), autocommit=True) as conn:
        retention.deploy(conn, as_of=AS_OF)
        parts = retention.ensure_partitions(conn, FIRST, AS_OF)
        load_s = load(conn, sym, sess, micros, names)
        conn.execute("VACUUM ANALYZE raw_ohlcv")
        before = totals(conn)
        dry = retention.dry_run(conn, retention.cutoff(Retention(), AS_OF))
        t0 = time.perf_counter()
        result = retention.archive(conn, as_of=AS_OF, method=method, lock_timeout="30s")
        archive_s = time.perf_counter() - t0
        after = totals(conn)
        both = conn.execute('SELECT count(*) FROM raw_ohlcv h JOIN raw_ohlcv_archive a USING (symbol, "timestamp")')
        in_both = both.fetchone()[0]
        rerun = retention.archive(conn, as_of=AS_OF, method=method)
        t1 = time.perf_counter()
        retention.read_views(conn)
        views_s = time.perf_counter() - t1
    ok = (
        before == after
        and in_both == 0
        and result.archived == result.deleted == expected_old == int(dry.at[0, "rows_to_archive"])
        and rerun.archived == 0
    )
    return {
        "method": method,
        "rows": len(sym),
        "partitions": parts,
        "load_s": load_s,
        "archive_s": archive_s,
        "server_s": result.seconds,
        "archived": result.archived,
        "months": result.partitions_moved,
        "rerun_s": rerun.seconds,
        "views_s": views_s,
        "ok": ok,
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_800_000)
    ap.add_argument("--symbols", type=int, default=5_350)
    ap.add_argument("--methods", default="auto,rows")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    sym, sess, micros, sessions = synthetic(args.rows, args.symbols)
    names = tickers(args.symbols)
    cut = retention.cutoff(Retention(), AS_OF)
    first_kept = int(np.searchsorted(np.array(sessions, dtype="datetime64[D]"), np.datetime64(cut)))
    expected_old = int((sess < first_kept).sum())
    print(
        f"generated {len(sym):,} rows, {args.symbols:,} symbols, {len(sessions):,} sessions "
        f"{sessions[0]}..{sessions[-1]} in {time.perf_counter() - t0:.1f} s; cutoff {cut}: "
        f"{expected_old:,} rows to archive",
        file=sys.stderr,
    )
    home = Path(tempfile.mkdtemp(prefix="condvest-bench-"))
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home)
    cluster.start()
    rows = []
    try:
        for method in args.methods.split(","):
            rows.append(scenario(cluster, method, (sym, sess, micros, names), expected_old))
            print(rows[-1], file=sys.stderr)
    finally:
        cluster.destroy()
        shutil.rmtree(home, ignore_errors=True)
    print(
        f"\nrows {args.rows:,} · symbols {args.symbols:,} · as_of {AS_OF} · cutoff {cut} · "
        f"rows before the cutoff {expected_old:,}\n"
    )
    print(
        "| method | COPY load | load rate | archive (wall) | rows archived | whole months moved | "
        "re-run | read the 3 views | nothing lost |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        label = "partition move (auto)" if r["method"] == "auto" else "row move (rows)"
        print(
            f"| {label} | {r['load_s']:.1f} s | {r['rows'] / r['load_s']:,.0f} rows/s | {r['archive_s']:.1f} s | "
            f"{r['archived']:,} | {r['months']} | {r['rerun_s']:.2f} s | {r['views_s']:.1f} s | "
            f"{'yes' if r['ok'] else 'NO'} |"
        )
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
