"""``python -m runner pipeline rebuild --shards N`` on this machine: N processes, then the commit."""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from condvest.calendar import sessions_between
from condvest.lake import bronze_history_key
from condvest.resample import ResampleParams
from condvest.resample.run import run_resample
from condvest.runs import read_index, read_records
from condvest.settings import Settings
from condvest.shards import shard_of
from condvest.storage import LocalStore
from runner.listing import show_run
from tests.fixtures.paths import ROOT
from tests.fixtures.resample import write_history

pytestmark = pytest.mark.slow

DAYS = sessions_between(dt.date(2024, 1, 2), dt.date(2024, 6, 28))
SYMBOLS = [f"T{i}" for i in range(9)]


def _rebuild(lake, runs, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONDVEST_LAKE_URI": str(lake), "CONDVEST_CHART_PNG": "0"}
    env.pop("CONDVEST_RUNS_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "runner", "pipeline", "rebuild", "--shards", "2", "--runs-dir", str(runs), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _tables(store: LocalStore) -> dict:
    return {o.key: pq.read_table(io.BytesIO(store.get(o.key))) for o in store.list("silver/")}


def test_a_failed_shard_stops_before_the_commit_then_the_rebuild_equals_an_unsharded_one(tmp_path):
    lake, reference = LocalStore(tmp_path / "lake"), LocalStore(tmp_path / "reference")
    for store in (lake, reference):
        for k, sym in enumerate(SYMBOLS):
            write_history(store, sym, DAYS[k * 5 :], seed=k)
    run_resample(Settings(lake_uri=str(tmp_path / "reference")), ResampleParams(force_full_resample=True))
    victim = [s for s in SYMBOLS if shard_of(s, 2) == 1][-1]  # not the first symbol: the chart reads that one
    good = lake.get(bronze_history_key(victim))
    lake.put(bronze_history_key(victim), b"not parquet")

    r = _rebuild(tmp_path / "lake", tmp_path / "runs", "--run-id", "rb-bad")
    assert r.returncode == 1
    assert "pipeline rebuild failed at 02_resample.ipynb" in r.stderr and "CorruptObject" in r.stderr
    assert not list(lake.list("silver/"))  # no commit ran
    records = read_records(LocalStore(tmp_path / "runs"))
    assert sorted(x["status"] for x in records) == ["failed", "ok"]  # two shards, no commit
    assert {x["pipeline_run_id"] for x in records} == {"rb-bad"}
    page = (tmp_path / "runs" / "index.html").read_text()  # the failed shard rewrote it: no commit will
    assert all(f">{x['run_id']}</a>" in page for x in records) and '<td class="failed">failed</td>' in page

    lake.put(bronze_history_key(victim), good)
    r = _rebuild(tmp_path / "lake", tmp_path / "runs")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("02_resample.ipynb ok") == 3 and "pipeline rebuild ok" in r.stdout
    group = r.stdout.strip().splitlines()[-1].rsplit("/", 1)[-1]
    shown = show_run(read_index(Settings(runs_uri=str(tmp_path / "runs")), runs_uri=str(tmp_path / "runs")), group)
    for label in ("0/2", "1/2", "commit/2"):
        assert f"pipeline:   shard {label} of sharded run {group}" in shown
    page = (tmp_path / "runs" / "index.html").read_text()  # the commit rewrote it for every shard
    assert all(f">{x['run_id']}</a>" in page for x in read_records(LocalStore(tmp_path / "runs")))
    got, want = _tables(lake), _tables(reference)
    assert sorted(got) == sorted(want) and got
    assert all(got[k].equals(want[k]) for k in want)
