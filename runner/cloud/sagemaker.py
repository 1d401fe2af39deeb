"""SageMaker Processing: the same image and entrypoint as a processing job.

The job writes its run folder straight to the lake's ``runs/`` (``jobspec.job_runs_uri``) with the run index,
as every run does. SageMaker has no secrets field: ``Environment`` carries the secrets' ARNs only
(``POLYGON_API_KEY_SECRET_ARN``, ``RDS_SECRET_ARN``) and the job's role reads them at run time. A notebook
failure ends the job as Failed (the runner's exit code), never as Completed.
"""

from __future__ import annotations

import re
from typing import Any

from condvest.settings import Settings
from runner.cloud import jobspec
from runner.cloud.aws import require

TERMINAL = ("Completed", "Failed", "Stopped")
VOLUME_GB = 30


def processing_job_name(run_id: str) -> str:
    """A processing job name from a run id: ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}``."""
    name = re.sub(r"[^a-zA-Z0-9]+", "-", f"condvest-{run_id}").strip("-")
    return name[:63].rstrip("-")


def create_processing_job(
    target: str, parameters: list[tuple[str, str]], run_id: str, settings: Settings
) -> dict[str, Any]:
    """The ``create_processing_job`` payload of one run."""
    cloud = settings.cloud
    require(settings, [("CONDVEST_IMAGE", cloud.image), ("CONDVEST_SAGEMAKER_ROLE_ARN", cloud.sagemaker_role_arn)])
    name = jobspec.target_name(target)
    payload: dict[str, Any] = {
        "ProcessingJobName": processing_job_name(run_id),
        "RoleArn": cloud.sagemaker_role_arn,
        "AppSpecification": {
            "ImageUri": cloud.image,
            "ContainerEntrypoint": list(jobspec.ENTRYPOINT),
            "ContainerArguments": jobspec.job_args(name, parameters, run_id),
        },
        "ProcessingResources": {
            "ClusterConfig": {
                "InstanceCount": 1,
                "InstanceType": cloud.sagemaker_instance_type,
                "VolumeSizeInGB": VOLUME_GB,
            }
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": cloud.job_timeout_s},
        "Environment": jobspec.processing_environment(settings, jobspec.group_of(name)),
        "Tags": [{"Key": "condvest:run-id", "Value": run_id}, {"Key": "condvest:target", "Value": name}],
    }
    if cloud.subnets:  # in the stack's VPC, so the job reaches a private RDS
        vpc = {"Subnets": list(cloud.subnets), "SecurityGroupIds": list(cloud.security_groups)}
        payload["NetworkConfig"] = {"VpcConfig": vpc}
    return payload


def states(sm: Any, names: list[str]) -> list[dict[str, Any]]:
    out = []
    for name in names:
        j = sm.describe_processing_job(ProcessingJobName=name)
        out.append(
            {
                "id": name,
                "name": name,
                "status": j["ProcessingJobStatus"],
                "reason": j.get("FailureReason") or j.get("ExitMessage") or "",
                "exit_code": None,
            }
        )
    return out
