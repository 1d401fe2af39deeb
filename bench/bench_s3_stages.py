"""Every stage on an S3 lake beside the same work on a local disk, in the same run (issue 25).

    .venv/bin/python bench/bench_s3_stages.py [--symbols 5350 --rows 10800000] [--root /tmp/condvest-bench-s3]

One DMS export of ``SyntheticMarket.lake_like()`` (as ``bench_resample.py --lake migrated``; generated once under
``--root``, reused when there) is put into two lakes: a local folder and a bucket of a SeaweedFS ``weed mini`` on
loopback (the test suite's). Then each stage runs in this process on the local lake, then on the S3 lake, before
the next stage starts (so both see the same load), timed from the call to its return:

  03_migrate     ``run_migration``: the export, stored in the lake, into bronze (validated, manifest, report)
  full rebuild   ``run_resample(force_full_resample=True)`` of the migrated lake (``--threads``, ``--memory``)
  05_monitoring  ``collect`` (Postgres off: this measures the lake's reads)
  daily fetch    ``run_fetch`` of the next session from the offline server (5,350 one-row objects, batch, change
                 object, manifest; Postgres off)
  incremental    ``run_resample`` after it: reads the change log, the session's batch, the state, the months

Prints one markdown row per stage: local s, S3 s, ratio, and the load average when the stage started.

    .venv/bin/python bench/bench_s3_stages.py --bronze /path/to/lake   # the full rebuild of an existing bronze

With ``--bronze`` (a lake folder holding ``bronze/``, e.g. bench_resample.py's 3x lake) only the full rebuild runs:
the folder's ``bronze/`` is hard-linked into a local lake (never written: every write is a new file) and uploaded
into the bucket (16 at a time, not timed), then rebuilt on both.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_daily import DAY, KEY, start_server  # noqa: E402
from bench.bench_resample import export  # noqa: E402
from tests.fixtures.s3 import _start_weed, _stop, _wait_ready  # noqa: E402  (the test suite's SeaweedFS)

INTERVALS = "3,5,8,13,21,34"


def _upload(export_dir: Path, lake: str, server, bucket: str) -> None:  # noqa: ANN001
    files = sorted((export_dir / "public" / "raw_ohlcv").glob("*.parquet"))
    if lake.startswith("s3://"):
        client = server.client()
        for f in files:
            client.upload_file(str(f), bucket, f"lake/public/raw_ohlcv/{f.name}")
    else:
        dst = Path(lake) / "public" / "raw_ohlcv"
        dst.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copyfile(f, dst / f.name)


def _link_and_upload_bronze(src: Path, lake: Path, server, bucket: str) -> int:  # noqa: ANN001
    """``src/bronze`` hard-linked into ``lake/bronze`` and uploaded under ``lake/`` in the bucket; returns the count."""
    shutil.copytree(src / "bronze", lake / "bronze", copy_function=os.link)
    files = [p for p in sorted((lake / "bronze").rglob("*")) if p.is_file()]
    client = server.client()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda f: client.upload_file(str(f), bucket, f"lake/{f.relative_to(lake).as_posix()}"), files))
    return len(files)


def _stages(threads: int, memory: str) -> list[tuple[str, Callable]]:
    from condvest.fetch import FetchParams, run_fetch
    from condvest.migrate.run import run_migration
    from condvest.monitoring import MonitoringParams, collect
    from condvest.resample import ResampleParams, run_resample

    def migrate(s) -> str:  # noqa: ANN001
        r = run_migration(s, progress=False)
        assert r.passed and r.status == "migrated", r.status
        return f"{r.rows_written:,} rows"

    def full(s) -> str:  # noqa: ANN001
        r = run_resample(s, ResampleParams(INTERVALS, True), threads=threads, memory_limit=memory)
        return f"{sum(x.bars_total for x in r.results):,} bars"

    def monitoring(s) -> str:  # noqa: ANN001
        snap = collect(s, MonitoringParams(read_postgres=False, as_of=DAY))
        return f"{len(snap.sessions)} sessions shown"

    def fetch(s) -> str:  # noqa: ANN001
        p = FetchParams(date=DAY, skip_market_check=True, write_postgres=False, as_of=DAY)
        r = asyncio.run(run_fetch(s, p, progress=False))
        assert r.status == "ok", r.failed
        return f"{r.summary()['bronze_rows']:,} rows"

    def incremental(s) -> str:  # noqa: ANN001
        r = run_resample(s, ResampleParams(INTERVALS), threads=threads, memory_limit=memory)
        assert {x.mode for x in r.results} == {"incremental"}, r.to_frame()
        return f"{sum(x.bars_written for x in r.results):,} bars written"

    return [
        ("03_migrate of the export on the lake", migrate),
        ("full rebuild (02_resample, force_full)", full),
        ("05_monitoring (collect, Postgres off)", monitoring),
        ("daily fetch of one session (Postgres off)", fetch),
        ("incremental resample after it", incremental),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/condvest-bench-s3"))
    ap.add_argument("--symbols", type=int, default=5350)
    ap.add_argument("--rows", type=int, default=10_800_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--memory", default="3GB")
    ap.add_argument("--only", default="", help="comma-separated stage numbers (1-5) to run; the others are skipped")
    ap.add_argument("--bronze", type=Path, help="a lake folder whose bronze/ is rebuilt in full (only that stage)")
    a = ap.parse_args()
    from condvest.settings import Secret, Settings

    # the S3 reads' own figure (storage.local_files: objects, bytes, seconds), to tell reading from writing
    logging.basicConfig(level=logging.WARNING, format="  %(name)s %(message)s", stream=sys.stdout)
    logging.getLogger("condvest.storage").setLevel(logging.INFO)

    a.root.mkdir(parents=True, exist_ok=True)
    export_dir = a.root / f"export-{a.symbols}-{a.rows}"
    if a.bronze is None and not any((export_dir / "public" / "raw_ohlcv").glob("*.parquet")):
        shutil.rmtree(export_dir, ignore_errors=True)
        print(f"export generated in {export(export_dir, a.symbols, a.rows):.1f} s", flush=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=a.root))
    sock = Path(tempfile.mkdtemp(prefix="weed-", dir="/tmp"))
    (work / "weed").mkdir()
    weed, server = _start_weed(work / "weed", sock)
    proc, base = start_server(a.symbols)
    try:
        _wait_ready(weed, server)
        bucket = server.new_bucket("bench")
        os.environ.update(
            AWS_ACCESS_KEY_ID=server.access_key,
            AWS_SECRET_ACCESS_KEY=server.secret_key,
            AWS_REGION=server.region,
            AWS_EC2_METADATA_DISABLED="true",
        )
        common = {
            "polygon_base_url": base,
            "polygon_api_key": Secret(KEY),
            "as_of": dt.date.fromisoformat(DAY),
            "runs_uri": str(work / "runs"),
        }
        lakes = {
            "local": Settings(lake_uri=str(work / "lake"), home=work / "home-local", **common),
            "s3": Settings(
                lake_uri=f"s3://{bucket}/lake",
                s3_endpoint_url=server.endpoint_url,
                aws_region=server.region,
                home=work / "home-s3",
                **common,
            ),
        }
        if a.bronze is not None:
            t0 = time.perf_counter()
            n = _link_and_upload_bronze(a.bronze, work / "lake", server, bucket)
            print(f"bronze of {a.bronze}: {n:,} objects linked and uploaded in {time.perf_counter() - t0:.1f} s")
        else:
            for s in lakes.values():
                _upload(export_dir, s.lake_uri, server, bucket)
        only = {int(x) for x in a.only.split(",") if x}
        rows = []
        for k, (name, stage) in enumerate(_stages(a.threads, a.memory), 1):
            if a.bronze is not None and k != 2:  # an existing bronze: the full rebuild only
                continue
            if only and k not in only and k > 2:  # the migration and the rebuild make the lake the others need
                continue
            got = {}
            load = round(os.getloadavg()[0], 1)
            for where, s in lakes.items():
                t0 = time.perf_counter()
                what = stage(s)
                got[where] = time.perf_counter() - t0
                print(f"{name} {where}: {got[where]:.2f} s ({what})", flush=True)
            rows.append((name, got["local"], got["s3"], load))
        scale = f"bronze of {a.bronze}" if a.bronze is not None else f"{a.symbols:,} symbols, {a.rows:,} rows"
        print(
            f"\nS3 stages: {scale}, SeaweedFS on loopback, {os.cpu_count()} cores, "
            f"threads={a.threads}, memory={a.memory}\n"
        )
        print("| stage | local disk (s) | S3 (s) | S3 / local | load at start |")
        print("|---|---:|---:|---:|---:|")
        for name, loc, s3, load in rows:
            print(f"| {name} | {loc:.2f} | {s3:.2f} | {s3 / loc:.2f}x | {load} |")
    finally:
        proc.terminate()
        _stop(weed, server)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(sock, ignore_errors=True)


if __name__ == "__main__":
    main()
