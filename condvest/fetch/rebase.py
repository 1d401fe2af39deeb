"""Keeping each symbol's bronze history on one price basis when it splits (part of 01_fetch).

Polygon's bars are split-adjusted as of the day they are fetched; bronze keeps each day as fetched, so a
split leaves the bars before it on the old basis. After the sessions of a run are written:

1. the splits of every fetched session are read (one ``/v3/reference/splits?execution_date=D`` request
   per session, paged; with the ``rebase`` parameter one more request for every split since a date) and
   merged into ``bronze/_corporate_actions/splits.parquet`` (``condvest.splits``). A session whose splits
   cannot be read is reported failed, so the next run fetches it (and its splits) again;
2. every symbol with a known split executed on or before ``as_of`` and after the basis of its history
   (``condvest.splits.pending``; an unknown basis counts as older) is re-fetched whole (its first to
   its last stored session) with one range request (the current adjusted basis). The new rows
   replace its history through ``condvest.bronze.update_history`` (their newer ``ingested_at`` wins
   the merge), its daily files are rewritten with the new rows, its Postgres rows inside the retention
   window are upserted, and then its basis (``as_of``) is recorded. Rewritten objects have new etags,
   so the next 02_resample recomputes that symbol's silver bars from its first session;
3. a symbol whose history cannot be re-fetched (source error, a bar failing the checks, or an answer that
   lacks a session bronze holds) keeps its old history untouched and its old basis, is reported (WARN),
   and is tried again by the next run; the rest of the run goes on. A symbol without any bronze object
   gets the basis without a request (whatever is fetched for it later is on the new basis already).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from condvest import splits as corp
from condvest.bars import bars_frame, check_bars, conflicting, dedupe, to_table
from condvest.bronze import read_bronze_bytes, update_history, write_daily_files
from condvest.crash import crash_point
from condvest.errors import AuthError, CondvestError, PlanLimit, SourceError
from condvest.lake import bronze_symbol_prefix, parse_bronze_key
from condvest.pg_cache import ensure_cache_table, upsert_bars
from condvest.polygon import PolygonClient
from condvest.postgres import connect
from condvest.settings import Settings
from condvest.storage import Store

log = logging.getLogger(__name__)

__all__ = ["RebaseJob", "RebaseReport", "SymbolRebase", "run_rebase"]


@dataclass(frozen=True)
class RebaseJob:
    run_id: str
    as_of: dt.date
    sessions: tuple[dt.date, ...]  # the sessions this run fetched: their splits are read
    symbols: tuple[str, ...] | None = None  # the run's symbols (None: every symbol)
    since: dt.date | None = None  # the ``rebase`` parameter: also read every split since this date
    write_postgres: bool = True


@dataclass
class SymbolRebase:
    symbol: str
    splits: str  # the execution dates that made it due
    basis_before: str
    status: str = "pending"  # rebased | failed | no bronze
    rows: int = 0
    postgres_rows: int = 0
    daily_files: int = 0
    error: str = ""


@dataclass
class RebaseReport:
    splits_requests: int = 0
    splits_read: int = 0
    splits_new: int = 0
    session_errors: dict[dt.date, str] = field(default_factory=dict)
    reference_error: str = ""
    symbols: list[SymbolRebase] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> dict[str, str]:
        return {r.symbol: r.error for r in self.symbols if r.status == "failed"}

    @property
    def rebased(self) -> list[str]:
        return [r.symbol for r in self.symbols if r.status == "rebased"]

    def to_frame(self) -> pd.DataFrame:
        """One row per symbol that was due: the splits, the basis before, and what happened."""
        return pd.DataFrame([asdict(r) for r in self.symbols], columns=list(SymbolRebase.__dataclass_fields__))

    def summary(self) -> dict[str, Any]:
        return {
            "splits_read": self.splits_read,
            "splits_new": self.splits_new,
            "rebased": len(self.rebased),
            "rebase_failed": len(self.failed),
        }

    def raise_for_status(self) -> None:
        """Nothing to raise: a symbol that failed keeps its old basis and is retried by the next run (WARN)."""


async def _read_splits(client: PolygonClient, job: RebaseJob, report: RebaseReport) -> pd.DataFrame:
    seen_at = dt.datetime.now(dt.UTC)
    frames: list[pd.DataFrame] = []

    async def one(day: dt.date) -> None:
        try:
            frames.append(corp.splits_frame(await client.splits(execution_date=day.isoformat()), seen_at))
        except (AuthError, PlanLimit):
            raise
        except CondvestError as exc:
            report.session_errors[day] = f"splits reference unavailable: {exc}"
            log.error("rebase=splits_failed session=%s error=%s", day, exc)

    before = client.stats.requests
    await asyncio.gather(*(one(d) for d in job.sessions))
    if job.since is not None:
        try:
            window = {"execution_date.gte": job.since.isoformat(), "execution_date.lte": job.as_of.isoformat()}
            frames.append(corp.splits_frame(await client.splits(**window), seen_at))
        except (AuthError, PlanLimit):
            raise
        except CondvestError as exc:
            report.reference_error = f"splits reference unavailable: {exc}"
            log.error("rebase=splits_failed since=%s error=%s", job.since, exc)
    report.splits_requests = client.stats.requests - before
    df = pd.concat(frames, ignore_index=True) if frames else corp.splits_frame([], seen_at)
    report.splits_read = len(df)
    return df


class _Rewriter:
    """Writes one symbol's new history: bronze history, its daily files, Postgres; serialised per run."""

    def __init__(self, settings: Settings, store: Store, job: RebaseJob) -> None:
        self.settings, self.store, self.job = settings, store, job
        self.cutoff = settings.retention.cutoff(job.as_of)
        self._conn: Any = None
        self.lock = asyncio.Lock()

    def stored(self, symbol: str) -> tuple[dict[str, dt.date], set[dt.date]]:
        """The symbol's daily files (key -> session) and every session bronze holds for it."""
        daily, history = {}, None
        for o in self.store.list(bronze_symbol_prefix(symbol)):
            parsed = parse_bronze_key(o.key)
            if parsed is None or parsed[0] != symbol:
                continue
            if parsed[1] is None:
                history = o.key
            else:
                daily[o.key] = parsed[1]
        sessions = set(daily.values())
        if history is not None:
            sessions |= set(read_bronze_bytes(history, self.store.get(history)).column("date").to_pylist())
        return daily, sessions

    def write(self, symbol: str, raw: pd.DataFrame, res: SymbolRebase) -> None:
        rows, clashing = conflicting(raw)
        rows, _ = dedupe(rows)
        good, bad = check_bars(rows)
        bad = pd.concat([bad, clashing], ignore_index=True) if len(clashing) else bad
        if not bad.empty:
            raise SourceError(f"the re-fetched history has {len(bad)} bar(s) failing the checks", symbol=symbol)
        daily, stored = self.stored(symbol)  # again, under the lock: what the new rows must cover
        lacking = sorted(stored - set(good["date"]))
        if lacking:
            raise SourceError(
                f"the re-fetched history lacks {len(lacking)} session(s) bronze holds "
                f"({lacking[0]}..{lacking[-1]}); the old basis is kept",
                symbol=symbol,
            )
        w = update_history(self.store, symbol, [(to_table(good).replace_schema_metadata(None), "history")])
        crash_point("rebase.after_history")
        res.rows = w.rows
        res.daily_files = write_daily_files(self.store, good[good["date"].isin(set(daily.values()))])
        if self.job.write_postgres:
            if self._conn is None:
                self._conn = connect(self.settings)
                ensure_cache_table(self._conn)
                self._conn.commit()
            res.postgres_rows = upsert_bars(self._conn, good, self.cutoff)
            self._conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


async def run_rebase(client: PolygonClient, settings: Settings, store: Store, job: RebaseJob) -> RebaseReport:
    """Read the splits of ``job.sessions`` (and since ``job.since``), then rebase every due symbol."""
    t0 = time.monotonic()
    report = RebaseReport()
    found = await _read_splits(client, job, report)
    report.splits_new = await asyncio.to_thread(corp.record_splits, store, found)
    known = await asyncio.to_thread(corp.read_splits, store)
    basis = await asyncio.to_thread(corp.read_basis, store)
    due = corp.pending(known, basis, job.as_of, symbols=job.symbols)
    rw = _Rewriter(settings, store, job)
    done: dict[str, corp.Basis] = {}
    stamp = dt.datetime.now(dt.UTC)

    async def one(symbol: str) -> None:
        before = basis[symbol].basis.isoformat() if symbol in basis else "unknown"
        res = SymbolRebase(symbol, ", ".join(d.isoformat() for d in due[symbol]), before)
        report.symbols.append(res)
        try:
            _, sessions = await asyncio.to_thread(rw.stored, symbol)
            if not sessions:
                res.status = "no bronze"
            else:  # the whole stored span in one range request
                raw = bars_frame(await client.range_daily(symbol, min(sessions), max(sessions)), symbol, stamp)
                if raw.empty:
                    raise SourceError("the re-fetched history is empty", symbol=symbol)
                async with rw.lock:
                    await asyncio.to_thread(rw.write, symbol, raw, res)
                res.status = "rebased"
            done[symbol] = corp.Basis(job.as_of, stamp.isoformat(timespec="seconds"), job.run_id, res.rows)
            log.info("rebase=done symbol=%s status=%s rows=%d splits=%s", symbol, res.status, res.rows, res.splits)
        except (AuthError, PlanLimit):
            raise
        except CondvestError as exc:
            res.status, res.error = "failed", str(exc)
            log.warning("rebase=failed symbol=%s retry=next_run error=%s", symbol, exc)

    try:
        sem = asyncio.Semaphore(max(1, client.limits.concurrency))

        async def bounded(symbol: str) -> None:
            async with sem:
                await one(symbol)

        await asyncio.gather(*(bounded(s) for s in due))
    finally:
        rw.close()
    report.symbols.sort(key=lambda r: r.symbol)
    await asyncio.to_thread(corp.record_basis, store, done)
    report.seconds = round(time.monotonic() - t0, 3)
    return report
