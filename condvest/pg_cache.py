"""The Postgres hot cache of daily bars: upserts inside the retention window only (01_fetch's writes, and
04_retention's re-fill from bronze), and the record of the last comparison with bronze (``read_last_sync``:
``condvest.retention.sync`` writes it, 05_monitoring reads it)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import pandas as pd
from psycopg import sql

from condvest.errors import CorruptObject, DatabaseError, ObjectNotFound
from condvest.lake import METADATA_PREFIX
from condvest.postgres import apply_sql, sql_files
from condvest.storage import Store

log = logging.getLogger(__name__)

#: where the last comparison of Postgres with bronze is kept (``condvest.retention.sync``; 05_monitoring reads it)
SYNC_KEY = f"{METADATA_PREFIX}/postgres_sync.json"

_COLUMNS = ("symbol", "timestamp", "open", "high", "low", "close", "volume", "interval", "vwap", "transactions")


#: the advisory lock two fetches take to create the table one after the other (CREATE TABLE IF NOT EXISTS
#: racing in two sessions fails with a duplicate key in pg_type)
_DDL_LOCK = 0x636F6E64  # "cond"


def ensure_cache_table(conn: Any) -> None:
    """Apply the raw_ohlcv DDL (idempotent) when the table is missing (two runs at once do it one at a time);
    a raw_ohlcv of the previous pipeline (naive "timestamp") is refused with what to run instead."""
    if conn.execute("SELECT to_regclass('raw_ohlcv')").fetchone()[0] is None:
        conn.execute("SELECT pg_advisory_lock(%s)", (_DDL_LOCK,))
        try:
            if conn.execute("SELECT to_regclass('raw_ohlcv')").fetchone()[0] is None:
                apply_sql(conn, sql_files(["001_raw_ohlcv.sql"]))
            conn.commit()  # visible to the other run before it gets the lock
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_DDL_LOCK,))
        return
    kind = conn.execute(
        "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'raw_ohlcv' AND column_name = 'timestamp'"
    ).fetchone()
    if kind is not None and kind[0] == "timestamp without time zone":
        raise DatabaseError(
            "raw_ohlcv has the previous pipeline's shape: adopt it first (04_retention mode='adopt',"
            " or sql/deploy_retention_policy.sh adopt)",
            table="raw_ohlcv",
        )


def upsert_bars(conn: Any, df: pd.DataFrame, cutoff: dt.date) -> int:
    """Upsert bars dated on or after ``cutoff`` into raw_ohlcv; returns the rows written.

    The key is (symbol, session date), stored as "timestamp" = the session date at 00:00 New York.
    Rows older than the cutoff are never written (they belong to the archive), also when they reach
    this function.
    """
    if df.empty:
        return 0
    rows = df[df["date"] >= cutoff]
    if rows.empty:
        return 0
    stamps = pd.to_datetime(rows["date"].astype(str)).dt.tz_localize("America/New_York")
    data = rows.assign(timestamp=stamps)
    records = zip(
        data["symbol"],
        data["timestamp"],
        data["open"],
        data["high"],
        data["low"],
        data["close"],
        data["volume"],
        data["interval"],
        data["vwap"].astype(object).where(data["vwap"].notna(), None),
        data["transactions"].astype(object).where(data["transactions"].notna(), None),
        strict=True,
    )
    try:
        with conn.transaction():
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _bars_in (LIKE raw_ohlcv INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            copy_sql = sql.SQL("COPY _bars_in ({}) FROM STDIN").format(
                sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
            )
            with conn.cursor().copy(copy_sql) as cp:
                for rec in records:
                    cp.write_row(rec)
            cur = conn.execute(
                """
                INSERT INTO raw_ohlcv AS r (symbol, "timestamp", open, high, low, close, volume, "interval", vwap,
                                            transactions)
                SELECT symbol, "timestamp", open, high, low, close, volume, "interval", vwap, transactions
                FROM _bars_in
                WHERE "timestamp" >= (%(cutoff)s::date)::timestamp AT TIME ZONE 'America/New_York'
                ON CONFLICT (symbol, "timestamp") DO UPDATE
                SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
                    volume = EXCLUDED.volume, "interval" = EXCLUDED."interval", vwap = EXCLUDED.vwap,
                    transactions = EXCLUDED.transactions
                """,
                {"cutoff": cutoff},
            )
            n = cur.rowcount
    except Exception as exc:  # psycopg errors: keep the first line, name the table
        raise DatabaseError(
            str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__, table="raw_ohlcv"
        ) from exc
    return int(n)


def read_last_sync(store: Store) -> dict[str, Any] | None:
    """The last sync's outcome (``SyncReport.to_json``), or None when no sync ran yet."""
    try:
        raw = store.get(SYNC_KEY)
    except ObjectNotFound:
        return None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise CorruptObject(f"unreadable sync record: {exc}", key=SYNC_KEY) from exc
    if not isinstance(data, dict):
        raise CorruptObject("the sync record is not a JSON object", key=SYNC_KEY)
    return data
