"""The cloud tests' world: AWS APIs on moto, the lake on SeaweedFS, secrets in Secrets Manager; and a submitted
Batch job's container run here as a separate process (``run_container``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner.cloud import jobspec
from tests.fixtures.aws import batch_queue
from tests.fixtures.paths import ROOT

POLYGON_KEY = "SENTINEL-polygon-9d8c7b"
RDS_PASSWORD = "SENTINEL-rds-pw-1a2b3c"
ACCOUNT = "123456789012"


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


def no_secret(*texts: str) -> None:
    for text in texts:
        assert POLYGON_KEY not in text and RDS_PASSWORD not in text


def resolve_secret(aws, ref: str) -> str:
    """What Batch puts in the container for a ``secrets`` reference (``arn`` or ``arn:json-key::``)."""
    arn, _, rest = ref.partition(":secret:")
    name, _, key = rest.partition(":")
    value = aws.client("secretsmanager").get_secret_value(SecretId=f"{arn}:secret:{name}")["SecretString"]
    return json.loads(value)[key.split(":")[0]] if key else value


def container_process(aws, cloud, job_id: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a submitted Batch job's container here: the image's entrypoint plus the job's command, with the job
    definition's environment, the secrets Batch resolves, ``extra_env`` (what Batch adds, such as
    ``AWS_BATCH_JOB_ARRAY_INDEX``) and the test servers' endpoints and credentials."""
    batch = aws.client("batch")
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    [jd] = batch.describe_job_definitions(jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
    props = jd["containerProperties"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDVEST_", "POLYGON_", "RDS_", "BATCH_"))}
    env |= {e["name"]: e["value"] for e in props["environment"]}
    env |= {s["name"]: resolve_secret(aws, s["valueFrom"]) for s in props["secrets"]}
    # each group gets only the secrets its notebooks read (jobspec.GROUP_SECRETS), resolved to their values
    assert (
        env.get("POLYGON_API_KEY", POLYGON_KEY) == POLYGON_KEY and env.get("RDS_PASSWORD", RDS_PASSWORD) == RDS_PASSWORD
    )
    env["AWS_ENDPOINT_URL"] = cloud["AWS_ENDPOINT_URL"] if "AWS_ENDPOINT_URL" in cloud else aws.endpoint_url
    env["CONDVEST_CHART_PNG"] = "0"  # no browser: the cloud tests look at no PNG (tests/runner/test_images.py does)
    command = [*jobspec.ENTRYPOINT, *job["container"]["command"]]
    assert command[:4] == ["python", "-m", "runner", "job"]
    env |= extra_env or {}
    index = env.get("AWS_BATCH_JOB_ARRAY_INDEX")  # what Batch sets in every container (a child's id: <parent>:<i>)
    env |= {
        "AWS_BATCH_JOB_ID": f"{job_id}:{index}" if index else job_id,
        "AWS_BATCH_JOB_ATTEMPT": "1",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [sys.executable, *command[1:]],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_container(aws, cloud, job_id: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a submitted Batch job's container here to its end (see ``container_process``)."""
    proc = container_process(aws, cloud, job_id, extra_env)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
