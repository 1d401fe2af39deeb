"""Each stage's container, without servers: vCPUs, memory and ephemeral storage per stage (overridable, checked
as Fargate sizes), DuckDB's limit sized from the container, and a sharded run's children and commit sized apart."""

from __future__ import annotations

import pytest

from condvest.errors import ConfigError
from condvest.settings import Settings
from runner.cloud import batch, jobspec
from tests.fixtures.paths import ROOT

ENV = {
    "CONDVEST_LAKE_URI": "s3://lake",
    "CONDVEST_IMAGE": "123456789012.dkr.ecr.us-east-1.amazonaws.com/condvest:test",
    "CONDVEST_JOB_ROLE_ARN_PREFIX": "arn:aws:iam::123456789012:role/condvest-job-",
    "CONDVEST_EXECUTION_ROLE_ARN": "arn:aws:iam::123456789012:role/condvest-execution",
    "BATCH_JOB_QUEUE": "condvest",
}


def _container(group: str, **env: str) -> dict:
    props = batch.job_definition(group, Settings.from_env({**ENV, **env}))["containerProperties"]
    sizes = {r["type"]: r["value"] for r in props["resourceRequirements"]}
    limit = {e["name"]: e["value"] for e in props["environment"]}["CONDVEST_DUCKDB_MEMORY_LIMIT"]
    return {
        "vcpus": sizes["VCPU"],
        "mib": sizes["MEMORY"],
        "gib": props["ephemeralStorage"]["sizeInGiB"],
        "duckdb": limit,
    }


def test_each_stage_gets_a_container_that_fits_its_work():
    fetch, resample, monitoring = _container("fetch"), _container("resample"), _container("monitoring")
    assert fetch == {"vcpus": "1", "mib": "2048", "gib": 30, "duckdb": "1024MB"}  # small
    # a full rebuild: DuckDB 12 GB of 16 GiB, 100 GiB for what spills (Fargate's default is 20 GiB)
    assert resample == {"vcpus": "4", "mib": "16384", "gib": 100, "duckdb": "12288MB"}
    assert monitoring["mib"] == "4096" and monitoring["duckdb"] == "3072MB"
    assert _container("retention")["vcpus"] == "0.5"
    for role in jobspec.SIZES:  # every default is a size Fargate offers
        batch.check_resources(Settings.from_env(ENV), role)


def test_sizes_are_overridable_per_stage_or_for_every_job():
    big = _container("resample", CONDVEST_JOB_SIZES="resample=8/32768/200, fetch=0.5/1024")
    assert big == {"vcpus": "8", "mib": "32768", "gib": 200, "duckdb": "24576MB"}
    assert _container("fetch", CONDVEST_JOB_SIZES="fetch=0.5/1024")["gib"] == 30  # storage kept when not given
    assert _container("monitoring", CONDVEST_JOB_MEMORY_MIB="8192")["mib"] == "8192"  # every job
    assert _container("monitoring", CONDVEST_JOB_MEMORY_MIB="8192", CONDVEST_JOB_SIZES="monitoring=1/2048")["mib"] == (
        "2048"
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("resample=3/16384", "Fargate offers 0.25, 0.5, 1, 2, 4, 8, 16 vCPUs, not 3 (resample)"),
        ("resample=4/4096", "Fargate with 4 vCPU takes 8192 to 30720 in steps of 1024 MiB, not 4096 (resample)"),
        ("resample=4/16384/500", "Fargate's ephemeral storage is 21 to 200 GiB, not 500 (resample)"),
        ("resample-shard=2/2048", "Fargate with 2 vCPU takes 4096 to 16384 in steps of 1024 MiB, not 2048"),
        ("resampel=4/16384", "expected ROLE=VCPUS/MEMORY_MIB[/STORAGE_GIB]"),
        ("resample=four/16384", "expected numbers in 'resample=four/16384'"),
    ],
)
def test_a_size_fargate_does_not_offer_is_refused_naming_the_variable(value, says, monkeypatch):
    monkeypatch.chdir(ROOT)
    settings = Settings.from_env({**ENV, "CONDVEST_JOB_SIZES": value})
    with pytest.raises(ConfigError, match="CONDVEST_JOB_SIZES") as exc:
        batch.job_definition("resample", settings)
        batch.sharded_jobs("rebuild", [], 4, "rb-1", settings)
    assert says in str(exc.value)


def test_a_sharded_runs_children_and_commit_are_sized_apart(monkeypatch):
    monkeypatch.chdir(ROOT)
    array, commit = batch.sharded_jobs("rebuild", [], 16, "rb-1", Settings.from_env(ENV))
    for payload, vcpus, mib, limit in ((array, "1", "4096", "3072MB"), (commit, "4", "8192", "6144MB")):
        overrides = payload["containerOverrides"]
        assert {r["type"]: r["value"] for r in overrides["resourceRequirements"]} == {"VCPU": vcpus, "MEMORY": mib}
        assert overrides["environment"] == [{"name": "CONDVEST_DUCKDB_MEMORY_LIMIT", "value": limit}]
