"""02_resample: bronze daily bars -> Fibonacci-interval silver bars (3, 5, 8, 13, 21, 34 sessions).

    run_resample(settings, ResampleParams(intervals="3,5,8,13,21,34", force_full_resample=False)) -> ResampleReport
    checkpoint_table(settings) -> pandas.DataFrame

Input: bronze (``symbol=X/data.parquet`` and ``symbol=X/date=D.parquet``) and, until a passing migration
report matches it (``condvest.dms.readable_export``), the DMS export (read with ``condvest.dms``'s
explicit schema); one row per (symbol, date) by ``condvest.bronze``'s merge rule.
Output: ``silver/silver_{N}d/year=YYYY/month=MM/data_{N}d_YYYYMM.parquet`` with symbol, date (first
session), ts (the first session's 00:00 New York as a naive UTC timestamp, the previous pipeline's column),
end_date (last session), open, high, low, close, volume and sessions. The trailing, still-open
bar of each symbol is written too, flagged by ``sessions < N``; it is recomputed in every run that
brings its symbol data, so it is never frozen.

A run holds the lake lock ``resample`` (shared with compaction; ``BusyError`` names the holder and how to
clear a stale lock), reads the checkpoints, and either recomputes everything (no checkpoint,
``force_full_resample``, a new interval, the DMS export changed, or more than half of the symbols need
their whole history re-read) or only the symbols whose bronze objects changed since the state the
checkpoints name, from the first bar a change can touch: new later sessions only need the stored tail,
a late backfill or correction re-reads that symbol. Month files are always rewritten whole.

Write order, the crash story: silver month files, then the state folder, then the checkpoints (the
commit record). A crash leaves the old checkpoint naming the old state; the next run recomputes the same
changes and rewrites the same month files whole, so the result is the same as without the crash.
Silver edited by hand is not detected: ``force_full_resample=True`` rebuilds it. A checkpoint of the
previous pipeline (``last_processed_date``, no state) counts as none: its interval is rebuilt in full, which
replaces every month file of that interval (the old ones, without ``date``, included), and the report's
message says so in one line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import pandas as pd

from condvest.changes import Watch, changed_objects, consume, read_watch, save_watch, snapshot
from condvest.checkpoints import all_checkpoints, checkpoint_table, read_checkpoint, write_checkpoint
from condvest.crash import crash_point
from condvest.lake import checkpoint_key
from condvest.lake_lock import lake_lock
from condvest.lake_read import batched_rows, connect, load_rows, register_dms
from condvest.resample.params import DEFAULT_INTERVALS, CheckedResample, ResampleParams
from condvest.resample.result import IntervalResult, ResampleReport
from condvest.resample.sharded import STAGE, check_parts, commit_shards, rebuild_in_batches, stage_shard
from condvest.resample.state import (
    INFLIGHT_KEY,
    JOURNAL_PREFIX,
    SilverState,
    apply_journals,
    diff_sources,
    latest_journal,
    list_sources,
    mark_inflight,
    prune_states,
    read_inflight,
    sources_after,
    watch_key,
)
from condvest.resample.write import incremental_pass, state_frames, write_full
from condvest.runs import new_run_id
from condvest.settings import Settings, size_bytes
from condvest.shards import Shard, clear_staging
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_INTERVALS", "ResampleParams", "checkpoint_table", "duckdb_limit", "full_batches", "run_resample"]

MIN_TAIL = 34
#: when more symbols than this share (and than FULL_MIN) need their whole history re-read, recompute everything
FULL_FRACTION = 0.5
FULL_MIN = 200
#: DuckDB memory a bronze row takes in the full rebuild without spilling (the numbered row, its share of the
#: 3-session aggregation and of the sort by date); more rows than the memory limit allows go in symbol batches
FULL_ROW_BYTES = 100


def full_batches(rows: int, memory_limit: str) -> int:
    """How many symbol batches the full rebuild of ``rows`` bronze rows takes within ``memory_limit``: one
    batch holds at most ``memory_limit / FULL_ROW_BYTES`` rows (30M at the default 3 GB)."""
    return max(1, -(-rows // max(1, size_bytes(memory_limit) // FULL_ROW_BYTES)))


def duckdb_limit(memory_limit: str) -> str:
    """DuckDB's memory limit for a run within ``memory_limit``: the same, but at least 256 MB (DuckDB needs a
    little even when a tiny budget only means small batches)."""
    return memory_limit if size_bytes(memory_limit) >= 256 << 20 else "256MB"


def _full(
    store: Store,
    ns: tuple[int, ...],
    sources: pd.DataFrame,
    journal: str | None,
    run_id: str,
    threads: int | None,
    memory_limit: str,
) -> tuple[SilverState, dict[int, IntervalResult], int]:
    """Every bar of every interval from all of bronze: in one pass, or in symbol batches when the rows (estimated
    from the listing's sizes) would not fit ``memory_limit`` (``full_batches``). Returns the state, the results
    and the number of batches."""
    tail_len = max(MIN_TAIL, max(ns))
    duck_limit = duckdb_limit(memory_limit)
    batches = full_batches(int(sources.attrs.get("rows_estimate", 0)), memory_limit)
    if batches > 1:
        log.info("resample full in batches run_id=%s batches=%d memory_limit=%s", run_id, batches, memory_limit)
        listing = (sources, journal)
        return (*rebuild_in_batches(store, ns, tail_len, batches, run_id, listing, threads, duck_limit), batches)
    con = connect(store, threads=threads, memory_limit=duck_limit)
    try:
        bronze = sources[sources["kind"] != "dms"]
        daily = bronze.loc[bronze["kind"] == "daily", "key"].tolist()
        # daily rows from fetch's session batches where the file kept its etag: one GET a session, not one a file
        batch, rest = batched_rows(store, daily, dict(zip(bronze["key"], bronze["etag"], strict=True)))
        keys = bronze.loc[bronze["kind"] != "daily", "key"].tolist() + rest
        dms_keys = sources.loc[sources["kind"] == "dms", "key"].tolist()
        if dms_keys:
            register_dms(con, store, dms_keys, None)
        rows = load_rows(con, store, "rows", keys, dms=bool(dms_keys), batch=batch)
        written = write_full(con, store, ns, threads)
        symbols, tail = state_frames(con, tail_len)
    finally:
        con.close()
    state = SilverState(run_id, sources, symbols, tail, tail_len, journal)
    results = {
        n: IntervalResult(
            n,
            "full",
            bars_written=written[n][0],
            months_rewritten=written[n][1],
            symbols_changed=len(symbols),
            rows_read=rows,
        )
        for n in ns
    }
    return state, results, 1


def run_resample(
    settings: Settings,
    p: ResampleParams | None = None,
    *,
    store: Store | None = None,
    threads: int | None = None,
    memory_limit: str | None = None,
) -> ResampleReport:
    """Bring the silver bars of ``p.intervals`` up to date with bronze (see the module docstring).

    DuckDB works within ``memory_limit`` (default: the settings' ``CONDVEST_DUCKDB_MEMORY_LIMIT``, 3 GB) and
    spills beyond it; the bars reach Python one month at a time, so memory does not grow with the history."""
    c = (p or ResampleParams()).check()
    memory_limit = memory_limit or settings.duckdb_memory_limit
    store = store or open_store(settings=settings)
    report = ResampleReport(new_run_id("resample"), c.intervals)
    t0 = time.perf_counter()
    if c.shard is not None:
        return _sharded(store, c.intervals, c.shard, report, settings, threads, duckdb_limit(memory_limit), t0)
    with lake_lock(store, "resample", run_id=report.run_id, purpose="resample", lease_s=settings.lock_lease_s):
        run = _start(store, c, report.run_id, threads, memory_limit)
        if run.sources.empty and all(cp is None for cp in run.checkpoints.values()):
            report.message = "nothing to resample: bronze is empty"
            report.results = [IntervalResult(n, "unchanged") for n in c.intervals]
            log.info("resample nothing to do run_id=%s", report.run_id)
            return report
        need_full = any(cp is None or cp.get("tail", 0) < n - 1 for n, cp in run.checkpoints.items())
        if run.stopped is not None:  # its month files may hold bars that no checkpoint describes: rebuild them all
            log.warning(
                "resample recomputing in full run_id=%s reason=%r",
                report.run_id,
                f"run {run.stopped.get('run_id')} stopped between its silver writes and its checkpoints",
            )
            need_full = True
        mark_inflight(store, report.run_id)
        results = {} if need_full else _incremental(run)
        batches = 0
        if results is None:  # an incremental pass found too much to re-read: everything is recomputed
            results = {}
            need_full = True
        if need_full:
            results, batches = _full_pass(run)
        store.delete(INFLIGHT_KEY)
        _prune(store, run)
    report.results = [results[n] for n in c.intervals]
    report.seconds = time.perf_counter() - t0
    report.message = _message(report, run, batches)
    log.info("resample done run_id=%s seconds=%.2f bars_written=%d", report.run_id, report.seconds, _written(report))
    return report


@dataclass
class _Run:
    """An unsharded run's view of the lake at its start: the checkpoints it read (and their versions, which its
    checkpoint writes are based on), the journal cursor, the bronze listing and a stopped run's marker."""

    store: Store
    ns: tuple[int, ...]
    run_id: str
    threads: int | None
    memory_limit: str
    cp_etags: dict[int, str | None]
    checkpoints: dict[int, dict | None]
    legacy: list[int]
    journal: str | None
    sources: pd.DataFrame
    stopped: dict | None
    watch: Watch  # what the run saw of bronze's change log (condvest.changes), saved beside each state it writes
    base: SilverState | None = None  # the state the change log was read against (a daily run that lists nothing)
    watched: set[str] | None = None  # the states that got ``watch``
    seen: Watch | None = None  # the watch saved with the state the checkpoints named (None: none, or several)


def _start(store: Store, c: CheckedResample, run_id: str, threads: int | None, memory_limit: str) -> _Run:
    ns = c.intervals
    read = {n: store.head(checkpoint_key(n)) for n in ns}  # the versions every checkpoint write is based on
    cp_etags = {n: h.etag if h is not None else None for n, h in read.items()}
    legacy: list[int] = []
    checkpoints = {n: (None if c.force_full_resample else read_checkpoint(store, n, legacy)) for n in ns}
    journal = latest_journal(store)
    stopped = read_inflight(store)
    base, watch, sources, seen = _from_log(store, checkpoints, journal, stopped)
    log.info(
        "resample start run_id=%s intervals=%s objects=%d force_full=%s bronze_listed=%s",
        run_id,
        ",".join(map(str, ns)),
        len(sources),
        c.force_full_resample,
        base is None,
    )
    run = _Run(
        store, ns, run_id, threads, memory_limit, cp_etags, checkpoints, legacy, journal, sources, stopped, watch, base
    )
    run.seen = seen
    return run


def _from_log(
    store: Store, checkpoints: dict[int, dict | None], journal: str | None, stopped: dict | None
) -> tuple[SilverState | None, Watch, pd.DataFrame, Watch | None]:
    """The bronze sources of the run: from the one state every checkpoint names plus bronze's change log when the
    log can tell what changed (``condvest.changes.changed_objects``; a daily run then lists no bronze prefix),
    else from a listing of bronze taken after a snapshot of the log. Returns (that state or None, the watch to
    save with the run's states, the sources, the watch of the state the checkpoints name)."""
    cps = list(checkpoints.values())
    states = {cp.get("state") for cp in cps if cp is not None}
    previous = None
    if len(states) == 1 and None not in states:
        cp = cps[0]
        previous = read_watch(store, watch_key(cp["state"]))  # type: ignore[index,arg-type]
        ready = (
            stopped is None
            and all(x is not None and x.get("tail", 0) >= n - 1 for n, x in checkpoints.items())
            and journal == cp["source_watermark"].get("journal")  # type: ignore[index]
        )
        delta = changed_objects(store, previous) if ready else None
        if delta is not None:
            base = SilverState.load(store, cp["state"], cp["tail"], journal)  # type: ignore[index]
            log.info("resample reading the change log objects=%d", len(delta.objects))
            sources = sources_after(store, base.sources, delta.objects)
            sources.attrs["rows_estimate"] = int(base.symbols["n"].sum()) + len(delta.objects)  # sizes a full pass
            return base, delta.watch, sources, previous
    watch = snapshot(store, previous)  # before the listing: what the listing holds may be in the log, never less
    return None, watch, list_sources(store), previous


def _incremental(run: _Run) -> dict[int, IntervalResult] | None:
    """Each group of intervals that share a state brought up to date from what changed since; ``None`` when a
    group has too much to re-read (or the DMS export changed): the run then recomputes everything."""
    store, results = run.store, {}
    groups: dict[str, list[int]] = {}
    for n, cp in run.checkpoints.items():
        groups.setdefault(cp["state"], []).append(n)  # type: ignore[index]
    for i, (state_id, group) in enumerate(sorted(groups.items())):
        cp = run.checkpoints[group[0]]
        assert cp is not None
        if run.base is not None and run.base.run_id == state_id:
            base = run.base
        else:
            base = SilverState.load(store, state_id, cp["tail"], cp["source_watermark"].get("journal"))
        cursor, extra = apply_journals(store, base)
        changes = diff_sources(base, run.sources, extra)
        slow = len(changes.since) - len(changes.append)
        if changes.dms_changed or slow > max(FULL_MIN, FULL_FRACTION * len(base.symbols)):
            log.info(
                "resample falling back to full run_id=%s reread_symbols=%d dms_changed=%s",
                run.run_id,
                slow,
                changes.dms_changed,
            )
            return None
        sub_id = run.run_id if i == 0 else f"{run.run_id}-{i}"
        limit = duckdb_limit(run.memory_limit)
        args = (store, base, changes, run.sources, cursor, tuple(group), sub_id)
        state, res = incremental_pass(*args, threads=run.threads, memory_limit=limit)
        results.update(res)
        if state is not None or run.watch != run.seen:  # an unchanged state saw the same bronze: its watch moves on
            _save_watch(run, (state or base).run_id)
        else:
            run.watched = (run.watched or set()) | {base.run_id}
        if state is not None:
            crash_point("resample.before_checkpoint")
            for n in group:
                write_checkpoint(store, n, state, res[n].mode, res[n].rows_read, run.run_id, run.cp_etags[n])
                crash_point("resample.after_first_checkpoint")
        for n in group:
            results[n].bars_total, results[n].last_session = _totals(state or base, n)
    return results


def _full_pass(run: _Run) -> tuple[dict[int, IntervalResult], int]:
    """Every interval recomputed from all of bronze, its state saved, then the checkpoints (the commit record)."""
    store = run.store
    state, results, batches = _full(store, run.ns, run.sources, run.journal, run.run_id, run.threads, run.memory_limit)
    crash_point("resample.after_silver")
    state.save(store)
    _save_watch(run, state.run_id)
    crash_point("resample.before_checkpoint")
    for n in run.ns:
        write_checkpoint(store, n, state, "full", results[n].rows_read, run.run_id, run.cp_etags[n])
        crash_point("resample.after_first_checkpoint")
        results[n].bars_total, results[n].last_session = _totals(state, n)
    return results, batches


def _written(report: ResampleReport) -> int:
    return sum(r.bars_written for r in report.results)


def _message(report: ResampleReport, run: _Run, batches: int) -> str:
    """The run's one line: what it wrote, and why it rebuilt in full when a stopped run or an old checkpoint
    made it."""
    changed = _written(report)
    message = (
        f"resampled {len(report.results)} interval(s): {changed} bars written"
        if changed
        else "silver is up to date: nothing to resample"
    )
    if batches > 1:
        message += f" (a full rebuild in {batches} symbol batches, to stay within {run.memory_limit})"
    if run.stopped is not None:
        message = f"run {run.stopped.get('run_id')} had stopped before its checkpoints: rebuilt in full; " + message
    if run.legacy:
        names = ", ".join(f"{n}d" for n in run.legacy)
        message = f"the previous pipeline's checkpoint found for {names}: rebuilt in full; " + message
    return message


def _sharded(
    store: Store,
    ns: tuple[int, ...],
    shard: Shard,
    report: ResampleReport,
    settings: Settings,
    threads: int | None,
    memory_limit: str | None,
    t0: float,
) -> ResampleReport:
    """One shard stages its part (no lock, nothing live written); the commit writes silver from all parts."""
    run_id, tail_len = report.run_id, max(MIN_TAIL, max(ns))
    if not shard.is_commit:
        res = stage_shard(store, ns, tail_len, shard, run_id, threads=threads, memory_limit=memory_limit)
        report.results = [res[n] for n in ns]
        report.seconds = time.perf_counter() - t0
        staged = sum(r.bars_written for r in report.results)
        report.message = (
            f"shard {shard.label} of sharded run {shard.group}: {staged} bars staged; "
            f"the commit (shard=commit/{shard.count}) writes silver"
        )
        return report
    with lake_lock(store, "resample", run_id=run_id, purpose="resample commit", lease_s=settings.lock_lease_s):
        cp_etags = {n: (h.etag if (h := store.head(checkpoint_key(n))) is not None else None) for n in ns}
        parts, months = check_parts(store, ns, shard)  # refuses before anything is written
        mark_inflight(store, run_id)
        # the staged years merged at once within the run's memory limit (a recent year at 10x is ~1 GB merged)
        merge_bytes = size_bytes(memory_limit) if memory_limit else 1 << 30
        state, results = commit_shards(store, ns, tail_len, shard, parts, months, run_id, threads, merge_bytes)
        crash_point("resample.after_silver")
        state.save(store)
        crash_point("resample.before_checkpoint")
        for n in ns:
            write_checkpoint(store, n, state, "full", results[n].rows_read, run_id, cp_etags[n])
            results[n].bars_total, results[n].last_session = _totals(state, n)
        store.delete(INFLIGHT_KEY)
        _prune(store)
        clear_staging(store, STAGE, shard.group)
    report.results = [results[n] for n in ns]
    report.seconds = time.perf_counter() - t0
    changed = sum(r.bars_written for r in report.results)
    report.message = f"committed {shard.count} shard(s) of sharded run {shard.group}: {changed} bars written"
    log.info("resample commit done run_id=%s group=%s bars_written=%d", run_id, shard.group, changed)
    return report


def _totals(state: SilverState, n: int) -> tuple[int, str | None]:
    if state.symbols.empty:
        return 0, None
    counts = state.symbols["n"].astype("int64")
    return int(((counts + n - 1) // n).sum()), max(state.symbols["last_date"]).isoformat()


def _save_watch(run: _Run, state_id: str) -> None:
    save_watch(run.store, watch_key(state_id), run.watch)
    run.watched = (run.watched or set()) | {state_id}


def _prune(store: Store, run: _Run | None = None) -> None:
    """Delete states no checkpoint names, compaction journals every checkpoint has passed, and the change objects
    this run read once every checkpoint names a state that saw them."""
    cps = all_checkpoints(store)
    if run is not None and run.watched and cps and all(c.get("state") in run.watched for c in cps):
        consume(store, run.watch.consumed)
    prune_states(store, {c["state"] for c in cps if "state" in c})
    cursors = [c.get("source_watermark", {}).get("journal") for c in cps]
    if cps and all(cursors):
        floor = min(cursors)
        store.delete_many([o.key for o in store.list(JOURNAL_PREFIX) if o.key < floor])
