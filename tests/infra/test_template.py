"""infra/condvest.yaml: cfn-lint clean, and what it grants and wires matches what the runner does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from condvest.settings import CloudSettings
from runner.cloud import batch, jobspec, schedules
from runner.cloud.job import RUNNER_EXIT_CODES
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


def test_least_privilege_per_stage(template):
    res = template["Resources"]
    roles = {r["Properties"]["RoleName"]["Fn::Sub"].split("-job-")[1]: name for name, r in res.items()
             if r["Type"] == "AWS::IAM::Role" and "-job-" in str(r["Properties"].get("RoleName"))}  # fmt: skip
    assert set(roles) == set(jobspec.GROUPS.values())  # one role per job definition group
    # the fetcher deletes nothing but a sharded backfill's own staging objects
    deletes = {r for a, r in _grants(template, roles["fetch"]) if a == "s3:DeleteObject"}
    assert deletes == {json.dumps({"Fn::Sub": "arn:${AWS::Partition}:s3:::${LakeBucket}/processing_metadata/shards/*"})}
    assert "s3:PutObject" in _policies(template, roles["fetch"])
    for group in ("resample", "migrate", "daily"):
        assert "s3:DeleteObject" in _policies(template, roles[group])
    for group in ("retention", "monitoring"):
        assert "s3:DeleteObject" not in _policies(template, roles[group])
    # the retention and monitoring jobs write nothing in the lake but their run folder
    runner = res["RunnerPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert any(st["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${LakeBucket}/runs/*"} for st in runner)
    for group in ("retention", "monitoring"):
        refs = {r["Ref"] for r in res[roles[group]]["Properties"]["ManagedPolicyArns"]}
        assert "LakeReadWritePolicy" not in refs and "LakeDeletePolicy" not in refs


def test_job_definitions_get_secrets_from_secrets_manager_only(template):
    res = template["Resources"]
    defs = [r for r in res.values() if r["Type"] == "AWS::Batch::JobDefinition"]
    assert {d["Properties"]["JobDefinitionName"]["Fn::Sub"] for d in defs} == {"${Prefix}-daily", "${Prefix}-retention"}
    for d in defs:
        props = d["Properties"]["ContainerProperties"]
        names = {e["Name"] for e in props["Environment"]}
        assert not names & {"POLYGON_API_KEY", "RDS_PASSWORD", "CONDVEST_PG_DSN"}
        assert {s["Name"] for s in props["Secrets"]} == {s["name"] for s in _runner_secrets()}
        retry = d["Properties"]["RetryStrategy"]["EvaluateOnExit"]
        assert [{k[0].lower() + k[1:]: v for k, v in e.items()} for e in retry] == [
            {k: v for k, v in e.items()} for e in batch.RETRY_STRATEGY["evaluateOnExit"]
        ]


def _runner_secrets() -> list[dict[str, str]]:
    from condvest.settings import Settings

    arn = "arn:aws:secretsmanager:us-east-1:1:secret:x"
    return jobspec.batch_secrets(Settings(polygon_api_key_secret_arn=arn, rds_secret_arn=arn))


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
    assert (alarm["Namespace"], alarm["MetricName"]) == (defaults.metrics_namespace, "FailedRuns")
    assert alarm["AlarmActions"] == [{"Ref": "AlertTopic"}]
    # not a second copy of each failure's own message: failures on two consecutive days
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (86400, 2, 2)
    rule = res["JobDiedRule"]["Properties"]
    assert rule["EventPattern"]["detail"]["status"] == ["FAILED"]
    [_, other] = rule["EventPattern"]["detail"]["$or"]
    assert other["container"]["exitCode"] == [{"anything-but": list(RUNNER_EXIT_CODES)}]
    assert rule["Targets"][0]["Arn"] == {"Ref": "AlertTopic"}
    outputs = {o["Description"] for o in template["Outputs"].values()}
    assert outputs >= {"BATCH_JOB_QUEUE", "CONDVEST_ALERT_TOPIC_ARN", "CONDVEST_JOB_ROLE_ARN_PREFIX"}
