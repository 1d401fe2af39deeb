"""What a job needs wherever it runs: its role group, its command, its environment and its secrets.

Every target (a notebook or a pipeline) belongs to a *group* with its own job definition and IAM role, so that
each stage runs with the least privilege it needs (``infra/condvest.yaml`` defines the roles): the fetcher
cannot delete, only the migration's cleanup and the resample's compaction can. The daily pipeline runs fetch
and resample in one container, so its group holds both.

Secrets never travel as plain values: a Batch job gets them from Secrets Manager through its job
definition's ``secrets`` (``POLYGON_API_KEY_SECRET_ARN``; the JSON keys of ``RDS_SECRET_ARN``), a SageMaker
job gets the ARNs and reads the secrets itself. Every environment value is checked against the settings'
secrets before it is put in a payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condvest.errors import ConfigError, ParameterError
from condvest.settings import DEFAULT_BASE_URL, Settings
from runner.cloud.aws import require
from runner.execute import prepare
from runner.notebooks import declared_parameters, find_project_root, parse_value, resolve_notebook
from runner.pipelines import PIPELINES, plan_pipeline
from runner.scrub import Scrubber

#: target -> group (job definition ``<prefix>-<group>``, role ``<CONDVEST_JOB_ROLE_ARN_PREFIX><group>``)
GROUPS = {
    "01_fetch": "fetch",
    "02_resample": "resample",
    "03_migrate": "migrate",
    "04_retention": "retention",
    "05_monitoring": "monitoring",
    "daily": "daily",
    "weekly": "retention",
    "rebuild": "resample",
    "backfill": "daily",
}
#: the secrets each group's notebooks read (a job definition receives no other): the Polygon key for fetching,
#: the database's for Postgres; resampling and the migration read neither
GROUP_SECRETS: dict[str, tuple[str, ...]] = {
    "fetch": ("polygon", "rds"),
    "daily": ("polygon", "rds"),
    "resample": (),
    "migrate": (),
    "retention": ("rds",),
    "monitoring": ("rds",),
}


@dataclass(frozen=True)
class JobSize:
    """A job's container: vCPUs, memory (MiB) and, for a job definition, Fargate ephemeral storage (GiB; where
    DuckDB spills: the container's /tmp is on it)."""

    vcpus: float
    memory_mib: int
    storage_gib: int | None = None

    def resource_requirements(self) -> list[dict[str, str]]:
        return [{"type": "VCPU", "value": f"{self.vcpus:g}"}, {"type": "MEMORY", "value": str(self.memory_mib)}]


#: each stage's container (BENCHMARKS.md has the figures). Fetching is small; the daily pipeline adds an incremental
#: resample (its whole process tree peaks near 1.1 GB). A full rebuild in one job gets 4 vCPU and 16 GiB (DuckDB 12 GB:
#: a 10x lake's numbered rows, ~7 GB, stay in memory) and 100 GiB of storage for what still spills (at 10x with a
#: 3 GB limit the rows table and each interval's sort go through temporary files: ~7 GB each); a sharded rebuild's
#: shards are 1 vCPU and 4 GiB (a tenth of the work or less), its commit (month merges, 0.8-2.0 GB at 10x) 4 vCPU
#: and 8 GiB, both on the resample definition's storage: the commit's wall is most of a sharded run's (its years
#: are independent and kept 1.7 of 2 cores busy at 10x; on 2 vCPU it was 0.21 of the one job's wall). The
#: migration spills its export (~1.2x its parquet size).
#: Archival and monitoring read Postgres and small lake tables. ``<group>-shard`` and ``<group>-commit`` size a
#: sharded run's children and commit (Batch overrides; the storage stays the definition's).
SIZES: dict[str, JobSize] = {
    "fetch": JobSize(1, 2048, 30),
    "fetch-shard": JobSize(1, 2048),
    "fetch-commit": JobSize(1, 2048),
    "daily": JobSize(1, 4096, 60),
    "resample": JobSize(4, 16384, 100),
    "resample-shard": JobSize(1, 4096),
    "resample-commit": JobSize(4, 8192),
    "migrate": JobSize(2, 8192, 100),
    "retention": JobSize(0.5, 2048, 21),
    "monitoring": JobSize(1, 4096, 30),
}
SIZES_VARIABLE = "CONDVEST_JOB_SIZES"
#: DuckDB's share of the container's memory, and what the kernel, the runner and the chart browser keep beside it
DUCKDB_MEMORY_SHARE, DUCKDB_HEADROOM_MIB = 0.75, 1024
#: Fargate's ephemeral storage: 21 to 200 GiB (20 GiB when not set)
STORAGE_GIB = (21, 200)
#: the container's entrypoint (Dockerfile ENTRYPOINT); a job's command is what follows it
ENTRYPOINT = ("python", "-m", "runner", "job")
#: where a job writes its run folders when CONDVEST_RUNS_URI is not an s3:// location: the lake's runs/
RUNS_PREFIX = "runs"


def target_name(target: str) -> str:
    """``01_fetch.ipynb`` or ``notebooks/01_fetch`` -> ``01_fetch``; refuses what no job definition runs."""
    name = Path(target).name.removesuffix(".ipynb")
    if name not in GROUPS:
        known = ", ".join(GROUPS)
        raise ParameterError(f"no job runs {target!r} (known: {known})", parameter="target")
    return name


def group_of(target: str) -> str:
    return GROUPS[target_name(target)]


def job_definition_name(group: str, settings: Settings) -> str:
    """``<prefix>-<group>``: the workbench's own names (the previous pipeline's definitions are never written)."""
    return f"{settings.cloud.job_definition_prefix}-{group}"


def previous_definition_note(settings: Settings) -> str | None:
    """What to say when the seed's ``RESAMPLING_JOB_DEFINITION`` is set: the workbench leaves it alone."""
    old = settings.resampling_job_definition
    if not old or old == job_definition_name("resample", settings):
        return None
    return (
        f"note: RESAMPLING_JOB_DEFINITION names {old}, the previous pipeline's job definition; the workbench "
        f"registers and submits its own ({job_definition_name('resample', settings)}) and leaves {old} as it is"
    )


def check_request(target: str, parameters: Sequence[tuple[str, str]], settings: Settings) -> None:
    """Refuse (``ParameterError``) what a local run would refuse: unknown notebook, undeclared or secret-looking
    parameter, a value carrying a secret. Nothing is submitted for a request that would fail at once."""
    name = target_name(target)
    params = {n: parse_value(v) for n, v in parameters}
    root = find_project_root()
    if name in PIPELINES:
        plan_pipeline(name, PIPELINES[name], params, settings, root)
    else:
        prepare(name, params, settings, root)


def job_args(target: str, parameters: Sequence[tuple[str, str]], run_id: str) -> list[str]:
    """The arguments after the entrypoint: ``<target> -p NAME VALUE ... --run-id <id> --no-progress``."""
    args = [target_name(target)]
    for name, value in parameters:
        args += ["-p", name, value]
    return [*args, "--run-id", run_id, "--no-progress"]


def sharded_stages(target: str) -> list[tuple[str, dict[str, Any]]]:
    """The (notebook, fixed parameters) of each stage of a sharded run of ``target`` (a notebook or a pipeline);
    ``ParameterError`` when a stage's notebook declares no ``shard`` parameter."""
    name = target_name(target)
    stages = [(s.notebook, dict(s.parameters)) for s in PIPELINES[name]] if name in PIPELINES else [(name, {})]
    root = find_project_root()
    for notebook, _ in stages:
        if "shard" not in declared_parameters(resolve_notebook(notebook, root)):
            raise ParameterError(f"{notebook} cannot be sharded (it declares no shard parameter)", parameter="shards")
    return stages


def stage_args(notebook: str, fixed: dict[str, Any], parameters: Sequence[tuple[str, str]]) -> list[str]:
    """``<notebook> -p NAME VALUE ...``: a stage's fixed parameters, then those of the request it declares."""
    declared = declared_parameters(resolve_notebook(notebook, find_project_root()))
    args = [notebook]
    for name, value in fixed.items():
        if name not in dict(parameters):
            args += ["-p", name, "None" if value is None else str(value)]
    for name, value in parameters:
        if name in declared:
            args += ["-p", name, value]
    return args


def job_runs_uri(settings: Settings) -> str:
    """Where a job's run folders and run index go: ``CONDVEST_RUNS_URI`` when it is on S3, else the lake's runs/."""
    if settings.runs_uri.startswith("s3://"):
        return settings.runs_uri.rstrip("/")
    return f"{settings.lake_uri.rstrip('/')}/{RUNS_PREFIX}"


def environment(settings: Settings) -> dict[str, str]:
    """The plain environment of a job: locations and names only (checked: no secret value in it)."""
    if not settings.lake_uri.startswith("s3://"):
        raise ConfigError(
            f"a job in AWS needs the lake on S3, not {settings.lake_uri!r}: set CONDVEST_LAKE_URI=s3://bucket[/prefix]",
            variable="CONDVEST_LAKE_URI",
        )
    env = {
        "CONDVEST_LAKE_URI": settings.lake_uri,
        "CONDVEST_RUNS_URI": job_runs_uri(settings),
        "CONDVEST_RETENTION": settings.retention.as_interval(),
        "RDS_DB_NAME": settings.rds_db_name,
        "BATCH_SIZE": str(settings.batch_size),
        "CONDVEST_METRICS_NAMESPACE": settings.cloud.metrics_namespace,
    }
    if settings.polygon_base_url != DEFAULT_BASE_URL:
        env["POLYGON_BASE_URL"] = settings.polygon_base_url
    if settings.rds_endpoint and settings.rds_secret_arn:  # an RDS-managed secret has no host key (batch_secrets)
        env["RDS_ENDPOINT"] = settings.rds_endpoint
    if settings.cloud.alert_topic_arn:
        env["CONDVEST_ALERT_TOPIC_ARN"] = settings.cloud.alert_topic_arn
    check_no_secret(env, settings)
    return env


def batch_secrets(settings: Settings, group: str | None = None) -> list[dict[str, str]]:
    """The job definition's ``secrets``: Secrets Manager references that Batch resolves into the container, only
    those ``group``'s notebooks read (``GROUP_SECRETS``; ``None``: all). An RDS-managed secret holds no ``host``:
    with ``RDS_ENDPOINT`` set, the endpoint travels as a plain value (``environment``) instead."""
    wanted = GROUP_SECRETS[group] if group is not None else ("polygon", "rds")
    out = []
    if settings.polygon_api_key_secret_arn and "polygon" in wanted:
        out.append({"name": "POLYGON_API_KEY", "valueFrom": settings.polygon_api_key_secret_arn})
    if settings.rds_secret_arn and "rds" in wanted:
        arn = settings.rds_secret_arn
        keys = [("RDS_USERNAME", "username"), ("RDS_PASSWORD", "password")]
        if not settings.rds_endpoint:
            keys.insert(0, ("RDS_ENDPOINT", "host"))
        for var, key in keys:
            out.append({"name": var, "valueFrom": f"{arn}:{key}::"})
    return out


def _parse_sizes(text: str) -> dict[str, JobSize]:
    """``CONDVEST_JOB_SIZES``: ``role=VCPUS/MEMORY_MIB[/STORAGE_GIB],...`` (role: a group of ``SIZES``)."""
    out = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        role, _, value = item.partition("=")
        parts = value.strip().split("/")
        if role.strip() not in SIZES or not 2 <= len(parts) <= 3:
            raise ConfigError(
                f"expected ROLE=VCPUS/MEMORY_MIB[/STORAGE_GIB] (roles: {', '.join(SIZES)}), got {item!r}",
                variable=SIZES_VARIABLE,
            )
        try:
            numbers = float(parts[0]), int(parts[1]), int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            raise ConfigError(f"expected numbers in {item!r}", variable=SIZES_VARIABLE) from None
        out[role.strip()] = JobSize(*numbers)
    return out


def job_size(role: str, settings: Settings) -> tuple[JobSize, str]:
    """The container of ``role`` (a group, ``<group>-shard`` or ``<group>-commit``) and the variable that set it:
    ``CONDVEST_JOB_SIZES``'s entry for the role, else ``CONDVEST_JOB_VCPUS``/``CONDVEST_JOB_MEMORY_MIB`` (every
    job), else ``SIZES``."""
    cloud = settings.cloud
    size = SIZES[role]
    chosen = _parse_sizes(cloud.job_sizes).get(role)
    if chosen is not None:
        return JobSize(chosen.vcpus, chosen.memory_mib, chosen.storage_gib or size.storage_gib), SIZES_VARIABLE
    variable = (
        "CONDVEST_JOB_MEMORY_MIB" if cloud.memory_mib else "CONDVEST_JOB_VCPUS" if cloud.vcpus else SIZES_VARIABLE
    )
    return JobSize(cloud.vcpus or size.vcpus, cloud.memory_mib or size.memory_mib, size.storage_gib), variable


def duckdb_memory_limit(size: JobSize) -> str:
    """DuckDB's memory limit in a container of ``size``: ``DUCKDB_MEMORY_SHARE`` of its memory, and at least
    ``DUCKDB_HEADROOM_MIB`` left to the kernel, the runner and the chart browser."""
    share = min(int(size.memory_mib * DUCKDB_MEMORY_SHARE), size.memory_mib - DUCKDB_HEADROOM_MIB)
    return f"{max(256, share)}MB"


def processing_environment(settings: Settings, group: str | None = None) -> dict[str, str]:
    """A SageMaker job's environment: the plain one plus the ARNs of the secrets ``group`` reads (never values)."""
    env = environment(settings)
    wanted = GROUP_SECRETS[group] if group is not None else ("polygon", "rds")
    if settings.polygon_api_key_secret_arn and "polygon" in wanted:
        env["POLYGON_API_KEY_SECRET_ARN"] = settings.polygon_api_key_secret_arn
    if settings.rds_secret_arn and "rds" in wanted:
        env["RDS_SECRET_ARN"] = settings.rds_secret_arn
    check_no_secret(env, settings)
    return env


def check_no_secret(values: dict[str, str], settings: Settings) -> None:
    scrub = Scrubber(settings.secrets())
    for name, value in values.items():
        if scrub.text(value) != value:
            raise ConfigError(
                "its value holds a secret; secrets reach jobs only through Secrets Manager", variable=name
            )


def require_image(settings: Settings) -> None:
    require(settings, [("CONDVEST_IMAGE", settings.cloud.image)])
