"""infra/condvest.yaml: cfn-lint clean, and what it grants and wires matches what the runner does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from condvest.settings import CloudSettings
from runner.cloud import alerts, batch, jobspec, schedules
from runner.cloud.job import ALERTED_EXIT_CODES, EXIT_INTERRUPTED
from tests.fixtures.paths import ROOT

TEMPLATE = ROOT / "infra" / "condvest.yaml"


@pytest.fixture(scope="module")
def template() -> dict:
    from cfnlint.decode import cfn_yaml

    return json.loads(json.dumps(cfn_yaml.load(str(TEMPLATE)), default=str))


def test_cfn_lint_passes():
    r = subprocess.run(
        [str(Path(sys.executable).parent / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _grants(template: dict, role: str) -> set[tuple[str, str]]:
    """(action, resource) pairs a role's managed policies allow."""
    res = template["Resources"]
    out: set[tuple[str, str]] = set()
    for ref in res[role]["Properties"].get("ManagedPolicyArns", []):
        for st in res[ref["Ref"]]["Properties"]["PolicyDocument"]["Statement"]:
            for action in [st["Action"]] if isinstance(st["Action"], str) else st["Action"]:
                out.add((action, json.dumps(st["Resource"], sort_keys=True)))
    return out


def _policies(template: dict, role: str) -> set[str]:
    return {action for action, _ in _grants(template, role)}


def _resources(template: dict, role: str, action: str) -> set[str]:
    """The lake keys (``<prefix>*`` after the bucket) on which a role's managed policies allow ``action``."""
    out = set()
    for a, r in _grants(template, role):
        if a == action:
            for one in json.loads(r) if r.startswith("[") else [json.loads(r)]:
                out.add(json.dumps(one).split("${LakeBucket}", 1)[1].lstrip("/").rstrip('"}'))
    return out


def test_least_privilege_per_stage(template):
    res = template["Resources"]
    roles = {r["Properties"]["RoleName"]["Fn::Sub"].split("-job-")[1]: name for name, r in res.items()
             if r["Type"] == "AWS::IAM::Role" and "-job-" in str(r["Properties"].get("RoleName"))}  # fmt: skip
    assert set(roles) == set(jobspec.GROUPS.values())  # one role per job definition group
    writes = {g: _resources(template, role, "s3:PutObject") for g, role in roles.items()}
    deletes = {g: _resources(template, role, "s3:DeleteObject") for g, role in roles.items()}
    # every stage writes its run folder and the run index (the runner's policy), and only its own prefixes else
    for group in roles:
        assert "runs/*" in writes[group]
    assert writes["fetch"] - {"runs/*"} == {
        "bronze/raw_ohlcv/*",
        "bronze/_manifest/*",
        "bronze/_quarantine/*",
        "bronze/_batches/*",
        "bronze/_corporate_actions/*",
        "bronze/_suspect/*",
        "processing_metadata/shards/fetch/*",
    }
    # the fetcher cannot overwrite silver, checkpoints, resample state, the lock or the DMS export, nor delete
    # anything but its own shards' staging
    for key in ("silver/*", "processing_metadata/silver_*", "processing_metadata/_locks/*", "public/raw_ohlcv/*", "*"):
        assert key not in writes["fetch"]
    assert deletes["fetch"] == {"processing_metadata/shards/fetch/*"}
    assert {"silver/*", "processing_metadata/silver_*", "processing_metadata/_locks/*"} <= deletes["resample"]
    assert "bronze/_manifest/*" not in writes["resample"] and "public/raw_ohlcv/*" not in writes["resample"]
    assert deletes["migrate"] == {"public/raw_ohlcv/*"}  # the cleanup, and nothing else
    assert deletes["daily"] == deletes["fetch"] | deletes["resample"]
    for group in ("retention", "monitoring"):
        assert writes[group] - {"processing_metadata/postgres_sync.json"} == {"runs/*"} and deletes[group] == set()
    assert writes["retention"] == {"runs/*", "processing_metadata/postgres_sync.json"}  # what 04_retention sync found
    # no policy of a job writes or deletes the whole bucket
    for group in roles:
        assert "*" not in writes[group] | deletes[group]
    # SageMaker runs any stage but deletes nothing, and its jobs get network interfaces in the stack's VPC
    assert _resources(template, "SageMakerRole", "s3:DeleteObject") == set()
    inline = json.dumps(res["SageMakerRole"]["Properties"]["Policies"])
    assert "ec2:CreateNetworkInterface" in inline and "s3:DeleteObject" not in inline


def test_job_definitions_get_only_their_groups_secrets(template):
    res = template["Resources"]
    groups = {"${Prefix}-stack-daily": "daily", "${Prefix}-stack-retention": "retention"}
    for d in (r for r in res.values() if r["Type"] == "AWS::Batch::JobDefinition"):
        group = groups[d["Properties"]["JobDefinitionName"]["Fn::Sub"]]
        names = {x["Name"] for x in d["Properties"]["ContainerProperties"]["Secrets"]}
        assert names == {x["name"] for x in _runner_secrets(group)}
    assert "POLYGON_API_KEY" not in {x["name"] for x in _runner_secrets("retention")}
    assert "POLYGON_API_KEY" in {x["name"] for x in _runner_secrets("daily")}
    for group in ("resample", "migrate"):
        assert _runner_secrets(group) == []


def test_logs_network_and_resources_of_the_job_definitions(template):
    res, params = template["Resources"], template["Parameters"]
    assert params["LogRetentionDays"]["Default"] == 90
    group = res["JobLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"} and "KmsKeyId" in group
    assert set(params["AssignPublicIp"]["AllowedValues"]) == {"ENABLED", "DISABLED"}
    for d in (r for r in res.values() if r["Type"] == "AWS::Batch::JobDefinition"):
        props = d["Properties"]["ContainerProperties"]
        logs = props["LogConfiguration"]
        assert logs["LogDriver"] == "awslogs" and logs["Options"]["awslogs-group"] == {"Ref": "JobLogGroup"}
        assert props["NetworkConfiguration"]["AssignPublicIp"] == {"Ref": "AssignPublicIp"}
        assert props["LinuxParameters"]["InitProcessEnabled"] is True
        assert props["EphemeralStorage"]["SizeInGiB"] > 20  # more than Fargate's default
        env = {e["Name"]: e["Value"] for e in props["Environment"]}
        assert env["CONDVEST_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}
    assert res["AlertTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "AlertKey"}
    assert res["AlertKey"]["Properties"]["EnableKeyRotation"] is True
    # a queue that falls back: Batch moves a job to a queue's next environment only when the first is at its maximum
    # vCPUs, so Spot and on-demand are two queues; the Spot queue cancels a job Spot could not place within
    # SpotWaitSeconds (the fallback function submits it again on demand), the on-demand queue after RunnableSeconds
    # (no capacity anywhere: the failure rule reports it); a misconfiguration is cancelled after RunnableSeconds
    capacity = "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"
    for queue, environment, wait in (
        ("JobQueue", "SpotEnvironment", "SpotWaitSeconds"),
        ("OnDemandQueue", "OnDemandEnvironment", "RunnableSeconds"),
    ):
        props = res[queue]["Properties"]
        assert props["ComputeEnvironmentOrder"] == [{"Order": 1, "ComputeEnvironment": {"Ref": environment}}]
        limits = props["JobStateTimeLimitActions"]
        assert {x["State"] for x in limits} == {"RUNNABLE"} and {x["Action"] for x in limits} == {"CANCEL"}
        for x in limits:
            assert x["MaxTimeSeconds"] == {"Ref": wait if x["Reason"] == capacity else "RunnableSeconds"}
        assert capacity in {x["Reason"] for x in limits}
    assert res["SpotEnvironment"]["Properties"]["ComputeResources"]["Type"] == "FARGATE_SPOT"
    assert res["OnDemandEnvironment"]["Properties"]["ComputeResources"]["Type"] == "FARGATE"
    fallback = res["SpotFallbackFunction"]["Properties"]
    assert fallback["Environment"]["Variables"]["FALLBACK_QUEUE"] == {"Ref": "OnDemandQueue"}
    rule = res["SpotFallbackRule"]["Properties"]
    assert rule["EventPattern"]["detail"]["jobQueue"] == [{"Ref": "JobQueue"}]
    assert rule["Targets"][0]["Arn"] == {"Fn::GetAtt": ["SpotFallbackFunction", "Arn"]}


def test_the_template_sizes_its_job_definitions_as_the_runner_does(template):
    """vCPUs, memory, ephemeral storage and DuckDB's limit of the daily and weekly definitions are the runner's
    (``jobspec.SIZES``), so the scheduled jobs fit their work as submitted ones do."""
    res = template["Resources"]
    for name, group in (("DailyJobDefinition", "daily"), ("RetentionJobDefinition", "retention")):
        props = res[name]["Properties"]["ContainerProperties"]
        size = jobspec.SIZES[group]
        wanted = [{k[0].upper() + k[1:]: v for k, v in r.items()} for r in size.resource_requirements()]
        assert props["ResourceRequirements"] == wanted
        assert props["EphemeralStorage"]["SizeInGiB"] == size.storage_gib
        env = {e["Name"]: e["Value"] for e in props["Environment"]}
        assert env["CONDVEST_DUCKDB_MEMORY_LIMIT"] == jobspec.duckdb_memory_limit(size)


def test_job_definitions_get_secrets_from_secrets_manager_only(template):
    res = template["Resources"]
    defs = [r for r in res.values() if r["Type"] == "AWS::Batch::JobDefinition"]
    names = {d["Properties"]["JobDefinitionName"]["Fn::Sub"] for d in defs}
    assert names == {"${Prefix}-stack-daily", "${Prefix}-stack-retention"}
    # the runner registers <prefix>-<group> (tagged as its own) and refuses a definition of that name it did not
    # register: the stack's definitions have other names, so `runner submit daily` works beside the stack
    assert not names & {f"${{Prefix}}-{group}" for group in jobspec.SIZES}
    for name in ("DailySchedule", "WeeklySchedule"):  # the stack's schedules submit the stack's definitions
        submit = json.loads(res[name]["Properties"]["Target"]["Input"]["Fn::Sub"])
        assert submit["JobDefinition"] in names
    for d in defs:
        props = d["Properties"]["ContainerProperties"]
        names = {e["Name"] for e in props["Environment"]}
        assert not names & {"POLYGON_API_KEY", "RDS_PASSWORD", "CONDVEST_PG_DSN"}
        retry = d["Properties"]["RetryStrategy"]["EvaluateOnExit"]
        assert [{k[0].lower() + k[1:]: v for k, v in e.items()} for e in retry] == [
            {k: v for k, v in e.items()} for e in batch.RETRY_STRATEGY["evaluateOnExit"]
        ]


def _runner_secrets(group: str) -> list[dict[str, str]]:
    from condvest.settings import Settings

    arn = "arn:aws:secretsmanager:us-east-1:1:secret:x"
    return jobspec.batch_secrets(Settings(polygon_api_key_secret_arn=arn, rds_secret_arn=arn), group)


def test_schedules_alarm_and_failure_rule(template):
    res = template["Resources"]
    params = template["Parameters"]
    defaults = CloudSettings()
    assert params["DailyScheduleExpression"]["Default"] == defaults.daily_schedule == "cron(0 11 ? * MON-FRI *)"
    assert params["WeeklyScheduleExpression"]["Default"] == defaults.weekly_schedule == "cron(0 2 ? * SUN *)"
    for name in ("DailySchedule", "WeeklySchedule"):
        props = res[name]["Properties"]
        assert props["ScheduleExpressionTimezone"] == {"Ref": "ScheduleTimezone"}
        assert props["Target"]["Arn"] == schedules.SUBMIT_JOB_TARGET
    alarm = res["FailedRunsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ({"Ref": "MetricsNamespace"}, "FailedRuns")
    assert params["MetricsNamespace"]["Default"] == defaults.metrics_namespace
    runner = json.dumps(res["RunnerPolicy"]["Properties"]["PolicyDocument"])
    assert '"cloudwatch:namespace": {"Ref": "MetricsNamespace"}' in runner
    assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
    # not a second copy of each failure's own message: failures on two consecutive days
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (86400, 2, 2)
    # silence noticed: no daily success for 26 hours alarms, missing data counting as a miss
    missed = res["MissedDailyAlarm"]["Properties"]
    assert missed["TreatMissingData"] == "breaching" and missed["ComparisonOperator"] == "LessThanThreshold"
    [stat] = [m["MetricStat"] for m in missed["Metrics"] if "MetricStat" in m]
    assert stat["Metric"]["MetricName"] == alerts.HEARTBEAT
    assert stat["Metric"]["Namespace"] == {"Ref": "MetricsNamespace"}
    assert stat["Period"] * missed["EvaluationPeriods"] == 26 * 3600 == stat["Period"] * missed["DatapointsToAlarm"]
    # a schedule that cannot submit retries, then lands in a dead-letter queue whose messages alarm
    for name in ("DailySchedule", "WeeklySchedule"):
        target = res[name]["Properties"]["Target"]
        assert target["RetryPolicy"]["MaximumRetryAttempts"] > 0
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ScheduleDeadLetterQueue", "Arn"]}}
    dlq = res["MissedScheduleAlarm"]["Properties"]
    assert dlq["MetricName"] == "ApproximateNumberOfMessagesVisible" and dlq["AlarmActions"] == [{"Ref": "AlertTopic"}]
    # the rule: only final failures the runner did not report, not array parents, not never-started dependents
    rule = res["JobDiedRule"]["Properties"]
    detail = rule["EventPattern"]["detail"]
    assert detail["status"] == ["FAILED"]
    [_, other] = detail["$or"]
    assert other["container"]["exitCode"] == [{"anything-but": list(ALERTED_EXIT_CODES)}]
    assert EXIT_INTERRUPTED not in ALERTED_EXIT_CODES  # a stop in Batch: Batch retries or the rule reports
    assert detail["arrayProperties"] == {"size": [{"exists": False}]}
    assert detail["statusReason"] == [{"anything-but": {"prefix": "Dependent Job failed"}}]
    assert rule["Targets"][0]["Arn"] == {"Ref": "AlertTopic"}
    text = json.dumps(rule["Targets"][0]["InputTransformer"])
    assert "<id>" in text and "<stream>" in text and "console.aws.amazon.com/batch" in text
    outputs = {o["Description"] for o in template["Outputs"].values()}
    assert outputs >= {"BATCH_JOB_QUEUE", "CONDVEST_ALERT_TOPIC_ARN", "CONDVEST_JOB_ROLE_ARN_PREFIX"}


def test_checkov_finds_no_failed_check():
    checkov = Path(sys.executable).parent / "checkov"
    if not checkov.exists():
        pytest.skip("checkov is not installed (pip install -e '.[test]' installs it)")
    r = subprocess.run(
        [str(checkov), "-f", str(TEMPLATE), "--framework", "cloudformation", "--quiet", "--compact", "--skip-download",
         "-o", "json"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    summary = json.loads(r.stdout)["summary"]
    assert summary["failed"] == 0 and summary["parsing_errors"] == 0, r.stdout[-3000:]
    assert summary["passed"] > 100


def _resolved(value, refs: dict[str, str]):
    """``value`` with each ``{"Ref": name}`` of ``refs`` replaced by its value."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and value["Ref"] in refs:
            return refs[value["Ref"]]
        return {k: _resolved(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolved(v, refs) for v in value]
    return value


def test_the_failure_rules_report_only_what_the_runner_did_not(template, aws):
    """The failure rule's and the Spot fallback's patterns on an EventBridge bus (moto's), each delivering to a
    queue, fed the Batch events of failures in the Spot and the on-demand queue: each failure goes to one of them
    (or to none when the runner reported it or it needs no report), never to both."""
    spot = "arn:aws:batch:us-east-1:123456789012:job-queue/condvest"
    ondemand = spot + "-ondemand"
    refs = {"JobQueue": spot, "OnDemandQueue": ondemand}
    events, sqs = aws.client("events"), aws.client("sqs")
    inboxes = {}
    for rule in ("JobDiedRule", "SpotFallbackRule"):
        pattern = _resolved(template["Resources"][rule]["Properties"]["EventPattern"], refs)
        inbox = sqs.create_queue(QueueName=f"{rule}-inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name=rule, EventPattern=json.dumps(pattern), State="ENABLED")
        events.put_targets(Rule=rule, Targets=[{"Id": "inbox", "Arn": arn}])
        inboxes[rule] = inbox
    died = "Essential container in task exited"
    rule, fallback = "JobDiedRule", "SpotFallbackRule"
    cases = {  # name: (queue, detail, where it goes)
        "oom": (spot, {"statusReason": died, "container": {"exitCode": 137}}, rule),  # the runner never spoke
        "oom-on-demand": (ondemand, {"statusReason": died, "container": {"exitCode": 137}}, rule),
        "stopped-last-attempt": (spot, {"statusReason": died, "container": {"exitCode": 130}}, rule),
        # Spot had no capacity: the fallback moves it (or reports it); on demand too: no capacity anywhere
        "spot-no-capacity": (spot, {"statusReason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - cancelled"}, fallback),
        "no-capacity-anywhere": (ondemand, {"statusReason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"}, rule),
        "image-not-pulled": (spot, {"statusReason": "CannotPullContainerError: denied", "container": {}}, fallback),
        "image-not-pulled-on-demand": (ondemand, {"statusReason": "CannotPullContainerError", "container": {}}, rule),
        "child-oom": (
            spot,
            {"statusReason": died, "container": {"exitCode": 137}, "arrayProperties": {"index": 1}},
            rule,
        ),
        "child-no-capacity": (spot, {"statusReason": "CAPACITY:x", "arrayProperties": {"index": 1}}, fallback),
        # an array job's parent (its failed child is reported); a commit that never started (its array failed)
        "array-parent": (spot, {"statusReason": "Array Child Job failed", "arrayProperties": {"size": 3}}, None),
        "dependent": (spot, {"statusReason": "Dependent Job failed"}, None),
        "dependent-on-demand": (ondemand, {"statusReason": "Dependent Job failed"}, None),
        "succeeded": (spot, {"status": "SUCCEEDED", "statusReason": died, "container": {"exitCode": 0}}, None),
        "other-queue": (spot + "-x", {"statusReason": died, "container": {"exitCode": 137}}, None),
    }
    for code in ALERTED_EXIT_CODES:  # the runner published these itself
        for queue in (spot, ondemand):
            cases[f"runner-{code}-{queue[-3:]}"] = (
                queue,
                {"statusReason": died, "container": {"exitCode": code}},
                None,
            )
    entries = [
        {
            "Source": "aws.batch",
            "DetailType": "Batch Job State Change",
            "Detail": json.dumps({"jobQueue": queue, "jobName": name, "jobId": name, "status": "FAILED", **detail}),
        }
        for name, (queue, detail, _) in cases.items()
    ]
    for i in range(0, len(entries), 10):
        assert events.put_events(Entries=entries[i : i + 10])["FailedEntryCount"] == 0
    for name, inbox in inboxes.items():
        got: set[str] = set()
        for _ in range(5):
            r = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            got |= {json.loads(m["Body"])["detail"]["jobName"] for m in r.get("Messages", [])}
        assert got == {case for case, (_, _, wanted) in cases.items() if wanted == name}, name


def test_the_spot_fallback_moves_a_job_spot_could_not_place_and_reports_the_others(
    template, aws, sns_inbox, monkeypatch
):
    """The template's inline function run here against moto: fed the FAILED event of a job the Spot queue cancelled
    for want of capacity, it submits the same job to the on-demand queue; a shard, or a job cancelled for another
    reason, is reported to the alert topic instead, with what to do."""
    from tests.fixtures.aws import batch_queue

    batch = aws.client("batch")
    spot, ondemand = batch_queue(aws, "condvest"), batch_queue(aws, "condvest-ondemand")
    ondemand_arn = batch.describe_job_queues(jobQueues=[ondemand])["jobQueues"][0]["jobQueueArn"]
    for k, v in {"FALLBACK_QUEUE": ondemand_arn, "FALLBACK_QUEUE_NAME": ondemand, "LOG_GROUP": "/condvest/jobs",
                 "TOPIC_ARN": sns_inbox.topic_arn}.items():  # fmt: skip
        monkeypatch.setenv(k, v)
    container = {"image": "condvest:test", "command": ["daily", "--no-progress"], "resourceRequirements": [
        {"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "4096"}]}  # fmt: skip
    batch.register_job_definition(jobDefinitionName="condvest-daily", type="container", containerProperties=container)
    command = ["daily", "-p", "as_of", "2026-12-04", "--run-id", "d-1", "--no-progress"]
    submitted = batch.submit_job(
        jobName="d-1",
        jobQueue=spot,
        jobDefinition="condvest-daily",
        containerOverrides={
            "command": command,
            "environment": [{"name": "CONDVEST_DUCKDB_MEMORY_LIMIT", "value": "3072MB"}],
        },
        tags={"condvest:run-id": "d-1"},
        timeout={"attemptDurationSeconds": 3600},
    )
    [job] = batch.describe_jobs(jobs=[submitted["jobId"]])["jobs"]
    code = template["Resources"]["SpotFallbackFunction"]["Properties"]["Code"]["ZipFile"]
    function: dict = {}
    exec(compile(code, "index.py", "exec"), function)

    cancelled = {**job, "status": "FAILED", "statusReason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"}
    moved_id = function["handler"]({"detail": cancelled})
    [moved] = batch.describe_jobs(jobs=[moved_id])["jobs"]
    assert moved["jobQueue"] == ondemand_arn and moved["jobName"] == "d-1"
    assert moved["container"]["command"] == command and moved["timeout"] == {"attemptDurationSeconds": 3600}
    assert moved["jobDefinition"] == job["jobDefinition"]
    env = {e["name"]: e["value"] for e in moved["container"]["environment"]}
    assert env["CONDVEST_DUCKDB_MEMORY_LIMIT"] == "3072MB"
    assert moved["tags"] == {"condvest:run-id": "d-1", "condvest:moved-from": job["jobId"]}
    assert sns_inbox.messages(wait=0.5) == []  # moved, not reported

    # a shard (its array job and the commit waiting on it cannot be moved): reported, with the way to re-run it
    shard = {**cancelled, "jobId": job["jobId"] + ":2", "arrayProperties": {"index": 2}}
    assert function["handler"]({"detail": shard}) is None
    [note] = sns_inbox.messages(expect=1)
    assert f"Batch job id {job['jobId']}:2 (shard 2)" in note["Message"]
    assert "python -m runner rerun RUN --shard I --queue condvest-ondemand" in note["Message"]
    # a job blocked by a misconfiguration: reported, not moved
    wrong = {**cancelled, "statusReason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"}
    assert function["handler"]({"detail": wrong}) is None
    [note] = sns_inbox.messages(expect=1)
    assert "FAILED before it started: MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT" in note["Message"]
    assert len(batch.list_jobs(jobQueue=ondemand)["jobSummaryList"]) == 1
