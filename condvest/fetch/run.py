"""01_fetch: daily bars from Polygon into bronze (first, critical), Postgres (retention window), manifest.

Per session: fetch (grouped daily for all symbols, one request, also for a history backfill of all:
``universe``; per-symbol range requests for a symbol list) -> parse and deduplicate on (symbol, session
date) -> bar checks (failures, and bars dated another day than asked, go to the quarantine with their
reason) -> bronze -> Postgres upsert of rows inside the retention window -> manifest. A session that fails
anywhere is reported failed and is not recorded in the manifest, so the next run fetches it again;
``FetchReport.raise_for_status`` makes the run fail. A session the vendor has not made available yet (today
before the end of day on the plan, a ``DELAYED`` answer) is a ``warn``, not recorded; a refusal of the plan
or of the key fails the run. A daily run also asks again for the sessions it holds from before they were
final (``settle_sessions``) and writes only the bars the vendor revised.

Coverage is honest: the manifest records per session what bronze really holds, every symbol (grouped
daily, or a history backfill of "all" whose session came) or the symbols that returned bars. A
symbol whose request failed is recorded nowhere and fails the run (status ``partial`` on the sessions
it is missing from); the next daily run fetches exactly what is missing. With a symbol list, the
sessions before a symbol's first bar (listed later) are outside its trading life, recorded as
``absent`` and never asked again; so are those after its last bar in a history backfill (delisted). A
session inside its life without a bar (a halt, a quarantined bar; after its last bar in a daily run) is
a gap: status ``warn`` naming the symbols, not a failed run, and asked again by the next daily run. A
symbol list member with no bar at all in the span fails the run. For every symbol, a trading session
with no bar at all still fails (the source had an outage).

A history backfill can be split by symbol (``shard="I/N"`` then ``shard="commit/N"``, the same ``shard_group``;
``condvest.fetch.sharded``): each shard fetches and writes its own symbols and stages its outcome; the commit
combines them, reads the splits and rebases once, and records the manifest as the unsharded run would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from condvest import manifest
from condvest import params as checks
from condvest.bars import bars_frame
from condvest.calendar import latest_complete_session, previous_session, sessions_between
from condvest.errors import AuthError, CondvestError, PlanLimit, SourceError
from condvest.fetch import sharded
from condvest.fetch.coverage import (
    only_missing_symbols,
    record_manifest,
    settle_history,
    settle_symbols,
    trading_life,
)
from condvest.fetch.params import CheckedFetch, FetchParams
from condvest.fetch.plan import FetchPlan, backfill_window, plan, settle_candidates
from condvest.fetch.rebase import RebaseJob, run_rebase
from condvest.fetch.report import FetchReport, SessionOutcome, SessionResult, session_outcome
from condvest.fetch.sharded import Held, Life
from condvest.fetch.suspects import find_suspects
from condvest.fetch.universe import fetch_every_symbol
from condvest.fetch.writer import SessionWriter
from condvest.polygon import PolygonClient
from condvest.runs import new_run_id
from condvest.settings import Settings
from condvest.shards import Shard, clear_staging
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

__all__ = ["FetchParams", "FetchReport", "SessionOutcome", "SessionResult", "new_run_id", "run_fetch"]


async def _bounded(
    items: list[Any], fn: Callable[[Any], Awaitable[None]], desc: str, progress: bool, limit: int
) -> None:
    sem = asyncio.Semaphore(limit)

    async def one(item: Any) -> None:
        async with sem:
            await fn(item)

    with tqdm(
        total=len(items), desc=desc, unit=desc.split()[-1], disable=not progress or len(items) < 2, leave=False
    ) as bar:
        for fut in asyncio.as_completed([one(i) for i in items]):
            await fut
            bar.update(1)


async def _fetch_grouped(client: PolygonClient, w: SessionWriter, report: FetchReport, progress: bool) -> None:
    """Every symbol: one grouped-daily request per session, each session written on its own."""
    results = _start_sessions(report)
    settle = set(report.plan.settle)
    held = manifest.read_sessions(w.store, min(settle), max(settle)) if settle else {}

    async def grouped(day: dt.date) -> None:
        res, t0 = results[day], time.monotonic()
        with session_outcome(res):
            raw = bars_frame(await client.grouped_daily(day))
            res.seconds += time.monotonic() - t0
            if raw.empty:
                raise SourceError("empty answer on a trading session", date=day.isoformat())
            entry = held.get(day)
            prior = await w.stored_session(day, entry.run_id) if day in settle and entry else None
            await w.session(day, raw, res, prior)
            res.status = SessionOutcome.DONE
        res.seconds = round(res.seconds, 3)

    await _bounded(list(report.plan.sessions), grouped, "fetch sessions", progress, max(1, client.limits.concurrency))


async def _fetch_ranged(client: PolygonClient, w: SessionWriter, report: FetchReport, progress: bool) -> None:
    """A symbol list: one range request per symbol over the sessions' span, split by session."""
    plan_ = report.plan
    results = _start_sessions(report)
    start, end = min(plan_.sessions), max(plan_.sessions)
    frames: list[pd.DataFrame] = []
    t0 = time.monotonic()

    async def ranged(symbol: str) -> None:
        try:
            raw = bars_frame(await client.range_daily(symbol, start, end), symbol=symbol)
        except (AuthError, PlanLimit):
            raise
        except CondvestError as exc:
            report.symbol_errors[symbol] = str(exc)
            log.error("fetch=symbol_failed symbol=%s error=%s", symbol, exc)
            return
        if raw.empty:
            report.symbol_errors[symbol] = f"no bars between {start} and {end} (empty answer)"
            log.error("fetch=symbol_empty symbol=%s start=%s end=%s", symbol, start, end)
            return
        frames.append(raw)

    requested = list(plan_.symbols or ())
    await _bounded(requested, ranged, "fetch symbols", progress, client.limits.concurrency)
    raw = pd.concat(frames, ignore_index=True) if frames else bars_frame([], symbol="")
    raw = await w.outside(raw, _span_results(results, start, end), "range")  # a bar outside the range asked for
    life = trading_life(raw)
    by_day = {d: g for d, g in raw.groupby("date")} if not raw.empty else {}
    for day in plan_.sessions:
        res = results[day]
        part = by_day.get(day)
        held: set[str] = set()
        if part is not None and not part.empty:
            try:
                held = await w.session(day, part, res)
            except CondvestError as exc:
                res.status, res.error = SessionOutcome.FAILED, str(exc)
                log.error("fetch=session_failed session=%s error=%s", day, exc)
                continue
        # after its last bar a symbol may only be late at the source: a gap, asked again next run
        settle_symbols(report, res, requested, held, life, after_last_is_absent=False)
        res.seconds = round(res.seconds + (time.monotonic() - t0) / len(plan_.sessions), 3)


def _span_results(results: dict[dt.date, SessionResult], start: dt.date, end: dt.date) -> dict[dt.date, SessionResult]:
    """Every NYSE session of ``start..end`` (the range asked for) with a result: the planned sessions' own, a
    scratch one for a session the plan does not fetch (already held)."""
    return {d: results.get(d) or SessionResult(d) for d in sessions_between(start, end)}


def _start_sessions(report: FetchReport) -> dict[dt.date, SessionResult]:
    """The planned sessions, pending, listed on the report in plan order."""
    results = {d: SessionResult(d) for d in report.plan.sessions}
    report.sessions = [results[d] for d in report.plan.sessions]
    return results


async def _fetch_history(
    client: PolygonClient,
    w: SessionWriter,
    report: FetchReport,
    progress: bool,
    keep: Callable[[str], bool] | None = None,
) -> tuple[list[str], Held, Life]:
    """Fetch and write each symbol's range (only those ``keep`` holds: a shard's); returns the symbols asked,
    what bronze holds per session (a symbol list) and each symbol's first and last bar, for ``_settle_history``.
    Every symbol, unsharded: each session's grouped answer (``condvest.fetch.universe``: delisted symbols too)."""
    plan_ = report.plan
    results = _start_sessions(report)
    if not results:  # no NYSE session in the window: nothing to ask
        return [], {}, {}
    if plan_.all_symbols:
        missed = await fetch_every_symbol(client, w, results, progress, keep)
        if keep is not None:  # a shard's sessions say "staged": the commit fails on what did not come
            report.symbol_errors.update({f"(session {d})": why for d, why in missed.items()})
        return [], {}, {}
    symbols = list(plan_.symbols or ())
    for odd in (s for s in symbols if not checks.storable_symbol(s)):  # never put into a URL or a key
        report.unstorable_tickers.append(odd)
        log.warning("fetch=ticker_skipped ticker=%r reason=not_storable", odd)
    symbols = [s for s in symbols if checks.storable_symbol(s) and (keep is None or keep(s))]
    held: Held = {d: set() for d in results} if not plan_.all_symbols else {}
    life: Life = {}
    start, end = plan_.sessions[0], plan_.sessions[-1]
    t0 = time.monotonic()

    async def one(symbol: str) -> None:
        try:
            raw = bars_frame(await client.range_daily(symbol, start, end), symbol=symbol)
            raw = await w.outside(raw, results, symbol)  # a bar outside the range asked for: quarantined
            if raw.empty and not plan_.all_symbols:
                raise SourceError(f"no bars between {start} and {end} (empty answer)", symbol=symbol)
            life.update(trading_life(raw))
            days = await w.history(symbol, raw, results)
        except (AuthError, PlanLimit):
            raise
        except CondvestError as exc:
            report.symbol_errors[symbol] = str(exc)
            log.error("fetch=symbol_failed symbol=%s error=%s", symbol, exc)
            return
        if not plan_.all_symbols:
            for d in days:
                held[d].add(symbol)

    await _bounded(symbols, one, "backfill symbols", progress, client.limits.concurrency)
    elapsed = time.monotonic() - t0
    for res in results.values():
        res.seconds = round(elapsed / max(1, len(results)), 3)
    return symbols, held, life


def _rebase_job(report: FetchReport, c: CheckedFetch) -> RebaseJob:
    done = tuple(r.session for r in report.sessions if r.status == SessionOutcome.DONE)
    since = c.rebase
    if _windowed_splits(report, done):  # several sessions: one paged splits request for all of them
        since, done = min(since or done[0], done[0]), ()
    return RebaseJob(report.run_id, report.plan.as_of, done, report.plan.symbols, since, c.write_postgres)


def _windowed_splits(report: FetchReport, done: tuple[dt.date, ...]) -> bool:
    """The splits of a history range, or of several sessions of a daily run (a gap fill), are asked in one paged
    request (``execution_date.gte/lte``), not one request per session: half a gap fill's requests."""
    return bool(done) and (report.plan.mode == "history" or len(done) > 1)


def _mark_split_failures(report: FetchReport, windowed: bool) -> None:
    """A session whose splits could not be read is fetched again by the next run (with its splits)."""
    for r in report.sessions:
        if r.session in report.rebase.session_errors:
            r.status, r.error = SessionOutcome.FAILED, report.rebase.session_errors[r.session]
    if report.rebase.reference_error:
        if not windowed or report.plan.mode == "history":  # a gap fill's window: its sessions say it below
            report.symbol_errors["(splits reference)"] = report.rebase.reference_error
        if windowed:  # the sessions' splits were in the window that failed
            for r in report.sessions:
                if report.plan.mode == "history" or r.status == SessionOutcome.DONE:
                    r.status, r.error = SessionOutcome.FAILED, report.rebase.reference_error


@dataclass
class _Run:
    """One fetch run's context, shared by the steps of its mode."""

    settings: Settings
    store: Store
    client: PolygonClient
    report: FetchReport
    checked: CheckedFetch
    progress: bool
    parts: list[dict[str, Any]] = field(default_factory=list)  # a commit's: every shard's staged outcome
    now: dt.datetime | None = None  # the run's clock when pinned (tests); the manifest's written_at
    writers: list[SessionWriter] = field(default_factory=list)  # what they stored: closes and moves (``_finish``)

    def writer(self) -> SessionWriter:
        report = self.report
        w = SessionWriter(self.settings, self.store, report.run_id, report.plan, self.checked.write_postgres)
        self.writers.append(w)  # the suspect moves are looked for once the splits are known (``_finish``)
        return w


async def run_fetch(
    settings: Settings,
    params: FetchParams | None = None,
    *,
    store: Store | None = None,
    run_id: str | None = None,
    progress: bool = True,
    now: dt.datetime | None = None,
) -> FetchReport:
    """Run 01_fetch. Parameters are checked once, before anything is fetched or written. With ``params.shard`` one
    shard of a sharded history backfill (``"I/N"``) or its commit (``"commit/N"``): ``condvest.fetch.sharded``."""
    today = settings.today()
    c = (params or FetchParams()).check(today)
    store = store or open_store(settings=settings)
    t0 = time.monotonic()
    report = FetchReport(run_id or new_run_id("fetch"), _plan(store, c, today, now, progress), shard=c.shard)
    parts = _open_shard(store, report, c)  # a commit refuses here, before any request or write
    _log_plan(report)
    async with PolygonClient.open(settings) as client:
        run = _Run(settings, store, client, report, c, progress, parts, now)
        if not (c.skip_market_check or c.force or report.staged):
            await _market_status(run)
        await _mode(report)(run)
    report.seconds = time.monotonic() - t0
    log.info("fetch=done run_id=%s status=%s seconds=%.2f", report.run_id, report.status, report.seconds)
    return report


def _plan(store: Store, c: CheckedFetch, today: dt.date, now: dt.datetime | None, progress: bool) -> FetchPlan:
    """The run's plan; a daily run first asks the manifest which sessions of its window are missing."""
    missing: list[dt.date] = []
    settle: list[dt.date] = []
    if c.daily:
        as_of = c.as_of or today
        window = backfill_window(as_of, c.max_backfill_days if c.backfill_missing else 1, now)
        if not manifest.has_manifest(store):  # a lake of the previous pipeline: build the manifest once
            manifest.build_from_listing(store, progress=progress)
        missing = manifest.missing_sessions(store, window, c.symbols)
        if c.symbols is None and c.settle_sessions:  # every symbol: the sessions fetched before they were final
            latest = latest_complete_session(as_of, now)
            held = manifest.read_sessions(store, previous_session(window[0]), latest)
            settle = settle_candidates(held, latest, c.settle_sessions, c.symbols)
    plan_ = plan(c, today, missing, now, settle)
    if plan_.mode == "daily" and not plan_.all_symbols and not c.force:
        plan_ = only_missing_symbols(store, plan_)
    return plan_


def _open_shard(store: Store, report: FetchReport, c: CheckedFetch) -> list[dict[str, Any]]:
    """A commit reads every shard's outcome (``ShardsIncomplete`` when one is missing); a shard clears its own."""
    shard = report.shard
    if shard is not None and shard.is_commit:
        return sharded.read_outcomes(store, shard, report.plan, c.write_postgres)
    if shard is not None:
        sharded.begin(store, shard)
    return []


def _log_plan(report: FetchReport) -> None:
    plan_, shard = report.plan, report.shard
    log.info(
        "fetch=plan run_id=%s mode=%s sessions=%d symbols=%s shard=%s",
        report.run_id,
        plan_.mode,
        len(plan_.sessions),
        "all" if plan_.all_symbols else len(plan_.symbols or ()),
        shard.label if shard else "-",
    )


async def _market_status(run: _Run) -> None:
    try:
        status = await run.client.market_status()
        run.report.market_status = str(status.get("market", "unknown"))
    except AuthError:
        raise
    except SourceError as exc:
        run.report.market_status = f"unavailable ({exc})"


def _mode(report: FetchReport) -> Callable[[_Run], Awaitable[None]]:
    """The steps of the run's mode: a shard or a commit of a sharded backfill, or history, date, daily, skip."""
    if report.shard is not None:
        return _run_commit if report.shard.is_commit else _run_shard
    if report.plan.mode == "history":
        return _run_history
    if report.plan.mode == "skip":
        return _finish
    return _run_sessions  # "date" or "daily"


async def _run_sessions(run: _Run) -> None:
    """A named session or a daily run: grouped requests for every symbol, range requests for a symbol list."""
    with closing(run.writer()) as writer:
        fetch = _fetch_grouped if run.report.plan.all_symbols else _fetch_ranged
        await fetch(run.client, writer, run.report, run.progress)
    await _finish(run)


async def _run_history(run: _Run) -> None:
    """A history backfill: each symbol's range merged into its history, then the sessions settled."""
    with closing(run.writer()) as writer:
        requested, held, life = await _fetch_history(run.client, writer, run.report, run.progress)
    settle_history(run.report, requested, held, life)
    await _finish(run)


async def _run_shard(run: _Run) -> None:
    """One shard of a sharded history backfill: its symbols fetched and written, its outcome staged; no splits, no
    rebase, no manifest (the commit's)."""
    report, shard = run.report, run.checked.shard
    assert shard is not None
    with closing(run.writer()) as writer:
        requested, held, life = await _fetch_history(run.client, writer, report, run.progress, shard.holds)
    report.requests, report.retries = run.client.stats.requests, run.client.stats.retries
    _stage(run.store, shard, report, requested, held, life, run.checked.write_postgres)


async def _run_commit(run: _Run) -> None:
    """The commit of a sharded history backfill: the shards' outcomes combined and settled as one unsharded run
    settles them, then splits, rebase and the manifest, and the staging area removed."""
    report, shard = run.report, run.checked.shard
    assert shard is not None
    _start_sessions(report)
    held, life = sharded.combine(report, run.parts)
    requested = [s for s in report.plan.symbols or () if checks.storable_symbol(s)]
    settle_history(report, requested, held, life)
    await _finish(run)
    clear_staging(run.store, sharded.STAGE, shard.group)
    log.info("fetch=commit run_id=%s group=%s shards=%d", report.run_id, shard.group, shard.count)


async def _finish(run: _Run) -> None:
    """Every unsharded run's (and a commit's) end: the splits and the rebase, then the manifest, then the counts."""
    report = run.report
    done = tuple(r.session for r in report.sessions if r.status == SessionOutcome.DONE)
    report.rebase = await run_rebase(run.client, run.settings, run.store, _rebase_job(report, run.checked))
    _mark_split_failures(report, _windowed_splits(report, done))
    closes = [c for w in run.writers for c in w.closes]
    moves = [m for w in run.writers for m in w.moves]
    report.note_suspects(find_suspects(run.store, closes, moves, run.settings.suspect_move, report.run_id))
    if report.plan.mode != "skip":
        record_manifest(run.store, report, run.now)
    report.requests += run.client.stats.requests
    report.retries += run.client.stats.retries


def _stage(
    store: Store, shard: Shard, report: FetchReport, requested: list[str], held: Held, life: Life, write_postgres: bool
) -> None:
    """A shard's end: its sessions say ``staged`` (the commit settles them) and its done record is written."""
    for r in report.sessions:
        r.status, r.error = SessionOutcome.STAGED, ""
    sharded.stage(store, shard, report, held, life, write_postgres)
    rows = sum(r.bronze_rows for r in report.sessions)
    errors = f", {len(report.symbol_errors)} failed" if report.symbol_errors else ""
    report.message = (
        f"shard {shard.label} of sharded run {shard.group}: {len(requested)} symbol(s){errors}, {rows} bronze rows "
        f"written and staged; the commit (shard=commit/{shard.count}) records the manifest"
    )
    log.info(
        "fetch=shard_staged run_id=%s shard=%s group=%s symbols=%d rows=%d",
        report.run_id,
        shard.label,
        shard.group,
        len(requested),
        rows,
    )
