"""EventBridge Scheduler: the daily pipeline and the weekly archival, each a Batch SubmitJob on a cron.

Defaults are the seed's: ``cron(0 11 ? * MON-FRI *)`` for ``daily`` and ``cron(0 2 ? * SUN *)`` for ``weekly``,
in an explicit time zone (``CONDVEST_SCHEDULE_TIMEZONE``, default UTC: the seed's EventBridge rules ran in UTC);
``CONDVEST_DAILY_SCHEDULE`` and ``CONDVEST_WEEKLY_SCHEDULE`` change the expressions. ``apply`` creates a
schedule or updates it in place, so applying twice leaves the same two schedules. The target is Batch's
SubmitJob through Scheduler's universal target; its input is the SubmitJob request. A SubmitJob that fails is
retried (``RETRY_ATTEMPTS``; a job that ran and failed is never resubmitted), and what still fails goes to the
dead-letter queue ``<prefix>-schedule-dead-letters`` (SQS), whose alarm ``<prefix>-missed-schedule`` sends any
message in it to the alert topic, as the template's schedules do: ``apply`` creates the queue and the alarm when
they do not exist (the template's, of the same names, are used as they are). A duplicated run stops "busy" on the
lake lock, and the template's no-daily-success alarm notices a schedule that never fired. An expression or time
zone Scheduler would refuse is refused before anything is called.
"""

from __future__ import annotations

import json
import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from condvest.errors import ConfigError
from condvest.settings import Settings
from runner.cloud import jobspec
from runner.cloud.aws import require

SUBMIT_JOB_TARGET = "arn:aws:scheduler:::aws-sdk:batch:submitJob"
#: what Scheduler accepts: cron() with six fields, rate(N unit) or at(yyyy-mm-ddThh:mm:ss)
_EXPRESSION = re.compile(
    r"^(cron\((\S+\s+){5}\S+\)|rate\([1-9]\d*\s+(minute|minutes|hour|hours|day|days)\)"
    r"|at\(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\))$"
)
#: a schedule whose SubmitJob failed is retried this often before it goes to the dead-letter queue
RETRY_ATTEMPTS = 5
#: in a dry run's schedule payloads, where the dead-letter queue's ARN goes (known once the queue exists)
DEAD_LETTER_REF = "{{arn of sqs queue %s}}"
DEAD_LETTER_RETENTION_S = 14 * 86400  # SQS's longest: two weeks to look at what did not submit


def check_schedule(pipeline: str, expression: str, timezone: str) -> None:
    """``ConfigError`` for an expression or a time zone Scheduler would refuse (``--dry-run`` refuses it too)."""
    variable = f"CONDVEST_{pipeline.upper()}_SCHEDULE"
    if not _EXPRESSION.match(expression.strip()):
        raise ConfigError(
            f"expected cron(m h dom mon dow year), rate(N minutes|hours|days) or at(...), got {expression!r}",
            variable=variable,
        )
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {timezone!r}", variable="CONDVEST_SCHEDULE_TIMEZONE") from None


def schedules(settings: Settings) -> list[tuple[str, str]]:
    """(pipeline, expression) of each schedule."""
    return [("daily", settings.cloud.daily_schedule), ("weekly", settings.cloud.weekly_schedule)]


def schedule_name(pipeline: str, settings: Settings) -> str:
    return f"{settings.cloud.job_definition_prefix}-{pipeline}"


def dead_letter_name(settings: Settings) -> str:
    """The schedules' dead-letter queue: the template's ``ScheduleDeadLetterQueue`` has the same name."""
    return f"{settings.cloud.job_definition_prefix}-schedule-dead-letters"


def dead_letter_queue(settings: Settings) -> dict[str, Any]:
    """The ``create_queue`` payload of the dead-letter queue (encrypted with SQS's own key)."""
    attributes = {"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_S), "SqsManagedSseEnabled": "true"}
    return {"QueueName": dead_letter_name(settings), "Attributes": attributes}


def missed_schedule_alarm(settings: Settings) -> dict[str, Any]:
    """The ``put_metric_alarm`` payload: any message in the dead-letter queue alarms (the template's
    ``MissedScheduleAlarm``), to the alert topic when one is set."""
    topic = [settings.cloud.alert_topic_arn] if settings.cloud.alert_topic_arn else []
    return {
        "AlarmName": f"{settings.cloud.job_definition_prefix}-missed-schedule",
        "AlarmDescription": "A condvest schedule could not submit its job (its event is in the dead-letter queue).",
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateNumberOfMessagesVisible",
        "Dimensions": [{"Name": "QueueName", "Value": dead_letter_name(settings)}],
        "Statistic": "Maximum",
        "Period": 300,
        "EvaluationPeriods": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "notBreaching",
        "AlarmActions": topic,
    }


def ensure_dead_letters(sqs: Any, cloudwatch: Any, settings: Settings) -> tuple[str, list[str]]:
    """The dead-letter queue's ARN, the queue and its alarm created when missing (those of the template's stack,
    same names, are left as they are); returns (ARN, what was created)."""
    from botocore.exceptions import ClientError

    created = []
    payload = dead_letter_queue(settings)
    try:
        url = sqs.get_queue_url(QueueName=payload["QueueName"])["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" not in str(exc.response.get("Error", {}).get("Code")):
            raise
        url = sqs.create_queue(**payload)["QueueUrl"]
        created.append(f"queue {payload['QueueName']}")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    alarm = missed_schedule_alarm(settings)
    if not cloudwatch.describe_alarms(AlarmNames=[alarm["AlarmName"]])["MetricAlarms"]:
        cloudwatch.put_metric_alarm(**alarm)
        created.append(f"alarm {alarm['AlarmName']}")
    return arn, created


def schedule_payload(
    pipeline: str, expression: str, settings: Settings, dead_letter_arn: str | None = None
) -> dict[str, Any]:
    """The ``create_schedule``/``update_schedule`` payload of one pipeline's schedule (``dead_letter_arn``: the
    dead-letter queue's ARN, ``DEAD_LETTER_REF`` until it is known)."""
    require(
        settings,
        [
            ("BATCH_JOB_QUEUE", settings.batch_job_queue),
            ("CONDVEST_SCHEDULER_ROLE_ARN", settings.cloud.scheduler_role_arn),
        ],
    )
    check_schedule(pipeline, expression, settings.cloud.schedule_timezone)
    name = schedule_name(pipeline, settings)
    # a universal target's input names the API's members as the AWS SDKs do (PascalCase), not as Batch's own
    # JSON does (jobName): Scheduler passes it to the SDK call
    submit = {
        "JobName": name,
        "JobQueue": settings.batch_job_queue,
        "JobDefinition": jobspec.job_definition_name(jobspec.group_of(pipeline), settings),
        "ContainerOverrides": {"Command": [pipeline, "--no-progress"]},
        "Tags": {"condvest:target": pipeline, "condvest:schedule": name},
        "PropagateTags": True,
    }
    return {
        "Name": name,
        "GroupName": settings.cloud.schedule_group,
        "Description": f"condvest {pipeline} pipeline (python -m runner job {pipeline})",
        "ScheduleExpression": expression,
        "ScheduleExpressionTimezone": settings.cloud.schedule_timezone,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "State": "ENABLED",
        "Target": {
            "Arn": SUBMIT_JOB_TARGET,
            "RoleArn": settings.cloud.scheduler_role_arn,
            "Input": json.dumps(submit, sort_keys=True),
            "RetryPolicy": {"MaximumRetryAttempts": RETRY_ATTEMPTS, "MaximumEventAgeInSeconds": 3600},
            "DeadLetterConfig": {"Arn": dead_letter_arn or DEAD_LETTER_REF % dead_letter_name(settings)},
        },
    }


def apply(scheduler: Any, payload: dict[str, Any]) -> str:
    """Create the schedule or update it in place; returns "created" or "updated"."""
    from botocore.exceptions import ClientError

    try:
        scheduler.get_schedule(Name=payload["Name"], GroupName=payload["GroupName"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
        scheduler.create_schedule(**payload)
        return "created"
    scheduler.update_schedule(**payload)
    return "updated"
