"""``submit``, ``status`` and ``schedule`` against moto's server (Batch, SageMaker, Scheduler, Secrets Manager,
SNS, CloudWatch), with the lake on the SeaweedFS S3 server; the submitted container command is run here as a
separate process, with the environment its job definition gives it and the secrets Batch would resolve."""

from __future__ import annotations

import json
import os
import re

import pytest

from condvest.lake import bronze_history_key
from condvest.runs import read_records
from condvest.settings import Settings
from condvest.storage import open_store
from runner.__main__ import main
from tests.runner.cloud.conftest import ACCOUNT, no_secret, run_container

pytestmark = pytest.mark.slow


def test_dry_run_prints_the_exact_payloads_of_both_backends_and_no_secret(cloud, capsys, monkeypatch):
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
    # an init process as PID 1; room for DuckDB's spill beyond Fargate's 20 GiB; its memory limit sized from the
    # container; no public IP unless asked for
    assert props["linuxParameters"] == {"initProcessEnabled": True}
    assert props["ephemeralStorage"]["sizeInGiB"] > 20
    assert env["CONDVEST_DUCKDB_MEMORY_LIMIT"] == "3072MB"  # 3/4 of the task's 4096 MiB
    assert props["networkConfiguration"] == {"assignPublicIp": "DISABLED"}
    sub = submit["payload"]
    assert sub["jobQueue"] == "condvest" and sub["jobDefinition"] == "condvest-daily"
    assert sub["containerOverrides"]["command"] == [
        "daily", "-p", "max_backfill_days", "3", "--run-id", plan["run_id"], "--no-progress"
    ]  # fmt: skip
    no_secret(out)

    assert main(["submit", "02_resample", "--backend", "sagemaker", "--run-id", "r.1_x", "--dry-run"]) == 0
    out = capsys.readouterr().out
    [call] = json.loads(out)["calls"]
    pj = call["payload"]
    assert call["api"] == "sagemaker.create_processing_job"
    assert pj["ProcessingJobName"] == "condvest-r-1-x" and pj["RoleArn"] == cloud["CONDVEST_SAGEMAKER_ROLE_ARN"]
    assert pj["AppSpecification"]["ContainerEntrypoint"] == ["python", "-m", "runner", "job"]
    assert pj["AppSpecification"]["ContainerArguments"] == ["02_resample", "--run-id", "r.1_x", "--no-progress"]
    assert pj["StoppingCondition"]["MaxRuntimeInSeconds"] > 0
    # a resample job reads neither secret, so it gets neither ARN; the daily pipeline gets both
    assert not {"POLYGON_API_KEY_SECRET_ARN", "RDS_SECRET_ARN"} & pj["Environment"].keys()
    assert not {"POLYGON_API_KEY", "RDS_PASSWORD"} & pj["Environment"].keys()
    assert "NetworkConfig" not in pj  # no subnets given
    no_secret(out)
    monkeypatch.setenv("CONDVEST_SUBNETS", "subnet-a, subnet-b")
    monkeypatch.setenv("CONDVEST_SECURITY_GROUPS", "sg-x")
    assert main(["submit", "daily", "--backend", "sagemaker", "--run-id", "d.1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    pj = json.loads(out)["calls"][0]["payload"]
    assert pj["Environment"]["POLYGON_API_KEY_SECRET_ARN"] == cloud["POLYGON_API_KEY_SECRET_ARN"]
    assert pj["Environment"]["RDS_SECRET_ARN"] == cloud["RDS_SECRET_ARN"]
    assert pj["NetworkConfig"] == {"VpcConfig": {"Subnets": ["subnet-a", "subnet-b"], "SecurityGroupIds": ["sg-x"]}}
    no_secret(out)


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
    no_secret(json.dumps(defs, default=str))
    record = json.loads(
        open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()).get("_submissions/ok-1.json")
    )
    [job] = batch.describe_jobs(jobs=[record["jobs"][0]["id"]])["jobs"]
    assert job["jobQueue"].endswith("job-queue/condvest") and job["container"]["command"][-3:] == [
        "--run-id", "ok-1", "--no-progress"
    ]  # fmt: skip
    no_secret(json.dumps(job, default=str))
    # moto marks the job done without running it; before the container ran, status has no run to show
    assert main(["status", "ok-1", "--poll", "0.1", "--timeout", "30"]) == 1
    assert "recorded no run" in capsys.readouterr().err
    r = run_container(aws, cloud, job["jobId"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert main(["status", "ok-1", "--poll", "0.1", "--timeout", "30"]) == 0
    out = capsys.readouterr().out
    assert f"batch job {job['jobId']}: SUCCEEDED" in out and "05_monitoring.ipynb ok" in out and "run ok-1 ok" in out
    assert sns_inbox.messages(wait=0) == []  # a job that is not a reported pipeline publishes nothing when ok

    # a typo is refused before anything is submitted (the stage's own check), a failing notebook is not:
    # non-zero through the entrypoint, one alert, and status exits with the failure
    assert main(["submit", "02_resample", "-p", "intervals", "3,x", "--run-id", "typo-1"]) == 2
    assert "parameter intervals" in capsys.readouterr().err
    lake = open_store(cloud["CONDVEST_LAKE_URI"], Settings.from_env())
    lake.put(bronze_history_key("AAA"), b"not parquet")  # what the full rebuild reads first
    assert main(["submit", "02_resample", "-p", "force_full_resample", "True", "--run-id", "bad-1"]) == 0
    capsys.readouterr()
    record = json.loads(
        open_store(f"{cloud['CONDVEST_LAKE_URI']}/runs", Settings.from_env()).get("_submissions/bad-1.json")
    )
    r = run_container(aws, cloud, record["jobs"][0]["id"])
    assert r.returncode == 1
    # the cell, and the line that raised (the cell's first line while error records carry no ``line``)
    failing_cell = r"cell (\d+)(, line \d+)? \(`[^`\n]+`\): CorruptObject"
    failed = re.search(f"job 02_resample failed at 02_resample.ipynb in {failing_cell}", r.stderr)
    assert failed, r.stderr
    cell = failed.group(1)
    [note] = sns_inbox.messages(expect=1)
    assert note["Subject"] == f"condvest 02_resample failed, cell {cell}"
    assert f"run folder: {cloud['CONDVEST_LAKE_URI']}/runs/bad-1/" in note["Message"]
    job_id = record["jobs"][0]["id"]
    assert f"batch job: {job_id} (attempt 1)" in note["Message"]
    console = "https://us-east-1.console.aws.amazon.com"
    assert f"job: {console}/batch/home?region=us-east-1#jobs/detail/{job_id}" in note["Message"]
    assert f"logs: {console}/cloudwatch/home?region=us-east-1#logsV2:log-groups/log-group/" in note["Message"]
    bucket = cloud["CONDVEST_LAKE_URI"].removeprefix("s3://")
    page = f"page link: https://s3.console.aws.amazon.com/s3/object/{bucket}?region=us-east-1&prefix=runs/bad-1/"
    assert page + "02_resample.html" in note["Message"]
    no_secret(json.dumps(note), r.stdout, r.stderr)
    assert main(["status", "bad-1", "--poll", "0.1", "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert f"02_resample.ipynb failed in cell {cell}" in err and "run bad-1 failed" in err
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
    no_secret(json.dumps(job, default=str))
    assert main(["status", "sm-1", "--poll", "0.1", "--timeout", "30"]) == 1  # Completed, but nothing ran here
    assert "sagemaker job condvest-sm-1: Completed" in capsys.readouterr().out


def test_schedules_applied_twice_are_still_two(cloud, aws, capsys):
    assert main(["schedule", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    apis = [c["api"] for c in plan["calls"]]
    assert (
        apis
        == ["batch.register_job_definition"] * 2
        + ["sqs.create_queue", "cloudwatch.put_metric_alarm"]
        + ["scheduler.create_schedule|update_schedule"] * 2
    )
    assert main(["schedule", "--apply"]) == 0
    first = capsys.readouterr().out
    assert "(queue condvest-schedule-dead-letters, alarm condvest-missed-schedule created)" in first
    assert main(["schedule", "--apply"]) == 0
    out = first + capsys.readouterr().out
    assert out.count("created") == 3 and out.count("updated") == 2 and "(unchanged)" in out
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
    assert submit["JobQueue"] == "condvest" and submit["JobDefinition"] == "condvest-daily"
    assert submit["ContainerOverrides"]["Command"] == ["daily", "--no-progress"]
    # a universal target's input names SubmitJob's members as the SDKs do: PascalCase of the API model's names
    import botocore.session

    shape = botocore.session.get_session().get_service_model("batch").operation_model("SubmitJob").input_shape
    members = set(shape.members)
    assert all(k[0].isupper() and k[0].lower() + k[1:] in members for k in submit), sorted(submit)
    assert {"jobName", "jobQueue", "jobDefinition"} <= {k[0].lower() + k[1:] for k in submit}
    assert json.loads(weekly["Target"]["Input"])["JobDefinition"] == "condvest-retention"
    # a SubmitJob that still fails after its retries lands in the dead-letter queue, whose messages alarm
    sqs = aws.client("sqs")
    queue = sqs.get_queue_url(QueueName="condvest-schedule-dead-letters")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    for schedule in (daily, weekly):
        assert schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"] > 0
        assert schedule["Target"]["DeadLetterConfig"] == {"Arn": attributes["QueueArn"]}
    assert attributes["SqsManagedSseEnabled"] == "true"
    [alarm] = aws.client("cloudwatch").describe_alarms(AlarmNames=["condvest-missed-schedule"])["MetricAlarms"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName", "Value": "condvest-schedule-dead-letters"}]
    assert alarm["Threshold"] == 1 and alarm["AlarmActions"] == [cloud["CONDVEST_ALERT_TOPIC_ARN"]]
    batch = aws.client("batch")
    for name in ("condvest-daily", "condvest-retention"):
        assert len(batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]) == 1
    no_secret(json.dumps([daily, weekly], default=str))
