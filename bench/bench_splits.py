"""Benchmark of a daily run that crosses splits: what k splits on the fetched day cost.

    .venv/bin/python bench/bench_splits.py [--symbols 200] [--since 2015-01-02] [--splits 0,1,5] [--young]

For each k: a lake holding every symbol's bars from ``--since`` to the day before D (fetched with range
requests before the splits, then a full 02_resample), then the server's clock moves past D, where k
symbols split (2-for-1), and the daily pipeline runs: 01_fetch of D (Postgres writes off) and an
incremental 02_resample of the six intervals. Prints the requests per endpoint, the seconds, and the
silver month files rewritten against the months the split symbols' bars span.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

from condvest.calendar import previous_session
from condvest.fetch import FetchParams, run_fetch
from condvest.offline import Split, SyntheticMarket, serve_in_thread
from condvest.resample import ResampleParams
from condvest.resample.run import run_resample
from condvest.settings import Secret, Settings

KEY = "bench-key"
D = dt.date(2025, 10, 17)
NY = dt.timezone(dt.timedelta(hours=-4))
INTERVALS = "3,5,8,13,21,34"


def one(tmp: Path, n_symbols: int, since: dt.date, k: int, young: bool) -> dict:
    base = SyntheticMarket(n_symbols=n_symbols, seed=7)
    if young:  # the k most recently listed symbols (short histories)
        listed = sorted(base.symbols, key=base.listing_date, reverse=True)[: max(k, 1)]
    else:  # symbols listed before --since: their history spans the whole lake
        listed = [s for s in base.symbols if base.listing_date(s) < since]
    chosen = listed[:: max(1, len(listed) // max(1, k))][:k]
    market = SyntheticMarket(n_symbols=n_symbols, seed=7, splits=[Split(s, D, 1, 2) for s in chosen])
    before = previous_session(D)
    with serve_in_thread(market, api_key=KEY, now=dt.datetime.combine(before, dt.time(21), tzinfo=NY)) as srv:
        cfg = Settings(
            lake_uri=str(tmp / f"lake-{k}"), polygon_base_url=srv.base_url, polygon_api_key=Secret(KEY), as_of=before
        )
        hist = FetchParams(
            start=since.isoformat(), end=before.isoformat(), skip_market_check=True, write_postgres=False
        )
        r = asyncio.run(run_fetch(cfg, hist, progress=False))
        assert r.status == "ok", r.failed
        t0 = time.perf_counter()
        full = run_resample(cfg, ResampleParams(intervals=INTERVALS))
        full_s = time.perf_counter() - t0
        srv.set_now(dt.datetime.combine(D, dt.time(21), tzinfo=NY))
        srv.reset()
        cfg = cfg.with_(as_of=D)
        daily = FetchParams(date=D.isoformat(), skip_market_check=True, write_postgres=False)
        t0 = time.perf_counter()
        report = asyncio.run(run_fetch(cfg, daily, progress=False))
        fetch_s = time.perf_counter() - t0
        assert report.status == "ok", report.failed
        assert sorted(report.rebase.rebased) == sorted(chosen)
        by_endpoint: dict[str, int] = {}
        for rec in srv.requests:
            by_endpoint[rec.endpoint] = by_endpoint.get(rec.endpoint, 0) + 1
        t0 = time.perf_counter()
        res = run_resample(cfg, ResampleParams(intervals=INTERVALS))
        resample_s = time.perf_counter() - t0
    months = {(d.year, d.month) for s in chosen for d in _sessions(market, s, since, D)}
    frame = res.to_frame()
    return {
        "k": k,
        "grouped": by_endpoint.get("grouped", 0),
        "splits": by_endpoint.get("splits", 0),
        "range": by_endpoint.get("range", 0),
        "fetch_s": fetch_s,
        "resample_s": resample_s,
        "rewritten": int(frame["months_rewritten"].sum()),
        "split_months": len(months) * len(frame),
        "all_months": len({(d.year, d.month) for d in _sessions(market, None, since, D)}) * len(frame),
        "rows_read": int(frame["rows_read"].max()),
        "full_rows": int(full.to_frame()["rows_read"].max()),
        "full_s": full_s,
        "mode": ",".join(sorted(set(frame["mode"]))),
    }


def _sessions(market: SyntheticMarket, symbol: str | None, since: dt.date, end: dt.date) -> list[dt.date]:
    df = market.frame(since, end, None if symbol is None else [symbol])
    return [dt.date.fromisoformat(str(d)) for d in df["date"].unique()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=200)
    ap.add_argument("--since", default="2015-01-02")
    ap.add_argument("--splits", default="0,1,5")
    ap.add_argument("--young", action="store_true", help="split the most recently listed symbols instead")
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-splits-"))
    try:
        since = dt.date.fromisoformat(opts.since)
        rows = [one(tmp, opts.symbols, since, int(k), opts.young) for k in opts.splits.split(",")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nsplits benchmark: {opts.symbols} symbols, bars since {opts.since}, one daily session ({D}) with k "
        f"2-for-1 splits of {'the most recently listed' if opts.young else 'long-listed'} symbols, local server, "
        f"local lake, no Postgres, {os.cpu_count()} cores\n"
    )
    print(
        "| k | requests: grouped / splits / range | 01_fetch (s) | 02_resample incremental (s) | rows read |"
        " silver month files rewritten | months the split symbols span (x intervals) | all months (x intervals) |"
        " full resample: rows, s |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['k']} | {r['grouped']} / {r['splits']} / {r['range']} | {r['fetch_s']:.2f} | "
            f"{r['resample_s']:.2f} | {r['rows_read']:,} | {r['rewritten']:,} | {r['split_months']:,} | "
            f"{r['all_months']:,} | {r['full_rows']:,}, {r['full_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
