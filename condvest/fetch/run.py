"""01_fetch: daily bars from Polygon into bronze (first, critical), Postgres (retention window), manifest.

Per session: fetch (grouped daily for all symbols, one request; per-symbol range requests for a
subset or a historical range) -> parse and deduplicate on (symbol, session date) -> bar checks
(failures go to the quarantine with their reason) -> bronze -> Postgres upsert of rows inside the
retention window -> manifest. A session that fails anywhere is reported failed and is not recorded in
the manifest, so the next run fetches it again; ``FetchReport.raise_for_status`` makes the run fail.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from condvest import manifest
from condvest import params as checks
from condvest.bars import bars_frame, check_bars, dedupe, to_table
from condvest.bronze import update_history, write_daily_files, write_quarantine
from condvest.crash import crash_point
from condvest.errors import AuthError, CondvestError, FetchFailed, SourceError
from condvest.fetch.pg_cache import ensure_cache_table, upsert_bars
from condvest.fetch.plan import FetchParams, FetchPlan, backfill_window, plan, validate
from condvest.polygon import PolygonClient
from condvest.postgres import connect
from condvest.runs import new_run_id
from condvest.settings import Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

__all__ = ["FetchParams", "FetchReport", "SessionResult", "new_run_id", "run_fetch"]


@dataclass
class SessionResult:
    session: dt.date
    status: str = "pending"  # done | failed
    source_rows: int = 0
    duplicates: int = 0
    quarantined: int = 0
    bronze_rows: int = 0
    postgres_rows: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class FetchReport:
    run_id: str
    plan: FetchPlan
    sessions: list[SessionResult] = field(default_factory=list)
    symbol_errors: dict[str, str] = field(default_factory=dict)
    market_status: str = "not checked"
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> dict[str, str]:
        out = {r.session.isoformat(): r.error for r in self.sessions if r.status != "done"}
        out.update({f"symbol {s}": e for s, e in self.symbol_errors.items()})
        return out

    @property
    def status(self) -> str:
        if self.plan.mode == "skip":
            return "skipped"
        return "failed" if self.failed else "ok"

    def to_frame(self) -> pd.DataFrame:
        """Per-session counts and timings."""
        cols = list(SessionResult.__dataclass_fields__)
        return pd.DataFrame([asdict(r) for r in self.sessions], columns=cols)

    def summary(self) -> dict[str, Any]:
        """The run's outcome for the run index (no timings: the same market and lake give the same figures)."""
        t = self.to_frame()
        return {
            "mode": self.plan.mode,
            "status": self.status,
            "as_of": self.plan.as_of.isoformat(),
            "sessions": len(self.sessions),
            "sessions_failed": int((t["status"] != "done").sum()) if len(t) else 0,
            "bronze_rows": int(t["bronze_rows"].sum()) if len(t) else 0,
            "postgres_rows": int(t["postgres_rows"].sum()) if len(t) else 0,
            "quarantined": int(t["quarantined"].sum()) if len(t) else 0,
            "duplicates": int(t["duplicates"].sum()) if len(t) else 0,
            "requests": self.requests,
            "retries": self.retries,
            "reason": self.plan.reason,
        }

    def raise_for_status(self) -> None:
        """``FetchFailed`` listing the failed sessions and symbols (after the notebook showed the tables)."""
        if self.failed:
            raise FetchFailed(failed=self.failed)


class _Writer:
    """Serialises the writes of one run: bronze first, then Postgres; the manifest is recorded last."""

    def __init__(self, settings: Settings, store: Store, run_id: str, plan_: FetchPlan, write_postgres: bool) -> None:
        self.settings, self.store, self.run_id, self.plan = settings, store, run_id, plan_
        self.cutoff = settings.retention.cutoff(plan_.as_of)
        self.write_postgres = write_postgres
        self._conn: Any = None
        self._lock = asyncio.Lock()

    def _pg(self) -> Any:
        if self._conn is None:
            conn = connect(self.settings)
            try:
                ensure_cache_table(conn)
                conn.commit()
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()

    def _prepare(self, raw: pd.DataFrame, res: SessionResult) -> tuple[pd.DataFrame, pd.DataFrame]:
        res.source_rows += len(raw)
        rows, dups = dedupe(raw)
        res.duplicates += dups
        good, bad = check_bars(rows)
        res.quarantined += len(bad)
        return good, bad

    def _write_session(self, day: dt.date, raw: pd.DataFrame, res: SessionResult) -> None:
        t0 = time.monotonic()
        good, bad = self._prepare(raw, res)
        write_quarantine(self.store, day, self.run_id, bad)
        res.bronze_rows += write_daily_files(self.store, good, run_id=self.run_id)
        crash_point("fetch.after_bronze")
        if self.write_postgres:
            res.postgres_rows += _upsert(self._pg(), good, self.cutoff)
        res.seconds += time.monotonic() - t0

    async def session(self, day: dt.date, raw: pd.DataFrame, res: SessionResult) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write_session, day, raw, res)

    def _write_history(self, symbol: str, raw: pd.DataFrame, results: dict[dt.date, SessionResult]) -> None:
        scratch = SessionResult(dt.date.min)
        good, bad = self._prepare(raw, scratch)
        if scratch.duplicates:  # the same bar twice in a response or across pages: count it on its session
            dup = raw[raw.duplicated(["symbol", "date"], keep="last")].groupby("date").size()
            for day, n in dup.items():
                if day in results:
                    results[day].duplicates += int(n)
        for day, part in bad.groupby("date"):
            results[day].quarantined += len(part)
            write_quarantine(self.store, day, f"{self.run_id}-{symbol}", part)
        if not good.empty:
            update_history(self.store, symbol, [(to_table(good).replace_schema_metadata(None), "daily")])
        pg = _upsert(self._pg(), good, self.cutoff) if self.write_postgres and not good.empty else 0
        for day, n in raw.groupby("date").size().items():
            if day in results:
                results[day].source_rows += int(n)
        for day, n in good.groupby("date").size().items():
            if day in results:
                results[day].bronze_rows += int(n)
        if pg:
            recent = good[good["date"] >= self.cutoff].groupby("date").size()
            for day, n in recent.items():
                if day in results:
                    results[day].postgres_rows += int(n)

    async def history(self, symbol: str, raw: pd.DataFrame, results: dict[dt.date, SessionResult]) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write_history, symbol, raw, results)


def _upsert(conn: Any, df: pd.DataFrame, cutoff: dt.date) -> int:
    n = upsert_bars(conn, df, cutoff)
    conn.commit()
    return n


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


async def _fetch_sessions(client: PolygonClient, w: _Writer, report: FetchReport, progress: bool) -> None:
    plan_ = report.plan
    results = {d: SessionResult(d) for d in plan_.sessions}
    report.sessions = [results[d] for d in plan_.sessions]

    if plan_.all_symbols:

        async def grouped(day: dt.date) -> None:
            res, t0 = results[day], time.monotonic()
            try:
                raw = bars_frame(await client.grouped_daily(day))
                res.seconds += time.monotonic() - t0
                if raw.empty:
                    raise SourceError("empty answer on a trading session", date=day.isoformat())
                await w.session(day, raw, res)
                res.status = "done"
            except AuthError:
                raise
            except CondvestError as exc:
                res.status, res.error = "failed", str(exc)
                log.error("fetch=session_failed session=%s error=%s", day, exc)
            res.seconds = round(res.seconds, 3)

        await _bounded(list(plan_.sessions), grouped, "fetch sessions", progress, max(1, client.limits.concurrency))
        return

    # a subset of symbols: one range request per symbol over the sessions' span, split by session
    start, end = min(plan_.sessions), max(plan_.sessions)
    frames: list[pd.DataFrame] = []
    t0 = time.monotonic()

    async def ranged(symbol: str) -> None:
        try:
            frames.append(bars_frame(await client.range_daily(symbol, start, end), symbol=symbol))
        except AuthError:
            raise
        except CondvestError as exc:
            report.symbol_errors[symbol] = str(exc)

    await _bounded(list(plan_.symbols or ()), ranged, "fetch symbols", progress, client.limits.concurrency)
    raw = pd.concat(frames, ignore_index=True) if frames else bars_frame([], symbol="")
    by_day = {d: g for d, g in raw.groupby("date")} if not raw.empty else {}
    for day in plan_.sessions:
        res = results[day]
        part = by_day.get(day)
        if part is None or part.empty:
            res.status, res.error = "failed", "empty answer on a trading session"
            continue
        try:
            await w.session(day, part, res)
            res.status = "done"
        except CondvestError as exc:
            res.status, res.error = "failed", str(exc)
        res.seconds = round(res.seconds + (time.monotonic() - t0) / len(plan_.sessions), 3)


async def _fetch_history(client: PolygonClient, w: _Writer, report: FetchReport, progress: bool) -> None:
    plan_ = report.plan
    results = {d: SessionResult(d) for d in plan_.sessions}
    report.sessions = [results[d] for d in plan_.sessions]
    symbols = list(plan_.symbols) if plan_.symbols is not None else await client.tickers()
    start, end = plan_.sessions[0], plan_.sessions[-1]
    t0 = time.monotonic()

    async def one(symbol: str) -> None:
        try:
            raw = bars_frame(await client.range_daily(symbol, start, end), symbol=symbol)
            raw = raw[raw["date"].isin(results.keys())]
            await w.history(symbol, raw, results)
        except AuthError:
            raise
        except CondvestError as exc:
            report.symbol_errors[symbol] = str(exc)
            log.error("fetch=symbol_failed symbol=%s error=%s", symbol, exc)

    await _bounded(symbols, one, "backfill symbols", progress, client.limits.concurrency)
    elapsed = time.monotonic() - t0
    for res in results.values():
        res.seconds = round(elapsed / max(1, len(results)), 3)
        if report.symbol_errors:
            res.status, res.error = "failed", f"{len(report.symbol_errors)} symbol(s) failed"
        elif res.source_rows == 0:
            res.status, res.error = "failed", "no bars for any symbol on a trading session"
        else:
            res.status = "done"


def _record(store: Store, report: FetchReport) -> None:
    plan_ = report.plan
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    source = "range" if plan_.mode == "history" or not plan_.all_symbols else "grouped"
    scope: str | tuple[str, ...] = manifest.ALL if plan_.all_symbols else tuple(plan_.symbols or ())
    entries = {
        r.session: manifest.SessionEntry(
            scope, r.bronze_rows if plan_.all_symbols else len(scope), r.bronze_rows, source, report.run_id, now
        )
        for r in report.sessions
        if r.status == "done"
    }
    if entries:
        manifest.record_sessions(store, entries)


async def run_fetch(
    settings: Settings,
    params: FetchParams | None = None,
    *,
    store: Store | None = None,
    run_id: str | None = None,
    progress: bool = True,
    now: dt.datetime | None = None,
) -> FetchReport:
    """Run 01_fetch. Parameters are validated before anything is fetched or written."""
    params = params or FetchParams()
    today = settings.today()
    as_of, _, _, _ = validate(params, today)
    store = store or open_store(settings=settings)
    run_id = run_id or new_run_id("fetch")
    t0 = time.monotonic()
    missing: list[dt.date] = []
    if params.date is None and params.start is None:
        window = backfill_window(as_of, params.max_backfill_days if params.backfill_missing else 1, now)
        if not manifest.has_manifest(store):  # a lake of the previous pipeline: build the manifest once
            manifest.build_from_listing(store, progress=progress)
        missing = manifest.missing_sessions(store, window, checks.symbol_list(params.symbols))
    plan_ = plan(params, today, missing, now)
    report = FetchReport(run_id, plan_)
    log.info(
        "fetch=plan run_id=%s mode=%s sessions=%d symbols=%s",
        run_id,
        plan_.mode,
        len(plan_.sessions),
        "all" if plan_.all_symbols else len(plan_.symbols or ()),
    )
    async with PolygonClient.open(settings) as client:
        if not (params.skip_market_check or params.force):
            try:
                status = await client.market_status()
                report.market_status = str(status.get("market", "unknown"))
            except AuthError:
                raise
            except SourceError as exc:
                report.market_status = f"unavailable ({exc})"
        if plan_.mode != "skip":
            writer = _Writer(settings, store, run_id, plan_, params.write_postgres)
            try:
                if plan_.mode == "history":
                    await _fetch_history(client, writer, report, progress)
                else:
                    await _fetch_sessions(client, writer, report, progress)
            finally:
                writer.close()
            _record(store, report)
        report.requests, report.retries = client.stats.requests, client.stats.retries
    report.seconds = time.monotonic() - t0
    log.info("fetch=done run_id=%s status=%s seconds=%.2f", run_id, report.status, report.seconds)
    return report
