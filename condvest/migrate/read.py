"""The migration's read side: list the DMS export, read it with the explicit mapping, deduplicate.

    check_source_prefix(prefix) -> str                 a safe export prefix (not bronze, not metadata)
    list_sources(store, prefix) -> list[ObjectInfo]    the export's *.parquet objects, in key order
    stage_export(store, sources, group_rows) -> StagedExport
                                                       every file read and checked once, split into symbol groups
    StagedExport.group(g) -> SourceRows                one group's rows in the bronze schema, winners marked

Column mapping and type normalisation are ``condvest.dms.normalize_dms_table`` (``timestamp_1``
is the bar, its New York date the session; int/double volume, ms/µs/text timestamps). On top of it the
migration keeps DMS's own ``timestamp`` column, the row's load time, as ``ingested_at``:

* the rule "newest ``ingested_at`` wins" then orders the export's duplicates by when DMS loaded them
  (ties: the later file in key order, then the later row), and
* any bar that a daily fetch wrote (``ingested_at`` = fetch time, later than the export) stays the
  winner, so old DMS values never overwrite fresher bronze rows. A file without a usable load time
  gives null ``ingested_at``: older than every dated row.

Memory is bounded whatever the export's size. ``stage_export`` reads each file once (two threads, a
file or two ahead, never the whole export), checks it, and sorts its rows by symbol (stable: a symbol's rows
keep their order). The symbols, in sorted order, are then cut into groups of at most ``group_rows`` source
rows (a symbol is never split). While the rows read fit in one group they stay in memory (an export whose
size in bytes already says it holds more spills from its first file); beyond that every file's sorted rows
go to a spill file (Arrow IPC, LZ4) in a private temporary folder on the local disk
(``TMPDIR``; also when the lake is on S3), removed when the staging is closed, on error too (a folder
left by a killed run, whose process is gone, is removed by the next run). A group is
then the slices of its symbol range from every file, concatenated in file-key order: every (symbol,
session) lives in one group, with its rows in the same relative order as in the export, so the winners
(ties included) are exactly those of one deduplication over the whole export.

Deduplication is a sort on one int64 key (symbol code << 32 | session) and runs in a second or two
for 10.8M rows; a group's rows are not copied by it (``SourceRows.order`` indexes them).
"""

from __future__ import annotations

import bisect
import io
import logging
import os
import re
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from condvest import params
from condvest.bars import BRONZE_SCHEMA
from condvest.dms import normalize_dms_table
from condvest.dms import sources_json as sources_json  # re-exported: the migration's modules import it here
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


SPILL_PREFIX = "condvest-migrate-"
#: rows per record batch of a spill file (a group reads the batches that hold its symbol range)
SPILL_BATCH_ROWS = 16_384
#: fewer bytes than any export row takes in parquet (the seed's export: ~35): an export larger than a group's
#: rows times this spills from its first file instead of holding a group's worth of rows first
MIN_PARQUET_ROW_BYTES = 16
_T = TypeVar("_T")
_R = TypeVar("_R")


def _ordered_map(pool: ThreadPoolExecutor, fn: Callable[[_T], _R], items: Iterable[_T], ahead: int) -> Iterator[_R]:
    """``pool.map`` with at most ``ahead`` items in flight: results in order, memory bounded."""
    it = iter(items)
    pending: deque[Future[_R]] = deque(pool.submit(fn, x) for _, x in zip(range(max(1, ahead)), it, strict=False))
    try:
        while pending:
            res = pending.popleft().result()
            for x in it:
                pending.append(pool.submit(fn, x))
                break
            yield res
    finally:
        for f in pending:
            f.cancel()


@dataclass
class _FileRows:
    """One export file's rows sorted by symbol (stable), in memory or in a spill file."""

    key: str
    symbols: list[str]  # its distinct symbols, sorted
    bounds: np.ndarray  # len(symbols) + 1 row offsets: symbols[i] holds rows bounds[i]:bounds[i + 1]
    table: pa.Table | None = None
    path: str | None = None

    def rows_of(self, lo: str, hi: str) -> pa.Table | None:
        """Its rows of the symbols in [lo, hi] (in file order within each symbol), or ``None``."""
        i0, i1 = bisect.bisect_left(self.symbols, lo), bisect.bisect_right(self.symbols, hi)
        a, b = int(self.bounds[i0]), int(self.bounds[i1])
        if a >= b:
            return None
        if self.table is not None:
            return self.table.slice(a, b - a)
        assert self.path is not None
        with pa.memory_map(self.path) as f:
            reader = pa.ipc.open_file(f)
            first = a // SPILL_BATCH_ROWS
            batches = [reader.get_batch(i) for i in range(first, (b - 1) // SPILL_BATCH_ROWS + 1)]
        rows = pa.Table.from_batches(batches, schema=BRONZE_SCHEMA).slice(a - first * SPILL_BATCH_ROWS, b - a)
        return rows.combine_chunks()  # a compact copy: the batches' rows outside the range are freed


def _sort_by_symbol(store: Store, key: str) -> _FileRows:
    table = read_source(store, key)
    if table.num_rows == 0:
        return _FileRows(key, [], np.zeros(1, dtype=np.int64), table=table)
    sym = table.column("symbol")
    uniq = pc.unique(sym)
    uniq = uniq.take(pc.sort_indices(uniq))
    codes = pc.index_in(sym, value_set=uniq).to_numpy().astype(np.int64)
    counts = np.bincount(codes, minlength=len(uniq))
    order = np.argsort(codes, kind="stable")  # stable: a symbol's rows keep their order in the file
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return _FileRows(key, uniq.to_pylist(), bounds, table=table.take(pa.array(order)))


@dataclass
class StagedExport:
    """The export read once: per file its rows sorted by symbol, and the symbol groups to migrate in turn.

    ``group(g)`` gives group ``g``'s rows with their winners (``SourceRows``); groups are consecutive ranges
    of the sorted symbols, each holding at most ``group_rows`` source rows (or one symbol that alone has more).
    ``close()`` removes the spill folder (``with stage_export(...) as export:`` does it)."""

    files: list[str]
    parts: list[_FileRows]
    symbols: list[str]  # every distinct symbol, sorted
    raw_counts: np.ndarray  # per symbol: source rows before deduplication
    groups: list[tuple[int, int]]  # [lo, hi) index ranges into ``symbols``
    spill_dir: str | None = None
    spilled_bytes: int = field(default=0)

    @property
    def rows(self) -> int:
        return int(self.raw_counts.sum())

    def group(self, g: int) -> SourceRows:
        """Group ``g``'s rows (all files, in key order) and its winners."""
        lo, hi = self.groups[g]
        first, last = self.symbols[lo], self.symbols[hi - 1]
        pieces = [t for part in self.parts if (t := part.rows_of(first, last)) is not None]
        table = pa.concat_tables(pieces).combine_chunks() if pieces else BRONZE_SCHEMA.empty_table()
        del pieces
        pa.default_memory_pool().release_unused()  # the pieces' memory back to the system, not kept for later
        return SourceRows(table=table, files=self.files, **dedupe(table))

    def close(self) -> None:
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
            log.debug("migration spill removed dir=%s", self.spill_dir)
            self.spill_dir = None

    def __enter__(self) -> StagedExport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_groups(counts: np.ndarray, group_rows: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) ranges of symbols, each holding at most ``group_rows`` rows (a symbol is never
    split, so one that alone holds more is a group of its own)."""
    groups, lo, held = [], 0, 0
    for i, c in enumerate(counts.tolist()):
        if held and held + c > group_rows:
            groups.append((lo, i))
            lo, held = i, 0
        held += c
    if held or lo < len(counts):
        groups.append((lo, len(counts)))
    return [g for g in groups if g[1] > g[0]]


def _spill(part: _FileRows, folder: str, index: int) -> int:
    """Move ``part``'s rows to an Arrow IPC file (LZ4) of fixed-size batches; return its size in bytes."""
    assert part.table is not None
    path = os.path.join(folder, f"{index:06d}.arrow")
    table, options = part.table, pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, BRONZE_SCHEMA, options=options) as writer:
        for off in range(0, table.num_rows, SPILL_BATCH_ROWS):
            for batch in table.slice(off, SPILL_BATCH_ROWS).combine_chunks().to_batches():
                writer.write_batch(batch)
    part.table, part.path = None, path
    return os.path.getsize(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_spills() -> list[str]:
    """Remove the spill folders that killed migrations left in the temporary folder (their process is gone);
    return their names."""
    root = tempfile.gettempdir()
    gone = []
    for name in os.listdir(root):
        m = re.fullmatch(re.escape(SPILL_PREFIX) + r"(\d+)-\w+", name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            gone.append(name)
    if gone:
        log.warning("migration removed spill folders of killed runs: %s", ", ".join(gone))
    return gone


def stage_export(
    store: Store, sources: list[ObjectInfo], group_rows: int, *, threads: int = 2, progress: bool = True
) -> StagedExport:
    """Read every export file once (``threads`` at a time, in key order), check it and sort it by symbol;
    spill to a private temporary folder once more than ``group_rows`` rows are held. A bad file raises
    ``CorruptObject`` naming it (the spill folder is removed)."""
    keys = sorted(o.key for o in sources)
    remove_stale_spills()
    parts: list[_FileRows] = []
    held = 0
    spill_dir: str | None = None
    spilled = 0
    if sum(o.size for o in sources) > group_rows * MIN_PARQUET_ROW_BYTES:  # surely more than one group: spill now
        spill_dir = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-")
        log.info("migration spilling from the start bytes=%d group_rows=%d", sum(o.size for o in sources), group_rows)
    try:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            done = _ordered_map(pool, lambda k: _sort_by_symbol(store, k), keys, ahead=max(1, threads))
            for part in tqdm(done, total=len(keys), desc="read export", unit="file", disable=not progress):
                parts.append(part)
                held += part.table.num_rows if part.table is not None else 0
                if spill_dir is None and held > group_rows:
                    spill_dir = tempfile.mkdtemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-")
                    log.info("migration spilling rows=%d group_rows=%d dir=%s", held, group_rows, spill_dir)
                if spill_dir is not None:
                    for i, p in enumerate(parts):
                        if p.table is not None:
                            spilled += _spill(p, spill_dir, i)
    except BaseException:
        if spill_dir is not None:
            shutil.rmtree(spill_dir, ignore_errors=True)
        raise
    pa.default_memory_pool().release_unused()
    symbols = sorted({s for p in parts for s in p.symbols})
    sorted_symbols = np.array(symbols, dtype=object)
    counts = np.zeros(len(symbols), dtype=np.int64)
    for p in parts:
        if p.symbols:  # distinct within a file, so a plain += adds each count once
            counts[np.searchsorted(sorted_symbols, np.array(p.symbols, dtype=object))] += np.diff(p.bounds)
    groups = plan_groups(counts, group_rows)
    log.info(
        "migration staged files=%d rows=%d symbols=%d groups=%d spilled_bytes=%d",
        len(keys),
        int(counts.sum()),
        len(symbols),
        len(groups),
        spilled,
    )
    return StagedExport(keys, parts, symbols, counts, groups, spill_dir, spilled)


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
