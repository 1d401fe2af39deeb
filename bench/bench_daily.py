"""The daily pipeline as a user runs it: ``python -m runner pipeline daily`` (01_fetch of one session of 5,350
symbols from the offline Polygon-compatible server, then 02_resample incremental), on the seed-scale lake
produced by 03_migrate, beside the same two stages called in-process.

    .venv/bin/python bench/bench_daily.py [--root /tmp/condvest-bench-daily] [--symbols 5350] [--rows 10800000]

1. the lake: a DMS export of ``SyntheticMarket.lake_like`` (up to 2025-10-31) migrated by ``run_migration``,
   then a full 02_resample (``bench_resample.migrated``; not timed);
2. the offline server (``--lake-like``, the same market) with its clock on 2025-11-03 after the close, and an
   embedded PostgreSQL 15 (the fetch upserts the retention window there, as a configured workbench does);
3. each contender starts from its own copy of that lake (hard links: same etags) and fetches 2025-11-03:
   * the whole command ``python -m runner pipeline daily`` (kernel starts, cells, pages, chart PNGs), timed
     from start to exit, with the peak summed RSS of its process tree; once more with ``CONDVEST_CHART_PNG=0``;
   * in-process: ``run_fetch`` then ``run_resample`` in a fresh interpreter (imports not timed);
4. on the first contender's lake, whose silver is then up to date, ``python -m runner run 02_resample`` (the
   daily command with nothing new) ``--repeat`` times with the chart PNGs on and off alternately.
Prints markdown tables (the figures in BENCHMARKS.md).

With ``--s3`` the contenders are the whole command on the local lake and on the same lake uploaded into SeaweedFS
on loopback (the lake and its runs on S3, as in AWS), interleaved: runner, runner-s3, runner-2, runner-s3-2; the
nothing-new command runs after the first of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fetch import KEY, _port, wait_for_server  # noqa: E402

DAY = "2025-11-03"  # the session after the migrated history (which ends on 2025-10-31)
NOW = "2025-11-03T23:00:00+00:00"  # the server's clock: that session is complete
ROOT = Path(__file__).resolve().parent.parent


def start_server(symbols: int) -> tuple[subprocess.Popen, str]:
    port = _port()
    cmd = [sys.executable, "-m", "condvest.offline", "serve", "--port", str(port), "--api-key", KEY]
    cmd += ["--symbols", str(symbols), "--lake-like", "--now", NOW]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, wait_for_server(f"http://127.0.0.1:{port}", tries=600)


#: contender name -> the S3 location of its lake (``--s3``: ``s3://<bucket>/lake``, runs under ``s3://<bucket>/runs``)
S3_LAKES: dict[str, str] = {}
#: the environment every command on an S3 lake gets (endpoint, credentials, region)
S3_ENV: dict[str, str] = {}


def _env(lake: Path, base: str, dsn: str, png: bool) -> dict[str, str]:
    s3 = S3_LAKES.get(lake.name)
    env = {
        **os.environ,
        **(S3_ENV if s3 else {}),
        "CONDVEST_LAKE_URI": s3 or str(lake),
        "CONDVEST_RUNS_URI": s3.rsplit("/", 1)[0] + "/runs" if s3 else str(lake.parent / (lake.name + "-runs")),
        "CONDVEST_HOME": str(lake.parent / (lake.name + "-home")),
        "CONDVEST_AS_OF": DAY,
        "CONDVEST_PG_DSN": dsn,
        "POLYGON_BASE_URL": base,
        "POLYGON_API_KEY": KEY,
        "CONDVEST_CHART_PNG": "1" if png else "0",
    }
    env.pop("CONDVEST_DUCKDB_MEMORY_LIMIT", None)
    return env


def _timed_command(args: list[str], lake: Path, base: str, dsn: str, png: bool) -> tuple[float, str, int]:
    """``python -m runner <args>`` on ``lake``: (wall seconds start to exit, its stdout, the tree's peak RSS)."""
    from bench.bench_resample import tree_peak_rss

    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "runner", *args, "--no-progress"]
    proc = subprocess.Popen(cmd, env=_env(lake, base, dsn, png), cwd=ROOT, stdout=subprocess.PIPE)
    peak = tree_peak_rss(proc)
    out = proc.communicate()[0].decode()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out}")
    return wall, out, peak


def through_runner(lake: Path, base: str, dsn: str, *, png: bool) -> dict:
    """``python -m runner pipeline daily``: wall time start to exit, per-stage notebook time, tree RSS peak."""
    wall, out, peak = _timed_command(["pipeline", "daily"], lake, base, dsn, png)
    stages = [float(x) for x in re.findall(r"ok in ([\d.]+) s", out)]
    return {"wall_s": round(wall, 2), "stages_s": stages, "tree_rss_mb": peak // 2**20}


def nothing_new(lake: Path, base: str, dsn: str, *, png: bool) -> dict:
    """``python -m runner run 02_resample`` on a lake whose silver is up to date (the daily command with nothing
    new): wall time start to exit, the notebook's own time, and the tree's peak RSS."""
    wall, out, peak = _timed_command(["run", "02_resample"], lake, base, dsn, png)
    m = re.search(r"ok in ([\d.]+) s", out)
    return {"wall_s": round(wall, 2), "notebook_s": float(m.group(1)) if m else None, "tree_rss_mb": peak // 2**20}


def child_in_process(lake: str, base: str, dsn: str) -> dict:
    from condvest.fetch import FetchParams, run_fetch
    from condvest.resample import ResampleParams, run_resample
    from condvest.settings import Settings

    settings = Settings.from_env(_env(Path(lake), base, dsn, True))
    t0 = time.perf_counter()
    f = asyncio.run(run_fetch(settings, FetchParams(), progress=False))
    t1 = time.perf_counter()
    r = run_resample(settings, ResampleParams())
    t2 = time.perf_counter()
    assert f.status == "ok" and [str(s.session) for s in f.sessions] == [DAY], (f.status, f.sessions)
    assert {x.mode for x in r.results} == {"incremental"}, r.to_frame()
    return {
        "fetch_s": round(t1 - t0, 2),
        "resample_s": round(t2 - t1, 2),
        "rows": f.summary()["bronze_rows"],
        "session_write_s": round(f.sessions[0].seconds, 2),  # daily files, batch object, Postgres upsert
    }


def s3_base(lake: Path, server, bucket: str) -> dict:  # noqa: ANN001
    """The same lake built on S3 itself (a lake copied from a disk would not do: a local object's etag is not its
    S3 etag, so the first run would see every source changed and rebuild in full): the DMS export under ``lake``
    uploaded into ``s3://<bucket>/lake/``, migrated by ``run_migration`` and resampled in full there."""
    from concurrent.futures import ThreadPoolExecutor

    from bench.bench_resample import INTERVALS
    from condvest.migrate.run import run_migration
    from condvest.resample import ResampleParams, run_resample
    from condvest.settings import Settings

    client = server.client()
    files = sorted((lake / "public" / "raw_ohlcv").glob("*.parquet"))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda f: client.upload_file(str(f), bucket, f"lake/public/raw_ohlcv/{f.name}"), files))
    os.environ.update(S3_ENV)
    settings = Settings(
        lake_uri=f"s3://{bucket}/lake",
        s3_endpoint_url=server.endpoint_url,
        aws_region=server.region,
        home=lake.parent / "home-s3-base",
    )
    t0 = time.perf_counter()
    m = run_migration(settings, progress=False)
    assert m.passed and m.status == "migrated", m.status
    t1 = time.perf_counter()
    run_resample(settings, ResampleParams(INTERVALS, True), threads=2, memory_limit="3GB")
    return {"migrate_s": round(t1 - t0, 1), "full_resample_s": round(time.perf_counter() - t1, 1)}


def copy_bucket(server, src: str, dst: str) -> tuple[int, float]:  # noqa: ANN001
    """Every object of bucket ``src`` into ``dst`` under the same key, server-side from 16 threads (a copy keeps
    the content, so the etags the lake's state recorded). Returns (objects, seconds)."""
    from concurrent.futures import ThreadPoolExecutor

    client = server.client()
    keys = [
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=src)
        for o in page.get("Contents", [])
    ]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: client.copy_object(Bucket=dst, Key=k, CopySource={"Bucket": src, "Key": k}), keys))
    probe = keys[len(keys) // 2]
    assert client.head_object(Bucket=src, Key=probe)["ETag"] == client.head_object(Bucket=dst, Key=probe)["ETag"]
    return len(keys), round(time.perf_counter() - t0, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/condvest-bench-daily"))
    ap.add_argument("--symbols", type=int, default=5350)
    ap.add_argument("--rows", type=int, default=10_800_000)
    ap.add_argument("--child", nargs=3, metavar=("LAKE", "BASE", "DSN"))
    ap.add_argument("--reuse", action="store_true", help="use the lake a previous --keep run left under --root")
    ap.add_argument("--keep", action="store_true", help="leave the lake under --root (default: delete it)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of the nothing-new 02_resample command, per setting")
    ap.add_argument(
        "--s3",
        action="store_true",
        help="the whole command on a local lake beside the same lake (and its runs) in SeaweedFS on loopback",
    )
    a = ap.parse_args()
    if a.child:
        import duckdb  # noqa: F401  imports are not timed
        import pandas  # noqa: F401

        import condvest.fetch.run  # noqa: F401
        import condvest.resample.run  # noqa: F401

        print(json.dumps(child_in_process(*a.child)))
        return
    from bench.bench_resample import measure, migrated
    from condvest.postgres import EmbeddedCluster

    base_lake = a.root / "lake"
    if a.reuse and (base_lake / "processing_metadata").exists():
        print("lake reused", flush=True)
    else:
        shutil.rmtree(a.root, ignore_errors=True)
        print("lake", migrated(base_lake, a.symbols, a.rows), flush=True)
        print("full resample", measure("condvest_full", base_lake), flush=True)
    server, base = start_server(a.symbols)
    cluster = EmbeddedCluster(a.root / "pg")
    rows, again = [], []
    weed = s3 = None
    names = ["runner", "runner-nopng", "in-process", "runner-2", "runner-nopng-2"]
    if a.s3:
        import tempfile

        from tests.fixtures.s3 import _start_weed

        names = ["runner", "runner-s3", "runner-2", "runner-s3-2"]
        sock = Path(tempfile.mkdtemp(prefix="weed-", dir="/tmp"))
        (a.root / "weed").mkdir(exist_ok=True)
        weed, s3 = _start_weed(a.root / "weed", sock)
        S3_ENV.update(
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key,
            AWS_REGION=s3.region,
            AWS_ENDPOINT_URL_S3=s3.endpoint_url,
            AWS_EC2_METADATA_DISABLED="true",
        )
    try:
        if s3 is not None:
            from tests.fixtures.s3 import _wait_ready

            _wait_ready(weed, s3)
            base_bucket = s3.new_bucket("base")
            print("S3 lake built", s3_base(base_lake, s3, base_bucket), flush=True)
        dsn = cluster.start().reveal()
        for name in names:
            lake = a.root / name
            # hard links: the same inodes, so the same etags (a copy would make every object look changed);
            # every write replaces a file whole (temporary name + rename), so the base lake is never touched
            shutil.rmtree(lake, ignore_errors=True)
            shutil.copytree(base_lake, lake, copy_function=os.link)
            if s3 is not None and "s3" in name:
                bucket = s3.new_bucket(name.replace("-", ""))
                S3_LAKES[name] = f"s3://{bucket}/lake"
                print(name, "copied (objects, s)", copy_bucket(s3, base_bucket, bucket), flush=True)
            load = round(os.getloadavg()[0], 1)
            if name.startswith("runner"):
                r = through_runner(lake, base, dsn, png="nopng" not in name)
            else:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", str(lake), base, dsn], capture_output=True, text=True
                )
                if proc.returncode != 0:
                    raise SystemExit(proc.stderr[-3000:])
                r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"name": name, "load": load, **r})
            print(rows[-1], flush=True)
            if name in ("runner", "runner-s3"):  # silver is up to date now: the daily 02_resample, nothing new
                for _ in range(a.repeat):
                    for png in (True, False) if not a.s3 else (True,):
                        load = round(os.getloadavg()[0], 1)
                        r = {"png": png, "lake": "S3" if "s3" in name else "local disk", "load": load}
                        again.append({**r, **nothing_new(lake, base, dsn, png=png)})
                        print({"name": "02_resample, nothing new", **again[-1]}, flush=True)
            shutil.rmtree(lake, ignore_errors=True)
    finally:
        server.terminate()
        cluster.destroy()
        if weed is not None:
            from tests.fixtures.s3 import _stop

            _stop(weed, s3)
        if not a.keep:
            shutil.rmtree(a.root, ignore_errors=True)
    print(f"\ndaily pipeline, {a.symbols:,} symbols, session {DAY}, {os.cpu_count()} cores\n")
    print("| run | whole command s | 01_fetch s | 02_resample s | peak RSS of the tree MB | load |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "wall_s" in r:
            f, s = (r["stages_s"] + [None, None])[:2]
            rss = r["tree_rss_mb"]
            print(f"| {r['name']} | {r['wall_s']} | {f} (notebook) | {s} (notebook) | {rss} | {r['load']} |")
        else:
            total = round(r["fetch_s"] + r["resample_s"], 2)
            print(f"| {r['name']} | {total} (work only) | {r['fetch_s']} | {r['resample_s']} | | {r['load']} |")
    if again:
        print(f"\n`python -m runner run 02_resample` with nothing new, {a.repeat} runs per setting, alternating\n")
        print(
            "| chart PNGs | whole command s (median) | runs s | notebook s (median) | peak RSS of the tree MB | load |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for png, where in sorted({(r["png"], r["lake"]) for r in again}, reverse=True):
            rs = [r for r in again if r["png"] is png and r["lake"] == where]
            walls = sorted(r["wall_s"] for r in rs)
            nbs = sorted(r["notebook_s"] or 0 for r in rs)
            loads = f"{min(r['load'] for r in rs)}-{max(r['load'] for r in rs)}"
            print(
                f"| {'on (default)' if png else 'off'}, {where} | {statistics.median(walls)} | {walls} | "
                f"{statistics.median(nbs)} | {max(r['tree_rss_mb'] for r in rs)} | {loads} |"
            )


if __name__ == "__main__":
    main()
