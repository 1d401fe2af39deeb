"""One frozen settings object, read from the environment in one place (``Settings.from_env``).

Small value objects carry the limits (``HttpLimits``), the retention window (``Retention``) and where the
runner's AWS jobs, schedules and alerts go (``CloudSettings``).
Secrets are held in ``Secret`` so that they never show in a repr, a log line or a notebook output.
"""

from __future__ import annotations

import calendar as _cal
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from condvest.calendar import today_in_new_york
from condvest.container import default_memory_limit
from condvest.errors import ConfigError, ParameterError
from condvest.previous_env import previous_database, previous_lake
from condvest.project import environment, find_root, resolve_location

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.massive.com"  # the vendor's current host; https://api.polygon.io stays valid
#: how long a lake lock stays valid without a heartbeat (``CONDVEST_LOCK_LEASE_S``); renewed every third of it
DEFAULT_LOCK_LEASE_S = 300


class Secret:
    """A string that never prints itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*", re.I)
_SIZE_UNITS = {
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def _parsed(text: str | None, parse: Callable[[str], T], variable: str) -> T | None:
    """``parse(text)`` (``None`` when the variable is unset); its ``ParameterError`` becomes a ``ConfigError``
    naming ``variable``."""
    if text is None:
        return None
    try:
        return parse(text)
    except ParameterError as exc:
        raise ConfigError(str(exc), variable=variable) from None


def size_bytes(size: str) -> int:
    """Bytes in a size such as ``3GB`` or ``512MiB`` (DuckDB's units: KB/MB/GB/TB are powers of 1000)."""
    m = _SIZE_RE.fullmatch(size)
    if m is None:
        raise ParameterError(f"expected a size such as 3GB or 512MB, got {size!r}", parameter="memory_limit")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class Retention:
    """How long Postgres keeps bars: ``years`` + ``months`` before the run's "today" (default 3 y + 1 m)."""

    years: int = 3
    months: int = 1

    def __post_init__(self) -> None:
        if self.years < 0 or self.months < 0 or self.total_months <= 0:
            raise ParameterError(
                f"retention must be positive, got {self.years} years {self.months} months", parameter="retention"
            )

    @property
    def total_months(self) -> int:
        return self.years * 12 + self.months

    def cutoff(self, as_of: dt.date) -> dt.date:
        """The first date kept: bars dated before it belong in the archive (Feb 29 clips to month end)."""
        m = as_of.year * 12 + (as_of.month - 1) - self.total_months
        year, month = divmod(m, 12)
        month += 1
        day = min(as_of.day, _cal.monthrange(year, month)[1])
        return dt.date(year, month, day)

    def as_interval(self) -> str:
        """The window as a PostgreSQL interval literal, e.g. ``3 years 1 months``."""
        return f"{self.years} years {self.months} months"

    @classmethod
    def parse(cls, text: str) -> Retention:
        """Parse ``"3 years 1 month"``, ``"37 months"`` or ``"3y1m"``."""
        t = text.strip().lower()
        m = re.fullmatch(r"(?:(\d+)\s*(?:y|years?)\s*)?(?:(\d+)\s*(?:m|mons?|months?))?", t)
        if not t or not m or (m.group(1) is None and m.group(2) is None):
            raise ParameterError(f"cannot read retention {text!r}; write e.g. '3 years 1 month'", parameter="retention")
        return cls(int(m.group(1) or 0), int(m.group(2) or 0))


@dataclass(frozen=True)
class MoveLimits:
    """The close-to-close ratios beyond which a move with no recorded split is suspect
    (``CONDVEST_SUSPECT_MOVE``, "LOW,HIGH"; default below x0.45 or above x1.8)."""

    low: float = 0.45
    high: float = 1.8

    def __post_init__(self) -> None:
        if not 0 < self.low < 1 < self.high:
            raise ParameterError(
                f"suspect move limits must satisfy 0 < low < 1 < high, got {self.low},{self.high}",
                parameter="suspect_move",
            )

    @classmethod
    def parse(cls, text: str) -> MoveLimits:
        """``"0.45,1.8"`` -> ``MoveLimits(0.45, 1.8)``."""
        try:
            low, high = (float(x) for x in text.split(","))
        except ValueError:
            raise ParameterError(
                f"expected LOW,HIGH such as 0.45,1.8, got {text!r}", parameter="suspect_move"
            ) from None
        return cls(low, high)


@dataclass(frozen=True)
class HttpLimits:
    """Concurrency, timeouts and retry policy of the market-data client."""

    concurrency: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # between two reads of a body
    total_timeout: float = 120.0  # one request from start to the last byte: a trickling server cannot hang a run
    max_retries: int = 5
    page_size: int = 50000  # bars per page of a range request (Polygon's maximum); more follow next_url
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    #: the plan's rate (``POLYGON_REQUESTS_PER_MINUTE``); ``None``: unlimited, no pacing at all
    requests_per_minute: int | None = None
    #: the vendor's rate window in seconds: a 429 without Retry-After pauses every request this long, and the
    #: run then keeps to the rate it observed within one window (tests shorten it with the offline server's)
    rate_window: float = 60.0


@dataclass(frozen=True)
class PgTimeouts:
    """Set on every Postgres session the workbench opens (seconds): a statement or a lock wait that would
    never end fails instead (``CONDVEST_PG_STATEMENT_TIMEOUT``, ``CONDVEST_PG_LOCK_TIMEOUT``)."""

    statement: int = 1800
    lock: int = 60

    def options(self) -> str:
        """libpq ``options`` setting both."""
        return f"-c statement_timeout={self.statement * 1000} -c lock_timeout={self.lock * 1000}"


@dataclass(frozen=True)
class CloudSettings:
    """Where the runner's AWS jobs, schedules and alerts go (``python -m runner job|submit|status|schedule``).

    The notebooks never read these. Every value is a name or an ARN, never a secret: secrets reach a job only
    through Secrets Manager (``POLYGON_API_KEY_SECRET_ARN``, ``RDS_SECRET_ARN``)."""

    #: SNS topic for failed runs and the daily report; ``None``: nothing is published
    alert_topic_arn: str | None = None
    #: every AWS API's endpoint (moto, LocalStack); S3 prefers ``AWS_ENDPOINT_URL_S3``
    endpoint_url: str | None = None
    #: the container image (``<account>.dkr.ecr.<region>.amazonaws.com/condvest:<tag>``)
    image: str | None = None
    #: job roles are ``<prefix><group>`` (group: fetch, resample, migrate, retention, monitoring, daily)
    job_role_arn_prefix: str | None = None
    #: the role Batch (Fargate) uses to pull the image and read the Secrets Manager secrets
    execution_role_arn: str | None = None
    sagemaker_role_arn: str | None = None
    #: the role EventBridge Scheduler assumes to call Batch SubmitJob
    scheduler_role_arn: str | None = None
    job_definition_prefix: str = "condvest"
    #: FARGATE (default) or EC2
    platform: str = "FARGATE"
    #: every job's vCPUs and MiB when set (``None``: each stage's own, ``runner.cloud.jobspec.SIZES``)
    vcpus: float | None = None
    memory_mib: int | None = None
    #: per-stage sizes, ``resample=8/32768/200,resample-shard=1/4096`` (checked by ``runner.cloud.jobspec``)
    job_sizes: str = ""
    job_timeout_s: int = 4 * 3600
    sagemaker_instance_type: str = "ml.m5.large"
    schedule_group: str = "default"
    schedule_timezone: str = "UTC"
    daily_schedule: str = "cron(0 11 ? * MON-FRI *)"
    weekly_schedule: str = "cron(0 2 ? * SUN *)"
    metrics_namespace: str = "Condvest"
    #: the CloudWatch Logs group of the jobs' ``awslogs`` configuration (the stack's output ``LogGroup``)
    log_group: str | None = None
    #: a Fargate job's public IP: ENABLED only in public subnets without a NAT gateway
    assign_public_ip: str = "DISABLED"
    #: the subnets and security groups of SageMaker jobs (the stack's; they reach a private RDS)
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, get: Callable[[str], str | None]) -> CloudSettings:
        def number(name: str, default: float, cast: Callable[[str], float]) -> float:
            v = get(name)
            if v is None:
                return default
            try:
                n = cast(v)
            except ValueError:
                raise ConfigError(f"expected a number, got {v!r}", variable=name) from None
            if n <= 0:
                raise ConfigError(f"must be positive, got {v}", variable=name)
            return n

        public_ip = (get("CONDVEST_ASSIGN_PUBLIC_IP") or "DISABLED").upper()
        if public_ip not in ("ENABLED", "DISABLED"):
            raise ConfigError(f"expected ENABLED or DISABLED, got {public_ip!r}", variable="CONDVEST_ASSIGN_PUBLIC_IP")

        def ids(name: str) -> tuple[str, ...]:
            return tuple(x.strip() for x in (get(name) or "").split(",") if x.strip())

        platform = (get("CONDVEST_BATCH_PLATFORM") or "FARGATE").upper()
        if platform not in ("FARGATE", "EC2"):
            raise ConfigError(f"expected FARGATE or EC2, got {platform!r}", variable="CONDVEST_BATCH_PLATFORM")
        d = cls()
        return cls(
            alert_topic_arn=get("CONDVEST_ALERT_TOPIC_ARN"),
            endpoint_url=get("AWS_ENDPOINT_URL"),
            image=get("CONDVEST_IMAGE"),
            job_role_arn_prefix=get("CONDVEST_JOB_ROLE_ARN_PREFIX"),
            execution_role_arn=get("CONDVEST_EXECUTION_ROLE_ARN"),
            sagemaker_role_arn=get("CONDVEST_SAGEMAKER_ROLE_ARN"),
            scheduler_role_arn=get("CONDVEST_SCHEDULER_ROLE_ARN"),
            job_definition_prefix=get("CONDVEST_JOB_DEFINITION_PREFIX") or d.job_definition_prefix,
            platform=platform,
            vcpus=number("CONDVEST_JOB_VCPUS", 0, float) or None,
            memory_mib=int(number("CONDVEST_JOB_MEMORY_MIB", 0, int)) or None,
            job_sizes=get("CONDVEST_JOB_SIZES") or "",
            job_timeout_s=int(number("CONDVEST_JOB_TIMEOUT_S", d.job_timeout_s, int)),
            sagemaker_instance_type=get("CONDVEST_SAGEMAKER_INSTANCE_TYPE") or d.sagemaker_instance_type,
            schedule_group=get("CONDVEST_SCHEDULE_GROUP") or d.schedule_group,
            schedule_timezone=get("CONDVEST_SCHEDULE_TIMEZONE") or d.schedule_timezone,
            daily_schedule=get("CONDVEST_DAILY_SCHEDULE") or d.daily_schedule,
            weekly_schedule=get("CONDVEST_WEEKLY_SCHEDULE") or d.weekly_schedule,
            metrics_namespace=get("CONDVEST_METRICS_NAMESPACE") or d.metrics_namespace,
            log_group=get("CONDVEST_LOG_GROUP"),
            assign_public_ip=public_ip,
            subnets=ids("CONDVEST_SUBNETS"),
            security_groups=ids("CONDVEST_SECURITY_GROUPS"),
        )


@dataclass(frozen=True)
class Settings:
    lake_uri: str = "./lake"
    runs_uri: str = "./runs"
    s3_endpoint_url: str | None = None
    pg_dsn: Secret | None = None
    home: Path = Path(".condvest")
    polygon_base_url: str = DEFAULT_BASE_URL
    polygon_api_key: Secret | None = None
    polygon_api_key_secret_arn: str | None = None
    rds_secret_arn: str | None = None
    rds_endpoint: str | None = None
    rds_username: str | None = None
    rds_password: Secret | None = None
    rds_db_name: str = "condvest"
    aws_region: str | None = None
    batch_job_queue: str | None = None
    resampling_job_definition: str | None = None
    batch_size: int = 50
    #: the runner writes a PNG copy of each chart beside the run's page (``CONDVEST_CHART_PNG=0``: off)
    chart_png: bool = True
    cloud: CloudSettings = field(default_factory=CloudSettings)
    retention: Retention = field(default_factory=Retention)
    http: HttpLimits = field(default_factory=HttpLimits)
    #: seconds a lake lock (``condvest.lake_lock``) stays valid unless its holder's heartbeat renews it
    lock_lease_s: int = DEFAULT_LOCK_LEASE_S
    pg_timeouts: PgTimeouts = field(default_factory=PgTimeouts)
    #: pins the run's "today" (New York) for reproducible runs; ``None`` means the real date
    as_of: dt.date | None = None
    #: DuckDB's memory limit for resampling (it spills to a temporary folder beyond it), and the budget that
    #: sizes the migration's symbol groups; size it for the container: the whole process stays about 1 GB above it
    duckdb_memory_limit: str = "3GB"
    #: the project root that relative locations were resolved against (``None``: not resolved)
    root: Path | None = None
    #: close-to-close ratios beyond which a move with no recorded split is listed as suspect (``CONDVEST_SUSPECT_MOVE``)
    suspect_move: MoveLimits = field(default_factory=MoveLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, root: Path | None = None) -> Settings:
        """Build the settings from ``env`` (default: ``os.environ`` completed by the root's ``.env``); seed
        variable names are honoured. Relative locations (lake, runs, ``CONDVEST_HOME``) are made absolute
        against the project root (``condvest.project.find_root``), never the current directory."""
        root = (root or find_root(env=env)).resolve()
        e = environment(root) if env is None else env

        def get(name: str) -> str | None:
            v = e.get(name)
            return v if v not in (None, "") else None

        def get_int(name: str, default: int) -> int:
            v = get(name)
            if v is None:
                return default
            try:
                n = int(v)
            except ValueError:
                raise ConfigError(f"expected an integer, got {v!r}", variable=name) from None
            if n <= 0:
                raise ConfigError(f"must be positive, got {n}", variable=name)
            return n

        # the seed's and the previous pipeline's names: S3_DATALAKE_BUCKET / S3_BUCKET (+ S3_INPUT_PREFIX,
        # S3_OUTPUT_PREFIX), DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD (condvest.previous_env)
        lake = get("CONDVEST_LAKE_URI") or previous_lake(get) or "./lake"
        db = {} if get("RDS_ENDPOINT") else previous_database(get)
        if lake.startswith("s3://") and len(lake) <= 5:
            raise ConfigError("s3:// needs a bucket name", variable="CONDVEST_LAKE_URI")
        lake = resolve_location(lake, root)
        retention = _parsed(get("CONDVEST_RETENTION"), Retention.parse, "CONDVEST_RETENTION") or Retention()
        base_url = (get("POLYGON_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        if not re.match(r"^https?://", base_url):
            raise ConfigError(f"expected an http(s) URL, got {base_url!r}", variable="POLYGON_BASE_URL")
        http = HttpLimits(
            concurrency=get_int("CONDVEST_HTTP_CONCURRENCY", HttpLimits.concurrency),
            max_retries=get_int("CONDVEST_HTTP_RETRIES", HttpLimits.max_retries),
            total_timeout=float(get_int("CONDVEST_HTTP_TIMEOUT", int(HttpLimits.total_timeout))),
            requests_per_minute=get_int("POLYGON_REQUESTS_PER_MINUTE", 0) or None,
        )
        pg_timeouts = PgTimeouts(
            statement=get_int("CONDVEST_PG_STATEMENT_TIMEOUT", PgTimeouts.statement),
            lock=get_int("CONDVEST_PG_LOCK_TIMEOUT", PgTimeouts.lock),
        )
        as_of = None
        if get("CONDVEST_AS_OF"):
            try:
                as_of = dt.date.fromisoformat(get("CONDVEST_AS_OF") or "")
            except ValueError:
                raise ConfigError("expected an ISO date YYYY-MM-DD", variable="CONDVEST_AS_OF") from None
        memory = get("CONDVEST_DUCKDB_MEMORY_LIMIT") or default_memory_limit()  # sized from the container
        if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", memory, re.I):
            raise ConfigError(
                f"expected a size such as 3GB or 512MB, got {memory!r}", variable="CONDVEST_DUCKDB_MEMORY_LIMIT"
            )
        suspect_move = _parsed(get("CONDVEST_SUSPECT_MOVE"), MoveLimits.parse, "CONDVEST_SUSPECT_MOVE") or MoveLimits()
        return cls(
            as_of=as_of,
            suspect_move=suspect_move,
            duckdb_memory_limit=memory,
            lake_uri=lake,
            runs_uri=resolve_location(get("CONDVEST_RUNS_URI") or "./runs", root),
            s3_endpoint_url=get("AWS_ENDPOINT_URL_S3") or get("AWS_ENDPOINT_URL"),
            pg_dsn=Secret(v) if (v := get("CONDVEST_PG_DSN")) else None,
            home=Path(resolve_location(get("CONDVEST_HOME") or ".condvest", root)),
            polygon_base_url=base_url,
            polygon_api_key=Secret(v) if (v := get("POLYGON_API_KEY") or get("MASSIVE_API_KEY")) else None,
            polygon_api_key_secret_arn=get("POLYGON_API_KEY_SECRET_ARN"),
            rds_secret_arn=get("RDS_SECRET_ARN"),
            rds_endpoint=get("RDS_ENDPOINT") or db.get("rds_endpoint"),
            rds_username=get("RDS_USERNAME") or db.get("rds_username"),
            rds_password=Secret(v) if (v := get("RDS_PASSWORD") or db.get("rds_password")) else None,
            rds_db_name=get("RDS_DB_NAME") or db.get("rds_db_name") or "condvest",
            aws_region=get("AWS_REGION") or get("AWS_DEFAULT_REGION"),
            batch_job_queue=get("BATCH_JOB_QUEUE"),
            resampling_job_definition=get("RESAMPLING_JOB_DEFINITION"),
            chart_png=(get("CONDVEST_CHART_PNG") or "1") not in ("0", "false", "False", "no"),
            batch_size=get_int("BATCH_SIZE", 50),
            cloud=CloudSettings.from_env(get),
            retention=retention,
            http=http,
            root=root,
            lock_lease_s=get_int("CONDVEST_LOCK_LEASE_S", DEFAULT_LOCK_LEASE_S),
            pg_timeouts=pg_timeouts,
        )

    def today(self) -> dt.date:
        """The run's "today" in New York: ``as_of`` when pinned, else the real date."""
        if self.as_of is not None:
            return self.as_of
        return today_in_new_york()

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (tests, notebooks)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> dict[str, str]:
        """What a run will use, for notebooks and logs: no secret values, only whether they are set."""
        if self.pg_dsn is not None:
            pg = "CONDVEST_PG_DSN"
        elif self.rds_secret_arn or self.rds_endpoint:
            pg = "RDS (" + ("secret ARN" if self.rds_secret_arn else f"endpoint {self.rds_endpoint}") + ")"
        else:
            pg = f"embedded cluster under {self.home}"
        if self.polygon_api_key is not None:
            key = "POLYGON_API_KEY (set)"
        elif self.polygon_api_key_secret_arn:
            key = "POLYGON_API_KEY_SECRET_ARN (set)"
        else:
            key = "missing"
        return {
            "project root": str(self.root) if self.root is not None else "not resolved",
            "lake": self.lake_uri,
            "runs": self.runs_uri,
            "s3 endpoint": self.s3_endpoint_url or "AWS default",
            "polygon": self.polygon_base_url,
            "api key": key,
            "postgres": pg,
            "retention": self.retention.as_interval(),
            "today (New York)": self.today().isoformat(),
        }

    def secrets(self) -> list[str]:
        """Every secret value this object holds (for output scrubbing)."""
        out = []
        for v in (self.pg_dsn, self.polygon_api_key, self.rds_password):
            if v is not None and v.reveal():
                out.append(v.reveal())
        return out
