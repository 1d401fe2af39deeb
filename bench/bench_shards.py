"""Sharded full rebuild at scale: N shards (each as a 2 GB Batch container would run it) and their commit, beside the
one-job rebuild of the same lake, in the same invocation.

    .venv/bin/python bench/bench_shards.py --root /tmp/cvs3x --scale 3 [--shards 16,4] [--reuse] [--no-one-job]

1. the lake: ``scale`` x the seed (5,350 x scale symbols, 10.8M x scale rows back to 1962), written by
   ``bench_resample.generate`` one seed-sized block of symbols at a time (``--reuse``: keep the bronze already
   under the root; silver, metadata and staging are removed first either way);
2. the one-job rebuild: ``run_resample(force_full_resample=True)``, 2 threads, DuckDB 3 GB (a 4 GB job), in a
   child process pinned to 2 CPUs (``sched_setaffinity``: the 2 vCPUs of its task);
3. for each N: every shard ``I/N`` in a child process of its own, one after the other (on AWS they run at once,
   each in its own container, so each is timed alone): ``run_resample`` with ``shard="I/N"`` (what
   ``python -m runner job 02_resample --shard array/N`` runs in its kernel: the same function and parameters),
   1 thread and DuckDB's limit sized for a 2 GB container (``condvest.container.memory_limit_for``: 1 GB), pinned
   to 1 CPU (a 1 vCPU task); then the commit ``commit/N`` (2 threads, 3 GB, pinned to 2 CPUs) in a child process;
4. each child's wall, CPU (user + system, all threads, from wait4) and peak RSS (VmHWM), the commit's profile (CPU
   seconds per step of writing silver, from its log record), and the AWS wall: the slowest shard plus the commit.
   Silver after each sharded run is checked equal to the one-job silver (bar count per interval).
Run it alone on the machine (``flock`` on the shared lock): the walls are only the AWS walls on a quiet machine.
Prints markdown tables (BENCHMARKS.md, "Shards, dollars and the minimal query").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_resample import INTERVALS, _peak_rss_mb, generate  # noqa: E402

SEED_SYMBOLS, SEED_ROWS = 5350, 10_800_000
ONE_JOB = {"threads": 2, "memory_limit": "3GB"}
SHARD_CONTAINER_BYTES = 2 << 30
COMMIT = {"threads": 2, "memory_limit": "3GB"}
#: the vCPUs of each child's AWS task (runner/cloud/jobspec.py SIZES): a shard 1, the commit and the one job 2
CPUS = {"one_job": 2, "shard": 1, "commit": 2}


def build(root: Path, scale: float, reuse: bool) -> dict:
    base = root / "bronze" / "raw_ohlcv"
    for sub in ("silver", "processing_metadata", "runs"):
        shutil.rmtree(root / sub, ignore_errors=True)
    if reuse and base.exists():
        return {"symbols": sum(1 for _ in base.iterdir()), "generated": "reused"}
    shutil.rmtree(root, ignore_errors=True)
    blocks, t0 = [], time.perf_counter()
    whole, part = int(scale), scale - int(scale)
    sizes = [1.0] * whole + ([part] if part > 0 else [])
    first = 0
    for k, f in enumerate(sizes):
        n = int(SEED_SYMBOLS * f)
        blocks.append(generate(root, n, int(SEED_ROWS * f), seed=7 + k, first=first))
        first += n
    return {
        "symbols": first,
        "rows": sum(b["rows"] for b in blocks),
        "generated_s": round(time.perf_counter() - t0, 1),
    }


# ---------------------------------------------------------------- children


def child(name: str, root: str, shard: str, group: str) -> dict:
    import logging

    from condvest.container import memory_limit_for
    from condvest.resample import ResampleParams, run_resample
    from condvest.settings import Settings

    profile: dict = {}

    class Profile(logging.Handler):  # the commit logs the CPU of each step of writing silver
        def emit(self, record: logging.LogRecord) -> None:
            profile.update(getattr(record, "profile", {}))

    logger = logging.getLogger("condvest.resample.sharded")
    logger.addHandler(Profile())
    logger.setLevel(logging.INFO)
    settings = Settings(lake_uri=root)
    if name == "one_job":
        r = run_resample(settings, ResampleParams(INTERVALS, True), **ONE_JOB)
    elif name == "shard":
        limit = memory_limit_for(SHARD_CONTAINER_BYTES)
        p = ResampleParams(INTERVALS, True, compact=False, shard=shard, shard_group=group)
        r = run_resample(settings, p, threads=1, memory_limit=limit)
    elif name == "commit":
        p = ResampleParams(INTERVALS, True, compact=False, shard=shard, shard_group=group)
        r = run_resample(settings, p, **COMMIT)
    else:
        raise SystemExit(f"unknown child {name}")
    out = {"bars": sum(x.bars_written for x in r.results), "months": sum(x.months_rewritten for x in r.results)}
    return {**out, "profile": profile} if profile else out


def measure(name: str, root: Path, shard: str = "", group: str = "") -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--child", name, "--root", str(root), "--shard", shard, "--group", group]
    cmd += ["--cpus", str(CPUS[name])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{name} {shard} failed")
    res = json.loads(out.decode().strip().splitlines()[-1])
    return {
        "name": f"{name} {shard}".strip(),
        "cpus": CPUS[name],
        "wall_s": round(wall, 2),
        "inner_s": res["seconds"],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": res["peak_rss_mb"],
        "load": round(os.getloadavg()[0], 1),
        **res["result"],
    }


def silver_bars(root: Path) -> dict[str, int]:
    import duckdb

    out = {}
    for n in INTERVALS:
        glob = str(root / "silver" / f"silver_{n}d" / "*" / "*" / "*.parquet")
        out[str(n)] = duckdb.sql(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()[0]
    return out


def sharded(root: Path, n: int, parallel: int = 1) -> dict:
    group = f"bench-{n}-{int(time.time())}"
    with ThreadPoolExecutor(parallel) as pool:  # parallel > 1: CPU and peak RSS still each shard's own, wall not
        shards = list(pool.map(lambda i: measure("shard", root, f"{i}/{n}", group), range(n)))
    for r in shards:
        print(r, flush=True)
    commit = measure("commit", root, f"commit/{n}", group)
    print(commit, flush=True)
    slow = max(shards, key=lambda r: r["wall_s"])
    return {
        "n": n,
        "shards": shards,
        "commit": commit,
        "slowest_wall_s": slow["wall_s"],
        "slowest_cpu_s": max(r["cpu_s"] for r in shards),
        "shard_cpu_s": round(sum(r["cpu_s"] for r in shards), 1),
        "shard_wall_sum_s": round(sum(r["wall_s"] for r in shards), 1),
        "peak_shard_mb": max(r["peak_rss_mb"] for r in shards),
        "aws_wall_s": round(slow["wall_s"] + commit["wall_s"], 1),
        "silver": silver_bars(root),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/cvs3x")
    ap.add_argument("--scale", type=float, default=3)
    ap.add_argument("--shards", default="4,16")
    ap.add_argument("--reuse", action="store_true", help="keep the bronze under --root")
    ap.add_argument("--no-one-job", action="store_true", help="skip the one-job rebuild")
    ap.add_argument("--parallel", type=int, default=1, help="shards run at once (1: each alone, as timed on AWS)")
    ap.add_argument("--child")
    ap.add_argument("--shard", default="")
    ap.add_argument("--group", default="")
    ap.add_argument("--cpus", type=int, default=0, help="child: run on this many CPUs (its task's vCPUs)")
    a = ap.parse_args()
    root = Path(a.root)
    if a.child:
        if a.cpus:
            os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: a.cpus])
        import duckdb  # noqa: F401  imports are not part of the timed work
        import pandas  # noqa: F401

        import condvest.resample.run  # noqa: F401

        t0 = time.perf_counter()
        result = child(a.child, str(root), a.shard, a.group)
        seconds = round(time.perf_counter() - t0, 2)
        print(json.dumps({"seconds": seconds, "result": result, "peak_rss_mb": _peak_rss_mb()}))
        return
    print(f"lake {build(root, a.scale, a.reuse)}", flush=True)
    one = None
    if not a.no_one_job:
        one = measure("one_job", root)
        print(one, flush=True)
    ref = silver_bars(root) if one else None
    runs = []
    for n in (int(x) for x in a.shards.split(",") if x):
        runs.append(sharded(root, n, a.parallel))
        if ref is not None and runs[-1]["silver"] != ref:
            raise SystemExit(f"{n} shards: silver {runs[-1]['silver']} != one job {ref}")
    print(f"\nload average at the end: {os.getloadavg()}")
    print(
        "\n| scale | N | slowest shard s (cpu s) | commit s (cpu s) | AWS wall s | one-job s (cpu s) "
        "| AWS wall / one job | commit / one job | shards' cpu s | peak per shard MB | commit peak MB |"
        "\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in runs:
        c = r["commit"]
        ow = one["wall_s"] if one else float("nan")
        print(
            f"| {a.scale:g}x | {r['n']} | {r['slowest_wall_s']} ({r['slowest_cpu_s']}) | "
            f"{c['wall_s']} ({c['cpu_s']}) | "
            f"{r['aws_wall_s']} | {ow} ({one['cpu_s'] if one else ''}) | {r['aws_wall_s'] / ow:.2f} | "
            f"{c['wall_s'] / ow:.2f} | {r['shard_cpu_s']} | {r['peak_shard_mb']} | {c['peak_rss_mb']} |"
        )
    for r in runs:
        walls = sorted(x["wall_s"] for x in r["shards"])
        print(
            f"\n{r['n']} shards: walls {walls[0]}-{walls[-1]} s, commit profile (CPU s per step): "
            f"{r['commit'].get('profile')}"
        )
    if one:
        print(f"\none job: {one}")
    print("\nper run (json): " + json.dumps({"one_job": one, "sharded": runs}))


if __name__ == "__main__":
    main()
