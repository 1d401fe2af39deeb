"""Benchmark of 02_resample at the seed's scale (5,350 symbols, ~10.8M daily rows back to 1962).

    .venv/bin/python bench/bench_resample.py [--root /tmp/condvest-bench] [--symbols 5350] [--rows 10800000]
        [--lake generated|migrated] [--runner] [--png-only] [--full-only] [--keep-export]
        [--skip pandas,polars,duckdb_nowrite]

1. generates a bronze lake (numpy, one ``symbol=X/data.parquet`` per symbol), or with ``--lake migrated`` the
   lake a user has after 03_migrate: a DMS export of ``SyntheticMarket.lake_like`` written by
   ``condvest.offline.dms`` and migrated by ``run_migration`` (bronze in the migrated layout, the export
   beside it, retired from reading by the passing migration report);
2. full resample of the six intervals, each contender in its own process (peak RSS from wait4):
   condvest ``run_resample(force_full_resample=True)``, (a) one plain DuckDB query of the same semantics
   (dedup on (symbol, date), numbering, six aggregations, one partitioned COPY), (b) pandas, (c) polars;
3. writes one new session (5,350 daily files) and times the incremental run beside its floor: DuckDB
   reading those 5,350 files and nothing else.
With ``--runner`` every condvest run is also made the way a user makes it, as a whole command:
``python -m runner run 02_resample [-p force_full_resample True]`` (kernel start, cells, the html page and
the chart PNGs included; once more with ``CONDVEST_CHART_PNG=0``), timed from start to exit, with the peak
of the summed resident memory of its whole process tree (runner, kernel, Chromium) polled every 50 ms.
``--png-only`` runs the whole command only as users have it (PNGs on), ``--full-only`` stops after the full
rebuild (no new session, no incremental runs), ``--keep-export`` reuses a DMS export already under
``<root>/public/raw_ohlcv/`` (everything else under the root is deleted first): the 10x figures use all three.
Prints a markdown table (the figures in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

INTERVALS = (3, 5, 8, 13, 21, 34)
THREADS = 2
MEMORY = "3GB"


def _schema() -> pa.Schema:
    from condvest.bars import BRONZE_SCHEMA

    return BRONZE_SCHEMA


def generate(root: Path, n_symbols: int, n_rows: int, seed: int = 7, first: int = 0) -> dict:
    """A bronze lake of ``n_symbols`` symbols (named ``S<first>`` on) and about ``n_rows`` daily rows."""
    from condvest.calendar import sessions_between

    t0 = time.perf_counter()
    sessions = np.array(sessions_between(dt.date(1962, 1, 2), dt.date(2025, 10, 17)), dtype="datetime64[D]")
    ns = len(sessions)
    rng = np.random.default_rng(seed)
    # history lengths: a few symbols back to 1962, most much shorter; scaled to n_rows in total
    full = max(1, n_symbols // 500)  # a few symbols back to 1962
    u = rng.random(n_symbols - full) ** 6.0
    rest = np.clip((u / u.sum() * (n_rows - full * ns)).astype(np.int64), 1, ns)
    rest[np.argmax(rest < ns)] += n_rows - full * ns - rest.sum()  # land on n_rows exactly
    lengths = np.concatenate([np.full(full, ns, dtype=np.int64), np.clip(rest, 1, ns)])
    total = int(lengths.sum())
    sym_idx = np.repeat(np.arange(n_symbols), lengths)
    starts = np.cumsum(lengths) - lengths
    pos = np.arange(total) - np.repeat(starts, lengths)
    day_idx = ns - np.repeat(lengths, lengths) + pos  # every symbol trades up to the last session
    ret = rng.normal(0, 0.02, total)
    ret[starts] = 0
    logp = np.cumsum(ret)
    logp -= np.repeat(logp[starts], lengths)
    close = np.round(20 * np.exp(logp), 4)
    open_ = np.round(close * (1 + rng.normal(0, 0.005, total)), 4)
    high = np.maximum(open_, close) * (1 + rng.random(total) * 0.01)
    low = np.minimum(open_, close) * (1 - rng.random(total) * 0.01)
    volume = rng.integers(100, 5_000_000, total).astype(np.float64)
    names = np.array([f"S{i:05d}" for i in range(first, first + n_symbols)])
    days = sessions[day_idx]
    ts = days.astype("datetime64[us]") + np.timedelta64(4, "h")
    ingested = np.datetime64("2025-10-18T00:00:00", "us")
    schema = _schema()
    table = pa.table(
        {
            "symbol": pa.DictionaryArray.from_arrays(pa.array(sym_idx.astype(np.int32)), pa.array(names)).cast(
                pa.string()
            ),
            "date": pa.array(days, pa.date32()),
            "timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "vwap": pa.array((high + low + close) / 3),
            "transactions": pa.array(rng.integers(1, 9999, total)),
            "interval": pa.array(["1d"] * 1, pa.string()).take(pa.array(np.zeros(total, np.int64))),
            "ingested_at": pa.array(np.full(total, ingested), pa.timestamp("us", tz="UTC")),
        },
        schema=schema,
    )
    base = root / "bronze" / "raw_ohlcv"

    def write(i: int) -> None:
        d = base / f"symbol={names[i]}"
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(int(starts[i]), int(lengths[i])), d / "data.parquet", compression="snappy")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(n_symbols)))
    return {
        "rows": total,
        "symbols": n_symbols,
        "first": str(sessions[day_idx.min()]),
        "last": str(sessions[-1]),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def export(root: Path, n_symbols: int, n_rows: int) -> float:
    """Write the DMS export of about ``n_rows`` bars (every DMS quirk) under ``root``; seconds taken."""
    from condvest.offline.dms import write_dms_export
    from condvest.offline.market import SyntheticMarket
    from condvest.storage import LocalStore

    t0 = time.perf_counter()
    market = SyntheticMarket.lake_like(n_symbols=n_symbols, rows=n_rows)
    start, end = dt.date(1962, 1, 2), dt.date(2025, 10, 31)
    write_dms_export(LocalStore(root), market, start, end, n_files=max(8, 8 * n_rows // 10_800_000), quirks=True)
    return time.perf_counter() - t0


def migrated(root: Path, n_symbols: int, n_rows: int, *, keep_export: bool = False) -> dict:
    """The lake after 03_migrate: a DMS export of about ``n_rows`` bars (every DMS quirk; reused with
    ``keep_export`` when one is there), migrated into bronze by ``run_migration`` in a child process (its
    report retires the export from reading)."""
    have = keep_export and any((root / "public" / "raw_ohlcv").glob("*.parquet"))
    export_s = 0.0 if have else export(root, n_symbols, n_rows)
    res = measure("migrate", root)
    return {
        "rows": res["rows"],
        "symbols": res["symbols"],
        "export_s": round(export_s, 1) if not have else "reused",
        "migrate_s": res["inner_s"],
        "migrate_cpu_s": res["cpu_s"],
        "migrate_rss_mb": res["peak_rss_mb"],
        "migrate_groups": res.get("groups"),
    }


def new_session(root: Path, day: str = "2025-10-20") -> int:
    """One daily file per symbol for the next session, written the way 01_fetch writes them (through
    `write_daily_files`, which also leaves the session's batch object beside them)."""
    import pandas as pd

    from condvest.bronze import write_daily_files
    from condvest.storage import LocalStore

    base = root / "bronze" / "raw_ohlcv"
    syms = sorted(p.name.split("=", 1)[1] for p in base.iterdir() if p.name.startswith("symbol="))
    d = dt.date.fromisoformat(day)
    rng = np.random.default_rng(11)
    c = rng.uniform(5, 50, len(syms))
    df = pd.DataFrame(
        {
            "symbol": syms,
            "date": [d] * len(syms),
            "timestamp": pd.Timestamp(dt.datetime.combine(d, dt.time(4), tzinfo=dt.UTC)),
            "open": c,
            "high": c * 1.01,
            "low": c * 0.99,
            "close": c,
            "volume": 1000.0,
            "vwap": c,
            "transactions": 10,
            "interval": "1d",
            "ingested_at": pd.Timestamp(dt.datetime(2025, 10, 21, tzinfo=dt.UTC)),
        }
    )
    return write_daily_files(LocalStore(root), df, run_id=f"bench-{day}")


# ---------------------------------------------------------------- contenders (each runs in a child process)


def run_migrate(root: str) -> dict:
    from condvest.migrate.run import run_migration
    from condvest.settings import Settings

    staged: list[str] = []

    class Staged(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("migration staged"):
                staged.append(record.getMessage())

    logging.getLogger("condvest.migrate").addHandler(Staged())
    logging.getLogger("condvest.migrate").setLevel(logging.INFO)
    r = run_migration(Settings(lake_uri=root), progress=False)
    assert r.passed and r.status == "migrated", r.status
    groups = int(re.search(r"groups=(\d+)", staged[0]).group(1)) if staged else None
    return {"rows": r.rows_written, "symbols": r.symbols, "groups": groups}


def run_condvest(root: str) -> dict:
    from condvest.resample import ResampleParams, run_resample
    from condvest.settings import Settings

    r = run_resample(
        Settings(lake_uri=root),
        ResampleParams(INTERVALS),
        threads=THREADS,
        memory_limit=MEMORY,
    )
    return {"modes": sorted({x.mode for x in r.results}), "bars": sum(x.bars_total for x in r.results)}


def run_condvest_full(root: str) -> dict:
    from condvest.resample import ResampleParams, run_resample
    from condvest.settings import Settings

    r = run_resample(
        Settings(lake_uri=root),
        ResampleParams(INTERVALS, True),
        threads=THREADS,
        memory_limit=MEMORY,
    )
    return {"modes": sorted({x.mode for x in r.results}), "bars": sum(x.bars_total for x in r.results)}


def _plain_query(root: str) -> str:
    """The whole job as one plain DuckDB query: dedup on (symbol, date), numbering, six aggregations."""
    aggs = " UNION ALL ".join(
        f"SELECT symbol, min(date) AS date, max(date) AS end_date, arg_min(open, i) AS open, max(high) AS high, "
        f"min(low) AS low, arg_max(close, i) AS close, sum(volume) AS volume, count(*) AS sessions, {n} AS iv "
        f"FROM numbered GROUP BY symbol, i // {n}"
        for n in INTERVALS
    )
    return f"""
          WITH dedup AS (
            SELECT symbol, date, open, high, low, close, volume FROM read_parquet('{root}/bronze/raw_ohlcv/*/*.parquet',
                filename = true)
            QUALIFY row_number() OVER (PARTITION BY symbol, date ORDER BY ingested_at DESC NULLS LAST,
                                       filename LIKE '%/data.parquet') = 1),
          numbered AS MATERIALIZED (
            SELECT *, row_number() OVER (PARTITION BY symbol ORDER BY date) - 1 AS i FROM dedup)
          SELECT *, strftime(date, '%Y') AS year, strftime(date, '%m') AS month FROM ({aggs})"""


def _duck():
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}; SET memory_limit = '{MEMORY}'; SET preserve_insertion_order = false")
    return con


def run_duckdb(root: str) -> dict:
    """(a) the plain query written with DuckDB's partitioned COPY (one folder per interval, year, month)."""
    out = Path(root) / "bench_out" / "duckdb"
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    _duck().execute(
        f"COPY ({_plain_query(root)}) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (iv, year, month))"
    )
    return {"files": sum(1 for _ in out.rglob("*.parquet"))}


def run_duckdb_nowrite(root: str) -> dict:
    """(a') the same query into a DuckDB table in memory: DuckDB's compute alone, no files written."""
    con = _duck()
    con.execute(f"CREATE TABLE bars AS {_plain_query(root)}")
    return {"bars": con.execute("SELECT count(*) FROM bars").fetchone()[0]}


def run_duckdb_minimal(root: str) -> dict:
    """(m) the simplest query a user could write (issue 25): number each symbol's sessions, group by ``rn // N``,
    complete bars only, no dedupe, one ``COPY ... PARTITION_BY (year, month)`` per interval."""
    out = Path(root) / "bench_out" / "minimal"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    con = _duck()
    con.execute(
        f"CREATE TEMP TABLE numbered AS SELECT symbol, date, open, high, low, close, volume, "
        f"row_number() OVER (PARTITION BY symbol ORDER BY date) - 1 AS rn "
        f"FROM read_parquet('{root}/bronze/raw_ohlcv/*/*.parquet')"
    )
    for n in INTERVALS:
        con.execute(
            f"COPY (SELECT symbol, min(date) AS date, max(date) AS end_date, arg_min(open, rn) AS open, "
            f"max(high) AS high, min(low) AS low, arg_max(close, rn) AS close, sum(volume) AS volume, "
            f"year(min(date)) AS year, month(min(date)) AS month FROM numbered GROUP BY symbol, rn // {n} "
            f"HAVING count(*) = {n}) TO '{out}/silver_{n}d' "
            "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (year, month))"
        )
    return {"files": sum(1 for _ in out.rglob("*.parquet"))}


def run_pandas(root: str) -> dict:
    import pandas as pd
    import pyarrow.dataset as ds

    t = ds.dataset(f"{root}/bronze/raw_ohlcv", format="parquet", partitioning=None).to_table(
        columns=["symbol", "date", "open", "high", "low", "close", "volume", "ingested_at"]
    )
    df = t.to_pandas()
    df = df.sort_values(["symbol", "date", "ingested_at"], ascending=[True, True, False], kind="stable")
    df = df.drop_duplicates(["symbol", "date"], keep="first")
    df["i"] = df.groupby("symbol", sort=False).cumcount()
    out = Path(root) / "bench_out" / "pandas"
    shutil.rmtree(out, ignore_errors=True)
    total = 0
    for n in INTERVALS:
        g = df.groupby([df["symbol"], df["i"] // n], sort=False)
        bars = g.agg(
            date=("date", "first"),
            end_date=("date", "last"),
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            sessions=("date", "size"),
        ).reset_index(level=0)
        d = pd.to_datetime(bars["date"])
        bars["year"], bars["month"] = d.dt.strftime("%Y"), d.dt.strftime("%m")
        ds.write_dataset(
            pa.Table.from_pandas(bars, preserve_index=False),
            out / f"silver_{n}d",
            format="parquet",
            partitioning=["year", "month"],
            partitioning_flavor="hive",
            existing_data_behavior="overwrite_or_ignore",
            max_partitions=4096,
        )
        total += len(bars)
    return {"bars": total}


def run_polars(root: str) -> dict:
    import polars as pl

    lf = pl.scan_parquet(f"{root}/bronze/raw_ohlcv/*/*.parquet").select(
        ["symbol", "date", "open", "high", "low", "close", "volume", "ingested_at"]
    )
    df = (
        lf.sort(["symbol", "date", "ingested_at"], descending=[False, False, True])
        .unique(["symbol", "date"], keep="first", maintain_order=True)
        .with_columns(i=pl.int_range(pl.len()).over("symbol"))
        .collect()
    )
    out = Path(root) / "bench_out" / "polars"
    shutil.rmtree(out, ignore_errors=True)
    total = 0
    for n in INTERVALS:
        bars = (
            df.group_by(["symbol", pl.col("i") // n])
            .agg(
                pl.col("date").min().alias("date"),
                pl.col("date").max().alias("end_date"),
                pl.col("open").sort_by("i").first(),
                pl.col("high").max(),
                pl.col("low").min(),
                pl.col("close").sort_by("i").last(),
                pl.col("volume").sum(),
                pl.len().alias("sessions"),
            )
            .drop("i")
            .with_columns(year=pl.col("date").dt.strftime("%Y"), month=pl.col("date").dt.strftime("%m"))
        )
        bars.write_parquet(out / f"silver_{n}d", partition_by=["year", "month"])
        total += bars.height
    return {"bars": total}


def run_floor(root: str) -> dict:
    import duckdb

    files = sorted(str(p) for p in Path(root, "bronze", "raw_ohlcv").glob("symbol=*/date=*.parquet"))
    con = duckdb.connect()
    con.execute(f"SET threads = {THREADS}")
    cols = "symbol, date, open, high, low, close, volume, ingested_at"  # what resampling needs of them
    t = con.execute(f"SELECT {cols} FROM read_parquet($f)", {"f": files})
    return {"rows": t.to_arrow_table().num_rows, "files": len(files)}


CONTENDERS = {
    "migrate": run_migrate,
    "duckdb_nowrite": run_duckdb_nowrite,
    "duckdb_minimal": run_duckdb_minimal,
    "condvest": run_condvest,
    "condvest_full": run_condvest_full,
    "duckdb": run_duckdb,
    "pandas": run_pandas,
    "polars": run_polars,
    "floor": run_floor,
}


def _peak_rss_mb() -> int:
    """This process's peak resident set (VmHWM: reset by exec, unlike wait4's ru_maxrss after vfork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return -1


def measure(name: str, root: Path) -> dict:
    """Run one contender in a fresh process; wall time and its peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--root", str(root)], stdout=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} failed")
    res = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "name": name,
        "wall_s": round(wall, 2),
        "inner_s": res["seconds"],
        "peak_rss_mb": res["peak_rss_mb"],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # the whole child, all threads (fairer under load)
        **res["result"],
    }


def tree_peak_rss(proc: subprocess.Popen) -> int:
    """Poll ``proc`` and its children every 50 ms until it exits; the peak of their summed resident memory."""
    import psutil

    top, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        rss = 0
        try:
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in tree:
            try:
                rss += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, rss)
        time.sleep(0.05)
    return peak


def through_runner(root: Path, *, full: bool, png: bool = True) -> dict:
    """``python -m runner run 02_resample`` as a user types it, on the lake at ``root``: wall time from start to
    exit and the peak of the summed RSS of the whole process tree (runner, kernel, Chromium), polled."""
    env = {
        **os.environ,
        "CONDVEST_LAKE_URI": str(root),
        "CONDVEST_RUNS_URI": str(root / "runs"),
        "CONDVEST_HOME": str(root / "home"),
        "CONDVEST_CHART_PNG": "1" if png else "0",
    }
    env.pop("CONDVEST_DUCKDB_MEMORY_LIMIT", None)  # the default, as a user has it
    cmd = [sys.executable, "-m", "runner", "run", "02_resample", "--no-progress"]
    if full:
        cmd += ["-p", "force_full_resample", "True"]
    import resource

    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE)
    peak = tree_peak_rss(proc)
    out = proc.communicate()[0].decode()
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"runner failed: {out}")
    m = re.search(r"ok in ([\d.]+) s", out)
    name = "runner " + ("full" if full else "daily") + ("" if png else " (CONDVEST_CHART_PNG=0)")
    return {
        "name": name,
        "wall_s": round(wall, 2),
        "notebook_s": float(m.group(1)) if m else None,
        "tree_rss_mb": peak // 2**20,
        # CPU of the runner and the descendants it waited for (kernel, Chromium): user + system
        "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/condvest-bench")
    ap.add_argument("--symbols", type=int, default=5350)
    ap.add_argument("--rows", type=int, default=10_800_000)
    ap.add_argument("--child")
    ap.add_argument("--skip", default="", help="comma-separated contenders to skip (e.g. pandas)")
    ap.add_argument("--lake", choices=["generated", "migrated"], default="generated")
    ap.add_argument("--runner", action="store_true", help="also run 02_resample through the runner")
    ap.add_argument("--png-only", action="store_true", help="through the runner only with the PNGs (the default)")
    ap.add_argument("--full-only", action="store_true", help="stop after the full rebuild")
    ap.add_argument("--keep-export", action="store_true", help="reuse the DMS export under <root>/public/raw_ohlcv")
    a = ap.parse_args()
    root = Path(a.root)
    if a.child:
        import duckdb  # noqa: F401  imports are not part of the timed work
        import pandas  # noqa: F401

        import condvest.resample.run  # noqa: F401

        if a.child == "polars":
            import polars  # noqa: F401
        t0 = time.perf_counter()
        result = CONTENDERS[a.child](str(root))
        seconds = round(time.perf_counter() - t0, 2)
        print(json.dumps({"seconds": seconds, "result": result, "peak_rss_mb": _peak_rss_mb()}))
        return
    keep = a.keep_export and a.lake == "migrated"
    for p in root.iterdir() if keep and root.exists() else []:
        if p.name != "public":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    gen = (
        migrated(root, a.symbols, a.rows, keep_export=keep)
        if a.lake == "migrated"
        else generate(root, a.symbols, a.rows)
    )
    print(f"{a.lake} {gen}", flush=True)
    skip = set(filter(None, a.skip.split(",")))
    rows, runs = [], []

    def runner(full: bool) -> None:
        if a.runner:
            for png in (True,) if a.png_only else (True, False):
                runs.append(through_runner(root, full=full, png=png) | {"load": round(os.getloadavg()[0], 1)})
                print(runs[-1], flush=True)

    for name in ("duckdb", "duckdb_minimal", "duckdb_nowrite", "condvest_full", "pandas", "polars"):
        if name not in skip:
            rows.append(measure(name, root))
            print(rows[-1], flush=True)
        if name == "condvest_full":
            runner(full=True)
    if not a.full_only:
        files = new_session(root, "2025-11-03" if a.lake == "migrated" else "2025-10-20")  # the next session
        print(f"new session: {files} daily files", flush=True)
        for name in ("floor", "condvest"):
            rows.append(measure(name, root))
            print(rows[-1], flush=True)
        rows.append(measure("condvest", root) | {"name": "condvest (re-run, no new data)"})
        runner(full=False)  # the daily run with nothing new
    by = {r["name"]: r for r in rows}
    print(f"\nload average at the end: {os.getloadavg()}")
    print("\n| run | wall s | in-process s | cpu s | peak RSS MB |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['name']} | {r['wall_s']} | {r['inner_s']} | {r['cpu_s']} | {r['peak_rss_mb']} |")
    if runs and "duckdb_minimal" in by:
        m = by["duckdb_minimal"]
        print("\n| through the runner | whole command s | / minimal query (wall) | cpu s | / minimal (cpu) | tree MB |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in runs:
            print(
                f"| {r['name']} | {r['wall_s']} | {r['wall_s'] / m['inner_s']:.2f} | {r['cpu_s']} | "
                f"{r['cpu_s'] / m['cpu_s']:.2f} | {r['tree_rss_mb']} |"
            )
    if runs and "duckdb" in by:
        duck = by["duckdb"]["inner_s"]
        dcpu = by["duckdb"]["cpu_s"]
        print(
            "\n| through the runner | whole command s | notebook s | / plain DuckDB (wall) | cpu s | / plain DuckDB"
            " (cpu) | peak RSS of the tree MB | load |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        for r in runs:
            print(
                f"| {r['name']} | {r['wall_s']} | {r['notebook_s']} | {r['wall_s'] / duck:.2f} | {r['cpu_s']} | "
                f"{r['cpu_s'] / dcpu:.2f} | {r['tree_rss_mb']} | {r['load']} |"
            )
    if "duckdb" not in by:
        return
    full, duck = by["condvest_full"]["inner_s"], by["duckdb"]["inner_s"]
    nowrite = by["duckdb_nowrite"]["inner_s"] if "duckdb_nowrite" in by else float("nan")
    print(
        f"\nfull / plain DuckDB = {full / duck:.2f} (target <= 1.2), cpu "
        f"{by['condvest_full']['cpu_s'] / by['duckdb']['cpu_s']:.2f}; peak RSS full = "
        f"{by['condvest_full']['peak_rss_mb']} MB (target <= 4096); full / DuckDB query without writing = "
        f"{full / nowrite:.2f}"
    )
    if a.full_only:
        return
    inc, floor = by["condvest"]["inner_s"], by["floor"]["inner_s"]
    print(
        f"incremental / floor = {inc / floor:.2f} (target <= 2); incremental / full = {inc / full:.1%} (target <= 10%);"
        f" incremental / plain DuckDB full = {inc / duck:.1%}; floor / full = {floor / full:.1%}"
    )


if __name__ == "__main__":
    main()
