"""A full rebuild split by symbol (``condvest.shards``): N shards stage their bars, one commit writes silver.

Shard I of N (``stage_shard``) reads the bronze objects of its symbols (and its symbols' rows of a DMS export
still read), computes every interval's bars exactly as the full rebuild does (a symbol's bars depend on that
symbol's rows only), and stages them under ``processing_metadata/shards/resample/<group>/``:

    silver_{N}d/YYYYMM/part-<i>.parquet   its bars of that month, sorted by symbol and date
    state/<sources|symbols|tail>/part-<i>.parquet   its part of the resample state
    done/part-<i>.json                     written last: intervals, counts, DMS versions read

It takes no lock and writes nothing live. The commit (``commit_shards``) holds the lake lock ``resample``,
checks every done record before writing anything (``ShardsIncomplete`` otherwise), then writes each month
file once from the N parts (over the version it read), deletes months that hold no bar any more, saves the
merged state and writes the checkpoints last: silver then equals an unsharded full rebuild, bar for bar.
"""

from __future__ import annotations

import io
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from condvest.crash import crash_point
from condvest.display import progress_disable
from condvest.errors import ObjectNotFound
from condvest.lake import silver_key, silver_prefix
from condvest.resample.engine import connect, load_rows, register_dms
from condvest.resample.result import IntervalResult
from condvest.resample.state import SilverState, latest_journal, list_sources
from condvest.resample.write import _delete_months, _put_month, state_frames, stream_months
from condvest.shards import Shard, ShardsIncomplete, clear_part, read_parts, staging_prefix, write_part
from condvest.storage import Store

log = logging.getLogger(__name__)

STAGE = "resample"
_PARTS = ("sources", "symbols", "tail")


def _month_key(prefix: str, n: int, month: int, index: int) -> str:
    return f"{prefix}silver_{n}d/{month // 12:04d}{month % 12 + 1:02d}/part-{index}.parquet"


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
    bars and months staged."""
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
            bars, keys = stream_months(
                con, store, n, lambda m, n=n: _month_key(prefix, n, m, shard.index), None, threads
            )
            staged[n] = (bars, len(keys))
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
            "months": {str(n): staged[n][1] for n in ns},
            "dms": dict(zip(dms_keys, own.loc[own["kind"] == "dms", "etag"], strict=True)),
        },
    )
    log.info("resample shard staged run_id=%s shard=%s group=%s rows=%d", run_id, shard.label, shard.group, rows)
    return {
        n: IntervalResult(n, "staged", bars_written=staged[n][0], months_rewritten=staged[n][1], rows_read=rows)
        for n in ns
    }


def check_parts(store: Store, ns: tuple[int, ...], commit: Shard) -> tuple[list[dict], dict[int, dict[int, list]]]:
    """Every shard's done record and, per interval and month, the staged parts; ``ShardsIncomplete`` (nothing
    written) when a shard is missing, ran other intervals, saw another DMS export or staged fewer months."""
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
    months: dict[int, dict[int, list]] = {}
    for n in ns:
        by_month: dict[int, list] = defaultdict(list)
        counts: dict[int, int] = defaultdict(int)
        for o in store.list(f"{prefix}silver_{n}d/"):
            ym, name = o.key[len(prefix) :].split("/")[1:3]
            index = int(name.removeprefix("part-").removesuffix(".parquet"))
            by_month[int(ym[:4]) * 12 + int(ym[4:]) - 1].append((index, o.key))
            counts[index] += 1
        for i, p in enumerate(parts):
            if counts.get(i, 0) != int(p["months"][str(n)]):
                raise ShardsIncomplete(
                    f"{counts.get(i, 0)} month parts of silver_{n}d staged, its done record says {p['months'][str(n)]}",
                    group=commit.group,
                    shard=f"{i}/{commit.count}",
                )
        months[n] = dict(by_month)
    return parts, months


def commit_shards(
    store: Store,
    ns: tuple[int, ...],
    tail_len: int,
    commit: Shard,
    parts: list[dict],
    months: dict[int, dict[int, list]],
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

        def merge(month: int, staged: list, n: int = n, old: dict = old) -> tuple[str, int]:
            tables = [pq.read_table(io.BytesIO(store.get(k))) for _, k in sorted(staged)]
            table = pa.concat_tables(tables).sort_by([("symbol", "ascending"), ("date", "ascending")])
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd")
            key = silver_key(n, month // 12, month % 12 + 1)
            _put_month(store, key, buf.getvalue(), old.get(key))
            crash_point("resample.mid_silver")
            return key, table.num_rows

        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = list(pool.map(lambda item: merge(*item), sorted(months[n].items())))
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
