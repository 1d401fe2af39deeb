"""Adopt the previous pipeline's database in place: its raw_ohlcv, raw_ohlcv_archive and data_retention_log.

    inspect(conn) -> AdoptionPlan          what adoption would do (read-only; 04_retention's dry run shows it)
    adopt(conn, as_of=..., retention=...)  do it, in one transaction -> AdoptionReport

The previous pipeline stored prices as DECIMAL(10,2), volume as BIGINT, "timestamp" as a naive TIMESTAMP
holding the UTC instant of New York midnight, keyed (symbol, "timestamp", "interval"). Adoption reads each
"timestamp" as UTC, takes its New York date as the session, and copies the rows into the workbench's tables
(sql/001-003: double precision, timestamptz at 00:00 New York, key (symbol, "timestamp"), monthly partitions
as on a fresh deployment); the old log's runs are carried into the new log; the old procedure and views are
replaced. It stops, writing nothing, when a (symbol, session) has two rows, a bar is in both tables, or a row
breaks the bar check, and names them. Row counts and a checksum of every bar are compared before and after,
inside the transaction: a difference rolls everything back. Tables the workbench does not use are left
untouched and listed. The statements are the named blocks of ``sql/adopt_previous_pipeline.sql``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
from typing import Any

import pandas as pd
from psycopg import sql

from condvest.errors import DatabaseError, ValidationError
from condvest.postgres import SQL_DIR, sql_files
from condvest.retention.views import db_error
from condvest.settings import Retention

log = logging.getLogger(__name__)

ADOPT_SQL = "adopt_previous_pipeline.sql"
#: tables of the workbench (converted when they have the previous pipeline's shape)
OWN_TABLES = ("raw_ohlcv", "raw_ohlcv_archive", "data_retention_log")
#: the previous pipeline's views, recreated by sql/004
_OLD_VIEWS = ("v_raw_ohlcv_data_distribution", "v_archive_statistics", "v_retention_log_summary")
_SCHEMA_FILES = ("001_raw_ohlcv.sql", "002_retention_tables.sql", "003_retention_procedure.sql")
_VIEW_FILES = ("004_retention_views.sql", "005_retention_schedule.sql")
_MONTHS_AHEAD = 4


def _blocks() -> dict[str, str]:
    """The named statements of sql/adopt_previous_pipeline.sql (``-- name: x`` starts block x)."""
    text = (SQL_DIR / ADOPT_SQL).read_text()
    out: dict[str, str] = {}
    for part in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = part.partition("\n")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        out[name.strip()] = "\n".join(lines).strip()
    return out


def _q(block: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(_blocks()[block]).format(**parts)


def _columns(conn: Any, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return {r[0]: r[1] for r in rows}


def legacy_tables(conn: Any) -> dict[str, dict[str, str]]:
    """The workbench's tables that have the previous pipeline's shape, with their columns: raw_ohlcv and
    raw_ohlcv_archive with a naive "timestamp" or numeric prices, data_retention_log with execution_date."""
    found = {}
    for table in OWN_TABLES:
        cols = _columns(conn, table)
        if not cols:
            continue
        if table == "data_retention_log":
            old = "execution_date" in cols and "as_of" not in cols
        else:
            old = cols.get("timestamp") == "timestamp without time zone" or cols.get("open") == "numeric"
        if old:
            found[table] = cols
    return found


def other_tables(conn: Any) -> tuple[str, ...]:
    """Tables of this schema that the workbench does not use (left untouched), e.g. data_ingestion_watermark."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c"
        " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND c.relname NOT LIKE 'raw\\_ohlcv%%' AND c.relname <> 'data_retention_log' ORDER BY 1"
    ).fetchall()
    return tuple(r[0] for r in rows)


def _naive(table: str, legacy: dict[str, dict[str, str]]) -> bool:
    return legacy.get(table, {}).get("timestamp") == "timestamp without time zone"


def _session(table: str, legacy: dict[str, dict[str, str]]) -> sql.SQL:
    """The New York session of a row: of a naive "timestamp" read as UTC, or of a timestamptz one."""
    return sql.SQL(_blocks()["legacy_session" if _naive(table, legacy) else "session"])


def _instant(table: str, legacy: dict[str, dict[str, str]]) -> sql.SQL:
    return sql.SQL(_blocks()["legacy_instant" if _naive(table, legacy) else "instant"])


def _checksum(conn: Any, table: str, legacy: dict[str, dict[str, str]]) -> tuple[int, int]:
    row = conn.execute(_q("checksum", table=sql.Identifier(table), session=_session(table, legacy))).fetchone()
    return int(row[0]), int(row[1])


def _keys(rows: list[tuple[Any, ...]]) -> tuple[str, ...]:
    return tuple(f"{r[0]} {r[1]}" + (f" ({r[2]} rows)" if len(r) > 2 else "") for r in rows)


@dataclasses.dataclass(frozen=True)
class AdoptionPlan:
    """What adoption finds: the tables of the old shape, their rows, and what would stop it."""

    legacy: tuple[str, ...]
    rows: dict[str, int]
    first_session: dt.date | None
    last_session: dt.date | None
    restamped: int
    duplicates: tuple[str, ...]
    overlaps: tuple[str, ...]
    bad_bars: tuple[str, ...]
    dropped_columns: tuple[str, ...]
    untouched: tuple[str, ...]

    @property
    def needed(self) -> bool:
        return bool(self.legacy)

    @property
    def blockers(self) -> tuple[str, ...]:
        out = []
        if self.duplicates:
            out.append("(symbol, session) with more than one row: " + ", ".join(self.duplicates))
        if self.overlaps:
            out.append("bars in both raw_ohlcv and raw_ohlcv_archive: " + ", ".join(self.overlaps))
        if self.bad_bars:
            out.append("rows breaking low <= open, close <= high, volume >= 0: " + ", ".join(self.bad_bars))
        return tuple(out)

    def to_frame(self) -> pd.DataFrame:
        conv = [f"{t} ({self.rows.get(t, 0)} rows)" for t in self.legacy]
        record: dict[str, Any] = {
            "previous pipeline's tables": ", ".join(conv) or "none (nothing to adopt)",
            "sessions": f"{self.first_session} .. {self.last_session}" if self.first_session else "-",
            "rows re-stamped to 00:00 New York": self.restamped,
            "columns not carried over": ", ".join(self.dropped_columns) or "none",
            "left untouched": ", ".join(self.untouched) or "none",
            "stops adoption": "; ".join(self.blockers) or "nothing",
        }
        return pd.DataFrame({"item": list(record), "value": [str(v) for v in record.values()]}).set_index("item")

    def summary(self) -> dict[str, Any]:
        return {
            "adoption_needed": self.needed,
            "legacy_tables": list(self.legacy),
            "legacy_rows": sum(self.rows.values()),
            "blockers": len(self.blockers),
            "untouched": list(self.untouched),
        }


_KNOWN = {"symbol", "timestamp", "open", "high", "low", "close", "volume", "interval", "archived_at", "id"}
_LOG_KNOWN = {
    "id",
    "execution_date",
    "retention_threshold",
    "records_archived",
    "records_deleted",
    "status",
    "error_message",
    "execution_time_seconds",
}


def _inspect(conn: Any) -> AdoptionPlan:
    legacy = legacy_tables(conn)
    rows: dict[str, int] = {}
    dupes: list[str] = []
    bad: list[str] = []
    dropped: list[str] = []
    overlaps: tuple[str, ...] = ()
    restamped = 0
    first = last = None
    for table, cols in legacy.items():
        ident = sql.Identifier(table)
        rows[table] = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0])
        known = _LOG_KNOWN if table == "data_retention_log" else _KNOWN
        dropped += [f"{table}.{c}" for c in cols if c not in known]
        if table == "data_retention_log":
            continue
        s = _session(table, legacy)
        dupes += [f"{table}: {k}" for k in _keys(conn.execute(_q("duplicates", table=ident, session=s)).fetchall())]
        bad += [f"{table}: {k}" for k in _keys(conn.execute(_q("bad_bars", table=ident, session=s)).fetchall())]
        q = _q("restamped", table=ident, session=s, instant=_instant(table, legacy))
        restamped += int(conn.execute(q).fetchone()[0])
        lo, hi = conn.execute(_q("span", table=ident, session=s)).fetchone()
        first = lo if first is None or (lo is not None and lo < first) else first
        last = hi if last is None or (hi is not None and hi > last) else last
    if {"raw_ohlcv", "raw_ohlcv_archive"} & set(legacy) and _columns(conn, "raw_ohlcv_archive"):
        q = _q(
            "overlaps",
            session=_session("raw_ohlcv", legacy),
            session_archive=_session("raw_ohlcv_archive", legacy),
        )
        overlaps = _keys(conn.execute(q).fetchall())
    return AdoptionPlan(
        tuple(legacy),
        rows,
        first,
        last,
        restamped,
        tuple(dupes),
        overlaps,
        tuple(bad),
        tuple(dropped),
        other_tables(conn),
    )


def inspect(conn: Any) -> AdoptionPlan:
    """What adoption would do, read in a read-only transaction: nothing is written."""
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION READ ONLY")
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            found = _inspect(conn)
    except Exception as exc:
        raise db_error(exc, "raw_ohlcv") from exc
    log.info(
        "adoption_inspected legacy=%s rows=%s blockers=%s", ",".join(found.legacy), found.rows, len(found.blockers)
    )
    return found


@dataclasses.dataclass(frozen=True)
class AdoptionReport:
    """What adoption did: the plan it followed, rows and checksums before and after, the log rows carried."""

    plan: AdoptionPlan
    before: dict[str, tuple[int, int]]
    after: dict[str, tuple[int, int]]
    log_rows: int
    partitions_created: int

    def summary(self) -> dict[str, Any]:
        return {
            "mode": "adopt",
            "converted": list(self.plan.legacy),
            "rows": {t: n for t, (n, _) in self.after.items()},
            "checksums_equal": all(self.before[t] == self.after[t] for t in self.before),
            "log_rows_carried": self.log_rows,
            "untouched": list(self.plan.untouched),
        }

    def to_frame(self) -> pd.DataFrame:
        rows = [
            {
                "table": t,
                "rows before": self.before[t][0],
                "rows after": self.after[t][0],
                "checksum equal": self.before[t][1] == self.after[t][1],
            }
            for t in self.before
        ]
        if "data_retention_log" in self.plan.legacy:
            n = self.plan.rows["data_retention_log"]
            rows.append({"table": "data_retention_log", "rows before": n, "rows after": self.log_rows})
        rows += [{"table": t, "rows before": "untouched", "rows after": "untouched"} for t in self.plan.untouched]
        return pd.DataFrame(rows).set_index("table")


def _drop_old(conn: Any, legacy: dict[str, dict[str, str]]) -> None:
    for view in _OLD_VIEWS:
        conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(view)))
    conn.execute(_blocks()["drop_old_routines"])
    for table in legacy:
        # no CASCADE: an object of someone else that depends on the old table stops adoption, named
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))


def adopt(conn: Any, *, as_of: dt.date, retention: Retention | None = None, lock_timeout: str = "5s") -> AdoptionReport:
    """Convert the previous pipeline's tables in place, in one transaction (see the module docstring).
    ``ValidationError`` names what stops it (nothing is written); ``DatabaseError`` for a failed statement."""
    r = retention or Retention()
    cutoff = r.cutoff(as_of)
    try:
        with conn.transaction():
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
            present = [t for t in OWN_TABLES if _columns(conn, t)]
            if present:
                conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                        sql.SQL(", ").join(map(sql.Identifier, present))
                    )
                )
            found = _inspect(conn)
            if found.blockers:
                raise ValidationError("adoption stopped, nothing changed: " + "; ".join(found.blockers))
            legacy = legacy_tables(conn)
            before = {t: _checksum(conn, t, legacy) for t in ("raw_ohlcv", "raw_ohlcv_archive") if t in legacy}
            for table, stash in (("raw_ohlcv", "_adopt_hot"), ("raw_ohlcv_archive", "_adopt_archive")):
                if table in legacy:
                    extra = (
                        sql.SQL(", archived_at::timestamp AT TIME ZONE 'UTC' AS archived_at")
                        if "archived_at" in legacy[table]
                        else sql.SQL(", NULL::timestamptz AS archived_at")
                    )
                    conn.execute(
                        _q(
                            "stash",
                            stash=sql.Identifier(stash),
                            table=sql.Identifier(table),
                            session=_session(table, legacy),
                            extra=extra,
                        )
                    )
            if "data_retention_log" in legacy:
                conn.execute(_q("stash_log"))
            _drop_old(conn, legacy)
            for f in sql_files(_SCHEMA_FILES):
                conn.execute(f.read_text())
            partitions = 0
            if found.last_session is not None:
                first = max(cutoff, found.first_session or cutoff).replace(day=1)
                last = (pd.Timestamp(max(as_of, found.last_session)) + pd.DateOffset(months=_MONTHS_AHEAD)).date()
                partitions = int(
                    conn.execute("SELECT ensure_raw_ohlcv_partitions(%s::date, %s::date)", (first, last)).fetchone()[0]
                )
            if "raw_ohlcv" in legacy:
                conn.execute(_q("load_hot"))
            if "raw_ohlcv_archive" in legacy:
                conn.execute(_q("load_archive"))
            carried = conn.execute(_q("load_log")).rowcount if "data_retention_log" in legacy else 0
            after = {t: _checksum(conn, t, {}) for t in before}
            for table in before:
                if before[table] != after[table]:
                    raise ValidationError(
                        f"{table}: rows/checksum {before[table]} before, {after[table]} after: rolled back"
                    )
            if carried != found.rows.get("data_retention_log", 0):
                raise ValidationError(f"data_retention_log: {carried} of {found.rows['data_retention_log']} carried")
            for f in sql_files(_VIEW_FILES):
                conn.execute(f.read_text())
    except (ValidationError, DatabaseError):
        raise
    except Exception as exc:
        raise db_error(exc, "raw_ohlcv") from exc
    report = AdoptionReport(found, before, after, int(carried), partitions)
    log.info(
        "adoption_done converted=%s rows=%s log_rows=%s partitions=%s untouched=%s",
        ",".join(found.legacy),
        {t: n for t, (n, _) in after.items()},
        carried,
        partitions,
        ",".join(found.untouched),
    )
    return report
