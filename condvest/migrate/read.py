"""The migration's read side: list the DMS export, read it with the explicit mapping, deduplicate.

    check_source_prefix(prefix) -> str                 a safe export prefix (not bronze, not metadata)
    list_sources(store, prefix) -> list[ObjectInfo]    the export's *.parquet objects, in key order
    read_sources(store, sources) -> SourceRows         every row in the bronze schema, winners marked

Column mapping and type normalisation are ``condvest.dms.normalize_dms_table`` (``timestamp_1``
is the bar, its New York date the session; int/double volume, ms/µs/text timestamps). On top of it the
migration keeps DMS's own ``timestamp`` column, the row's load time, as ``ingested_at``:

* the rule "newest ``ingested_at`` wins" then orders the export's duplicates by when DMS loaded them
  (ties: the later file in key order, then the later row), and
* any bar that a daily fetch wrote (``ingested_at`` = fetch time, later than the export) stays the
  winner, so old DMS values never overwrite fresher bronze rows. A file without a usable load time
  gives null ``ingested_at``: older than every dated row.

Deduplication is a sort on one int64 key (symbol code << 32 | session) and runs in a second or two
for 10.8M rows; the rows themselves are never copied here (``SourceRows.order`` indexes them).
"""

from __future__ import annotations

import io
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from condvest import params
from condvest.bars import BRONZE_SCHEMA
from condvest.dms import normalize_dms_table
from condvest.errors import CorruptObject, ParameterError
from condvest.lake import BRONZE_PREFIX, MANIFEST_PREFIX, METADATA_PREFIX
from condvest.storage import ObjectInfo, Store

log = logging.getLogger(__name__)

UTC_US = pa.timestamp("us", tz="UTC")
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.=\-]+(?:/[A-Za-z0-9_.=\-]+)*")
_PROTECTED = (BRONZE_PREFIX, MANIFEST_PREFIX, METADATA_PREFIX, "bronze", "silver")


def check_source_prefix(prefix: str) -> str:
    """``prefix`` without a trailing slash, when it is a plain key prefix outside the lake's own layers."""
    if not isinstance(prefix, str):
        raise ParameterError(f"expected a string, got {prefix!r}", parameter="source_prefix")
    p = prefix.strip("/")
    if not _PREFIX_RE.fullmatch(p) or any(part in (".", "..") for part in p.split("/")):
        raise ParameterError(f"not a plain key prefix: {prefix!r}", parameter="source_prefix")
    for protected in _PROTECTED:
        if p == protected or p.startswith(protected + "/") or protected.startswith(p + "/"):
            raise ParameterError(f"{prefix!r} overlaps the lake's own layer {protected}/", parameter="source_prefix")
    return p


def list_sources(store: Store, prefix: str) -> list[ObjectInfo]:
    """The export's ``*.parquet`` objects under ``prefix/`` (sub-folders included), in key order."""
    p = check_source_prefix(prefix)
    return [o for o in store.list(p + "/") if o.key.endswith(".parquet")]


def sources_json(sources: list[ObjectInfo]) -> list[dict[str, object]]:
    return [{"key": o.key, "size": o.size, "etag": o.etag} for o in sorted(sources, key=lambda o: o.key)]


@dataclass
class SourceRows:
    """Every source row in ``BRONZE_SCHEMA`` (file order), and the winners sorted by (symbol, date)."""

    table: pa.Table  # all rows, concatenated in file-key order; column ``ingested_at`` = DMS load time
    symbols: list[str]  # sorted distinct symbols
    order: np.ndarray  # row indexes of the winners, sorted by (symbol, date)
    starts: np.ndarray  # per symbol: first position in ``order``
    ends: np.ndarray  # per symbol: one past its last position in ``order``
    raw_counts: np.ndarray  # per symbol: source rows before deduplication
    files: list[str]

    @property
    def rows(self) -> int:
        return self.table.num_rows

    @property
    def duplicates(self) -> int:
        return self.table.num_rows - len(self.order)

    def winners_mask(self) -> pa.Array:
        mask = np.zeros(self.table.num_rows, dtype=bool)
        mask[self.order] = True
        return pa.array(mask)

    def symbol_rows(self, i: int) -> pa.Table:
        """The winning rows of ``symbols[i]``, sorted by date."""
        return self.table.take(pa.array(self.order[self.starts[i] : self.ends[i]]))

    def session_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct session days as int32 days since epoch, symbols holding each)."""
        days = self.table.column("date").combine_chunks().view(pa.int32()).to_numpy()[self.order]
        return np.unique(days, return_counts=True)


def _load_time(table: pa.Table, key: str) -> pa.ChunkedArray:
    """DMS's ``timestamp`` (the load time, naive UTC) as timestamp[us, UTC]; null when absent."""
    n = table.num_rows
    if "timestamp" not in table.column_names:
        return pa.chunked_array([pa.nulls(n, UTC_US)])
    col = table.column("timestamp")
    t = col.type
    if pa.types.is_null(t):
        return pa.chunked_array([pa.nulls(n, UTC_US)])
    if not pa.types.is_timestamp(t):
        raise CorruptObject(f"DMS column timestamp (load time) has type {t}, expected a timestamp", key=key)
    if t.tz is None:
        col = pc.assume_timezone(col, "UTC")
    return col.cast(UTC_US)


def read_source(store: Store, key: str) -> pa.Table:
    """One export file in ``BRONZE_SCHEMA`` with ``ingested_at`` = DMS load time; errors name the file."""
    data = store.get(key)
    try:
        raw = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"cannot read parquet: {exc}", key=key) from exc
    try:
        table = normalize_dms_table(raw, key)
        ingested = _load_time(raw, key)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:  # a cast the mapping did not foresee
        raise CorruptObject(f"DMS columns do not fit the bronze schema: {exc}", key=key) from exc
    table = table.set_column(BRONZE_SCHEMA.get_field_index("ingested_at"), "ingested_at", ingested)
    for sym in pc.unique(table.column("symbol")).to_pylist():
        try:
            params.symbol(sym)
        except ParameterError:
            raise CorruptObject(f"invalid symbol {sym!r} in the export", key=key) from None
    log.debug("source read key=%s rows=%d", key, table.num_rows)
    return table


def read_sources(store: Store, sources: list[ObjectInfo], *, threads: int = 2, progress: bool = True) -> SourceRows:
    """Read every export file (concurrently) and pick one winner per (symbol, session)."""
    keys = sorted(o.key for o in sources)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        tables = list(
            tqdm(
                pool.map(lambda k: read_source(store, k), keys),
                total=len(keys),
                desc="read export",
                unit="file",
                disable=not progress,
            )
        )
    # one chunk per column: taking a symbol's rows from a chunked column would concatenate it every time
    table = pa.concat_tables(tables).combine_chunks() if tables else BRONZE_SCHEMA.empty_table()
    rows = dedupe(table)
    return SourceRows(table=table, files=keys, **rows)


def dedupe(table: pa.Table) -> dict[str, object]:
    """Winners of ``table`` (BRONZE_SCHEMA, rows in write order): per (symbol, date) the newest
    ``ingested_at`` (null oldest), ties to the later row. Pure."""
    if table.num_rows == 0:
        empty = np.zeros(0, dtype=np.int64)
        return {"symbols": [], "order": empty, "starts": empty, "ends": empty, "raw_counts": empty}
    sym = table.column("symbol").combine_chunks()
    uniq = pc.unique(sym)
    uniq = uniq.take(pc.sort_indices(uniq))
    codes = pc.index_in(sym, value_set=uniq).to_numpy().astype(np.int64)
    days = table.column("date").combine_chunks().view(pa.int32()).to_numpy().astype(np.int64)
    key = (codes << 32) | (days + (1 << 31))
    ing = pc.fill_null(table.column("ingested_at").combine_chunks().cast(pa.int64()), -(2**62)).to_numpy()
    order = np.lexsort((ing, key))  # stable: equal (key, ingested_at) keep write order, so the last row wins
    ks = key[order]
    last = np.ones(len(ks), dtype=bool)
    last[:-1] = ks[1:] != ks[:-1]
    order = order[last]
    win_codes = codes[order]
    bounds = np.flatnonzero(np.diff(win_codes)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [len(order)]]).astype(np.int64)
    raw_counts = np.bincount(codes, minlength=len(uniq)).astype(np.int64)
    return {
        "symbols": uniq.to_pylist(),
        "order": order.astype(np.int64),
        "starts": starts,
        "ends": ends,
        "raw_counts": raw_counts,
    }
