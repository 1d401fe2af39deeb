"""A full rebuild split by symbol (``condvest.shards``): N shards stage their bars, one commit writes silver.

Shard I of N (``stage_shard``) reads the bronze objects of its symbols (and its symbols' rows of a DMS export
still read), computes every interval's bars exactly as the full rebuild does (a symbol's bars depend on that
symbol's rows only), and stages them under ``processing_metadata/shards/resample/<group>/``:

    silver_{N}d/YYYY/part-<i>.parquet     its bars of that year (one object a year: few, large objects)
    state/<sources|symbols|tail>/part-<i>.parquet   its part of the resample state
    done/part-<i>.json                     written last: intervals, counts, DMS versions read

It takes no lock and writes nothing live. The commit (``commit_shards``) holds the lake lock ``resample``,
checks every done record before writing anything (``ShardsIncomplete`` otherwise), then writes each month
file once from the N parts of its year (over the version it read), deletes months that hold no bar any more, saves the
merged state and writes the checkpoints last: silver then equals an unsharded full rebuild, bar for bar.
"""

from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
from condvest.resample.engine import bars_sql, connect, load_rows, register_dms, silver_bytes
from condvest.resample.result import IntervalResult
from condvest.resample.state import SilverState, latest_journal, list_sources
from condvest.resample.write import _delete_months, _months, _put_month, state_frames
from condvest.shards import Shard, ShardsIncomplete, clear_part, read_parts, staging_prefix, write_part
from condvest.storage import Store

log = logging.getLogger(__name__)

STAGE = "resample"
_PARTS = ("sources", "symbols", "tail")


def _year_key(prefix: str, n: int, year: int, index: int) -> str:
    return f"{prefix}silver_{n}d/{year:04d}/part-{index}.parquet"


def _state_key(prefix: str, part: str, index: int) -> str:
    return f"{prefix}state/{part}/part-{index}.parquet"


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
) -> dict[int, IntervalResult]:
    """Compute and stage this shard's bars and state (see the module docstring); returns per interval the
    bars and years staged."""
    if shard.index is None:
        raise ValueError("stage_shard needs a shard, not the commit")
    prefix = staging_prefix(STAGE, shard.group)
    mine = f"/part-{shard.index}.parquet"
    clear_part(store, STAGE, shard, [o.key for o in store.list(prefix) if o.key.endswith(mine)])
    journal = latest_journal(store)
    sources = list_sources(store)
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
        for n in tqdm(ns, desc=f"02_resample shard {shard.label}", unit="interval", disable=progress_disable()):
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
    than month files: a shard of a long history stages tens of objects, not thousands). Returns (bars, years)."""
    workers = max(2, 2 * (threads or os.cpu_count() or 2))
    reader = con.execute(f"SELECT * FROM ({bars_sql('rows')}) ORDER BY date", {"n": n}).fetch_record_batch(1 << 17)

    def put(key: str, parts: list[pa.Table]) -> None:
        store.put(key, silver_bytes(pa.concat_tables(parts)))
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
            index = int(name.removeprefix("part-").removesuffix(".parquet"))
            by_year[int(year)].append((index, o.key))
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
) -> tuple[SilverState, dict[int, IntervalResult]]:
    """Write the silver month files from the staged parts and return the merged state (the caller holds the
    lake lock, has checked the parts with ``check_parts`` and writes the state and checkpoints after)."""
    prefix = staging_prefix(STAGE, commit.group)
    frames: dict[str, list[pd.DataFrame]] = {p: [] for p in _PARTS}
    for part in _PARTS:
        for i in range(commit.count):
            key = _state_key(prefix, part, i)
            try:
                frames[part].append(pq.read_table(io.BytesIO(store.get(key))).to_pandas())
            except ObjectNotFound:
                raise ShardsIncomplete(
                    f"its staged {part} state is missing", group=commit.group, shard=f"{i}/{commit.count}"
                ) from None
    workers = max(2, 2 * (threads or os.cpu_count() or 2))
    results: dict[int, IntervalResult] = {}
    for n in tqdm(ns, desc="02_resample commit intervals", unit="interval", disable=progress_disable()):
        old = {o.key: o.etag for o in store.list(silver_prefix(n))}

        def merge(year: int, staged: list, n: int = n, old: dict = old) -> list[tuple[str, int]]:
            tables = [pq.read_table(io.BytesIO(store.get(k))) for _, k in sorted(staged)]
            table = pa.concat_tables(tables)
            d = table.column("date")
            table = table.append_column("_m", pc.month(d))
            table = table.sort_by([("_m", "ascending"), ("symbol", "ascending"), ("date", "ascending")])
            months = table.column("_m").to_numpy()
            out = []
            for m in np.unique(months):
                lo, hi = np.searchsorted(months, m, "left"), np.searchsorted(months, m, "right")
                key = silver_key(n, year, int(m))
                _put_month(store, key, silver_bytes(table.slice(lo, hi - lo)), old.get(key))
                crash_point("resample.mid_silver")
                out.append((key, int(hi - lo)))
            return out

        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = [x for part in pool.map(lambda item: merge(*item), sorted(years[n].items())) for x in part]
        written = {k for k, _ in done}
        _delete_months(store, {k: e for k, e in old.items() if k not in written})
        results[n] = IntervalResult(
            n,
            "full",
            bars_written=sum(b for _, b in done),
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
