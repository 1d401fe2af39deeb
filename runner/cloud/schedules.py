"""EventBridge Scheduler: the daily pipeline and the weekly archival, each a Batch SubmitJob on a cron.

Defaults are the seed's: ``cron(0 11 ? * MON-FRI *)`` for ``daily`` and ``cron(0 2 ? * SUN *)`` for ``weekly``,
in an explicit time zone (``CONDVEST_SCHEDULE_TIMEZONE``, default UTC: the seed's EventBridge rules ran in UTC);
``CONDVEST_DAILY_SCHEDULE`` and ``CONDVEST_WEEKLY_SCHEDULE`` change the expressions. ``apply`` creates a
schedule or updates it in place, so applying twice leaves the same two schedules. The target is Batch's
SubmitJob through Scheduler's universal target; its input is the SubmitJob request. A SubmitJob that fails is
retried (``RETRY_ATTEMPTS``; a job that ran and failed is never resubmitted), a duplicated run stops "busy" on the
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
#: a schedule whose SubmitJob failed is retried this often before it goes to the dead-letter queue (if any)
RETRY_ATTEMPTS = 5


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


def schedule_payload(pipeline: str, expression: str, settings: Settings) -> dict[str, Any]:
    """The ``create_schedule``/``update_schedule`` payload of one pipeline's schedule."""
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
