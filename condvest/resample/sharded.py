"""A full rebuild split by symbol (``condvest.shards``): N shards stage their bars, one commit writes silver.

Shard I of N (``stage_shard``) reads the bronze objects of its symbols (and its symbols' rows of a DMS export
still read), computes every interval's bars exactly as the full rebuild does (a symbol's bars depend on that
symbol's rows only), and stages them under ``processing_metadata/shards/resample/<group>/``:

    silver_{N}d/YYYY/part-<i>.arrow       its bars of that year (one object a year: few, large objects), as
                                           silver holds them (``ts`` too) ordered by (month, symbol, date), in
                                           Arrow IPC with LZ4 (temporary: cheap to write and read, not small)
    state/<sources|symbols|tail>/part-<i>.parquet   its part of the resample state
    done/part-<i>.json                     written last: intervals, counts, DMS versions read

It takes no lock and writes nothing live. The commit (``commit_shards``) holds the lake lock ``resample``,
checks every done record before writing anything (``ShardsIncomplete`` otherwise), then writes each month
file once from the N parts of its year (over the version it read), deletes months that hold no bar any more, saves the
merged state and writes the checkpoints last: silver then equals an unsharded full rebuild, byte for byte.
Each part is in order and no symbol is in two shards: the commit orders a year by sorting its runs of one
symbol in one month (``_in_order``), never the rows, and encodes each month, a slice of the ordered year.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from condvest.crash import crash_point
from condvest.display import progress_disable
from condvest.errors import ObjectNotFound
from condvest.lake import silver_key, silver_prefix
from condvest.lake_read import connect, load_rows, register_dms
from condvest.resample.engine import bars_sql, encode_silver, silver_table
from condvest.resample.result import IntervalResult
from condvest.resample.state import SilverState, latest_journal, list_sources
from condvest.resample.write import _delete_months, _months, _put_month, state_frames
from condvest.settings import size_bytes
from condvest.shards import (
    SHARDS_PREFIX,
    Shard,
    ShardsIncomplete,
    clear_part,
    clear_staging,
    read_parts,
    staging_prefix,
    write_part,
)
from condvest.storage import Store

log = logging.getLogger(__name__)

STAGE = "resample"
_PARTS = ("sources", "symbols", "tail")
#: staging groups of in-process batched rebuilds are named ``batched-<run id>``: such a run holds the lake lock
#: ``resample`` throughout, so a group of that name found by the next one was left by a run that stopped
BATCH_GROUP = "batched-"
#: memory a staged year takes while merged, per staged byte (LZ4 decoded, about 2x, then ordered in a copy)
MERGE_EXPANSION = 5
#: a month's order in a silver file
_ORDER = [("symbol", "ascending"), ("date", "ascending")]
#: staged years: Arrow IPC, LZ4 (half the CPU of zstd Parquet to write and read back, ~1.3x the bytes)
_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


def _year_key(prefix: str, n: int, year: int, index: int) -> str:
    return f"{prefix}silver_{n}d/{year:04d}/part-{index}.arrow"


def _state_key(prefix: str, part: str, index: int) -> str:
    return f"{prefix}state/{part}/part-{index}.parquet"


def _read_parquet(data: bytes) -> pa.Table:
    """A staged object's table (the file's own reader: a third of ``pq.read_table``'s cost on small files)."""
    return pq.ParquetFile(pa.BufferReader(data)).read()


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=_IPC) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _read_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_file(pa.BufferReader(data)).read_all()


def _parquet(df: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False), buf)
    return buf.getvalue()


def stage_shard(
    store: Store,
    ns: tuple[int, ...],
    tail_len: int,
    shard: Shard,
    run_id: str,
    threads: int | None = None,
    memory_limit: str | None = None,
    *,
    listing: tuple[pd.DataFrame, str | None] | None = None,
    desc: str = "shard",
) -> dict[int, IntervalResult]:
    """Compute and stage this shard's bars and state (see the module docstring); returns per interval the
    bars and years staged. ``listing``: the sources and journal cursor already read (else listed here)."""
    if shard.index is None:
        raise ValueError("stage_shard needs a shard, not the commit")
    prefix = staging_prefix(STAGE, shard.group)
    mine = (f"/part-{shard.index}.parquet", f"/part-{shard.index}.arrow")
    clear_part(store, STAGE, shard, [o.key for o in store.list(prefix) if o.key.endswith(mine)])
    sources, journal = listing if listing is not None else (list_sources(store), latest_journal(store))
    is_dms = sources["kind"] == "dms"
    own = sources[is_dms | sources["symbol"].map(lambda s: isinstance(s, str) and shard.holds(s))]
    own = own.reset_index(drop=True)
    dms_keys = own.loc[own["kind"] == "dms", "key"].tolist()
    con = connect(store, threads=threads, memory_limit=memory_limit)
    try:
        if dms_keys:
            register_dms(con, store, dms_keys, None, keep=shard.holds)
        rows = load_rows(con, store, "rows", own.loc[own["kind"] != "dms", "key"].tolist(), dms=bool(dms_keys))
        staged: dict[int, tuple[int, int]] = {}
        for n in tqdm(ns, desc=f"02_resample {desc} {shard.label}", unit="interval", disable=progress_disable()):
            staged[n] = _stage_years(con, store, n, lambda y, n=n: _year_key(prefix, n, y, shard.index), threads)
        symbols, tail = state_frames(con, tail_len)
    finally:
        con.close()
    for part, df in (("sources", own), ("symbols", symbols), ("tail", tail)):
        store.put(_state_key(prefix, part, shard.index), _parquet(df))
    crash_point("resample.shard_before_done")
    write_part(
        store,
        STAGE,
        shard,
        {
            "run_id": run_id,
            "intervals": list(ns),
            "tail": tail_len,
            "journal": journal,
            "rows_read": rows,
            "symbols": len(symbols),
            "bars": {str(n): staged[n][0] for n in ns},
            "years": {str(n): staged[n][1] for n in ns},
            "dms": dict(zip(dms_keys, own.loc[own["kind"] == "dms", "etag"], strict=True)),
        },
    )
    log.info("resample shard staged run_id=%s shard=%s group=%s rows=%d", run_id, shard.label, shard.group, rows)
    return {n: IntervalResult(n, "staged", bars_written=staged[n][0], rows_read=rows) for n in ns}


def _stage_years(
    con: duckdb.DuckDBPyConnection, store: Store, n: int, key_of: Callable[[int], str], threads: int | None
) -> tuple[int, int]:
    """Stage the bars of interval ``n`` from temp table ``rows`` as one object per year (fewer, larger objects
    than month files: a shard of a long history stages tens of objects, not thousands), each month sorted by
    (symbol, date) and in silver's columns (the work the commit would otherwise do for every bar, done here in
    N containers at once). Returns (bars, years)."""
    workers = max(2 * (threads or os.cpu_count() or 1), store.write_threads)
    reader = con.execute(f"SELECT * FROM ({bars_sql('rows')}) ORDER BY date", {"n": n}).fetch_record_batch(1 << 17)

    def put(key: str, parts: list[pa.Table]) -> None:
        # one sort of the year by (month, symbol, date): a sort and a silver_table per month cost 4x as much
        year = pa.concat_tables(parts)
        year = year.append_column("month", pc.month(year.column("date")))
        year = year.take(pc.sort_indices(year, [("month", "ascending"), *_ORDER]))
        store.put(key, _ipc_bytes(silver_table(year).combine_chunks()))
        crash_point("resample.shard_mid_stage")

    bars, years, held, year = 0, 0, [], None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for month, part in _months(reader):
            if year is not None and month // 12 != year and held:
                pending.append(pool.submit(put, key_of(year), held))
                years, held = years + 1, []
            year = month // 12
            held.append(part)
            bars += part.num_rows
        if held:
            pending.append(pool.submit(put, key_of(year), held))  # type: ignore[arg-type]
            years += 1
        for f in pending:
            f.result()
    return bars, years


def check_parts(store: Store, ns: tuple[int, ...], commit: Shard) -> tuple[list[dict], dict[int, dict[int, list]]]:
    """Every shard's done record and, per interval and month, the staged parts; ``ShardsIncomplete`` (nothing
    written) when a shard is missing, ran other intervals, saw another DMS export or staged fewer years."""
    parts = read_parts(store, STAGE, commit)
    for i, p in enumerate(parts):
        if tuple(p.get("intervals", ())) != ns:
            raise ShardsIncomplete(
                f"this shard resampled intervals {p.get('intervals')}, the commit expects {list(ns)}",
                group=commit.group,
                shard=f"{i}/{commit.count}",
            )
        if p.get("dms") != parts[0].get("dms"):
            raise ShardsIncomplete(
                "the DMS export changed while the shards ran: run the sharded rebuild again",
                group=commit.group,
                shard=f"{i}/{commit.count}",
            )
    prefix = staging_prefix(STAGE, commit.group)
    years: dict[int, dict[int, list]] = {}
    for n in ns:
        by_year: dict[int, list] = defaultdict(list)
        counts: dict[int, int] = defaultdict(int)
        for o in store.list(f"{prefix}silver_{n}d/"):
            year, name = o.key[len(prefix) :].split("/")[1:3]
            if not name.endswith(".arrow"):  # staged by an older version (Parquet): not counted, the shard reruns
                continue
            index = int(name.removeprefix("part-").removesuffix(".arrow"))
            by_year[int(year)].append((index, o.key, o.size))
            counts[index] += 1
        for i, p in enumerate(parts):
            if counts.get(i, 0) != int(p["years"][str(n)]):
                raise ShardsIncomplete(
                    f"{counts.get(i, 0)} year parts of silver_{n}d staged, its done record says {p['years'][str(n)]}",
                    group=commit.group,
                    shard=f"{i}/{commit.count}",
                )
        years[n] = dict(by_year)
    return parts, years


def commit_shards(
    store: Store,
    ns: tuple[int, ...],
    tail_len: int,
    commit: Shard,
    parts: list[dict],
    years: dict[int, dict[int, list]],
    run_id: str,
    threads: int | None = None,
    merge_bytes: int = 1 << 30,
) -> tuple[SilverState, dict[int, IntervalResult]]:
    """Write the silver month files from the staged parts and return the merged state (the caller holds the
    lake lock, has checked the parts with ``check_parts`` and writes the state and checkpoints after).

    Years are merged in parallel while the staged bytes being merged stay within ``merge_bytes`` (one year
    at a time beyond it): a year's bars take about eight times their staged size in memory while merged."""
    prefix = staging_prefix(STAGE, commit.group)
    frames: dict[str, list[pd.DataFrame]] = {p: [] for p in _PARTS}
    for part in _PARTS:
        for i in range(commit.count):
            key = _state_key(prefix, part, i)
            try:
                frames[part].append(_read_parquet(store.get(key)).to_pandas())
            except ObjectNotFound:
                raise ShardsIncomplete(
                    f"its staged {part} state is missing", group=commit.group, shard=f"{i}/{commit.count}"
                ) from None
    # on S3 a year's merge waits on its GETs and PUTs more than on the CPU: as many at once as the store's writers
    workers = max(2 * (threads or os.cpu_count() or 1), store.write_threads)
    old = {n: {o.key: o.etag for o in store.list(silver_prefix(n))} for n in ns}

    cpu: dict[str, float] = defaultdict(float)  # CPU seconds of each step, all threads (the profile logged)

    def timer() -> Callable[[str], None]:
        mark = {"t": time.thread_time()}

        def step(name: str) -> None:
            now = time.thread_time()
            cpu[name] += now - mark["t"]  # a float add under the GIL
            mark["t"] = now

        return step

    def write(n: int, year: int, m: int, part: pa.Table) -> tuple[int, str, int]:
        step = timer()
        key = silver_key(n, year, m)
        body = encode_silver(part)
        step("encode")
        _put_month(store, key, body, old[n].get(key))
        step("put")
        crash_point("resample.mid_silver")
        return n, key, part.num_rows

    def merge(item: tuple[int, int], staged: list) -> list[tuple[int, str, int]]:
        n, year = item
        step = timer()
        data = [store.get(k) for _, k, _ in sorted(staged)]
        step("get")
        tables = [_read_ipc(d) for d in data]
        step("decode")
        table, months = _in_order(tables)
        step("order")
        # the months of a year are encoded on the writers' threads: a large recent year, merged alone within
        # the memory budget, still keeps every core busy
        futures = [writers.submit(write, n, year, m, table.slice(a, b - a)) for m, a, b in months.tolist()]
        return [f.result() for f in futures]

    # every interval's years in one pool (no barrier between intervals: the small years of one interval overlap
    # the large ones of the next), the staged bytes being merged bounded by merge_bytes
    items = [((n, year), staged) for n in ns for year, staged in sorted(years[n].items())]
    t0, c0 = time.perf_counter(), time.process_time()
    bar = tqdm(total=len(items), desc="02_resample commit years", unit="year", disable=progress_disable())
    with bar, ThreadPoolExecutor(max_workers=workers) as writers:
        done = _bounded_map(merge, items, workers, merge_bytes, bar.update)
    profile = {k: round(v, 2) for k, v in cpu.items()}
    profile.update(wall=round(time.perf_counter() - t0, 2), cpu=round(time.process_time() - c0, 2), years=len(items))
    log.info("resample commit silver written: %s", profile, extra={"profile": profile})
    results: dict[int, IntervalResult] = {}
    for n in ns:
        mine = [(k, b) for i, k, b in done if i == n]
        written = {k for k, _ in mine}
        _delete_months(store, {k: e for k, e in old[n].items() if k not in written})
        results[n] = IntervalResult(
            n,
            "full",
            bars_written=sum(b for _, b in mine),
            months_rewritten=len(written),
            symbols_changed=sum(int(p["symbols"]) for p in parts),
            rows_read=sum(int(p["rows_read"]) for p in parts),
        )
    sources = pd.concat(frames["sources"], ignore_index=True).drop_duplicates("key").reset_index(drop=True)
    symbols = pd.concat(frames["symbols"], ignore_index=True).sort_values("symbol").reset_index(drop=True)
    tail = pd.concat(frames["tail"], ignore_index=True).sort_values(["symbol", "i"]).reset_index(drop=True)
    for df, cols in ((symbols, ("first_date", "last_date")), (tail, ("date",))):
        for c in cols:
            df[c] = pd.to_datetime(df[c]).dt.date
    journals = [p.get("journal") for p in parts]
    journal = None if any(j is None for j in journals) else min(journals)  # the earliest: journals are re-checked
    return SilverState(run_id, sources, symbols, tail, tail_len, journal), results


def _in_order(tables: list[pa.Table]) -> tuple[pa.Table, np.ndarray]:
    """A year's bars in (month, symbol, date) order, from the shards' staged parts (each in that order already,
    no symbol in two of them), and each month's (start, end) rows. The rows are not sorted: every part is cut into
    runs of one symbol in one month, the runs (a few per symbol and month) are sorted and taken in that order."""
    table = pa.concat_tables(tables)  # the parts as chunks: not copied
    rows = table.num_rows
    if rows == 0:
        return table, np.empty((0, 3), dtype=np.int64)
    months = pc.month(table.column("date")).to_numpy()
    symbol = table.column("symbol").combine_chunks()
    # a run starts where the symbol or the month changes (a part boundary is a symbol change: no symbol in two);
    # the sort of the runs is stable, so runs of one symbol and month keep their (date) order
    change = pc.not_equal(symbol.slice(1), symbol.slice(0, rows - 1)).to_numpy(zero_copy_only=False)
    starts = np.concatenate([[0], np.flatnonzero(change | (np.diff(months) != 0)) + 1])
    lengths = np.diff(np.append(starts, rows))
    runs = pa.table({"month": months[starts], "symbol": symbol.take(pa.array(starts))})
    order = pc.sort_indices(runs, [("month", "ascending"), ("symbol", "ascending")]).to_numpy()
    start, length = starts[order], lengths[order]
    ends = np.cumsum(length)  # each run's end row once in order
    if np.array_equal(order, np.arange(len(order))):
        ordered = table  # one part, or parts whose symbols do not interleave
    else:
        ordered = table.take(pa.array(np.arange(rows) + np.repeat(start - (ends - length), length)))
    m = months[start]  # each run's month, in order
    cuts = np.flatnonzero(np.diff(m)) + 1  # the first run of each month after the first
    first_row = np.concatenate([[0], ends[cuts - 1]])
    last_row = ends[np.append(cuts, len(m)) - 1]
    return ordered, np.column_stack([m[np.concatenate([[0], cuts])], first_row, last_row])


def _bounded_map(
    fn: Callable[[Any, list], list], items: list, workers: int, budget: int, step: Callable[[int], Any] | None = None
) -> list:
    """``fn(item, staged)`` over ``items`` on ``workers`` threads, the results flattened in order; an item is only
    started while the items being merged hold at most ``budget`` bytes (one always runs); ``step(1)`` per item done."""
    step = step or (lambda _: None)
    out: list = []
    pending: deque = deque()
    held = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for year, staged in items:
            cost = MERGE_EXPANSION * sum(size for _, _, size in staged)
            while pending and (len(pending) >= workers or held + cost > budget):
                done, c = pending.popleft()
                out.extend(done.result())
                step(1)
                held -= c
            pending.append((pool.submit(fn, year, staged), cost))
            held += cost
        for done, _ in pending:
            out.extend(done.result())
            step(1)
    return out


def rebuild_in_batches(
    store: Store,
    ns: tuple[int, ...],
    tail_len: int,
    count: int,
    run_id: str,
    listing: tuple[pd.DataFrame, str | None],
    threads: int | None,
    memory_limit: str,
) -> tuple[SilverState, dict[int, IntervalResult]]:
    """The full rebuild in ``count`` symbol batches, one after the other in this process (the caller holds the
    lake lock ``resample``): each batch is staged as a shard is, then the commit writes every month file once
    from the batches' parts. DuckDB holds one batch's rows at a time and the merge stays within
    ``memory_limit``, so memory does not grow with the lake; silver equals a one-pass rebuild, byte for byte."""
    root = f"{SHARDS_PREFIX}/{STAGE}/"
    stale = {o.key[len(root) :].split("/")[0] for o in store.list(root + BATCH_GROUP)}
    for group in sorted(stale):  # left by a batched run that stopped
        clear_staging(store, STAGE, group)
    group = BATCH_GROUP + run_id
    for i in range(count):
        shard = Shard(i, count, group)
        stage_shard(store, ns, tail_len, shard, run_id, threads, memory_limit, listing=listing, desc="batch")
    commit = Shard(None, count, group)
    parts, years = check_parts(store, ns, commit)
    merge_bytes = size_bytes(memory_limit)
    state, results = commit_shards(store, ns, tail_len, commit, parts, years, run_id, threads, merge_bytes)
    clear_staging(store, STAGE, group)
    return state, results
