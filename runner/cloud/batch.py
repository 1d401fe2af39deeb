"""AWS Batch: the job definition of a group (registered idempotently), a job submission, and job states.

The job definition runs the image's entrypoint (``python -m runner job``) with the group's IAM role, the
plain environment of ``jobspec.environment`` and the secrets of ``jobspec.batch_secrets`` (Secrets Manager
references resolved by Batch, never values). Its retry strategy retries what the infrastructure did (a Spot
instance or task reclaimed, an image pull that failed) and never a notebook failure: every other exit ends
the job. A revision is registered only when the wanted definition differs from the latest active one (a
hash of the payload is kept in the tag ``condvest:spec``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from condvest.settings import Settings
from runner.cloud import jobspec
from runner.cloud.aws import require

#: retry what the infrastructure did; a notebook failure (any exit of the runner) is never retried
RETRY_STRATEGY = {
    "attempts": 3,
    "evaluateOnExit": [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onStatusReason": "Your Spot Task was interrupted*", "action": "RETRY"},
        {"onReason": "CannotPullContainerError*", "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"},
    ],
}
SPEC_TAG = "condvest:spec"
TERMINAL = ("SUCCEEDED", "FAILED")


def _default_target(group: str) -> str:
    return next(t for t, g in jobspec.GROUPS.items() if g == group)


def job_definition(group: str, settings: Settings) -> dict[str, Any]:
    """The ``register_job_definition`` payload of a group."""
    cloud = settings.cloud
    require(
        settings,
        [
            ("CONDVEST_IMAGE", cloud.image),
            ("CONDVEST_JOB_ROLE_ARN_PREFIX", cloud.job_role_arn_prefix),
            ("CONDVEST_EXECUTION_ROLE_ARN", cloud.execution_role_arn),
        ],
    )
    container: dict[str, Any] = {
        "image": cloud.image,
        "command": [_default_target(group), "--no-progress"],
        "jobRoleArn": f"{cloud.job_role_arn_prefix}{group}",
        "executionRoleArn": cloud.execution_role_arn,
        "resourceRequirements": [
            {"type": "VCPU", "value": f"{cloud.vcpus:g}"},
            {"type": "MEMORY", "value": str(cloud.memory_mib)},
        ],
        "environment": [{"name": k, "value": v} for k, v in sorted(jobspec.environment(settings).items())],
        "secrets": jobspec.batch_secrets(settings),
    }
    if cloud.platform == "FARGATE":
        container["networkConfiguration"] = {"assignPublicIp": "ENABLED"}
        container["fargatePlatformConfiguration"] = {"platformVersion": "LATEST"}
    payload: dict[str, Any] = {
        "jobDefinitionName": jobspec.job_definition_name(group, settings),
        "type": "container",
        "platformCapabilities": [cloud.platform],
        "containerProperties": container,
        "retryStrategy": RETRY_STRATEGY,
        "timeout": {"attemptDurationSeconds": cloud.job_timeout_s},
        "propagateTags": True,
    }
    spec = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]
    payload["tags"] = {SPEC_TAG: spec, "condvest:group": group}
    return payload


def submit_job(target: str, parameters: list[tuple[str, str]], run_id: str, settings: Settings) -> dict[str, Any]:
    """The ``submit_job`` payload of one run (the command after the image's entrypoint)."""
    require(settings, [("BATCH_JOB_QUEUE", settings.batch_job_queue)])
    name = jobspec.target_name(target)
    return {
        "jobName": run_id.replace(".", "_")[:128],
        "jobQueue": settings.batch_job_queue,
        "jobDefinition": jobspec.job_definition_name(jobspec.group_of(name), settings),
        "containerOverrides": {"command": jobspec.job_args(name, parameters, run_id)},
        "tags": {"condvest:run-id": run_id, "condvest:target": name},
        "propagateTags": True,
    }


def ensure_job_definition(batch: Any, payload: dict[str, Any]) -> tuple[str, bool]:
    """Register ``payload`` unless the latest active revision already is it: (ARN, registered now)."""
    name = payload["jobDefinitionName"]
    found: list[dict[str, Any]] = []
    for page in batch.get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE"):
        found += page["jobDefinitions"]
    if found:
        latest = max(found, key=lambda d: d["revision"])
        if (latest.get("tags") or {}).get(SPEC_TAG) == payload["tags"][SPEC_TAG]:
            return latest["jobDefinitionArn"], False
    return batch.register_job_definition(**payload)["jobDefinitionArn"], True


def states(batch: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    """``{id, name, status, reason, exit_code}`` of each job (a job Batch no longer knows: status UNKNOWN)."""
    found = {j["jobId"]: j for j in batch.describe_jobs(jobs=job_ids)["jobs"]} if job_ids else {}
    out = []
    for job_id in job_ids:
        j = found.get(job_id)
        if j is None:
            out.append({"id": job_id, "name": None, "status": "UNKNOWN", "reason": "not found", "exit_code": None})
            continue
        container = j.get("container") or {}
        out.append(
            {
                "id": job_id,
                "name": j.get("jobName"),
                "status": j["status"],
                "reason": j.get("statusReason") or container.get("reason") or "",
                "exit_code": container.get("exitCode"),
            }
        )
    return out
