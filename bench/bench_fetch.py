"""Benchmark of 01_fetch against the local Polygon-compatible server (run in its own process).

    .venv/bin/python bench/bench_fetch.py [--symbols 5350] [--sessions 30]

Prints, for the seed's scale (5,350 symbols):
  * one session end to end (grouped fetch, bronze files, Postgres upsert, manifest);
  * N missing sessions backfilled end to end (smart backfill, daily mode);
  * the floor: writing the same number of one-row parquet files and nothing else (a few threads);
  * the official client (`massive`, formerly polygon-api-client) fetching the same bars per symbol with
    its defaults (sequential range requests), fetch only, nothing written.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from condvest import calendar as cal
from condvest.bars import bars_frame, to_table
from condvest.fetch import FetchParams, run_fetch
from condvest.parquet_rows import parquet_bytes
from condvest.postgres import EmbeddedCluster
from condvest.settings import Secret, Settings

KEY = "bench-key"
AS_OF = dt.date(2025, 10, 17)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(symbols: int) -> tuple[subprocess.Popen, str]:
    port = _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "condvest.offline",
            "serve",
            "--port",
            str(port),
            "--symbols",
            str(symbols),
            "--api-key",
            KEY,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, wait_for_server(f"http://127.0.0.1:{port}")


def wait_for_server(base: str, tries: int = 200) -> str:
    """``base`` once the offline server there answers (every 0.1 s, ``tries`` times)."""
    for _ in range(tries):
        try:
            urllib.request.urlopen(base + "/v1/marketstatus/now?apiKey=" + KEY, timeout=1).read()
            return base
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def floor(tmp: Path, rows, threads: int = 4) -> float:
    """Write one-row parquet files for `rows` (a bronze DataFrame) and nothing else."""
    table = to_table(rows).replace_schema_metadata(None)
    syms, dates = table.column("symbol").to_pylist(), table.column("date").to_pylist()

    def one(i: int) -> None:
        p = tmp / f"symbol={syms[i]}" / f"date={dates[i]}.parquet"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(parquet_bytes(table.slice(i, 1)))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(table.num_rows)))
    return time.perf_counter() - t0


def official_client(base: str, symbols: list[str], day: dt.date) -> float:
    from massive import RESTClient

    client = RESTClient(api_key=KEY, base=base)
    t0 = time.perf_counter()
    n = 0
    for s in symbols:
        n += len(client.get_aggs(s, 1, "day", day.isoformat(), day.isoformat(), adjusted=True))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=5350)
    ap.add_argument("--sessions", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-official", action="store_true")
    opts = ap.parse_args()
    from condvest.offline import SyntheticMarket

    market = SyntheticMarket(n_symbols=opts.symbols, seed=7)
    proc, base = start_server(opts.symbols)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fetch-"))
    os.chmod(tmp, 0o755)
    cluster = EmbeddedCluster(tmp / "home")
    try:
        dsn = cluster.start()
        rows: list[tuple[str, float, float]] = []

        def settings(lake: str) -> Settings:
            return Settings(
                lake_uri=str(tmp / lake), polygon_base_url=base, polygon_api_key=Secret(KEY), pg_dsn=dsn, as_of=AS_OF
            )

        # one session, end to end: a warm-up on another day, then the best of --repeat runs on fresh lakes
        asyncio.run(
            run_fetch(settings("warmup"), FetchParams(date="2025-10-15", skip_market_check=True), progress=False)
        )
        ones, floors = [], []
        for i in range(opts.repeat):
            r = asyncio.run(
                run_fetch(
                    settings(f"lake1-{i}"), FetchParams(date=AS_OF.isoformat(), skip_market_check=True), progress=False
                )
            )
            assert r.status == "ok", r.failed
            ones.append(r.seconds)
            floors.append(floor(tmp / f"floor1-{i}", bars_frame(market.grouped(AS_OF))))
        n1 = r.summary()["bronze_rows"]
        one = min(ones)
        rows.append((f"1 session, {n1:,} symbols, end to end (best of {opts.repeat})", one, min(floors)))

        # N missing sessions, smart backfill
        r = asyncio.run(
            run_fetch(
                settings("lake2"), FetchParams(max_backfill_days=opts.sessions, skip_market_check=True), progress=False
            )
        )
        assert r.status == "ok", r.failed
        sessions = cal.last_n_sessions(AS_OF, opts.sessions)
        assert len(r.sessions) == len(sessions)
        n = r.summary()["bronze_rows"]
        fn = sum(floor(tmp / f"floorN{i}", bars_frame(market.grouped(d))) for i, d in enumerate(sessions))
        rows.append((f"{opts.sessions} missing sessions, {n:,} bars, end to end", r.seconds, fn))

        print(
            f"\nfetch benchmark: {opts.symbols:,} symbols, local server, local lake, embedded PostgreSQL, "
            f"{os.cpu_count()} cores\n"
        )
        print("| case | condvest (s) | floor: one-row parquet files only (s) | ratio |\n|---|---:|---:|---:|")
        for name, t, f in rows:
            print(f"| {name} | {t:.2f} | {f:.2f} | {t / f:.2f}x |")
        if not opts.skip_official:
            t = official_client(base, market.symbols, AS_OF)
            print(
                f"\nofficial client (massive {_version()}), defaults, one range request per symbol, fetch only: "
                f"{t:.2f} s for one session ({one:.2f} s for condvest end to end: {t / one:.1f}x)"
            )
    finally:
        proc.terminate()
        cluster.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


def _version() -> str:
    from importlib.metadata import version

    return version("massive")


if __name__ == "__main__":
    main()
