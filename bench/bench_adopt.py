"""Benchmark of 04_retention mode="adopt": a previous pipeline's raw_ohlcv of N rows converted in place.

    .venv/bin/python bench/bench_adopt.py [--symbols 1000] [--sessions 1000]

Runs its own embedded PostgreSQL cluster in a temporary folder, creates the previous pipeline's tables
(DECIMAL(10,2) prices, BIGINT volume, naive "timestamp" of New York midnight in UTC, key with "interval"),
fills raw_ohlcv with symbols x weekday sessions ending 2025-10-17 by generate_series, then times the dry run
(inspection) and the adoption (one transaction: checks, copy, checksums, log). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from condvest import retention  # noqa: E402
from condvest.postgres import EmbeddedCluster  # noqa: E402

AS_OF = dt.date(2025, 10, 17)
OLD_DDL = """
CREATE TABLE raw_ohlcv (
    symbol VARCHAR(10) NOT NULL, open DECIMAL(10, 2), high DECIMAL(10, 2), low DECIMAL(10, 2),
    close DECIMAL(10, 2), volume BIGINT, "timestamp" TIMESTAMP NOT NULL, "interval" VARCHAR(10) NOT NULL DEFAULT '1d',
    PRIMARY KEY (symbol, "timestamp", "interval"));
CREATE TABLE data_retention_log (
    id SERIAL PRIMARY KEY, execution_date TIMESTAMP DEFAULT CURRENT_TIMESTAMP, retention_threshold TIMESTAMP,
    records_archived INTEGER DEFAULT 0, records_deleted INTEGER DEFAULT 0, status VARCHAR(20), error_message TEXT,
    execution_time_seconds DECIMAL(10, 2));
"""
FILL = """
INSERT INTO raw_ohlcv (symbol, open, high, low, close, volume, "timestamp")
SELECT 'S' || s, round(p::numeric, 2), round((p * 1.01)::numeric, 2), round((p * 0.99)::numeric, 2),
       round(p::numeric, 2), (s * 7919 + d) %% 1000000,
       (day::timestamp AT TIME ZONE 'America/New_York') AT TIME ZONE 'UTC'
  FROM generate_series(1, %(symbols)s) s,
       LATERAL (SELECT day, row_number() OVER (ORDER BY day) AS d
                  FROM (SELECT day::date AS day
                          FROM generate_series(%(as_of)s::date - 3000, %(as_of)s::date, '1 day') day
                         WHERE extract(isodow FROM day) < 6 ORDER BY day DESC LIMIT %(sessions)s) w) days,
       LATERAL (SELECT 10 + (s %% 97) + (d %% 13) * 0.37 AS p) price
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=1000)
    opts = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="condvest-bench-adopt-"))
    tmp.chmod(0o755)
    cluster = EmbeddedCluster(tmp)
    try:
        dsn = cluster.start().reveal()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(OLD_DDL)
            t0 = time.perf_counter()
            conn.execute(FILL, {"symbols": opts.symbols, "sessions": opts.sessions, "as_of": AS_OF})
            rows = conn.execute("SELECT count(*) FROM raw_ohlcv").fetchone()[0]
            load = time.perf_counter() - t0
            t0 = time.perf_counter()
            found = retention.inspect(conn)
            inspect_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = retention.adopt(conn, as_of=AS_OF)
            adopt_s = time.perf_counter() - t0
            assert report.summary()["checksums_equal"] and found.blockers == ()
        print("| rows | load (s) | dry run (s) | adopt (s) | rows/s adopted |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {rows:,} | {load:.1f} | {inspect_s:.1f} | {adopt_s:.1f} | {rows / adopt_s:,.0f} |")
    finally:
        cluster.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
