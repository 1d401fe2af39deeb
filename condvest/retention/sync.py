"""The cache follows bronze: Postgres ``raw_ohlcv`` compared with bronze over the retention window, session by
session, and what differs re-filled from bronze (no API call).

Per session (New York date, from the cutoff through ``as_of``) both sides give a row count and a checksum of the
values: the sum over rows of each value scaled to 4 decimal places and rounded (``floor(x * 10000 + 0.5)``,
open, high, low, close, volume, vwap, transactions; exact integers on both sides, computed by the same IEEE
arithmetic in Postgres and here) and of a hash-free symbol weight (its length and first letters' codes), so a
lost row, a changed value or a row on another symbol shows. A session that differs is re-filled: bronze's rows of
it are upserted into ``raw_ohlcv`` (``condvest.pg_cache.upsert_bars``, the fetch's own upsert). Rows that
Postgres holds and bronze does not are never deleted (the cache may hold what the previous pipeline wrote): the
session is reported as still differing.

Bronze is read symbol group by symbol group (``SYMBOLS_PER_READ``): each history file and each daily file of the
window once (twice when a session differs: the re-fill reads its groups again), never all of bronze in memory.
The outcome is written to ``processing_metadata/postgres_sync.json`` (``condvest.pg_cache.read_last_sync``) for
05_monitoring.

    sync(conn, store, cutoff, as_of) -> SyncReport      (compare, re-fill, record)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from condvest.bars import BRONZE_COLUMNS
from condvest.bronze import merge_rows, read_bronze_bytes
from condvest.errors import DatabaseError, ObjectNotFound
from condvest.lake import BRONZE_PREFIX, parse_bronze_key
from condvest.pg_cache import SYNC_KEY, ensure_cache_table, upsert_bars
from condvest.storage import Store

__all__ = ["SYMBOLS_PER_READ", "SyncReport", "bronze_figures", "postgres_figures", "sync"]

log = logging.getLogger(__name__)

#: symbols whose bronze objects are read at once (bounded memory: about 800 sessions of each)
SYMBOLS_PER_READ = 500
#: the values each side sums per session, each scaled to 4 decimal places (``_SCALE``) and rounded
_VALUES = ("open", "high", "low", "close", "volume", "vwap")
_SCALE = 10_000.0
FIGURES = ["rows", "checksum"]

# the same figures in SQL: per New York session date of the window, rows and the checksum (numeric: exact)
_PG_FIGURES = """
SELECT (("timestamp" AT TIME ZONE 'America/New_York')::date) AS date, count(*) AS rows,
       sum(floor(open * 10000 + 0.5)::numeric + floor(high * 10000 + 0.5)::numeric
           + floor(low * 10000 + 0.5)::numeric + floor(close * 10000 + 0.5)::numeric
           + floor(volume * 10000 + 0.5)::numeric + coalesce(floor(vwap * 10000 + 0.5)::numeric, 0)
           + coalesce(transactions, 0)::numeric + length(symbol) * 1000003::numeric + ascii(symbol) * 7919::numeric
           + ascii(substr(symbol || ' ', 2)) * 104729::numeric) AS checksum
FROM raw_ohlcv
WHERE "timestamp" >= (%(first)s::date)::timestamp AT TIME ZONE 'America/New_York'
  AND "timestamp" < ((%(last)s::date) + 1)::timestamp AT TIME ZONE 'America/New_York'
GROUP BY 1
"""


def _ascii(s: pd.Series, i: int) -> pd.Series:
    """``ascii(substr(symbol || ' ', i + 1))`` of Postgres: the code of the (i+1)-th character, a space past the end."""
    return s.map(lambda x: ord((x + " ")[i]) if i <= len(x) else 0).astype("int64")


def bronze_figures(rows: pd.DataFrame) -> pd.DataFrame:
    """Per session of ``rows`` (bronze-shaped): ``rows`` and ``checksum`` as Postgres computes them (pure)."""
    if rows.empty:
        return pd.DataFrame({"rows": pd.Series(dtype="int64"), "checksum": pd.Series(dtype="object")})
    total = np.zeros(len(rows), dtype=object)
    for col in _VALUES:
        v = pd.to_numeric(rows[col], errors="coerce").astype("float64").to_numpy()
        scaled = np.floor(v * _SCALE + 0.5)
        total = total + np.where(np.isnan(scaled), 0, scaled).astype("int64").astype(object)
    tx = pd.to_numeric(rows["transactions"], errors="coerce").fillna(0).astype("int64").to_numpy().astype(object)
    sym = rows["symbol"].astype(str)
    weight = sym.str.len().astype("int64") * 1000003 + _ascii(sym, 0) * 7919 + _ascii(sym, 1) * 104729
    total = total + tx + weight.to_numpy().astype(object)
    df = pd.DataFrame({"date": rows["date"].to_numpy(), "checksum": total})
    out = df.groupby("date").agg(rows=("checksum", "size"), checksum=("checksum", lambda s: int(sum(s))))
    return out


def postgres_figures(conn: Any, first: dt.date, last: dt.date) -> pd.DataFrame:
    """Per session of ``first..last`` in ``raw_ohlcv``: ``rows`` and ``checksum`` (index ``date``)."""
    try:
        got = conn.execute(_PG_FIGURES, {"first": first, "last": last}).fetchall()
    except Exception as exc:  # psycopg errors: keep the first line, name the table
        raise DatabaseError(str(exc).strip().splitlines()[0], table="raw_ohlcv") from exc
    df = pd.DataFrame(got, columns=["date", "rows", "checksum"]).set_index("date")
    df["rows"] = df["rows"].astype("int64")
    df["checksum"] = [int(x) for x in df["checksum"]]
    return df


def _symbol_groups(store: Store, first: dt.date, last: dt.date) -> Iterator[list[str]]:
    """The bronze objects that may hold bars of ``first..last``, ``SYMBOLS_PER_READ`` symbols at a time (one
    listing of bronze: each symbol's history and its daily files of the window)."""
    keys: list[str] = []
    symbols: set[str] = set()
    for o in store.list(BRONZE_PREFIX + "/"):
        parsed = parse_bronze_key(o.key)
        if parsed is None:
            continue
        symbol, day = parsed
        if day is not None and not first <= day <= last:
            continue
        if symbol not in symbols and len(symbols) >= SYMBOLS_PER_READ:
            yield keys
            keys, symbols = [], set()
        symbols.add(symbol)
        keys.append(o.key)
    if keys:
        yield keys


def _read_rows(store: Store, keys: list[str], first: dt.date, last: dt.date) -> pd.DataFrame:
    """Bronze's rows of ``first..last`` in ``keys``, one per (symbol, session) by bronze's merge rule."""
    parts = []
    lo, hi = pa.scalar(first, pa.date32()), pa.scalar(last, pa.date32())
    for key in keys:
        try:
            table = read_bronze_bytes(key, store.get(key))
        except ObjectNotFound:  # compaction folded it meanwhile: its rows are in the history read
            continue
        dates = table.column("date")
        table = table.filter(pc.and_(pc.greater_equal(dates, lo), pc.less_equal(dates, hi)))
        if table.num_rows:
            parts.append((table.select(BRONZE_COLUMNS), "history" if key.endswith("/data.parquet") else "daily"))
    return merge_rows(parts).to_pandas() if parts else pd.DataFrame(columns=BRONZE_COLUMNS)


@dataclasses.dataclass
class SyncReport:
    """What a sync found and did: per session that differed, both sides' figures, and whether the re-fill made it
    agree (``refilled``) or Postgres still holds rows bronze does not (``still differs``)."""

    first: dt.date
    last: dt.date
    sessions: int = 0  # sessions compared (those either side holds)
    rows_refilled: int = 0
    table: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    finished_at: str = ""

    @property
    def differing(self) -> int:
        return len(self.table)

    @property
    def still_differing(self) -> int:
        return int((self.table["outcome"] != "refilled").sum()) if len(self.table) else 0

    def summary(self) -> dict[str, Any]:
        return {
            "mode": "sync",
            "first": self.first.isoformat(),
            "last": self.last.isoformat(),
            "sessions_compared": self.sessions,
            "sessions_differing": self.differing,
            "rows_refilled": self.rows_refilled,
            "sessions_still_differing": self.still_differing,
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per session that differed: rows and checksums of bronze and Postgres before, the outcome."""
        return self.table

    def to_json(self) -> dict[str, Any]:
        t = self.table.assign(date=self.table["date"].astype(str)) if len(self.table) else self.table
        return {**self.summary(), "finished_at": self.finished_at, "sessions": t.to_dict("records")}


_TABLE_COLUMNS = ["date", "bronze_rows", "postgres_rows", "checksum_equal", "outcome"]


def _compare(bronze: pd.DataFrame, pg: pd.DataFrame) -> pd.DataFrame:
    both = bronze.join(pg, how="outer", lsuffix="_bronze", rsuffix="_pg")
    both["rows_bronze"] = both["rows_bronze"].fillna(0).astype("int64")
    both["rows_pg"] = both["rows_pg"].fillna(0).astype("int64")
    same = [a == b for a, b in zip(both["checksum_bronze"], both["checksum_pg"], strict=True)]
    both["checksum_equal"] = same
    differ = both[(both["rows_bronze"] != both["rows_pg"]) | ~both["checksum_equal"]]
    out = differ.reset_index().rename(columns={"rows_bronze": "bronze_rows", "rows_pg": "postgres_rows"})
    return out.assign(outcome="")[_TABLE_COLUMNS].sort_values("date").reset_index(drop=True)


def sync(conn: Any, store: Store, cutoff: dt.date, as_of: dt.date, *, refill: bool = True) -> SyncReport:
    """Compare ``raw_ohlcv`` with bronze for the sessions ``cutoff..as_of``; with ``refill``, upsert bronze's rows
    of every session that differs, then compare those sessions again. The outcome is recorded (``SYNC_KEY``)."""
    ensure_cache_table(conn)
    report = SyncReport(cutoff, as_of)
    figures = []
    for keys in _symbol_groups(store, cutoff, as_of):
        figures.append(bronze_figures(_read_rows(store, keys, cutoff, as_of)))
    bronze = _sum_figures(figures)
    pg = postgres_figures(conn, cutoff, as_of)
    report.sessions = len(bronze.index.union(pg.index))
    table = _compare(bronze, pg)
    log.info("sync=compared first=%s last=%s sessions=%d differing=%d", cutoff, as_of, report.sessions, len(table))
    if len(table) and refill:
        wanted = set(table["date"])
        for keys in _symbol_groups(store, min(wanted), max(wanted)):
            rows = _read_rows(store, keys, min(wanted), max(wanted))
            rows = rows[rows["date"].isin(wanted)]
            if len(rows):
                report.rows_refilled += upsert_bars(conn, rows, cutoff)
        after = postgres_figures(conn, min(wanted), max(wanted))
        again = set(_compare(bronze.loc[bronze.index.isin(wanted)], after.loc[after.index.isin(wanted)])["date"])
        table["outcome"] = ["still differs (Postgres holds rows bronze does not)" if d in again else "refilled"
                            for d in table["date"]]  # fmt: skip
        log.warning(
            "sync=refilled sessions=%d rows=%d still_differing=%d", len(table), report.rows_refilled, len(again)
        )
    elif len(table):
        table["outcome"] = "differs (not re-filled)"
    report.table = table
    report.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    store.put(SYNC_KEY, json.dumps(report.to_json(), indent=1).encode())
    return report


def _sum_figures(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({"rows": pd.Series(dtype="int64"), "checksum": pd.Series(dtype="object")})
    both = pd.concat(parts)
    return both.groupby(level=0).agg(rows=("rows", "sum"), checksum=("checksum", lambda s: int(sum(s))))
