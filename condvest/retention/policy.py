"""The Postgres retention policy: deploy it, preview it (dry run), run it (archive), and read its views.

The policy itself lives in ``sql/002``-``005`` (tables, the ``archive_old_ohlcv_data`` procedure, views,
an optional pg_cron job); this module applies those files and calls the procedure, so that psql,
pg_cron, the notebook and the runner all run the very same code. One cutoff rule everywhere:
``Retention.cutoff`` (alias ``cutoff`` here), which the SQL function ``retention_cutoff`` matches day for
day (months on the calendar, the day clipped to the month's end); ``archive`` checks that agreement on
the server before it moves anything.

Every function that touches the database takes an open psycopg connection; ``archive`` needs it outside
a transaction block (the procedure commits its log row before it re-raises a failure).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import pandas as pd

from condvest.errors import DatabaseError, ParameterError, ValidationError
from condvest.postgres import apply_sql, connect, sql_files
from condvest.retention.adopt import AdoptionPlan, AdoptionReport, adopt, inspect, legacy_tables
from condvest.retention.params import METHODS, RetentionParams
from condvest.retention.params import retention_value as _retention
from condvest.retention.sync import SyncReport, sync
from condvest.retention.views import RetentionViews, read_views
from condvest.retention.views import db_error as _db_error
from condvest.settings import Retention, Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

#: the schema files this policy needs, in apply order (001 is the hot table itself)
POLICY_FILES = (
    "001_raw_ohlcv.sql",
    "002_retention_tables.sql",
    "003_retention_procedure.sql",
    "004_retention_views.sql",
    "005_retention_schedule.sql",
)
#: months of raw_ohlcv partitions kept ready ahead of the run's date
_MONTHS_AHEAD = 4

#: the one cutoff function: ``cutoff(retention, as_of)`` is the first session date kept in raw_ohlcv
cutoff = Retention.cutoff


def retention_cutoff(retention: Retention | Settings, as_of: dt.date) -> dt.date:
    """``Retention.cutoff`` for a ``Retention`` or for a settings object's retention."""
    r = retention.retention if isinstance(retention, Settings) else retention
    return r.cutoff(as_of)


def _frame(record: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"item": list(record), "value": [str(v) for v in record.values()]}).set_index("item")


# ---------------------------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class RetentionPlan:
    """A checked set of notebook parameters: what to do, and the run's one cutoff."""

    mode: str
    retention: Retention
    as_of: dt.date
    cutoff: dt.date
    lock_timeout: str = "5s"
    method: str = "auto"

    def to_frame(self) -> pd.DataFrame:
        return _frame(
            {
                "mode": self.mode,
                "retention": self.retention.as_interval(),
                "as of": self.as_of,
                "cutoff (first date kept)": self.cutoff,
                "lock_timeout": self.lock_timeout,
                "method": self.method,
            }
        )


def plan(settings: Settings, p: RetentionParams | None = None) -> RetentionPlan:
    """Check the parameters before anything is written; ``None`` means the settings' retention / today."""
    c = (p or RetentionParams()).check()
    r = c.retention or settings.retention
    if r != settings.retention:
        log.warning(
            "retention=%r differs from the setting %r that 01_fetch uses",
            r.as_interval(),
            settings.retention.as_interval(),
        )
    day = c.as_of or settings.today()
    return RetentionPlan(c.mode, r, day, r.cutoff(day), c.lock_timeout, c.method)


# -------------------------------------------------------------------------------------------- deploy


@dataclasses.dataclass(frozen=True)
class DeployReport:
    files: tuple[str, ...]
    raw_ohlcv_partitioned: bool
    archive_partitioned: bool
    timescaledb: bool
    pg_cron: bool
    partitions_created: int

    def to_frame(self) -> pd.DataFrame:
        """The deployment, without the partition count (it depends on what was there before)."""
        return _frame(
            {
                "files applied": ", ".join(self.files),
                "raw_ohlcv partitioned by month": self.raw_ohlcv_partitioned,
                "archive partitioned by month": self.archive_partitioned,
                "TimescaleDB": self.timescaledb,
                "pg_cron weekly job": self.pg_cron,
            }
        )

    def summary(self) -> dict[str, Any]:
        """Deterministic for a given server (no partition count, no timings)."""
        return {
            "mode": "deploy",
            "files": len(self.files),
            "partitioned": self.raw_ohlcv_partitioned,
            "timescaledb": self.timescaledb,
            "pg_cron": self.pg_cron,
        }


def _one(conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row, in a transaction of its own (the connection is left idle)."""
    with conn.transaction():
        row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def _has_extension(conn: Any, name: str) -> bool:
    return bool(_one(conn, "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s)", (name,)))


def _is_partitioned(conn: Any, table: str) -> bool:
    return _one(conn, "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,)) == "p"


def is_deployed(conn: Any) -> bool:
    """True when the archive procedure and its tables exist in this database."""
    return bool(
        _one(
            conn,
            "SELECT to_regprocedure('archive_old_ohlcv_data(interval,date,text,text,bigint)')"
            " IS NOT NULL AND to_regclass('data_retention_log') IS NOT NULL",
        )
    )


def _refuse_legacy(conn: Any) -> None:
    with conn.transaction():
        legacy = legacy_tables(conn)
    if legacy:
        raise ValidationError(
            f"{', '.join(legacy)} have the previous pipeline's shape: run 04_retention with mode='adopt' first"
            " (mode='dry-run' shows what it does; sql/deploy_retention_policy.sh adopt)"
        )


def ensure_partitions(conn: Any, start: dt.date, end: dt.date) -> int:
    """Create raw_ohlcv's missing monthly partitions for the months [start, end); returns how many."""
    try:
        with conn.transaction():
            n = conn.execute("SELECT ensure_raw_ohlcv_partitions(%s::date, %s::date)", (start, end)).fetchone()[0]
    except Exception as exc:
        raise _db_error(exc, "raw_ohlcv") from exc
    log.info("partitions_created=%s start=%s end=%s", n, start, end)
    return int(n)


def deploy(conn: Any, *, as_of: dt.date, retention: Retention | None = None) -> DeployReport:
    """Apply the policy's SQL files (each in its own transaction; safe to re-apply) and create the monthly
    partitions of the retention window and the coming months. A database of the previous pipeline stops it:
    ``mode="adopt"`` converts that one."""
    _refuse_legacy(conn)
    files = apply_sql(conn, sql_files(POLICY_FILES))
    r = retention or Retention()
    first = r.cutoff(as_of).replace(day=1)
    last = (pd.Timestamp(as_of) + pd.DateOffset(months=_MONTHS_AHEAD)).date()
    created = ensure_partitions(conn, first, last)
    report = DeployReport(
        tuple(files),
        _is_partitioned(conn, "raw_ohlcv"),
        _is_partitioned(conn, "raw_ohlcv_archive"),
        _has_extension(conn, "timescaledb"),
        _has_extension(conn, "pg_cron"),
        created,
    )
    log.info(
        "retention_deployed files=%s partitioned=%s timescaledb=%s pg_cron=%s",
        len(files),
        report.raw_ohlcv_partitioned,
        report.timescaledb,
        report.pg_cron,
    )
    return report


# ------------------------------------------------------------------------------------------- dry run

_DRY_RUN_SQL = """
SELECT count(*) AS rows_to_archive,
       (min("timestamp") AT TIME ZONE 'America/New_York')::date AS oldest,
       (max("timestamp") AT TIME ZONE 'America/New_York')::date AS newest,
       count(DISTINCT symbol) AS symbols,
       (SELECT count(*) FROM raw_ohlcv) AS rows_in_raw_ohlcv
  FROM raw_ohlcv
 WHERE "timestamp" < (%(cutoff)s::date)::timestamp AT TIME ZONE 'America/New_York'
"""


def dry_run(conn: Any, cutoff: dt.date) -> pd.DataFrame:
    """What an archive with this cutoff would move (count, oldest, newest, symbols), in a read-only
    transaction: it changes nothing."""
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            cur = conn.execute(_DRY_RUN_SQL, {"cutoff": cutoff})
            row = cur.fetchone()
            cols = [d.name for d in cur.description]
    except Exception as exc:
        raise _db_error(exc, "raw_ohlcv") from exc
    df = pd.DataFrame([row], columns=cols)
    df.insert(0, "cutoff", cutoff)
    log.info("dry_run cutoff=%s rows_to_archive=%s", cutoff, int(df.at[0, "rows_to_archive"]))
    return df


# ------------------------------------------------------------------------------------------- archive


@dataclasses.dataclass(frozen=True)
class ArchiveResult:
    """One run of archive_old_ohlcv_data, as logged in data_retention_log."""

    run_id: int
    status: str
    as_of: dt.date
    cutoff: dt.date
    method: str
    archived: int
    deleted: int
    partitions_moved: int
    seconds: float
    error: str | None

    def summary(self) -> dict[str, Any]:
        """The deterministic part (no timings, no run id)."""
        return {
            "status": self.status,
            "as_of": self.as_of,
            "cutoff": self.cutoff,
            "archived": self.archived,
            "deleted": self.deleted,
            "partitions_moved": self.partitions_moved,
        }

    def to_frame(self) -> pd.DataFrame:
        return _frame(self.summary())


_LOG_SQL = """
SELECT id, status, as_of, cutoff_date, method, records_archived, records_deleted, partitions_moved,
       execution_time_seconds, error_message
  FROM data_retention_log WHERE id = %s
"""


def archive(
    conn: Any,
    retention: Retention | str | None = None,
    *,
    as_of: dt.date,
    lock_timeout: str = "5s",
    method: str = "auto",
) -> ArchiveResult:
    """Move every bar dated before ``cutoff(retention, as_of)`` to raw_ohlcv_archive by calling
    ``archive_old_ohlcv_data``. Returns the logged run (status ``success`` or ``skipped`` when another run
    holds the lock); raises ``DatabaseError`` for a failed run (already rolled back and logged)."""
    r = _retention(retention)
    expected = r.cutoff(as_of)
    if method not in METHODS:
        raise ParameterError(f"unknown method {method!r}", parameter="method")
    from psycopg.pq import TransactionStatus

    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise DatabaseError("archive needs a connection outside a transaction block", table="raw_ohlcv")
    was_autocommit = conn.autocommit
    conn.autocommit = True
    try:
        server = conn.execute("SELECT retention_cutoff(%s::interval, %s::date)", (r.as_interval(), as_of)).fetchone()
        if server[0] != expected:
            raise ValidationError(f"cutoff mismatch: SQL retention_cutoff gives {server[0]}, Python {expected}")
        log.info("archive_start as_of=%s cutoff=%s retention=%r method=%s", as_of, expected, r.as_interval(), method)
        try:
            run_id = conn.execute(
                "CALL archive_old_ohlcv_data(%s::interval, %s::date, %s, %s, NULL)",
                (r.as_interval(), as_of, lock_timeout, method),
            ).fetchone()[0]
        except Exception as exc:
            log.error("archive_failed as_of=%s cutoff=%s error=%r", as_of, expected, str(exc).splitlines()[0])
            raise _db_error(exc, "raw_ohlcv") from exc
        row = conn.execute(_LOG_SQL, (run_id,)).fetchone()
    finally:
        conn.autocommit = was_autocommit
    result = ArchiveResult(
        int(row[0]), row[1], row[2], row[3], row[4], int(row[5]), int(row[6]), int(row[7]), float(row[8] or 0), row[9]
    )
    log.info(
        "archive_done run_id=%s status=%s archived=%s deleted=%s partitions=%s seconds=%.3f",
        result.run_id,
        result.status,
        result.archived,
        result.deleted,
        result.partitions_moved,
        result.seconds,
    )
    return result


@dataclasses.dataclass(frozen=True)
class RetentionOutcome:
    """What a retention run did: the table the notebook shows (``to_frame``), a deterministic ``summary`` for
    the run index, the details, and (from ``run_retention``) what lies beyond the cutoff now and the views."""

    mode: str
    table: pd.DataFrame
    figures: dict[str, Any]
    deploy: DeployReport | None = None
    archive: ArchiveResult | None = None
    adoption: AdoptionReport | AdoptionPlan | None = None
    sync: SyncReport | None = None
    beyond_cutoff: pd.DataFrame | None = None
    views: RetentionViews | None = None

    def summary(self) -> dict[str, Any]:
        return dict(self.figures)

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def raise_for_status(self) -> None:
        """``DatabaseError`` when the archive run was logged as failed (it was rolled back; the log says why)."""
        if self.archive is not None and self.archive.status == "failed":
            raise DatabaseError(f"archive run {self.archive.run_id} failed: {self.archive.error}", table="raw_ohlcv")


def execute(conn: Any, run: RetentionPlan, store: Store | None = None) -> RetentionOutcome:
    """Do what the plan's mode says: ``deploy``, ``dry-run`` (nothing written; on the previous pipeline's
    database, what adoption would do), ``archive`` (which deploys first only when the policy is missing from
    this database), ``adopt`` (convert the previous pipeline's tables, then deploy) or ``sync`` (raw_ohlcv
    compared with the bronze of ``store`` over the window and re-filled from it: ``condvest.retention.sync``)."""
    if run.mode == "sync":
        if store is None:
            raise ParameterError("mode 'sync' needs the lake (store) to compare with", parameter="mode")
        _refuse_legacy(conn)
        report = sync(conn, store, run.cutoff, run.as_of)
        return RetentionOutcome(run.mode, report.to_frame(), report.summary(), sync=report)
    if run.mode == "deploy":
        report = deploy(conn, as_of=run.as_of, retention=run.retention)
        return RetentionOutcome(run.mode, report.to_frame(), report.summary(), deploy=report)
    if run.mode == "adopt":
        report = adopt(conn, as_of=run.as_of, retention=run.retention, lock_timeout=run.lock_timeout)
        deploy(conn, as_of=run.as_of, retention=run.retention)
        return RetentionOutcome(run.mode, report.to_frame(), report.summary(), adoption=report)
    if run.mode == "dry-run":
        found = inspect(conn)
        if found.needed:
            # the previous pipeline's tables: what adoption would do comes first
            summary = {"mode": run.mode, "cutoff": run.cutoff.isoformat(), **found.summary()}
            return RetentionOutcome(run.mode, found.to_frame(), summary, adoption=found)
        table = dry_run(conn, run.cutoff)
        summary = {
            "mode": run.mode,
            "cutoff": run.cutoff.isoformat(),
            "rows_to_archive": int(table.at[0, "rows_to_archive"]),
        }
        return RetentionOutcome(run.mode, table, summary)
    if not is_deployed(conn):
        log.info("archive_needs_deploy as_of=%s", run.as_of)
        deploy(conn, as_of=run.as_of, retention=run.retention)
    result = archive(conn, run.retention, as_of=run.as_of, lock_timeout=run.lock_timeout, method=run.method)
    summary = {
        "mode": run.mode,
        **{k: v.isoformat() if isinstance(v, dt.date) else v for k, v in result.summary().items()},
    }
    return RetentionOutcome(run.mode, result.to_frame(), summary, archive=result)


def run_retention(settings: Settings, p: RetentionParams | None = None) -> RetentionOutcome:
    """04_retention in one call: check the parameters, connect (``CONDVEST_PG_DSN``, the RDS settings or the
    embedded cluster), do what the mode says, then read what lies beyond the cutoff and the views (empty when
    the policy is not deployed); the connection is closed on return."""
    run = plan(settings, p)
    store = open_store(settings=settings) if run.mode == "sync" else None
    with connect(settings, autocommit=True) as conn:
        outcome = execute(conn, run, store)
        beyond = dry_run(conn, run.cutoff)
        # not deployed (a dry run before deploy or adopt): empty views, so the notebook shows empty tables
        views = (
            read_views(conn) if is_deployed(conn) else RetentionViews(pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
        )
    return dataclasses.replace(outcome, beyond_cutoff=beyond, views=views)
