"""The daily work on an S3 lake: 01_fetch of one session and the incremental 02_resample, against SeaweedFS on
loopback, beside the same runs on the local disk and beside a floor of plain concurrent PUTs.

    .venv/bin/python bench/bench_s3.py [--symbols 5350] [--history 60] [--put-threads 16]

Steps, on each lake (local folder, then an S3 bucket):
  1. ``--history`` sessions backfilled by smart backfill (not timed) and a full resample (not timed);
  2. one more session fetched, end to end (grouped request, one object per symbol, the session batch,
     the manifest); Postgres is off (``write_postgres=False``): this measures the lake;
  3. the incremental resample after that session.
The floor PUTs the same one-row parquet objects with boto3 from ``--put-threads`` threads and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fetch import KEY, start_server  # noqa: E402
from condvest import calendar as cal  # noqa: E402
from condvest.bars import bars_frame, to_table  # noqa: E402
from condvest.fetch import FetchParams, run_fetch  # noqa: E402
from condvest.lake import bronze_daily_key  # noqa: E402
from condvest.offline import SyntheticMarket  # noqa: E402
from condvest.parquet_rows import parquet_bytes  # noqa: E402
from condvest.resample import ResampleParams, run_resample  # noqa: E402
from condvest.settings import Secret, Settings  # noqa: E402
from tests.fixtures.s3 import _start_weed, _stop, _wait_ready  # noqa: E402  (the test suite's SeaweedFS)

AS_OF = dt.date(2025, 10, 17)


def _day(settings: Settings, day: dt.date, backfill: int = 0) -> float:
    p = FetchParams(
        date=None if backfill else day.isoformat(),
        max_backfill_days=max(backfill, 1),
        skip_market_check=True,
        write_postgres=False,
        as_of=day.isoformat(),
    )
    r = asyncio.run(run_fetch(settings, p, progress=False))
    assert r.status == "ok", r.failed
    return r.seconds


def _lake(settings: Settings, history: int) -> dict[str, float]:
    sessions = cal.last_n_sessions(AS_OF, history + 1)
    _day(settings, sessions[-2], backfill=history)
    t0 = time.perf_counter()
    run_resample(settings, ResampleParams())
    full = time.perf_counter() - t0
    fetch = _day(settings, sessions[-1])
    t0 = time.perf_counter()
    report = run_resample(settings, ResampleParams())
    assert {r.mode for r in report.results} == {"incremental"}, report.to_frame()
    return {"fetch": fetch, "resample": time.perf_counter() - t0, "full": full}


def _floor(server, bucket: str, market: SyntheticMarket, threads: int) -> float:  # noqa: ANN001
    table = to_table(bars_frame(market.grouped(AS_OF))).replace_schema_metadata(None)
    syms, days = table.column("symbol").to_pylist(), table.column("date").to_pylist()
    bodies = [
        (bronze_daily_key(s, d), parquet_bytes(table.slice(i, 1)))
        for i, (s, d) in enumerate(zip(syms, days, strict=True))
    ]
    client = server.client()

    def put(kv: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key="floor/" + kv[0], Body=kv[1])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, bodies))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=5350)
    ap.add_argument("--history", type=int, default=60, help="sessions in the lake before the measured one")
    ap.add_argument("--put-threads", type=int, default=16)
    opts = ap.parse_args()
    market = SyntheticMarket(n_symbols=opts.symbols, seed=7)
    proc, base = start_server(opts.symbols)
    tmp = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    sock = Path(tempfile.mkdtemp(prefix="weed-", dir="/tmp"))
    (tmp / "weed").mkdir()
    weed, server = _start_weed(tmp / "weed", sock)
    try:
        _wait_ready(weed, server)
        bucket = server.new_bucket("bench")
        os.environ.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_REGION=server.region,
            AWS_EC2_METADATA_DISABLED="true",
        )
        common = {"polygon_base_url": base, "polygon_api_key": Secret(KEY), "as_of": AS_OF, "home": tmp / "home"}
        local = _lake(Settings(lake_uri=str(tmp / "lake"), **common), opts.history)
        s3 = _lake(
            Settings(
                lake_uri=f"s3://{bucket}/lake", s3_endpoint_url=server.endpoint_url, aws_region=server.region, **common
            ),
            opts.history,
        )
        floor = _floor(server, bucket, market, opts.put_threads)
        print(
            f"\nS3 benchmark: {opts.symbols:,} symbols, {opts.history} sessions of history, SeaweedFS on loopback, "
            f"{os.cpu_count()} cores\n"
        )
        print("| step | local disk (s) | S3 (s) | floor: plain concurrent PUTs (s) | S3 / floor |")
        print("|---|---:|---:|---:|---:|")
        ratio = s3["fetch"] / floor
        print(f"| fetch one session | {local['fetch']:.2f} | {s3['fetch']:.2f} | {floor:.2f} | {ratio:.2f}x |")
        print(f"| incremental resample | {local['resample']:.2f} | {s3['resample']:.2f} | | |")
        print(f"| (full resample of the daily files, untimed step 1) | {local['full']:.2f} | {s3['full']:.2f} | | |")
    finally:
        proc.terminate()
        _stop(weed, server)
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


if __name__ == "__main__":
    main()
