"""Compaction of bronze: fold each symbol's old daily files into its ``data.parquet``.

    compact_bronze(settings, CompactionParams(keep_sessions=10, min_fold_sessions=5)) -> CompactionReport

The newest ``keep_sessions`` session dates present among the daily files stay as daily files; older
daily files are folded into ``symbol=X/data.parquet`` (one row per date, the newest write winning, rows
without ``ingested_at`` from the daily file preferred over history) and then deleted. Nothing happens
until at least ``min_fold_sessions`` dates are due, so the history objects are rewritten every few
sessions, not every day. The number of daily objects therefore stays below about
``(keep_sessions + min_fold_sessions) x symbols``, and with it the cost of listing bronze.

Readers never miss a bar or see one twice: a symbol's new ``data.parquet`` (holding the folded rows) is
written before its daily files are deleted, and every reader deduplicates on (symbol, date), so in
between a row is present twice with identical content. The write is conditional on the etag read, so a
concurrent history writer is never overwritten (``update_history`` retries from a fresh read), and a daily
file is deleted only while it still has the version folded (``Store.delete_if``): a fetch that rewrites
it meanwhile keeps its file. 01_fetch takes no lock and runs beside compaction without losing a bar
(tests/resample/test_races.py steps the two through every interleaving). Each batch of
symbols ends with a journal object ``bronze/_compaction/<time>-<run>.json`` (old and new etag of each
``data.parquet`` and the folded files) written before the deletes: the resampler reads it to know that
the rewritten objects hold nothing new. Compaction holds the lake lock ``resample``, so it never runs
beside a resample. A re-run after a crash folds the same files again, with the same result.

Most runs fold nothing (folding waits for ``min_fold_sessions`` due dates), and finding that out by listing
bronze costs a page of 1,000 keys per 1,000 objects on S3, every day. A run that lists bronze records the session
dates that still have daily files (``processing_metadata/compaction/daily_dates.json``); the next run takes those
plus the dates of fetch's session batches (one short listing of ``bronze/_batches/``: every fetch writes one per
session it wrote) and lists bronze only when that says enough dates are due. A daily file written without a
batch (a rebase, a previous pipeline's files) is not lost: it is found by the next listing, at the latest when
the batches make folding due.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from condvest.bronze import read_bronze_bytes, update_history
from condvest.crash import crash_point
from condvest.display import progress_disable
from condvest.errors import CorruptObject, ObjectNotFound, PreconditionFailed
from condvest.lake import BATCH_PREFIX, BRONZE_PREFIX, METADATA_PREFIX, bronze_history_key, parse_bronze_key
from condvest.lake_lock import lake_lock
from condvest.resample.params import CompactionParams
from condvest.resample.state import journal_key
from condvest.runs import new_run_id
from condvest.settings import Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

BATCH = 500
#: the session dates with daily files that the last compaction which listed bronze left (see the docstring)
DATES_KEY = f"{METADATA_PREFIX}/compaction/daily_dates.json"


@dataclass
class CompactionReport:
    run_id: str
    keep_sessions: int
    cutoff: str | None = None  # daily files dated before this were folded
    symbols: int = 0
    files_folded: int = 0
    rows_written: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # symbol -> why
    seconds: float = 0.0
    message: str = ""

    def to_frame(self) -> pd.DataFrame:
        """The symbols left as they were, and why (empty when every due symbol was folded)."""
        return pd.DataFrame(sorted(self.skipped.items()), columns=["symbol", "reason"])

    def raise_for_status(self) -> None:
        """Nothing to raise: a skipped symbol keeps its daily files and is folded by the next run."""

    def summary(self) -> dict[str, object]:
        return {
            "keep_sessions": self.keep_sessions,
            "cutoff": self.cutoff,
            "symbols": self.symbols,
            "files_folded": self.files_folded,
            "skipped": len(self.skipped),
            "message": self.message,
        }


def _batch_date(key: str) -> dt.date:
    """The session of ``bronze/_batches/date=D/<run>.parquet`` (anything else sorts last: kept)."""
    part = key[len(BATCH_PREFIX) + 1 :].split("/", 1)[0]
    try:
        return dt.date.fromisoformat(part.removeprefix("date="))
    except ValueError:
        return dt.date.max


def _known_dates(store: Store) -> set[dt.date] | None:
    """The session dates that have daily files, known without listing bronze: those the last listing left plus
    the dates of the session batches now; ``None`` when no listing was recorded (or its record is unreadable)."""
    try:
        doc = json.loads(store.get(DATES_KEY))
        known = {dt.date.fromisoformat(d) for d in doc["dates"]}
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError, CorruptObject):
        log.warning("compaction dates record unreadable, bronze listed record=%s", store.url(DATES_KEY))
        return None
    return known | {d for o in store.list(f"{BATCH_PREFIX}/") if (d := _batch_date(o.key)) != dt.date.max}


def _record_dates(store: Store, dates: list[dt.date], run_id: str) -> None:
    doc = {"run_id": run_id, "dates": [d.isoformat() for d in dates]}
    store.put(DATES_KEY, json.dumps(doc).encode())


def _fold_symbol(store: Store, symbol: str, daily: list[str]) -> tuple[dict, int]:
    tables, etags = [], {}
    for key in sorted(daily):
        data, etag = store.get_with_etag(key)
        tables.append((read_bronze_bytes(key, data), "daily"))
        etags[key] = etag
    w = update_history(store, symbol, tables)
    crash_point("compaction.after_history")
    entry = {"history_key": bronze_history_key(symbol), "old_etag": w.old_etag, "new_etag": w.new_etag}
    return {**entry, "folded": etags}, w.rows


def compact_bronze(
    settings: Settings, p: CompactionParams | None = None, *, store: Store | None = None
) -> CompactionReport:
    """Fold daily bronze files older than the newest ``p.keep_sessions`` dates into ``data.parquet``."""
    c = (p or CompactionParams()).check()
    keep_sessions, min_fold_sessions = c.keep_sessions, c.min_fold_sessions
    store = store or open_store(settings=settings)
    run_id = new_run_id("compaction")
    report = CompactionReport(run_id, keep_sessions)
    t0 = time.perf_counter()
    with lake_lock(store, "resample", run_id=run_id, purpose="compaction", lease_s=settings.lock_lease_s):
        known = _known_dates(store)
        if known is not None:
            dates = sorted(known)
            due = dates[: max(0, len(dates) - keep_sessions)]
            if len(due) < min_fold_sessions:
                report.message = (
                    f"nothing to compact: {len(due)} session(s) due, folding starts at {min_fold_sessions} "
                    "(from the session batches; bronze not listed)"
                )
                report.seconds = time.perf_counter() - t0
                log.info("compaction skipped run_id=%s due=%d listed=no", run_id, len(due))
                return report
        by_symbol: dict[str, dict[str, dt.date]] = {}
        for o in store.list(f"{BRONZE_PREFIX}/symbol="):
            parsed = parse_bronze_key(o.key)
            if parsed and parsed[1] is not None:
                by_symbol.setdefault(parsed[0], {})[o.key] = parsed[1]
        dates = sorted({d for files in by_symbol.values() for d in files.values()})
        due = dates[: max(0, len(dates) - keep_sessions)]
        if len(due) < min_fold_sessions:
            _record_dates(store, dates, run_id)
            report.message = f"nothing to compact: {len(due)} session(s) due, folding starts at {min_fold_sessions}"
            report.seconds = time.perf_counter() - t0
            log.info("compaction skipped run_id=%s due=%d", run_id, len(due))
            return report
        cutoff = dates[len(due)] if len(due) < len(dates) else due[-1] + dt.timedelta(days=1)
        report.cutoff = cutoff.isoformat()
        work = {s: [k for k, d in files.items() if d < cutoff] for s, files in sorted(by_symbol.items())}
        work = {s: keys for s, keys in work.items() if keys}
        symbols = list(work)
        with tqdm(total=len(symbols), desc="02_resample compaction", unit="symbol", disable=progress_disable()) as bar:
            for start in range(0, len(symbols), BATCH):
                entries, doomed, etag_of = {}, [], {}
                for sym in symbols[start : start + BATCH]:
                    try:
                        entry, rows = _fold_symbol(store, sym, work[sym])
                    except PreconditionFailed as exc:
                        report.skipped[sym] = f"history kept changing while compacting: {exc}"
                        log.warning("compaction skipped symbol=%s reason=precondition", sym)
                        continue
                    entries[sym] = entry
                    doomed += list(entry["folded"])
                    etag_of.update(entry["folded"])
                    report.symbols += 1
                    report.rows_written += rows
                    bar.update(1)
                if entries:
                    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
                    doc = {"run_id": run_id, "written_at": stamp, "symbols": entries}
                    store.put(journal_key(stamp, run_id), json.dumps(doc).encode())
                    crash_point("compaction.after_journal")
                    # delete only the version folded (a conditional delete): a daily file a fetch re-wrote since
                    # it was read stays, and the next compaction folds it
                    report.files_folded += store.delete_many_if({k: etag_of[k] for k in doomed})
        # fetch's session batches only shortcut reading daily files: once those are folded, they go too
        old_batches = [o.key for o in store.list(f"{BATCH_PREFIX}/") if _batch_date(o.key) < cutoff]
        store.delete_many(old_batches)
        left = {d for d in dates if d >= cutoff}  # and the dates of a skipped symbol's files, still there
        left |= {d for sym in report.skipped for k, d in by_symbol[sym].items() if k in work.get(sym, ())}
        _record_dates(store, sorted(left), run_id)
    report.seconds = time.perf_counter() - t0
    report.message = (
        f"folded {report.files_folded} daily file(s) of {report.symbols} symbol(s) dated before {report.cutoff}"
    )
    log.info(
        "compaction done run_id=%s symbols=%d files=%d seconds=%.2f",
        run_id,
        report.symbols,
        report.files_folded,
        report.seconds,
    )
    return report
