"""Reading the lake's bronze layer with DuckDB: the rows of bronze objects (and of the DMS export while it is
read, and of fetch's session batches), one row per (symbol, session) by ``condvest.bronze``'s merge rule,
numbered per symbol. Shared by 02_resample (which aggregates the rows into bars) and 06_explore (which shows
them); the bar SQL stays in ``condvest.resample.engine``.

    connect(store, threads=None, memory_limit=None)      a DuckDB connection set up for these reads
    register_dms(con, store, keys, symbols)              the DMS export files as the view ``dms_rows``
    load_rows(con, store, table, keys, dms, ...)         temp table ``table`` (one of ``TABLES``) of the rows
    batched_rows(store, keys, etags)                     daily rows found in fetch's session batches

All SQL is fixed text; table names come from ``TABLES``, every value (file lists, paths) is bound.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from condvest import duck
from condvest.bars import BRONZE_SCHEMA
from condvest.bronze import DEDUP_ORDER_SQL, SOURCE_RANK, find_corrupt_object
from condvest.dms import read_dms_file
from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import BATCH_PREFIX, batch_prefix, parse_bronze_key
from condvest.storage import Store, local_files

log = logging.getLogger(__name__)

#: the temp tables ``load_rows`` may create (an allow-list: the name is part of the SQL text)
TABLES = frozenset({"rows", "delta"})

# {rank}: bronze.SOURCE_RANK of data.parquet objects or of daily files (constants, not input); {date}: one of
# _DATE_EXPRS (constants)
_RAW_SELECT = """
SELECT CAST(symbol AS VARCHAR) AS symbol, {date} AS date, CAST(open AS DOUBLE) AS open,
       CAST(high AS DOUBLE) AS high, CAST(low AS DOUBLE) AS low, CAST(close AS DOUBLE) AS close,
       CAST(volume AS DOUBLE) AS volume, {ingested} AS ingested_at, {rank} AS src_rank
FROM read_parquet(${param}{union})
"""
# The session date: the file's ``date``; files of the previous fetcher have none, their session is the New
# York date of ``timestamp`` (naive = UTC; the connection's TimeZone is UTC, so the casts keep the instant
# whether the column is naive or not, in micro- or nanoseconds). Mixed lakes: a file's date, else the derived one.
_NY_DATE = "CAST(timezone('America/New_York', CAST(CAST(\"timestamp\" AS TIMESTAMP) AS TIMESTAMPTZ)) AS DATE)"
_DATE_EXPRS = ("CAST(date AS DATE)", f"coalesce(CAST(date AS DATE), {_NY_DATE})", _NY_DATE)
# rows taken from fetch's session batches instead of opening their daily files (same rows, same rank)
_BATCH_SELECT = """
SELECT CAST(symbol AS VARCHAR) AS symbol, CAST(date AS DATE) AS date, CAST(open AS DOUBLE) AS open,
       CAST(high AS DOUBLE) AS high, CAST(low AS DOUBLE) AS low, CAST(close AS DOUBLE) AS close,
       CAST(volume AS DOUBLE) AS volume, CAST(ingested_at AS TIMESTAMPTZ) AS ingested_at, {daily} AS src_rank
FROM batch_rows
""".format(daily=SOURCE_RANK["daily"])
_DMS_SELECT = """
SELECT symbol, date, open, high, low, close, volume, CAST(ingested_at AS TIMESTAMPTZ) AS ingested_at,
       {dms} AS src_rank
FROM dms_rows
""".format(dms=SOURCE_RANK["dms"])
# One pass: within each symbol, rows in (date, bronze's merge rule) order; the first row of each date is kept
# and the session index i is the dense rank of the date.
_DEDUP = """
SELECT symbol, date, open, high, low, close, volume, dense_rank() OVER (PARTITION BY symbol ORDER BY date) - 1 AS i
FROM ({raw}) WHERE $all_symbols OR symbol IN (SELECT symbol FROM wanted)
QUALIFY lag(date) OVER (PARTITION BY symbol ORDER BY date, {order}) IS DISTINCT FROM date
"""


def connect(store: Store, threads: int | None = None, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that reads and writes ``store.url(...)`` paths (httpfs and credentials for S3)."""
    con = duck.connect(store, threads=threads, memory_limit=memory_limit)
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET TimeZone = 'UTC'")  # naive bronze timestamps are UTC (the previous fetcher's files)
    return con


def register_dms(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    keys: list[str],
    symbols: set[str] | None,
    keep: Callable[[str], bool] | None = None,
) -> int:
    """Read the DMS export files (explicit schema) into the view ``dms_rows``; returns the rows read. Only the
    rows of ``symbols`` (when given) and of the symbols ``keep`` accepts (a shard's, when given)."""
    tables = []
    for k in keys:
        t = read_dms_file(store, k, symbols)
        if keep is not None:
            mine = [s for s in pc.unique(t.column("symbol")).to_pylist() if s is not None and keep(s)]
            t = t.filter(pc.is_in(t.column("symbol"), pa.array(mine, pa.string())))
        tables.append(t.append_column("filename", pa.array([store.url(k)] * t.num_rows, pa.string())))
    schema = BRONZE_SCHEMA.append(pa.field("filename", pa.string()))
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    con.register("dms_rows", table)
    return table.num_rows


def load_rows(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    table: str,
    keys: list[str],
    dms: bool,
    symbols: set[str] | None = None,
    batch: pa.Table | None = None,
) -> int:
    """Create temp table ``table`` (symbol, date, OHLCV, i) from bronze objects ``keys`` (+ ``dms_rows``, +
    ``batch``: daily rows taken from session batches), deduplicated on (symbol, date) and numbered per
    symbol from 0. Returns the rows read."""
    if table not in TABLES:
        raise ValueError(table)
    # DuckDB reads files: an object store's are fetched first, many at a time (``local_files``); its httpfs would
    # keep about one object per DuckDB thread in flight, each a HEAD and ranged GETs
    with local_files(store, keys) as paths:
        return _load(con, store, table, keys, paths, dms, symbols, batch)


def _load(
    con: duckdb.DuckDBPyConnection,
    store: Store,
    table: str,
    keys: list[str],
    paths: dict[str, str],
    dms: bool,
    symbols: set[str] | None,
    batch: pa.Table | None,
) -> int:
    con.register("wanted", pa.table({"symbol": pa.array(sorted(symbols or ()), pa.string())}))
    history = [paths[k] for k in keys if k.endswith("/data.parquet")]
    daily = [paths[k] for k in keys if not k.endswith("/data.parquet")]
    params: dict[str, object] = {"all_symbols": symbols is None}
    scans = []
    for param, rank, urls in (("history", SOURCE_RANK["history"], history), ("daily", SOURCE_RANK["daily"], daily)):
        if urls:
            params[param] = urls
            scans.append((param, rank))
    use_batch = batch is not None and batch.num_rows > 0
    if use_batch:
        con.register("batch_rows", batch)
    if not scans and not dms and not use_batch:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {table} (symbol VARCHAR, date DATE, open DOUBLE, high DOUBLE, "
            "low DOUBLE, close DOUBLE, volume DOUBLE, i BIGINT)"
        )
        return 0
    # fastest first: one schema for all files; then by column name (a file without ``date`` gets the derived
    # one); then for files without ingested_at; then for lakes where no file has ``date`` (the previous fetcher)
    ing, none, union = "CAST(ingested_at AS TIMESTAMPTZ)", "CAST(NULL AS TIMESTAMPTZ)", ", union_by_name = true"
    same, mixed, derived = _DATE_EXPRS
    attempts = [
        ("", ing, same),
        (union, ing, mixed),
        (union, none, mixed),
        (union, ing, derived),
        (union, none, derived),
    ]
    for k, (union, ingested, date) in enumerate(attempts):
        parts = [
            _RAW_SELECT.format(ingested=ingested, rank=rank, param=param, union=union, date=date)
            for param, rank in scans
        ]
        if use_batch:
            parts.append(_BATCH_SELECT)
        if dms:
            parts.append(_DMS_SELECT)
        dedup = _DEDUP.format(raw=" UNION ALL ".join(parts), order=DEDUP_ORDER_SQL)
        sql = f"CREATE OR REPLACE TEMP TABLE {table} AS {dedup}"
        try:
            con.execute(sql, params)
            break
        except duckdb.Error as exc:  # schemas differ, a column is missing, or a file is unreadable
            if k == len(attempts) - 1:
                raise find_corrupt_object(store, keys, exc) from exc
            log.debug("bronze read retry attempt=%d error=%s", k + 1, exc)
    if union:  # union_by_name fills a missing column with NULLs: refuse half-empty columns, naming the file
        _refuse_missing_values(con, paths, params, [param for param, _ in scans], date)
    return int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# {date}: the _DATE_EXPRS member the read used (a file of the previous fetcher derives it from ``timestamp``)
_NULL_CHECK = (
    "SELECT filename FROM read_parquet(${param}, union_by_name = true, filename = true) WHERE symbol IS NULL "
    "OR ({date}) IS NULL OR open IS NULL OR high IS NULL OR low IS NULL OR close IS NULL OR volume IS NULL LIMIT 1"
)


def _refuse_missing_values(
    con: duckdb.DuckDBPyConnection,
    paths: dict[str, str],
    params: dict[str, object],
    scans: list[str],
    date: str,
) -> None:
    """``CorruptObject`` naming the first bronze object that lacks a required column (or holds a NULL in one)."""
    by_path = {path: k for k, path in paths.items()}
    for param in scans:
        if param not in ("history", "daily") or date not in _DATE_EXPRS:
            raise ValueError(param)
        row = con.execute(_NULL_CHECK.format(param=param, date=date), {param: params[param]}).fetchone()
        if row is not None:
            key = by_path.get(row[0], row[0])
            raise CorruptObject("bronze object lacks a required column or value (symbol, date, OHLCV)", key=key)


def batched_rows(store: Store, keys: list[str], etags: dict[str, str]) -> tuple[pa.Table | None, list[str]]:
    """Split daily files ``keys`` into rows found in fetch's session batches under the file's current etag
    (``etags``: key -> etag from the listing) and the keys that must be read themselves.

    A batch is only a shortcut: a file rewritten after its batch has another etag and is read itself; a
    batch that cannot be read is skipped with a warning (its files are then read one by one)."""
    days = sorted({p[1] for p in map(parse_bronze_key, keys) if p is not None and p[1] is not None})
    if not days:
        return None, keys
    prefixes = tuple(batch_prefix(d) for d in days)
    # one listing of the batches when they span many sessions (a full rebuild), one per session otherwise
    found = (
        [o for o in store.list(f"{BATCH_PREFIX}/") if o.key.startswith(prefixes)]
        if len(days) > 2
        else [o for d in days for o in store.list(batch_prefix(d))]
    )
    schema = BRONZE_SCHEMA.append(pa.field("key", pa.string())).append(pa.field("etag", pa.string()))

    def read(key: str) -> pa.Table | None:
        try:
            return pq.read_table(io.BytesIO(store.get(key))).select(schema.names).cast(schema)
        except ObjectNotFound:
            return None
        except (pa.ArrowException, OSError, KeyError) as exc:
            log.warning("batch=unreadable key=%s error=%s (its daily files are read instead)", key, exc)
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(found)))) as pool:
        tables = [t for t in pool.map(read, [o.key for o in found]) if t is not None]
    if not tables:
        return None, keys
    batch = pa.concat_tables(tables)
    wanted = set(keys)
    seen: set[str] = set()
    take = []
    for i, (k, e) in enumerate(zip(batch.column("key").to_pylist(), batch.column("etag").to_pylist(), strict=True)):
        if k in wanted and k not in seen and etags.get(k) == e:
            seen.add(k)
            take.append(i)
    covered = batch.take(pa.array(take, pa.int64())).select(BRONZE_SCHEMA.names)
    return covered, [k for k in keys if k not in seen]
