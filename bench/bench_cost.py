"""Dollars per run: measured CPU, memory and wall figures priced at AWS Fargate (Spot and on-demand) and S3 rates.

    .venv/bin/python bench/bench_cost.py                      the workloads of BENCHMARKS.md, priced
    .venv/bin/python bench/bench_cost.py --runs ./runs        every run in a run index, priced from its record's
                                                              vcpu_seconds and gb_seconds (runner/usage.py)
    .venv/bin/python bench/bench_cost.py --lake /tmp/cvb1x    a year of S3 for that lake (its bytes and objects)

Two prices per run, both per second with Fargate's one-minute minimum per task:
* **reserved**: what Fargate bills, the task's vCPUs and GB for its wall time. On AWS the wall time of a run
  that keeps its vCPU busy is about its CPU seconds / vCPUs, which is what is used here (the machine these
  figures come from was shared, so its wall times are longer than a container's);
* **used**: the record's ``vcpu_seconds`` and ``gb_seconds`` (what the run kept busy and resident), the floor a
  perfectly sized task would approach.
Prices (us-east-1, Linux/x86): Fargate on-demand $0.04048 per vCPU-hour and $0.004445 per GB-hour; Fargate Spot
about 70 % less; S3 Standard $0.023 per GB-month, PUT/LIST $0.005 and GET $0.0004 per 1,000 requests (sources and
dates in BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

VCPU_HOUR = 0.04048
GB_HOUR = 0.004445
SPOT_DISCOUNT = 0.70
S3_GB_MONTH = 0.023
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
GIB = 2**30
LAKE_PARTS = ("bronze", "silver", "processing_metadata")


@dataclass(frozen=True)
class Workload:
    """One run of a job: ``tasks`` containers of ``vcpus`` and ``gb``, together using ``cpu_s`` CPU seconds, the
    busiest one ``task_cpu_s`` (its wall on AWS), and ``used_gb_s`` GB-seconds (peak resident x wall)."""

    name: str
    cpu_s: float
    task_cpu_s: float
    vcpus: float
    gb: float
    tasks: int = 1
    used_gb_s: float | None = None
    source: str = ""


def reserved(w: Workload, spot: bool) -> float:
    """Fargate's bill: each task's vCPUs and GB for max(60 s, its wall); a task's wall = its CPU s / vCPUs."""
    per_task_cpu = w.cpu_s / w.tasks
    wall = max(60.0, per_task_cpu / w.vcpus)
    dollars = w.tasks * wall / 3600 * (w.vcpus * VCPU_HOUR + w.gb * GB_HOUR)
    return dollars * (1 - SPOT_DISCOUNT) if spot else dollars


def used(cpu_s: float, gb_s: float, spot: bool) -> float:
    dollars = cpu_s / 3600 * VCPU_HOUR + gb_s / 3600 * GB_HOUR
    return dollars * (1 - SPOT_DISCOUNT) if spot else dollars


def s3_year(gb: float, puts_a_day: float, gets_a_day: float) -> float:
    return gb * S3_GB_MONTH * 12 + 365 * (puts_a_day * S3_PUT + gets_a_day * S3_GET)


def lake_size(root: Path) -> tuple[float, int]:
    """Bytes (GB) and objects of a local lake's bronze, silver and metadata (not a DMS export or benchmark output)."""
    total, count = 0, 0
    for dirpath, _, files in (w for sub in LAKE_PARTS for w in os.walk(root / sub)):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
            count += 1
    return total / 1e9, count


def price_runs(runs: str) -> None:
    from condvest.runs import read_records
    from condvest.settings import Settings
    from condvest.storage import open_store

    store = open_store(runs, Settings.from_env())
    print("| run | notebook | wall s | vcpu_seconds | gb_seconds | used $ on-demand | used $ Spot |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in read_records(store):
        v, g = r.get("vcpu_seconds"), r.get("gb_seconds")
        if not isinstance(v, int | float) or not isinstance(g, int | float):
            continue
        print(
            f"| {r['run_id']} | {r['notebook']} | {r.get('duration_s')} | {v:.1f} | {g:.1f} | "
            f"{used(v, g, False):.5f} | {used(v, g, True):.5f} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", help="price every run of this run index (folder or s3://)")
    ap.add_argument("--lake", help="a local lake whose bytes and objects a year of S3 is priced for")
    ap.add_argument("--workloads", help="a JSON file of Workload fields (default: the figures below)")
    a = ap.parse_args()
    if a.runs:
        price_runs(a.runs)
        return
    loads = [Workload(**w) for w in json.loads(Path(a.workloads).read_text())] if a.workloads else WORKLOADS
    print("| workload | tasks x (vCPU, GB) | CPU s | reserved $ on-demand | reserved $ Spot | used $ Spot | source |")
    print("|---|---|---:|---:|---:|---:|---|")
    for w in loads:
        u = f"{used(w.cpu_s, w.used_gb_s, True):.4f}" if w.used_gb_s is not None else ""
        print(
            f"| {w.name} | {w.tasks} x ({w.vcpus:g}, {w.gb:g}) | {w.cpu_s:,.0f} | {reserved(w, False):.4f} | "
            f"{reserved(w, True):.4f} | {u} | {w.source} |"
        )
    if a.lake:
        gb, objects = lake_size(Path(a.lake))
        print(f"\nlake {a.lake}: {gb:.2f} GB in {objects:,} objects")
        for name, puts, gets in S3_DAYS:
            year = s3_year(gb, puts, gets)
            print(f"| {name} | {gb:.2f} GB | {puts:,} PUT/LIST a day | {gets:,} GET a day | ${year:.2f} |")


#: measured figures (BENCHMARKS.md, "Shards, dollars and the minimal query"): CPU seconds of the whole process
#: tree (or of the busiest task); the task sizes are the job definitions' (1 vCPU, 4 GB; a shard 1 vCPU, 2 GB)
WORKLOADS: list[Workload] = [
    Workload("daily pipeline (fetch + resample), 1x", 18.6, 18.6, 1, 4, 1, None, "8.6-9.3 s wall on 2 cores"),
    Workload("weekly archive (04_retention), 1x", 30.0, 30.0, 1, 4, 1, None, "archive ~1 s + views 20-27 s"),
    Workload("30-session gap fill, 1x", 104.8, 104.8, 1, 4, 1, None, "104.8 s wall, waits on the API"),
    Workload("full rebuild 1x, one job", 67.1, 67.1, 1, 4, 1, 566.8, "runner, whole command, 1x"),
    Workload("full rebuild 1x, 16 shards", 43.8, 3.3, 1, 2, 16, None, "3x shards / 3"),
    Workload("full rebuild 1x, their commit", 11.6, 11.6, 2, 4, 1, None, "3x commit / 3"),
    Workload("full rebuild 3x, one job", 175.3, 175.3, 1, 4, 1, None, "bench_shards 3x"),
    Workload("full rebuild 3x, 16 shards", 131.4, 9.9, 1, 2, 16, None, "bench_shards 3x, 2026-12-07"),
    Workload("full rebuild 3x, their commit", 34.8, 34.8, 2, 4, 1, None, "bench_shards 3x, 2026-12-07"),
    Workload("full rebuild 10x, one job", 447.0, 447.0, 1, 4, 1, None, "runner, 2026-12-03"),
    Workload("full rebuild 10x, 16 shards", 385.0, 26.8, 1, 2, 16, None, "bench_shards 10x, 2026-12-07"),
    Workload("full rebuild 10x, their commit", 75.0, 75.0, 2, 4, 1, None, "bench_shards 10x, 2026-12-07"),
]
#: a day's S3 requests at the seed's scale: the fetch PUTs one object per symbol (the seed's layout) plus the
#: session's batch object and the manifest; the resample reads the batch object, manifest, checkpoints and state
#: and rewrites the touched months (6 intervals x 1-2 months); the run pages; compaction (every ~10 sessions)
#: reads ~10 daily files and writes one history per symbol, amortised per day
S3_DAYS = [("seed scale (1x), a day", 5_350 + 20 + 12 + 10 + 535, 6_000)]

if __name__ == "__main__":
    main()
