"""Compaction of bronze: fold each symbol's old daily files into its ``data.parquet``.

    compact_bronze(settings, keep_sessions=10, min_fold_sessions=5) -> CompactionReport

The newest ``keep_sessions`` session dates present among the daily files stay as daily files; older
daily files are folded into ``symbol=X/data.parquet`` (one row per date, the newest write winning, rows
without ``ingested_at`` from the daily file preferred over history) and then deleted. Nothing happens
until at least ``min_fold_sessions`` dates are due, so the history objects are rewritten every few
sessions, not every day. The number of daily objects therefore stays below about
``(keep_sessions + min_fold_sessions) x symbols``, and with it the cost of listing bronze.

Readers never miss a bar or see one twice: a symbol's new ``data.parquet`` (holding the folded rows) is
written before its daily files are deleted, and every reader deduplicates on (symbol, date), so in
between a row is present twice with identical content. The write is conditional on the etag read, so a
concurrent history writer is never overwritten (that symbol is skipped and reported). Each batch of
symbols ends with a journal object ``bronze/_compaction/<time>-<run>.json`` (old and new etag of each
``data.parquet`` and the folded files) written before the deletes: the resampler reads it to know that
the rewritten objects hold nothing new. Compaction holds the lake lock ``resample``, so it never runs
beside a resample. A re-run after a crash folds the same files again, with the same result.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import time
import uuid
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from condvest.bronze import read_bronze_bytes
from condvest.crash import crash_point
from condvest.errors import ObjectNotFound, ParameterError, PreconditionFailed
from condvest.lake import BATCH_PREFIX, BRONZE_PREFIX, bronze_history_key, parse_bronze_key
from condvest.lake_lock import lake_lock
from condvest.resample.state import journal_key
from condvest.settings import Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

BATCH = 500


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

    def summary(self) -> dict[str, object]:
        return {
            "keep_sessions": self.keep_sessions,
            "cutoff": self.cutoff,
            "symbols": self.symbols,
            "files_folded": self.files_folded,
            "skipped": len(self.skipped),
            "message": self.message,
        }


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParameterError(f"{name} must be a non-negative integer, got {value!r}", parameter=name)
    return value


def _batch_date(key: str) -> dt.date:
    """The session of ``bronze/_batches/date=D/<run>.parquet`` (anything else sorts last: kept)."""
    part = key[len(BATCH_PREFIX) + 1 :].split("/", 1)[0]
    try:
        return dt.date.fromisoformat(part.removeprefix("date="))
    except ValueError:
        return dt.date.max


def merge_rows(history: pa.Table | None, daily: list[pa.Table]) -> pa.Table:
    """One row per date: newest ``ingested_at`` first, then daily before history (pure)."""
    parts = [history.append_column("_rank", pa.array([1] * history.num_rows, pa.int8()))] if history else []
    parts += [t.append_column("_rank", pa.array([2] * t.num_rows, pa.int8())) for t in daily]
    t = pa.concat_tables(parts)
    ing = pc.fill_null(t.column("ingested_at").cast(pa.int64()), -(2**62))
    t = t.append_column("_ing", ing)
    t = t.sort_by([("date", "ascending"), ("_ing", "descending"), ("_rank", "descending")])
    dates = t.column("date").cast(pa.int32()).to_numpy()
    keep = [0] + [i for i in range(1, len(dates)) if dates[i] != dates[i - 1]] if len(dates) else []
    return t.take(pa.array(keep, pa.int64())).drop_columns(["_rank", "_ing"])


def _fold_symbol(store: Store, symbol: str, daily: dict[str, str]) -> tuple[dict, int]:
    hist = bronze_history_key(symbol)
    try:
        raw, old_etag = store.get_with_etag(hist)
        history: pa.Table | None = read_bronze_bytes(hist, raw)
    except ObjectNotFound:
        history, old_etag = None, None
    tables, etags = [], {}
    for key in sorted(daily):
        data, etag = store.get_with_etag(key)
        tables.append(read_bronze_bytes(key, data))
        etags[key] = etag
    merged = merge_rows(history, tables)
    buf = io.BytesIO()
    pq.write_table(merged, buf, compression="zstd")
    if old_etag is None:
        new_etag = store.put(hist, buf.getvalue(), if_none_match=True)
    else:
        new_etag = store.put(hist, buf.getvalue(), if_match=old_etag)
    crash_point("compaction.after_history")
    return {"history_key": hist, "old_etag": old_etag, "new_etag": new_etag, "folded": etags}, merged.num_rows


def compact_bronze(
    settings: Settings, keep_sessions: int = 10, min_fold_sessions: int = 5, *, store: Store | None = None
) -> CompactionReport:
    """Fold daily bronze files older than the newest ``keep_sessions`` dates into ``data.parquet``."""
    keep_sessions = _check_count(keep_sessions, "keep_sessions")
    min_fold_sessions = max(1, _check_count(min_fold_sessions, "min_fold_sessions"))
    store = store or open_store(settings=settings)
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    report = CompactionReport(run_id, keep_sessions)
    t0 = time.perf_counter()
    with lake_lock(store, "resample", run_id=run_id, purpose="compaction"):
        by_symbol: dict[str, dict[str, dt.date]] = {}
        for o in store.list(f"{BRONZE_PREFIX}/symbol="):
            parsed = parse_bronze_key(o.key)
            if parsed and parsed[1] is not None:
                by_symbol.setdefault(parsed[0], {})[o.key] = parsed[1]
        dates = sorted({d for files in by_symbol.values() for d in files.values()})
        due = dates[: max(0, len(dates) - keep_sessions)]
        if len(due) < min_fold_sessions:
            report.message = f"nothing to compact: {len(due)} session(s) due, folding starts at {min_fold_sessions}"
            report.seconds = time.perf_counter() - t0
            log.info("compaction skipped run_id=%s due=%d", run_id, len(due))
            return report
        cutoff = dates[len(due)] if len(due) < len(dates) else due[-1] + dt.timedelta(days=1)
        report.cutoff = cutoff.isoformat()
        work = {s: [k for k, d in files.items() if d < cutoff] for s, files in sorted(by_symbol.items())}
        work = {s: keys for s, keys in work.items() if keys}
        symbols = list(work)
        with tqdm(total=len(symbols), desc="compaction", unit="symbol", disable=None) as bar:
            for start in range(0, len(symbols), BATCH):
                entries, doomed, etag_of = {}, [], {}
                for sym in symbols[start : start + BATCH]:
                    try:
                        entry, rows = _fold_symbol(store, sym, dict.fromkeys(work[sym], ""))
                    except PreconditionFailed as exc:
                        report.skipped[sym] = f"history changed while compacting: {exc}"
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
                    # delete only what was folded: a daily file re-written since then stays
                    doomed = [k for k in doomed if (h := store.head(k)) is not None and h.etag == etag_of[k]]
                    report.files_folded += store.delete_many(doomed)
        # fetch's session batches only shortcut reading daily files: once those are folded, they go too
        old_batches = [o.key for o in store.list(f"{BATCH_PREFIX}/") if _batch_date(o.key) < cutoff]
        store.delete_many(old_batches)
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
