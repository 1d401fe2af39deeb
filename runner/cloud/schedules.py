"""EventBridge Scheduler: the daily pipeline and the weekly archival, each a Batch SubmitJob on a cron.

Defaults are the seed's: ``cron(0 11 ? * MON-FRI *)`` for ``daily`` and ``cron(0 2 ? * SUN *)`` for ``weekly``,
in an explicit time zone (``CONDVEST_SCHEDULE_TIMEZONE``, default UTC: the seed's EventBridge rules ran in UTC);
``CONDVEST_DAILY_SCHEDULE`` and ``CONDVEST_WEEKLY_SCHEDULE`` change the expressions. ``apply`` creates a
schedule or updates it in place, so applying twice leaves the same two schedules. The target is Batch's
SubmitJob through Scheduler's universal target; its input is the SubmitJob request. Scheduler itself does not
retry (a failed job alerts instead), and a duplicated run stops "busy" on the lake lock.
"""

from __future__ import annotations

import json
from typing import Any

from condvest.settings import Settings
from runner.cloud import jobspec
from runner.cloud.aws import require

SUBMIT_JOB_TARGET = "arn:aws:scheduler:::aws-sdk:batch:submitJob"


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
            "RetryPolicy": {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 3600},
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
