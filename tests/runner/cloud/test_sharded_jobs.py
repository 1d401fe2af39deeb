"""A sharded rebuild submitted to Batch (moto): an array job and its commit job, whose containers run here as
separate processes (each child with the ``AWS_BATCH_JOB_ARRAY_INDEX`` Batch gives it) against the lake on
SeaweedFS; the result equals an unsharded rebuild of the same bronze, bar for bar, and a killed shard leaves the
lake as it was."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow.parquet as pq
import pytest

from condvest.calendar import sessions_between
from condvest.crash import CRASH_ENV
from condvest.resample import ResampleParams
from condvest.resample.run import run_resample
from condvest.settings import Settings
from condvest.shards import shard_of
from condvest.storage import Store, open_store
from runner.__main__ import main
from runner.cloud.batch import JOB_ID_REF
from tests.fixtures.resample import assert_silver_matches, write_daily, write_history
from tests.runner.cloud.conftest import container_process, no_secret, run_container

pytestmark = pytest.mark.slow

DAYS = sessions_between(dt.date(2023, 6, 1), dt.date(2024, 8, 30))
SYMBOLS = [f"S{i:02d}" for i in range(17)]
ARRAY = "AWS_BATCH_JOB_ARRAY_INDEX"


def _fill(store: Store, symbols: list[str] = SYMBOLS, days: list[dt.date] = DAYS) -> None:
    for k, sym in enumerate(symbols):
        write_history(store, sym, days[(k * 11) % 90 : -2], seed=k)
        for d in days[-2:]:
            write_daily(store, sym, d, seed=50 + k)


def _silver(store: Store) -> dict[str, object]:
    return {o.key: pq.read_table(io.BytesIO(store.get(o.key))) for o in store.list("silver/")}


def _live(store: Store) -> dict[str, str]:
    """Every object a reader of the lake sees (not the staging area, not the run folders)."""
    return {
        o.key: o.etag
        for o in store.list("")
        if not o.key.startswith(("processing_metadata/shards/", "runs/", "processing_metadata/_locks/"))
    }


def _jobs(cloud, run_id: str, aws) -> list[dict]:
    record = json.loads(open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()).get(
        f"_submissions/{run_id}.json"
    ))  # fmt: skip
    ids = [j["id"] for j in record["jobs"]]
    found = {j["jobId"]: j for j in aws.client("batch").describe_jobs(jobs=ids)["jobs"]}
    return [found[i] for i in ids]


def test_a_sharded_rebuild_in_batch_equals_an_unsharded_one(cloud, aws, s3_server, capsys, monkeypatch):
    settings = Settings.from_env()
    lake = open_store(cloud["CONDVEST_LAKE_URI"], settings)
    _fill(lake)
    reference_uri = f"s3://{s3_server.new_bucket('ref')}"
    reference = open_store(reference_uri, settings)
    _fill(reference)
    run_resample(settings.with_(lake_uri=reference_uri), ResampleParams(force_full_resample=True), store=reference)

    # two children, the fewest that make an array; BATCH_SIZE's count of them is checked at the end
    assert main(["submit", "rebuild", "--shards", "2", "--run-id", "rb-1"]) == 0
    assert "submitted rb-1 to batch" in capsys.readouterr().out
    array, commit = _jobs(cloud, "rb-1", aws)
    assert array["arrayProperties"]["size"] == 2
    assert [d["jobId"] for d in commit["dependsOn"]] == [array["jobId"]]  # the commit waits for every child
    assert array["container"]["command"][-5:] == ["--shard", "array/2", "--shard-group", "rb-1", "--no-progress"]
    assert commit["container"]["command"][-5:] == ["--shard", "commit/2", "--shard-group", "rb-1", "--no-progress"]
    no_secret(json.dumps([array, commit], default=str))

    children = [container_process(aws, cloud, array["jobId"], {ARRAY: str(i)}) for i in range(2)]
    for i, p in enumerate(children):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"child {i}: {out}{err}"
    assert not list(lake.list("silver/"))  # the shards wrote nothing live
    r = run_container(aws, cloud, commit["jobId"])
    assert r.returncode == 0, r.stdout + r.stderr

    got, want = _silver(lake), _silver(reference)
    assert sorted(got) == sorted(want) and got
    for key, table in want.items():
        assert got[key].equals(table), key
    assert_silver_matches(lake, (3, 5, 8, 13, 21, 34))
    assert not list(lake.list("processing_metadata/shards/"))
    assert main(["status", "rb-1", "--poll", "0.1", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    for part in ("0/2", "1/2", "commit/2"):  # both shards and the commit, each named
        assert f"02_resample.ipynb shard {part} ok" in out
    assert "run rb-1 ok" in out

    # BATCH_SIZE is the symbols-per-shard hint: 17 symbols by 5 make 4 children
    monkeypatch.setenv("BATCH_SIZE", "5")
    assert main(["submit", "rebuild", "--shards", "auto", "--dry-run", "--run-id", "rb-auto"]) == 0
    out = capsys.readouterr()
    assert "--shards auto: 4 shards (17 symbols / BATCH_SIZE 5)" in out.err
    assert json.loads(out.out)["calls"][1]["payload"]["arrayProperties"] == {"size": 4}


def test_a_killed_shard_leaves_the_lake_as_it_was_and_fails_the_commit(cloud, aws, sns_inbox):
    settings = Settings.from_env()
    lake = open_store(cloud["CONDVEST_LAKE_URI"], settings)
    # a smaller world than the rebuild's (what is checked here is what a dead shard leaves, not the bars): six
    # symbols, four in shard 0 and two in shard 1, over six months of one year
    _fill(lake, SYMBOLS[:6], DAYS[-130:])
    assert [shard_of(s, 2) for s in SYMBOLS[:6]] == [0, 0, 0, 0, 1, 1]
    run_resample(settings, ResampleParams(force_full_resample=True), store=lake)
    write_daily(lake, "S03", dt.date(2024, 9, 3), seed=7)  # bronze moved on: a rebuild would change silver
    before = _live(lake)

    assert main(["submit", "rebuild", "--shards", "2", "--run-id", "rb-2"]) == 0
    array, commit = _jobs(cloud, "rb-2", aws)
    crash = {1: {CRASH_ENV: "resample.shard_mid_stage"}}  # child 1 dies while staging, as a reclaimed Spot host
    children = [container_process(aws, cloud, array["jobId"], {ARRAY: str(i), **crash.get(i, {})}) for i in range(2)]
    codes = []
    for p in children:
        p.communicate(timeout=300)
        codes.append(p.returncode)
    assert codes[0] == 0 and codes[1] != 0  # its kernel died: the runner recorded a failed run
    assert _live(lake) == before

    r = run_container(aws, cloud, commit["jobId"])  # Batch would not start it; run anyway, it must refuse
    assert r.returncode == 1
    assert "ShardsIncomplete" in r.stderr and "shard 1/2" in r.stderr and "wrote nothing" in r.stderr
    assert _live(lake) == before
    notes = sns_inbox.messages(expect=2)  # one alert per failed job: the dead shard's, then the commit's
    assert len(notes) == 2 and all("02_resample" in n["Subject"] for n in notes)
    assert sum("ShardsIncomplete" in n["Message"] for n in notes) == 1
    [dead] = [n for n in notes if "ShardsIncomplete" not in n["Message"]]
    assert dead["Subject"].endswith(", shard 1/2")
    assert f"batch job: {array['jobId']}:1 (attempt 1)" in dead["Message"] and "shard: 1/2" in dead["Message"]
    no_secret(r.stdout, r.stderr, json.dumps(notes))

    # the operator re-runs the shard: a job for shard 1 alone, then a new commit depending on it; once both ran,
    # the lake is rebuilt and the run reads ok, its failed shard named as replaced
    assert main(["status", "rb-2", "--poll", "0.1", "--timeout", "30"]) == 1
    assert main(["rerun", "rb-2", "--shard", "1"]) == 0
    rerun, commit2 = _jobs(cloud, "rb-2", aws)[2:]
    assert rerun["container"]["command"][rerun["container"]["command"].index("--shard") + 1] == "1/2"
    assert run_container(aws, cloud, rerun["jobId"]).returncode == 0
    r = run_container(aws, cloud, commit2["jobId"])
    assert r.returncode == 0, r.stderr
    assert _live(lake) != before
    assert main(["status", "rb-2", "--poll", "0.1", "--timeout", "30"]) == 0


def _after(payload: dict) -> list[dict]:
    """``dependsOn`` on the job of ``payload``, as a dry run shows it (its id is known only once submitted)."""
    return [{"jobId": JOB_ID_REF % payload["jobName"]}]


def test_a_sharded_backfill_chains_its_stages(cloud, capsys):
    args = ["submit", "backfill", "--shards", "3", "-p", "start", "2024-01-02", "-p", "end", "2024-06-28"]
    assert main([*args, "--dry-run", "--run-id", "bf-1"]) == 0
    calls = json.loads(capsys.readouterr().out)["calls"]
    assert [c["api"] for c in calls] == ["batch.register_job_definition"] * 2 + ["batch.submit_job"] * 4
    fetch_array, fetch_commit, rebuild_array, rebuild_commit = (c["payload"] for c in calls[2:])
    assert fetch_array["containerOverrides"]["command"][:5] == ["01_fetch", "-p", "start", "2024-01-02", "-p"]
    assert rebuild_array["containerOverrides"]["command"][0] == "02_resample"
    assert "start" not in rebuild_array["containerOverrides"]["command"]  # only what the stage declares
    # each commit waits for its array; the rebuild waits for the fetch commit
    assert fetch_commit["dependsOn"] == _after(fetch_array)
    assert rebuild_array["dependsOn"] == _after(fetch_commit)
    assert rebuild_commit["dependsOn"] == _after(rebuild_array)
    assert main([*args, "--backend", "sagemaker", "--dry-run"]) == 2
    assert "--shards runs as a Batch array job" in capsys.readouterr().err
    assert main(["submit", "05_monitoring", "--shards", "3", "--dry-run"]) == 2
    assert "cannot be sharded" in capsys.readouterr().err
