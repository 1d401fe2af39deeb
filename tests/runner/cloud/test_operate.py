"""Following and acting on a submitted run, against moto: ``status`` of a run repaired by a re-run shard, ``logs``,
``rerun --shard``, ``cancel``; and no abbreviated option anywhere (``submit --shard 2`` is not ``--shards 2``).

The run index records are what the containers' runs append (``RunResult.index_record``); moto's Batch marks a
job done without running it, so the records say how each run went."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from condvest.runs import append_run
from condvest.settings import Settings
from condvest.storage import open_store
from runner.__main__ import main
from runner.cloud.operate import repaired
from runner.result import CellError, RunResult
from tests.fixtures.aws import batch_queue

NOW = dt.datetime(2026, 12, 7, 11, 0, tzinfo=dt.UTC)


def _record(cloud, run_id: str, notebook: str, shard: str, status: str, error: CellError | None = None) -> None:
    """Append the record a shard's (or a commit's) run writes into the run index."""
    runs = open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env())
    result = RunResult(
        run_id=f"20261207T110000Z-{notebook.removesuffix('.ipynb')}-{shard.replace('/', 'of')}-{status}",
        notebook=notebook,
        status=status,
        parameters={"shard": shard, "shard_group": run_id},
        started_at=NOW,
        finished_at=NOW + dt.timedelta(seconds=3),
        ipynb_key=None,
        html_key=None,
        runs_uri=runs.uri,
        error=error,
        pipeline="sharded",
        pipeline_run_id=run_id,
    )
    append_run(runs, result.index_record())


def _submission(cloud, run_id: str) -> dict:
    return json.loads(
        open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()).get(f"_submissions/{run_id}.json")
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["submit", "02_resample", "--shard", "2", "--dry-run"],  # was taken for --shards 2: a whole new array job
        ["submit", "02_resample", "--dry", "--shards", "2"],
        ["list", "--lim", "3"],
        ["run", "01_fetch", "--param", "start", "2024-01-02"],
        ["job", "02_resample", "--no-prog"],
    ],
)
def test_no_command_accepts_an_abbreviated_option(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_failed_stage_is_repaired_once_its_latest_commit_succeeded():
    record = {
        "jobs": [
            {"id": "a", "name": "rb-1-02_resample-shards", "stage": "02_resample.ipynb", "part": "shards"},
            {"id": "c", "name": "rb-1-02_resample-commit", "stage": "02_resample.ipynb", "part": "commit"},
        ]
    }
    states = [{"id": "a", "status": "FAILED"}, {"id": "c", "status": "FAILED"}]
    assert repaired(record, states) == set()
    record["jobs"] += [
        {"id": "r", "name": "rb-1-02_resample-shards-rerun-1", "stage": "02_resample.ipynb", "part": "shard-1"},
        {"id": "c2", "name": "rb-1-02_resample-commit-again", "stage": "02_resample.ipynb", "part": "commit"},
    ]
    assert repaired(record, [*states, {"id": "r", "status": "SUCCEEDED"}, {"id": "c2", "status": "FAILED"}]) == set()
    assert repaired(record, [*states, {"id": "r", "status": "SUCCEEDED"}, {"id": "c2", "status": "SUCCEEDED"}]) == {
        "a",
        "c",
        "r",
        "c2",
    }


def test_status_rerun_and_status_of_the_repaired_run(cloud, aws, capsys):
    assert main(["submit", "rebuild", "--shards", "3", "--run-id", "rb-1"]) == 0
    capsys.readouterr()
    killed = CellError(None, None, "", "DeadKernelError", "Kernel died")
    _record(cloud, "rb-1", "02_resample.ipynb", "0/3", "ok")
    _record(cloud, "rb-1", "02_resample.ipynb", "1/3", "failed", killed)
    _record(cloud, "rb-1", "02_resample.ipynb", "2/3", "ok")
    assert main(["status", "rb-1", "--poll", "0.1", "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert "02_resample.ipynb shard 1/3 failed: DeadKernelError: Kernel died" in err and "cell None" not in err
    assert "run rb-1 failed" in err

    ondemand = batch_queue(aws, "condvest-ondemand")  # Spot had no capacity: the shard goes to the on-demand queue
    assert main(["rerun", "rb-1", "--shard", "1", "--queue", ondemand]) == 0
    out = capsys.readouterr().out
    assert "re-submitted 02_resample: rb-1-1-02_resample-shards-rerun-1" in out
    record = _submission(cloud, "rb-1")
    assert [j["part"] for j in record["jobs"]] == ["shards", "commit", "shard-1", "commit"]
    batch = aws.client("batch")
    rerun, commit = batch.describe_jobs(jobs=[j["id"] for j in record["jobs"][2:]])["jobs"]
    assert rerun["container"]["command"][-5:] == ["--shard", "1/3", "--shard-group", "rb-1", "--no-progress"]
    assert "arrayProperties" not in rerun or not rerun["arrayProperties"].get("size")
    assert commit["dependsOn"] == [{"jobId": rerun["jobId"]}]
    assert rerun["jobQueue"].endswith("/condvest-ondemand") and commit["jobQueue"].endswith("/condvest-ondemand")
    # the re-run shard keeps a shard's container (runner.cloud.jobspec.SIZES["resample-shard"]), not the definition's
    assert {e["name"]: e["value"] for e in rerun["container"]["environment"]}[
        "CONDVEST_DUCKDB_MEMORY_LIMIT"
    ] == "3072MB"
    assert commit["container"]["command"][-5:-3] == ["--shard", "commit/3"]
    # the re-run shard and the commit ran and succeeded: the run reads ok, its failed shard named as replaced
    _record(cloud, "rb-1", "02_resample.ipynb", "1/3", "ok")
    _record(cloud, "rb-1", "02_resample.ipynb", "commit/3", "ok")
    assert main(["status", "rb-1", "--poll", "0.1", "--timeout", "30"]) == 0
    out, err = capsys.readouterr()
    assert "shard 1/3 failed: DeadKernelError: Kernel died (replaced by a later run)" in err
    assert "02_resample.ipynb shard commit/3 ok" in out and "run rb-1 ok (repaired)" in out

    assert main(["rerun", "rb-1", "--shard", "3"]) == 2  # shards are 0 to 2
    assert "has shards 0 to 2, not 3" in capsys.readouterr().err


def test_logs_print_the_jobs_stream_and_cancel_stops_what_has_not_ended(cloud, aws, capsys):
    assert main(["submit", "05_monitoring", "-p", "read_postgres", "False", "--run-id", "lg-1"]) == 0
    capsys.readouterr()
    [entry] = _submission(cloud, "lg-1")["jobs"]
    [job] = aws.client("batch").describe_jobs(jobs=[entry["id"]])["jobs"]
    stream = job["container"]["logStreamName"]  # what Batch's awslogs driver writes
    logs = aws.client("logs")
    logs.create_log_group(logGroupName="/aws/batch/job")
    logs.create_log_stream(logGroupName="/aws/batch/job", logStreamName=stream)
    lines = [f"job 05_monitoring: batch job {entry['id']} attempt 1", "05_monitoring.ipynb ok in 3.1 s"]
    now_ms = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    events = [{"timestamp": now_ms + i, "message": m} for i, m in enumerate(lines)]
    logs.put_log_events(logGroupName="/aws/batch/job", logStreamName=stream, logEvents=events)
    assert main(["logs", "lg-1"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == lines and f"log stream /aws/batch/job {stream}" in err
    assert main(["logs", "lg-1", "--shard", "1"]) == 2
    assert "has no shard 1" in capsys.readouterr().err

    assert main(["cancel", "lg-1"]) == 0  # moto ends a job at once: nothing left to stop
    assert "run lg-1: 0 of 1 jobs stopped (1 had ended)" in capsys.readouterr().out
    assert main(["cancel", "nope"]) == 2
    assert "no submission 'nope'" in capsys.readouterr().err


def test_status_follows_a_job_the_spot_fallback_moved_to_the_on_demand_queue(cloud, aws, capsys, monkeypatch):
    """The template's fallback function (run here against moto) moves a job Spot could not place; ``status`` then
    follows its replacement and the run reads ok, ``logs`` and ``cancel`` act on the replacement."""
    from tests.infra.test_template import TEMPLATE

    monkeypatch.setenv("MOTO_SIMPLE_BATCH_FAIL_AFTER", "0")  # moto's switch: the job submitted now fails at once
    assert main(["submit", "05_monitoring", "-p", "read_postgres", "False", "--run-id", "mv-1"]) == 0
    monkeypatch.delenv("MOTO_SIMPLE_BATCH_FAIL_AFTER")
    capsys.readouterr()
    [entry] = _submission(cloud, "mv-1")["jobs"]
    batch = aws.client("batch")
    ondemand = batch_queue(aws, "condvest-ondemand")
    [queue] = batch.describe_job_queues(jobQueues=[ondemand])["jobQueues"]
    monkeypatch.setenv("FALLBACK_QUEUE", queue["jobQueueArn"])
    [job] = batch.describe_jobs(jobs=[entry["id"]])["jobs"]
    assert job["status"] == "FAILED"  # as the Spot queue leaves a job it cancelled
    from cfnlint.decode import cfn_yaml

    code = cfn_yaml.load(str(TEMPLATE))["Resources"]["SpotFallbackFunction"]["Properties"]["Code"]["ZipFile"]
    function: dict = {}
    exec(compile(str(code), "index.py", "exec"), function)
    cancelled = {**job, "status": "FAILED", "statusReason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"}
    moved_id = function["handler"]({"detail": cancelled})
    _record(cloud, "mv-1", "05_monitoring.ipynb", "", "ok")  # what the moved job's run appends

    assert main(["status", "mv-1", "--poll", "0.1", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert f"batch job {entry['id']} was moved to the on-demand queue as {moved_id}" in out
    assert f"batch job {moved_id}: SUCCEEDED" in out and "run mv-1 ok" in out
    jobs = _submission(cloud, "mv-1")["jobs"]
    assert [(j["id"], j.get("moved_from")) for j in jobs] == [(entry["id"], None), (moved_id, entry["id"])]
    [moved] = batch.describe_jobs(jobs=[moved_id])["jobs"]
    assert moved["jobQueue"] == queue["jobQueueArn"] and moved["container"]["command"] == job["container"]["command"]
    assert main(["cancel", "mv-1"]) == 0  # both ended here (moto ends a job at once)
    assert "run mv-1: 0 of 2 jobs stopped" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CONDVEST_JOB_MEMORY_MIB", "3000", "Fargate with 1 vCPU takes 2048 to 8192 in steps of 1024 MiB, not 3000"),
        ("CONDVEST_JOB_VCPUS", "3", "Fargate offers 0.25, 0.5, 1, 2, 4, 8, 16 vCPUs, not 3"),
        ("CONDVEST_JOB_TIMEOUT_S", "30", "Batch needs at least 60 s, got 30"),
    ],
)
def test_dry_run_refuses_what_batch_would_refuse(cloud, capsys, monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    assert main(["submit", "05_monitoring", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert variable in err and says in err


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("CONDVEST_DAILY_SCHEDULE", "cron(0 11 * *)", "expected cron(m h dom mon dow year)"),
        ("CONDVEST_WEEKLY_SCHEDULE", "every sunday", "expected cron("),
        ("CONDVEST_SCHEDULE_TIMEZONE", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
    ],
)
def test_schedule_dry_run_refuses_what_scheduler_would_refuse(cloud, capsys, monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    assert main(["schedule", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert variable in err and says in err


def test_the_previous_pipelines_job_definition_is_never_overwritten(cloud, aws, capsys, monkeypatch):
    batch = aws.client("batch")
    old = {"image": "old-image", "command": ["python", "resample.py"], "resourceRequirements": [
        {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}]}  # fmt: skip
    batch.register_job_definition(jobDefinitionName="resampling-job", type="container", containerProperties=old)
    monkeypatch.setenv("RESAMPLING_JOB_DEFINITION", "resampling-job")
    assert main(["submit", "02_resample", "--run-id", "rs-1"]) == 0
    err = capsys.readouterr().err
    assert "RESAMPLING_JOB_DEFINITION names resampling-job, the previous pipeline's job definition" in err
    assert "condvest-resample" in err
    [jd] = batch.describe_job_definitions(jobDefinitionName="resampling-job")["jobDefinitions"]
    assert jd["revision"] == 1 and jd["containerProperties"]["image"] == "old-image"
    # a definition of the workbench's name that the workbench did not register is refused, never revised
    monkeypatch.setenv("CONDVEST_JOB_DEFINITION_PREFIX", "resampling")
    batch.register_job_definition(jobDefinitionName="resampling-monitoring", type="container", containerProperties=old)
    assert main(["submit", "05_monitoring", "--run-id", "rs-2"]) == 2
    assert "job definition resampling-monitoring exists and is not the workbench's" in capsys.readouterr().err
    assert len(batch.describe_job_definitions(jobDefinitionName="resampling-monitoring")["jobDefinitions"]) == 1


def test_a_partial_secret_arn_is_completed_before_a_job_definition_names_it(cloud, aws, capsys, monkeypatch):
    full = cloud["RDS_SECRET_ARN"]
    partial = full.rsplit("-", 1)[0]  # without Secrets Manager's 6-character suffix
    monkeypatch.setenv("RDS_SECRET_ARN", partial)
    assert main(["submit", "05_monitoring", "-p", "read_postgres", "False", "--run-id", "pa-1"]) == 0
    assert f"secret {partial} is {full}" in capsys.readouterr().err
    [jd] = aws.client("batch").describe_job_definitions(jobDefinitionName="condvest-monitoring")["jobDefinitions"]
    refs = {s["name"]: s["valueFrom"] for s in jd["containerProperties"]["secrets"]}
    assert refs["RDS_PASSWORD"] == f"{full}:password::" and "POLYGON_API_KEY" not in refs


def test_cancel_stops_every_job_of_a_sharded_run_that_has_not_ended(cloud, aws, moto_server, capsys, monkeypatch):
    """moto's Batch with its job threads (``use_docker``) and no Docker daemon reachable (a closed loopback port):
    each array child fails at once, the array parent then never ends (moto ends it only when every child
    succeeded) and the commit waits PENDING on it, as a commit waits on shards that are still running."""
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")  # moto's job threads read it: nothing listens there
    moto_server.post("/moto-api/config", {"batch": {"use_docker": True}})
    try:
        assert main(["submit", "rebuild", "--shards", "2", "--run-id", "cn-1"]) == 0
        capsys.readouterr()
        jobs = _submission(cloud, "cn-1")["jobs"]
        assert [j["part"] for j in jobs] == ["shards", "commit"]
        batch = aws.client("batch")
        ids = [j["id"] for j in jobs]
        deadline = time.monotonic() + 20
        while {j["status"] for j in batch.describe_jobs(jobs=ids)["jobs"]} - {"SUBMITTED", "PENDING"}:
            assert time.monotonic() < deadline, batch.describe_jobs(jobs=ids)["jobs"]
            time.sleep(0.2)

        assert main(["cancel", "cn-1"]) == 0
        out = capsys.readouterr().out
        assert "run cn-1: 2 of 2 jobs stopped (0 had ended)" in out
        for entry in jobs:
            assert f"batch job {entry['id']} (" in out
        reason = "cancelled: python -m runner cancel cn-1"
        while True:  # the commit's wait ends within a second of its termination
            described = {j["jobId"]: j for j in batch.describe_jobs(jobs=ids)["jobs"]}
            if described[jobs[1]["id"]]["status"] == "FAILED" or time.monotonic() > deadline + 10:
                break
            time.sleep(0.2)
        assert {j.get("statusReason") for j in described.values()} == {reason}
        assert described[jobs[1]["id"]]["status"] == "FAILED"
    finally:
        moto_server.post("/moto-api/config", {"batch": {"use_docker": False}})
