"""03_migrate benchmark: the lake-sized DMS export into bronze, with validation, against a plain DuckDB COPY.

    .venv/bin/python bench/bench_migrate.py [--root /tmp/condvest-bench-migrate] [--repeat 2]
        [--symbols 5350 --rows 10800000] [--no-floor]

1. Generates (once; reused when present) the export of ``SyntheticMarket.lake_like()``: 5,350 symbols,
   1962-01-02 to 2025-10-31, about 10.8M rows, 8 LOAD files with every DMS quirk (int/double volume,
   ms/µs/text ``timestamp_1``, duplicates across files); ``--symbols``/``--rows`` scale it (one LOAD file per
   1.35M rows, as ``bench_resample.py --lake migrated`` writes it).
2. Floor: one DuckDB ``COPY (SELECT <the same columns, cast to the bronze types> FROM read_parquet(export))
   TO '<dir>' (FORMAT parquet, PARTITION_BY (symbol))``: no dedup, no validation, no manifest, and files
   named ``data_N.parquet`` (several per symbol), i.e. the least any migration has to do.
3. ``run_migration`` end to end: list, read with the explicit mapping, then per symbol group dedup, one
   ``data.parquet`` per symbol and validation (DuckDB aggregates on both sides); manifest, report.

Each measurement runs in a fresh subprocess on a fresh output folder; floor and migration alternate, and
the best of ``--repeat`` runs of each is compared (with that run's CPU seconds and peak RSS). Prints a
markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_resample import _peak_rss_mb  # noqa: E402

START, END = dt.date(1962, 1, 2), dt.date(2025, 10, 31)

FLOOR_SQL = """
COPY (
  SELECT CAST(symbol AS VARCHAR) AS symbol,
         CAST(timezone('America/New_York', CAST(timestamp_1 AS TIMESTAMPTZ)) AS DATE) AS date,
         CAST(timestamp_1 AS TIMESTAMPTZ) AS "timestamp",
         open, high, low, close, CAST(volume AS DOUBLE) AS volume,
         CAST(NULL AS DOUBLE) AS vwap, CAST(NULL AS BIGINT) AS transactions, "interval",
         CAST("timestamp" AS TIMESTAMPTZ) AS ingested_at
  FROM read_parquet($files, union_by_name = true)
) TO '{out}' (FORMAT parquet, PARTITION_BY (symbol))
"""


def _generate(lake: Path, n_symbols: int, n_rows: int) -> None:
    from condvest.offline.dms import write_dms_export
    from condvest.offline.market import SyntheticMarket
    from condvest.storage import LocalStore

    store = LocalStore(lake)
    if any(store.list("public/raw_ohlcv/")):
        return
    t0 = time.monotonic()
    market = SyntheticMarket.lake_like(n_symbols=n_symbols, rows=n_rows)
    write_dms_export(store, market, START, END, n_files=max(8, 8 * n_rows // 10_800_000), quirks=True)
    print(f"generated export rows~{market.expected_rows(START, END):,} in {time.monotonic() - t0:.1f} s", flush=True)


def _child_floor(lake: Path, out: Path) -> dict:
    import duckdb

    files = sorted(str(p) for p in (lake / "public" / "raw_ohlcv").glob("*.parquet"))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    t0 = time.monotonic()
    con.execute(FLOOR_SQL.format(out=str(out).replace("'", "''")), {"files": files})
    seconds = time.monotonic() - t0
    n_files = sum(1 for _ in out.rglob("*.parquet"))
    rows = con.execute("SELECT count(*) FROM read_parquet($p)", {"p": str(out / "**" / "*.parquet")}).fetchone()[0]
    return {"seconds": seconds, "files": n_files, "rows": rows}


class _Phases(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.phases: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        m = re.match(r"migration (read|write|validate) .*seconds=([\d.]+)", msg)
        if m:
            self.phases[m.group(1)] = float(m.group(2))
        m = re.match(r"migration staged .*groups=(\d+)", msg)
        if m:
            self.phases["groups"] = int(m.group(1))


def _child_migrate(lake: Path, threads: int) -> dict:
    from condvest.migrate.run import run_migration
    from condvest.settings import Settings

    handler = _Phases()
    logging.getLogger("condvest").addHandler(handler)
    logging.getLogger("condvest").setLevel(logging.INFO)
    t0 = time.monotonic()
    report = run_migration(Settings(lake_uri=str(lake)), progress=False, threads=threads)
    seconds = time.monotonic() - t0
    return {
        "seconds": seconds,
        "phases": handler.phases,
        "status": report.status,
        "passed": report.passed,
        "source_rows": report.source_rows,
        "duplicates": report.duplicates,
        "symbols": report.symbols,
        "files": report.files_written,
        "rows": report.rows_written,
    }


def _clean_outputs(lake: Path) -> None:
    for sub in ("bronze", "processing_metadata", ".locks"):
        shutil.rmtree(lake / sub, ignore_errors=True)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _spawn(args: list[str]) -> dict:
    """Run one measurement in a fresh interpreter; adds the child's CPU seconds (all its threads)."""
    cpu = _cpu()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cpu"] = _cpu() - cpu  # includes interpreter start-up and the child's own setup/cleanup
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("/tmp/condvest-bench-migrate"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--child", choices=["floor", "migrate"])
    ap.add_argument("--symbols", type=int, default=5350)
    ap.add_argument("--rows", type=int, default=10_800_000)
    ap.add_argument("--no-floor", action="store_true", help="measure the migration only")
    opts = ap.parse_args()
    lake = opts.root / "lake"
    if opts.child == "floor":
        out = opts.root / "floor"
        shutil.rmtree(out, ignore_errors=True)
        print(json.dumps(_child_floor(lake, out) | {"peak_rss_mb": _peak_rss_mb()}))
        shutil.rmtree(out, ignore_errors=True)
        return 0
    if opts.child == "migrate":
        _clean_outputs(lake)
        print(json.dumps(_child_migrate(lake, opts.threads) | {"peak_rss_mb": _peak_rss_mb()}))
        return 0
    _generate(lake, opts.symbols, opts.rows)
    floors, migs = [], []
    for i in range(opts.repeat):
        for kind in ("floor", "migrate") if i % 2 == 0 else ("migrate", "floor"):
            if kind == "floor" and opts.no_floor:
                continue
            r = _spawn(["--root", str(opts.root), "--child", kind, "--threads", str(opts.threads)])
            (floors if kind == "floor" else migs).append(r)
            print(
                f"run {i + 1} {kind}: {r['seconds']:.1f} s wall, {r['cpu']:.1f} s cpu, "
                f"peak RSS {r['peak_rss_mb']:,} MB, load={os.getloadavg()[0]:.1f}",
                flush=True,
            )
    m = min(migs, key=lambda r: r["seconds"])
    f = (
        min(floors, key=lambda r: r["seconds"])
        if floors
        else {"seconds": float("nan"), "cpu": float("nan"), "rows": 0, "files": 0, "peak_rss_mb": 0}
    )
    assert m["passed"] and m["status"] == "migrated", m
    ratio = m["seconds"] / f["seconds"]
    ph = m["phases"]
    print()
    print(f"| what | rows | objects written | wall s (best of {opts.repeat}) | cpu s (that run) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| plain DuckDB `COPY ... PARTITION_BY (symbol)` (floor) | {f['rows']:,} | {f['files']:,} "
        f"| {f['seconds']:.1f} | {f['cpu']:.1f} | {f['peak_rss_mb']:,} |"
    )
    print(
        f"| `run_migration` end to end | {m['rows']:,} | {m['files']:,} | **{m['seconds']:.1f}** | {m['cpu']:.1f} "
        f"| {m['peak_rss_mb']:,} |"
    )
    print(
        f"| &nbsp; read, map, check, sort by symbol (spill beyond one group) | {m['source_rows']:,} "
        f"({m['duplicates']} dup.) | | {ph.get('read', 0):.1f} | | |"
    )
    print(
        f"| &nbsp; per symbol group: dedup, write histories (merge-aware, conditional puts) | | {m['files']:,} "
        f"| {ph.get('write', 0):.1f} | | |"
    )
    print(
        f"| &nbsp; per symbol group: validate (DuckDB aggregates, both sides) | | | {ph.get('validate', 0):.1f} | | |"
    )
    print()
    print(
        f"migration / floor = {ratio:.2f}x wall, {m['cpu'] / f['cpu']:.2f}x cpu (target <= 2x); end to end "
        f"{m['seconds']:.1f} s (target <= 60 s); {m['symbols']} symbols in {ph.get('groups')} group(s); "
        f"all runs (wall): floor "
        f"{[round(r['seconds'], 1) for r in floors]}, migration {[round(r['seconds'], 1) for r in migs]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
