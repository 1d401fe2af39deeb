"""``submit``, ``status`` and ``schedule`` against moto's server (Batch, SageMaker, Scheduler, Secrets Manager,
SNS, CloudWatch), with the lake on the SeaweedFS S3 server; the submitted container command is run here as a
separate process, with the environment its job definition gives it and the secrets Batch would resolve."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from condvest.runs import read_records
from condvest.settings import Settings
from condvest.storage import open_store
from runner.__main__ import main
from runner.cloud import jobspec
from tests.fixtures.aws import batch_queue
from tests.fixtures.paths import ROOT

pytestmark = pytest.mark.slow

POLYGON_KEY = "SENTINEL-polygon-9d8c7b"
RDS_PASSWORD = "SENTINEL-rds-pw-1a2b3c"
ACCOUNT = "123456789012"


@pytest.fixture
def keep_logging():
    """main() replaces the root logger's handlers; put them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def cloud(aws, s3_server, monkeypatch, sns_inbox, keep_logging):
    """The submitter's environment: AWS APIs on moto, the lake on SeaweedFS, real secrets in Secrets Manager
    (and, to prove they never travel, their values in the submitter's own environment)."""
    bucket = s3_server.new_bucket("lake")
    sm = aws.client("secretsmanager")
    polygon = sm.create_secret(Name="condvest/polygon", SecretString=POLYGON_KEY)["ARN"]
    rds_doc = {"host": "db.internal", "username": "condvest", "password": RDS_PASSWORD, "dbname": "condvest"}
    rds = sm.create_secret(Name="condvest/rds", SecretString=json.dumps(rds_doc))["ARN"]
    env = {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,  # moto takes any key; SeaweedFS needs its own
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_ENDPOINT_URL_S3": s3_server.endpoint_url,
        "CONDVEST_LAKE_URI": f"s3://{bucket}",
        "CONDVEST_IMAGE": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/condvest:test",
        "CONDVEST_JOB_ROLE_ARN_PREFIX": f"arn:aws:iam::{ACCOUNT}:role/condvest-job-",
        "CONDVEST_EXECUTION_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/condvest-execution",
        "CONDVEST_SAGEMAKER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/condvest-sagemaker",
        "CONDVEST_SCHEDULER_ROLE_ARN": f"arn:aws:iam::{ACCOUNT}:role/condvest-scheduler",
        "CONDVEST_ALERT_TOPIC_ARN": sns_inbox.topic_arn,
        "BATCH_JOB_QUEUE": batch_queue(aws),
        "POLYGON_API_KEY_SECRET_ARN": polygon,
        "RDS_SECRET_ARN": rds,
        "POLYGON_API_KEY": POLYGON_KEY,
        "RDS_PASSWORD": RDS_PASSWORD,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CONDVEST_RUNS_URI", raising=False)
    monkeypatch.chdir(ROOT)
    return env


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert POLYGON_KEY not in text and RDS_PASSWORD not in text


def _resolve(aws, ref: str) -> str:
    """What Batch puts in the container for a ``secrets`` reference (``arn`` or ``arn:json-key::``)."""
    arn, _, rest = ref.partition(":secret:")
    name, _, key = rest.partition(":")
    value = aws.client("secretsmanager").get_secret_value(SecretId=f"{arn}:secret:{name}")["SecretString"]
    return json.loads(value)[key.split(":")[0]] if key else value


def run_container(aws, cloud, job_id: str) -> subprocess.CompletedProcess[str]:
    """Run a submitted Batch job's container here: the image's entrypoint plus the job's command, with the job
    definition's environment, the secrets Batch resolves, and the test servers' endpoints and credentials."""
    batch = aws.client("batch")
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    [jd] = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
    props = jd["containerProperties"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "POLYGON_", "RDS_", "BATCH_"))}
    env |= {e["name"]: e["value"] for e in props["environment"]}
    env |= {s["name"]: _resolve(aws, s["valueFrom"]) for s in props["secrets"]}
    assert env["POLYGON_API_KEY"] == POLYGON_KEY and env["RDS_PASSWORD"] == RDS_PASSWORD
    env["AWS_ENDPOINT_URL"] = cloud["AWS_ENDPOINT_URL"] if "AWS_ENDPOINT_URL" in cloud else aws.endpoint_url
    command = [*jobspec.ENTRYPOINT, *job["container"]["command"]]
    assert command[:4] == ["python", "-m", "runner", "job"]
    return subprocess.run(
        [sys.executable, *command[1:]], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_dry_run_prints_the_exact_payloads_of_both_backends_and_no_secret(cloud, capsys):
    assert main(["submit", "daily", "--backend", "batch", "-p", "max_backfill_days", "3", "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = json.loads(out)
    register, submit = plan["calls"]
    assert register["api"] == "batch.register_job_definition" and submit["api"] == "batch.submit_job"
    jd = register["payload"]
    assert jd["jobDefinitionName"] == "condvest-daily" and jd["platformCapabilities"] == ["FARGATE"]
    props = jd["containerProperties"]
    assert props["image"] == cloud["CONDVEST_IMAGE"]
    assert props["jobRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/condvest-job-daily"
    assert {s["name"] for s in props["secrets"]} == {"POLYGON_API_KEY", "RDS_ENDPOINT", "RDS_USERNAME", "RDS_PASSWORD"}
    assert {s["valueFrom"].split(":secret:")[0] for s in props["secrets"]} == {
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}"
    }
    env = {e["name"]: e["value"] for e in props["environment"]}
    assert env["CONDVEST_LAKE_URI"] == cloud["CONDVEST_LAKE_URI"]
    assert env["CONDVEST_RUNS_URI"] == cloud["CONDVEST_LAKE_URI"] + "/runs"
    assert not {"POLYGON_API_KEY", "RDS_PASSWORD", "CONDVEST_PG_DSN"} & env.keys()
    # a notebook failure is never retried; the infrastructure's failures are
    assert jd["retryStrategy"]["evaluateOnExit"][-1] == {"onReason": "*", "action": "EXIT"}
    assert jd["timeout"]["attemptDurationSeconds"] > 0
    sub = submit["payload"]
    assert sub["jobQueue"] == "condvest" and sub["jobDefinition"] == "condvest-daily"
    assert sub["containerOverrides"]["command"] == [
        "daily", "-p", "max_backfill_days", "3", "--run-id", plan["run_id"], "--no-progress"
    ]  # fmt: skip
    _no_secret(out)

    assert main(["submit", "02_resample", "--backend", "sagemaker", "--run-id", "r.1_x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    [call] = json.loads(out)["calls"]
    pj = call["payload"]
    assert call["api"] == "sagemaker.create_processing_job"
    assert pj["ProcessingJobName"] == "condvest-r-1-x" and pj["RoleArn"] == cloud["CONDVEST_SAGEMAKER_ROLE_ARN"]
    assert pj["AppSpecification"]["ContainerEntrypoint"] == ["python", "-m", "runner", "job"]
    assert pj["AppSpecification"]["ContainerArguments"] == ["02_resample", "--run-id", "r.1_x", "--no-progress"]
    assert pj["StoppingCondition"]["MaxRuntimeInSeconds"] > 0
    assert pj["Environment"]["POLYGON_API_KEY_SECRET_ARN"] == cloud["POLYGON_API_KEY_SECRET_ARN"]
    assert pj["Environment"]["RDS_SECRET_ARN"] == cloud["RDS_SECRET_ARN"]
    assert not {"POLYGON_API_KEY", "RDS_PASSWORD"} & pj["Environment"].keys()
    _no_secret(out)


def test_submit_refuses_before_calling_anything(cloud, capsys, monkeypatch):
    assert main(["submit", "01_fetch", "-p", "api_key", "x", "--dry-run"]) == 2
    assert "secret" in capsys.readouterr().err
    assert main(["submit", "01_fetch", "-p", "nope", "1", "--dry-run"]) == 2
    assert main(["submit", "99_nope", "--dry-run"]) == 2
    monkeypatch.setenv("CONDVEST_LAKE_URI", "./lake")
    assert main(["submit", "01_fetch", "--dry-run"]) == 2
    assert "CONDVEST_LAKE_URI" in capsys.readouterr().err
    monkeypatch.setenv("CONDVEST_LAKE_URI", cloud["CONDVEST_LAKE_URI"])
    monkeypatch.delenv("CONDVEST_IMAGE")
    assert main(["submit", "01_fetch", "--dry-run"]) == 2
    assert "CONDVEST_IMAGE" in capsys.readouterr().err
    assert aws_jobs(cloud) == []


def aws_jobs(cloud) -> list:
    import boto3

    batch = boto3.client("batch", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    return batch.list_jobs(jobQueue=cloud["BATCH_JOB_QUEUE"], jobStatus="SUCCEEDED")["jobSummaryList"]


def test_a_batch_run_is_submitted_run_and_followed_to_its_outcome(cloud, aws, sns_inbox, capsys):
    batch = aws.client("batch")
    assert main(["submit", "05_monitoring", "-p", "read_postgres", "False", "--run-id", "ok-1"]) == 0
    out = capsys.readouterr()
    assert "submitted ok-1 to batch" in out.out and "(registered)" in out.err
    assert main(["submit", "05_monitoring", "-p", "read_postgres", "False", "--run-id", "ok-2"]) == 0
    assert "(unchanged)" in capsys.readouterr().err  # idempotent: one revision
    defs = batch.describe_job_definitions(jobDefinitionName="condvest-monitoring", status="ACTIVE")["jobDefinitions"]
    assert len(defs) == 1
    jd = defs[0]
    assert jd["containerProperties"]["jobRoleArn"].endswith("role/condvest-job-monitoring")
    _no_secret(json.dumps(defs, default=str))
    record = json.loads(
        open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()).get("_submissions/ok-1.json")
    )
    [job] = batch.describe_jobs(jobs=[record["jobs"][0]["id"]])["jobs"]
    assert job["jobQueue"].endswith("job-queue/condvest") and job["container"]["command"][-3:] == [
        "--run-id", "ok-1", "--no-progress"
    ]  # fmt: skip
    _no_secret(json.dumps(job, default=str))
    # moto marks the job done without running it; before the container ran, status has no run to show
    assert main(["status", "ok-1", "--poll", "0.1", "--timeout", "30"]) == 1
    assert "recorded no run" in capsys.readouterr().err
    r = run_container(aws, cloud, job["jobId"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert main(["status", "ok-1", "--poll", "0.1", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert f"batch job {job['jobId']}: SUCCEEDED" in out and "05_monitoring.ipynb ok" in out and "run ok-1 ok" in out
    assert sns_inbox.messages(wait=0.5) == []  # a job that is not a reported pipeline publishes nothing when ok

    # a failing notebook: non-zero through the entrypoint, one alert, and status exits with the failure
    assert main(["submit", "02_resample", "-p", "intervals", "3,x", "--run-id", "bad-1"]) == 0
    capsys.readouterr()
    record = json.loads(
        open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()).get("_submissions/bad-1.json")
    )
    r = run_container(aws, cloud, record["jobs"][0]["id"])
    assert r.returncode == 1
    failing_cell = "cell 3 (`from condvest.display import show_result`): ParameterError"
    assert f"job 02_resample failed at 02_resample.ipynb in {failing_cell}" in r.stderr
    [note] = sns_inbox.messages(expect=1)
    assert note["Subject"] == "condvest 02_resample failed, cell 3"
    assert f"run folder: {cloud['CONDVEST_LAKE_URI']}/runs/bad-1/" in note["Message"]
    _no_secret(json.dumps(note), r.stdout, r.stderr)
    assert main(["status", "bad-1", "--poll", "0.1", "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert "02_resample.ipynb failed in cell 3" in err and "run bad-1 failed" in err
    records = read_records(open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()))
    assert [(x["run_id"], x["status"]) for x in records] == [("ok-1", "ok"), ("bad-1", "failed")]


def test_a_sagemaker_processing_job_is_created_and_followed(cloud, aws, capsys):
    assert (
        main(["submit", "05_monitoring", "--backend", "sagemaker", "-p", "read_postgres", "False", "--run-id", "sm-1"])
        == 0
    )
    assert "submitted sm-1 to sagemaker (condvest-sm-1)" in capsys.readouterr().out
    job = aws.client("sagemaker").describe_processing_job(ProcessingJobName="condvest-sm-1")
    assert job["AppSpecification"]["ImageUri"] == cloud["CONDVEST_IMAGE"]
    assert job["AppSpecification"]["ContainerArguments"][:4] == ["05_monitoring", "-p", "read_postgres", "False"]
    assert job["RoleArn"] == cloud["CONDVEST_SAGEMAKER_ROLE_ARN"] and job["StoppingCondition"]["MaxRuntimeInSeconds"]
    _no_secret(json.dumps(job, default=str))
    assert main(["status", "sm-1", "--poll", "0.1", "--timeout", "30"]) == 1  # Completed, but nothing ran here
    assert "sagemaker job condvest-sm-1: Completed" in capsys.readouterr().out


def test_schedules_applied_twice_are_still_two(cloud, aws, capsys):
    assert main(["schedule", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    apis = [c["api"] for c in plan["calls"]]
    assert apis == ["batch.register_job_definition"] * 2 + ["scheduler.create_schedule|update_schedule"] * 2
    assert main(["schedule", "--apply"]) == 0
    assert main(["schedule", "--apply"]) == 0
    out = capsys.readouterr().out
    assert out.count("created") == 2 and out.count("updated") == 2 and "(unchanged)" in out
    scheduler = aws.client("scheduler")
    names = sorted(s["Name"] for s in scheduler.list_schedules()["Schedules"])
    assert names == ["condvest-daily", "condvest-weekly"]
    daily = scheduler.get_schedule(Name="condvest-daily")
    weekly = scheduler.get_schedule(Name="condvest-weekly")
    assert daily["ScheduleExpression"] == "cron(0 11 ? * MON-FRI *)" and daily["ScheduleExpressionTimezone"] == "UTC"
    assert weekly["ScheduleExpression"] == "cron(0 2 ? * SUN *)" and weekly["ScheduleExpressionTimezone"] == "UTC"
    target = daily["Target"]
    assert target["Arn"] == "arn:aws:scheduler:::aws-sdk:batch:submitJob"
    assert target["RoleArn"] == cloud["CONDVEST_SCHEDULER_ROLE_ARN"]
    submit = json.loads(target["Input"])
    assert submit["jobQueue"] == "condvest" and submit["jobDefinition"] == "condvest-daily"
    assert submit["containerOverrides"]["command"] == ["daily", "--no-progress"]
    assert json.loads(weekly["Target"]["Input"])["jobDefinition"] == "condvest-retention"
    batch = aws.client("batch")
    for name in ("condvest-daily", "condvest-retention"):
        assert len(batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]) == 1
    _no_secret(json.dumps([daily, weekly], default=str))
