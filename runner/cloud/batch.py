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

from condvest.errors import ConfigError
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
MOVED_TO_TAG = "condvest:moved-to"
TERMINAL = ("SUCCEEDED", "FAILED")
#: Fargate's vCPU values and, for each, its memory range in MiB and step (what RegisterJobDefinition accepts)
FARGATE_SIZES = {
    0.25: (512, 2048, None),
    0.5: (1024, 4096, 1024),
    1.0: (2048, 8192, 1024),
    2.0: (4096, 16384, 1024),
    4.0: (8192, 30720, 1024),
    8.0: (16384, 61440, 4096),
    16.0: (32768, 122880, 8192),
}
MIN_TIMEOUT_S = 60  # Batch refuses a shorter attemptDurationSeconds


def check_resources(settings: Settings, role: str | None = None) -> None:
    """``ConfigError`` for what Batch would refuse: a timeout under 60 s, and (``role``: one of
    ``jobspec.SIZES``, every one when ``None``) a Fargate vCPU/memory pair or ephemeral storage it does not offer,
    naming the variable that set it (so ``--dry-run`` refuses it too)."""
    cloud = settings.cloud
    if cloud.job_timeout_s < MIN_TIMEOUT_S:
        raise ConfigError(
            f"Batch needs at least {MIN_TIMEOUT_S} s, got {cloud.job_timeout_s}", variable="CONDVEST_JOB_TIMEOUT_S"
        )
    if cloud.platform != "FARGATE":
        return
    for one in [role] if role else list(jobspec.SIZES):
        size, variable = jobspec.job_size(one, settings)
        check_size(size, variable, one)


def check_size(size: jobspec.JobSize, variable: str, role: str) -> None:
    """``ConfigError`` (naming ``variable``) when Fargate offers no container of ``size``."""
    what = f" ({role})" if variable == jobspec.SIZES_VARIABLE else ""
    if size.vcpus not in FARGATE_SIZES:
        offered = ", ".join(f"{v:g}" for v in FARGATE_SIZES)
        vcpu_variable = "CONDVEST_JOB_VCPUS" if variable == "CONDVEST_JOB_MEMORY_MIB" else variable
        raise ConfigError(f"Fargate offers {offered} vCPUs, not {size.vcpus:g}{what}", variable=vcpu_variable)
    low, high, step = FARGATE_SIZES[size.vcpus]
    fits = size.memory_mib in (512, 1024, 2048) if step is None else low <= size.memory_mib <= high
    fits = fits and (step is None or (size.memory_mib - low) % step == 0)
    if not fits:
        takes = "512, 1024 or 2048" if step is None else f"{low} to {high} in steps of {step}"
        raise ConfigError(
            f"Fargate with {size.vcpus:g} vCPU takes {takes} MiB, not {size.memory_mib}{what}", variable=variable
        )
    low_gib, high_gib = jobspec.STORAGE_GIB
    if size.storage_gib is not None and not low_gib <= size.storage_gib <= high_gib:
        raise ConfigError(
            f"Fargate's ephemeral storage is {low_gib} to {high_gib} GiB, not {size.storage_gib}{what}",
            variable=variable,
        )


def _default_target(group: str) -> str:
    return next(t for t, g in jobspec.GROUPS.items() if g == group)


def _environment(size: jobspec.JobSize, settings: Settings) -> dict[str, str]:
    env = jobspec.environment(settings)
    env["CONDVEST_DUCKDB_MEMORY_LIMIT"] = jobspec.duckdb_memory_limit(size)
    return env


def job_definition(group: str, settings: Settings) -> dict[str, Any]:
    """The ``register_job_definition`` payload of a group."""
    cloud = settings.cloud
    check_resources(settings, group)
    size, _ = jobspec.job_size(group, settings)
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
        "resourceRequirements": size.resource_requirements(),
        "environment": [{"name": k, "value": v} for k, v in sorted(_environment(size, settings).items())],
        "secrets": jobspec.batch_secrets(settings, group),
        "linuxParameters": {"initProcessEnabled": True},  # PID 1 reaps the kernel and browser, forwards SIGTERM
    }
    if cloud.log_group:
        container["logConfiguration"] = {
            "logDriver": "awslogs",
            "options": {"awslogs-group": cloud.log_group, "awslogs-stream-prefix": cloud.job_definition_prefix},
        }
    if cloud.platform == "FARGATE":
        container["networkConfiguration"] = {"assignPublicIp": cloud.assign_public_ip}
        container["fargatePlatformConfiguration"] = {"platformVersion": "LATEST"}
        container["ephemeralStorage"] = {"sizeInGiB": size.storage_gib}
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


#: in a dry run's payloads, where the job id of an earlier call of the same submission goes
JOB_ID_REF = "{{jobId of %s}}"


def sharded_jobs(
    target: str, parameters: list[tuple[str, str]], shards: int, run_id: str, settings: Settings
) -> list[dict[str, Any]]:
    """The ``submit_job`` payloads of a sharded run: per stage, an array job of ``shards`` children (each runs
    ``--shard array/N``: its index from ``AWS_BATCH_JOB_ARRAY_INDEX``) and its commit job (``--shard commit/N``),
    which depends on the whole array job, so it starts only when every child succeeded; a later stage's array
    job depends on the previous commit. Job ids of earlier payloads appear as ``JOB_ID_REF`` until submitted."""
    require(settings, [("BATCH_JOB_QUEUE", settings.batch_job_queue)])
    name = jobspec.target_name(target)
    out: list[dict[str, Any]] = []
    previous: str | None = None
    for k, (notebook, fixed) in enumerate(jobspec.sharded_stages(name), start=1):
        args = jobspec.stage_args(notebook, fixed, parameters)
        group = jobspec.group_of(notebook)
        definition = jobspec.job_definition_name(group, settings)
        base = f"{run_id.replace('.', '_')[:100]}-{k}-{notebook}"
        common = {"jobQueue": settings.batch_job_queue, "jobDefinition": definition, "propagateTags": True}
        tags = {"condvest:run-id": run_id, "condvest:target": name, "condvest:stage": notebook}
        array = {
            "jobName": f"{base}-shards"[:128],
            **common,
            "arrayProperties": {"size": shards},
            "containerOverrides": {
                "command": [*args, "--shard", f"array/{shards}", "--shard-group", run_id, "--no-progress"],
                **sized_overrides(f"{group}-shard", settings),
            },
            "tags": {**tags, "condvest:part": "shards"},
        }
        if previous is not None:
            array["dependsOn"] = [{"jobId": JOB_ID_REF % previous}]
        commit = {
            "jobName": f"{base}-commit"[:128],
            **common,
            "dependsOn": [{"jobId": JOB_ID_REF % array["jobName"]}],
            "containerOverrides": {
                "command": [*args, "--shard", f"commit/{shards}", "--shard-group", run_id, "--no-progress"],
                **sized_overrides(f"{group}-commit", settings),
            },
            "tags": {**tags, "condvest:part": "commit"},
        }
        out += [array, commit]
        previous = commit["jobName"]
    return out


def sized_overrides(role: str, settings: Settings) -> dict[str, Any]:
    """The container overrides that size a sharded run's children or commit (``jobspec.SIZES``): vCPUs, memory and
    DuckDB's limit from that memory (Fargate's vCPU/memory checked; the storage is the job definition's)."""
    size, variable = jobspec.job_size(role, settings)
    if settings.cloud.platform == "FARGATE":
        check_size(size, variable, role)
    limit = {"name": "CONDVEST_DUCKDB_MEMORY_LIMIT", "value": jobspec.duckdb_memory_limit(size)}
    return {"resourceRequirements": size.resource_requirements(), "environment": [limit]}


def resolve_refs(payload: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    """``payload`` with the ``JOB_ID_REF`` of each submitted job name replaced by its job id."""
    text = json.dumps(payload)
    for job_name, job_id in ids.items():
        text = text.replace(JOB_ID_REF % job_name, job_id)
    return json.loads(text)


def ensure_job_definition(batch: Any, payload: dict[str, Any]) -> tuple[str, bool]:
    """Register ``payload`` unless the latest active revision already is it: (ARN, registered now). A definition of
    that name that the workbench did not register (no ``condvest:spec`` tag) is never given a new revision."""
    name = payload["jobDefinitionName"]
    found: list[dict[str, Any]] = []
    for page in batch.get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, status="ACTIVE"):
        found += page["jobDefinitions"]
    if found:
        latest = max(found, key=lambda d: d["revision"])
        if SPEC_TAG not in (latest.get("tags") or {}):
            raise ConfigError(
                f"job definition {name} exists and is not the workbench's (no {SPEC_TAG} tag; the previous "
                "pipeline's?): it is left as it is; choose another CONDVEST_JOB_DEFINITION_PREFIX",
                variable="CONDVEST_JOB_DEFINITION_PREFIX",
            )
        if latest["tags"][SPEC_TAG] == payload["tags"][SPEC_TAG]:
            return latest["jobDefinitionArn"], False
    return batch.register_job_definition(**payload)["jobDefinitionArn"], True


def states(batch: Any, job_ids: list[str]) -> list[dict[str, Any]]:
    """``{id, name, status, reason, exit_code, attempts, moved_to}`` of each job (a job Batch no longer knows: status
    UNKNOWN; ``moved_to``: the job that replaced it in the on-demand queue)."""
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
                "attempts": len(j.get("attempts") or []),
                # the Spot fallback's tag on a job it submitted again to the on-demand queue
                "moved_to": (j.get("tags") or {}).get(MOVED_TO_TAG),
            }
        )
    return out
