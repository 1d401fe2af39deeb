"""A fetch run's writes, serialised: each session's or symbol's bars checked (duplicates dropped, bad bars to the
quarantine), then bronze first, then the Postgres rows inside the retention window; the manifest is the run's,
recorded last (``condvest.fetch.run``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

import pandas as pd

from condvest.bars import VALUE_COLUMNS, check_bars, conflicting, dedupe, misdated, suspect_moves, to_table
from condvest.bronze import read_bronze_bytes, update_history, write_daily_files, write_quarantine
from condvest.crash import crash_point
from condvest.errors import ObjectNotFound
from condvest.fetch.plan import FetchPlan
from condvest.fetch.report import SessionResult
from condvest.lake import batch_key
from condvest.params import storable_symbol
from condvest.pg_cache import ensure_cache_table, upsert_bars
from condvest.postgres import connect
from condvest.settings import Settings
from condvest.storage import Store

__all__ = ["SessionWriter"]

_NO_SPLITS = pd.DataFrame(columns=["ticker", "execution_date"])


class SessionWriter:
    """Serialises the writes of one run: bronze first, then Postgres; the manifest is recorded last."""

    def __init__(self, settings: Settings, store: Store, run_id: str, plan_: FetchPlan, write_postgres: bool) -> None:
        self.settings, self.store, self.run_id, self.plan = settings, store, run_id, plan_
        self.cutoff = settings.retention.cutoff(plan_.as_of)
        self.write_postgres = write_postgres
        self._conn: Any = None
        self._lock = asyncio.Lock()
        #: the closes of each session the run stored, and the moves found inside each symbol's range written to its
        #: history (``condvest.fetch.suspects`` looks for moves without a split once the run's splits are known)
        self.closes: list[pd.DataFrame] = []
        self.moves: list[pd.DataFrame] = []

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
        rows, clashing = conflicting(raw)  # the same key with different values: neither can be trusted
        rows, dups = dedupe(rows)
        res.duplicates += dups
        good, bad = check_bars(rows)
        if not clashing.empty:
            bad = pd.concat([bad, clashing], ignore_index=True)
        res.quarantined += len(bad)
        return good, bad

    def _write_session(
        self, day: dt.date, raw: pd.DataFrame, res: SessionResult, prior: pd.DataFrame | None = None
    ) -> set[str]:
        t0 = time.monotonic()
        raw, elsewhere = misdated(raw, day, day)  # a bar of another day is never filed where it says
        good, bad = self._prepare(raw, res)
        if not elsewhere.empty:
            res.source_rows += len(elsewhere)
            res.quarantined += len(elsewhere)
            bad = pd.concat([bad, elsewhere], ignore_index=True)
        held = set(good["symbol"])
        self.closes.append(good[["symbol", "date", "close"]])  # one session: compared with the one before, later
        if prior is not None:  # a settled session: only the bars the vendor revised (or added) are written
            good, res.revised = revised_bars(good, prior)
        write_quarantine(self.store, day, self.run_id, bad)
        res.bronze_rows += write_daily_files(self.store, good, run_id=self.run_id)
        crash_point("fetch.after_bronze")
        if self.write_postgres:
            res.postgres_rows += _upsert(self._pg(), good, self.cutoff)
        res.seconds += time.monotonic() - t0
        return held

    async def session(
        self, day: dt.date, raw: pd.DataFrame, res: SessionResult, prior: pd.DataFrame | None = None
    ) -> set[str]:
        """Write one session's bars (with ``prior``, the session as stored: only those that changed); returns the
        symbols whose bars bronze now holds for it."""
        async with self._lock:
            return await asyncio.to_thread(self._write_session, day, raw, res, prior)

    def _stored_session(self, day: dt.date, run_id: str) -> pd.DataFrame:
        try:
            return read_bronze_bytes(batch_key(day, run_id), self.store.get(batch_key(day, run_id))).to_pandas()
        except ObjectNotFound:  # no batch of that run (a range write, a lake of the previous pipeline)
            return pd.DataFrame(columns=[*VALUE_COLUMNS, "symbol"])

    async def stored_session(self, day: dt.date, run_id: str) -> pd.DataFrame:
        """The session's bars as the run that recorded it wrote them (its batch object); empty when unknown, so
        every bar counts as changed and is written again."""
        return await asyncio.to_thread(self._stored_session, day, run_id)

    def _quarantine_outside(self, raw: pd.DataFrame, results: dict[dt.date, SessionResult], tag: str) -> pd.DataFrame:
        """Bars outside the range asked for (or on a day without a session) to the quarantine, counted on the
        nearest session asked for; returns the others."""
        first, last = min(results), max(results)
        raw, outside = misdated(raw, first, last, set(results))
        for day, part in outside.groupby("date"):
            res = results.get(day) or results[first if day < first else last]
            res.source_rows += len(part)
            res.quarantined += len(part)
            write_quarantine(self.store, day, f"{self.run_id}-{tag}", part)
        return raw

    async def outside(self, raw: pd.DataFrame, results: dict[dt.date, SessionResult], tag: str) -> pd.DataFrame:
        """A range answer's bars dated outside the range asked for, quarantined with the reason; returns the rest."""
        if raw.empty or not results:
            return raw
        async with self._lock:
            return await asyncio.to_thread(self._quarantine_outside, raw, results, tag)

    def _write_history(self, symbol: str, raw: pd.DataFrame, results: dict[dt.date, SessionResult]) -> set[dt.date]:
        scratch = SessionResult(dt.date.min)
        good, bad = self._prepare(raw, scratch)
        # a symbol's range: its moves found at once (the splits filter them later); its bars are not kept
        self.moves.append(suspect_moves(good, good.iloc[0:0], _NO_SPLITS, self.settings.suspect_move))
        if scratch.duplicates:  # the same bar twice in a response or across pages: count it on its session
            kept, _ = conflicting(raw)  # conflicting rows are quarantined, not counted as duplicates
            dup = kept[kept.duplicated(["symbol", "date"], keep="last")].groupby("date").size()
            for day, n in dup.items():
                if day in results:
                    results[day].duplicates += int(n)
        for day, part in bad.groupby("date"):
            results[day].quarantined += len(part)
            tag = symbol if storable_symbol(symbol) else "unstorable"  # a key segment: never an odd ticker
            write_quarantine(self.store, day, f"{self.run_id}-{tag}", part)
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
        return set(good["date"])

    async def history(self, symbol: str, raw: pd.DataFrame, results: dict[dt.date, SessionResult]) -> set[dt.date]:
        """Merge one symbol's bars into its history; returns the sessions bronze now holds for it."""
        async with self._lock:
            return await asyncio.to_thread(self._write_history, symbol, raw, results)


def revised_bars(good: pd.DataFrame, prior: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The bars of ``good`` that differ from ``prior`` (same symbol) or are new, and how many of them were revisions
    (a stored bar whose values changed)."""
    if good.empty:
        return good, 0
    cols = list(VALUE_COLUMNS)
    old = prior.drop_duplicates("symbol", keep="last").set_index("symbol")[cols]
    new = good.set_index("symbol")[cols]
    known = new.index.isin(old.index)
    before = old.reindex(new.index)
    same = pd.Series(True, index=new.index)
    for col in cols:
        a = pd.to_numeric(new[col], errors="coerce").astype("float64")
        b = pd.to_numeric(before[col], errors="coerce").astype("float64")
        same &= (a == b) | (a.isna() & b.isna())
    keep = ~(same & known)
    return good[keep.to_numpy()].reset_index(drop=True), int((keep & known).sum())


def _upsert(conn: Any, df: pd.DataFrame, cutoff: dt.date) -> int:
    n = upsert_bars(conn, df, cutoff)
    conn.commit()
    return n
