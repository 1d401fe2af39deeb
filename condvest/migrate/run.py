"""03_migrate: the legacy AWS DMS export into the bronze layout, validated before anything is deleted.

    run_migration(settings, MigrateParams(source_prefix="public/raw_ohlcv", dry_run=False, delete_source=False,
                  backup_source=False), memory_limit=None) -> MigrationReport
    cleanup_sources(settings, MigrateParams(...)) -> pd.DataFrame

A run reads every ``*.parquet`` under ``source_prefix/`` once with the explicit column mapping
(``migrate_read``; a bad file stops the run before anything is written), then works through the symbols in
groups sized from the memory budget (``CONDVEST_DUCKDB_MEMORY_LIMIT``, 3 GB by default; the rows beyond one
group wait in a temporary spill folder on the local disk), so its memory does not grow with the export.
Per group it keeps one row per (symbol, session) (the newest DMS load time winning; the count of duplicates
is reported), writes one ``bronze/raw_ohlcv/symbol=SYM/data.parquet`` per symbol, merged with any history
already there (``migrate_write``), and validates the group against the export (``migrate_validate``). Then
it records every session in the bronze manifest (scope "all", source "dms") and keeps the report in
``processing_metadata/dms_migration_report.json``. Groups change nothing in the result: the same histories,
manifest and report as one pass over the whole export. Only then, and only on request, are the sources
deleted or moved (``migrate_cleanup``); nothing else in this stage ever writes under ``source_prefix``.

Migrated rows get ``ingested_at`` = the DMS load time of the row (DMS's own ``timestamp`` column), which
is older than any daily fetch: wherever bronze already holds a bar fetched later, that bar stays.

Resumable: a progress state (``processing_metadata/dms_migration_state.json``) is saved after every batch
of symbols; a killed run with the same export resumes after the last saved symbol (``CONDVEST_CRASH_AT``
points: ``migrate.write_batch.<k>`` (k-th batch of the run), ``migrate.after_write``, ``migrate.after_manifest``,
``migrate.after_validate``, ``migrate.cleanup``). Idempotent: when a passing report names exactly the
files present, a run writes nothing and says so.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from condvest import params
from condvest.crash import crash_point
from condvest.errors import ValidationError
from condvest.manifest import ALL, SessionEntry, record_sessions
from condvest.migrate.cleanup import CLEANUP_COLUMNS, report_covers
from condvest.migrate.cleanup import cleanup_sources as _cleanup
from condvest.migrate.params import CheckedMigrate, MigrateParams
from condvest.migrate.read import SourceRows, StagedExport, list_sources, sources_json, stage_export
from condvest.migrate.state import REPORT_KEY, MigrationState, load_report, load_state, now_iso, save_report
from condvest.migrate.validate import COLUMNS, empty_validation, validate
from condvest.migrate.write import batches, existing_histories, write_histories
from condvest.runs import new_run_id
from condvest.settings import Settings, size_bytes
from condvest.storage import ObjectInfo, Store, open_store

log = logging.getLogger(__name__)

__all__ = ["CheckedMigrate", "MigrateParams", "MigrationReport", "cleanup_sources", "run_migration"]

#: bytes of the memory budget per source row of a symbol group: the group's rows in Arrow (~90 B), their
#: copy while its slices are joined, deduplication's sort keys, and room for the interpreter and the threads
#: writing parquet (at 3 GB: groups of 9.4M rows, the whole process ~2.5 GB at most; see BENCHMARKS.md)
GROUP_ROW_BYTES = 320

INGESTED_AT_RULE = (
    "ingested_at of a migrated row = its DMS load time (DMS column 'timestamp'; null when "
    "absent); per (symbol, session) the newest ingested_at wins, so later fetches stay"
)


@dataclass
class MigrationReport:
    """What a migration run did. ``summary()`` and ``validation`` are what the notebook shows."""

    status: str  # migrated | already_migrated | nothing_to_migrate | dry_run
    message: str
    source_prefix: str
    run_id: str = ""
    sources: list[dict] = field(default_factory=list)
    source_rows: int = 0  # rows in the export, duplicates included
    duplicates: int = 0
    symbols: int = 0
    sessions: int = 0
    first_session: dt.date | None = None
    last_session: dt.date | None = None
    files_written: int = 0  # by this run
    rows_written: int = 0  # rows in the files this run wrote
    merged_symbols: int = 0  # symbols whose existing data.parquet was merged (this run; dry run: would be)
    resumed: bool = False
    passed: bool | None = None  # the validation verdict; None when no validation ran or exists
    report_key: str | None = None
    validation: pd.DataFrame = field(default_factory=empty_validation)
    cleanup: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=CLEANUP_COLUMNS))
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        """Headline figures for the run index (no run id or timings: the same lake gives the same figures)."""
        return {
            "status": self.status,
            "source_files": len(self.sources),
            "source_rows": self.source_rows,
            "duplicates": self.duplicates,
            "symbols": self.symbols,
            "files_written": self.files_written,
            "validation_passed": self.passed,
            "cleanup": ", ".join(sorted(set(self.cleanup["action"]))),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per figure, as the notebook shows it."""
        v = self.validation
        items = [
            ("status", self.status),
            ("source prefix", self.source_prefix + "/"),
            ("source files", len(self.sources)),
            ("source bytes", sum(int(s["size"]) for s in self.sources)),
            ("source rows", self.source_rows),
            ("duplicates dropped", self.duplicates),
            ("symbols", self.symbols),
            ("sessions", self.sessions),
            ("first session", self.first_session.isoformat() if self.first_session else ""),
            ("last session", self.last_session.isoformat() if self.last_session else ""),
            ("files written", self.files_written),
            ("rows written", self.rows_written),
            ("histories merged", self.merged_symbols),
            ("rows superseded by newer bronze rows", int(v["superseded"].sum()) if len(v) else 0),
            ("validation", {True: "passed", False: "FAILED", None: "not run"}[self.passed]),
            ("symbols failing validation", int((~v["ok"].astype(bool)).sum()) if len(v) else 0),
            ("report", self.report_key or ""),
        ]
        return pd.DataFrame(items, columns=["item", "value"]).astype({"value": "object"})

    def failures(self) -> pd.DataFrame:
        """The validation rows that did not pass (empty when all is well)."""
        v = self.validation
        return v[~v["ok"].astype(bool)].reset_index(drop=True) if len(v) else empty_validation()

    def raise_for_status(self) -> None:
        """``ValidationError`` naming the failing symbols when the validation failed (the report is kept)."""
        if self.passed is False:
            bad = self.failures()["symbol"].tolist()
            raise ValidationError(
                f"migration run {self.run_id}: validation failed for {len(bad)} symbol(s) "
                f"(first: {', '.join(bad[:5])}); see {REPORT_KEY}; the export was not touched"
            )


def _from_report(doc: dict, status: str, message: str) -> MigrationReport:
    t = doc.get("totals", {})
    v = pd.DataFrame(doc.get("symbols", []), columns=COLUMNS) if doc.get("symbols") else empty_validation()
    for c in ("first_session", "last_session", "target_first", "target_last"):
        if len(v):
            v[c] = pd.to_datetime(v[c]).dt.date
    day = lambda s: dt.date.fromisoformat(s) if s else None  # noqa: E731
    return MigrationReport(
        status=status,
        message=message,
        source_prefix=doc["source_prefix"],
        run_id=doc.get("run_id", ""),
        sources=doc["sources"],
        source_rows=t.get("source_rows", 0),
        duplicates=t.get("duplicates", 0),
        symbols=t.get("symbols", 0),
        sessions=t.get("sessions", 0),
        first_session=day(t.get("first_session")),
        last_session=day(t.get("last_session")),
        passed=doc.get("passed"),
        report_key=REPORT_KEY,
        validation=v,
    )


@dataclass
class _Tally:
    """What the symbol groups add up to: the report's totals, the manifest's sessions, the validation."""

    source_rows: int = 0
    duplicates: int = 0
    symbols: int = 0
    days: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)
    frames: list[pd.DataFrame] = field(default_factory=list)

    def add(self, src: SourceRows, validation: pd.DataFrame | None = None) -> None:
        self.source_rows += src.rows
        self.duplicates += src.duplicates
        self.symbols += len(src.symbols)
        days, counts = src.session_counts()
        self.days.append(days)
        self.counts.append(counts)
        if validation is not None:
            self.frames.append(validation)

    def session_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct session days as int32 days since epoch, symbols holding each) over every group."""
        if not self.days:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64)
        days, where = np.unique(np.concatenate(self.days), return_inverse=True)
        counts = np.zeros(len(days), dtype=np.int64)
        np.add.at(counts, where, np.concatenate(self.counts))
        return days, counts

    def validation(self) -> pd.DataFrame:
        """The groups' validation rows, in symbol order (groups are consecutive symbol ranges)."""
        return pd.concat(self.frames, ignore_index=True) if self.frames else empty_validation()


def _record_manifest(store: Store, tally: _Tally, run_id: str) -> int:
    days, counts = tally.session_counts()
    written_at = now_iso()
    epoch = dt.date(1970, 1, 1)
    entries = {
        epoch + dt.timedelta(days=int(d)): SessionEntry(ALL, int(c), int(c), "dms", run_id, written_at)
        for d, c in zip(days, counts, strict=True)
    }
    record_sessions(store, entries)
    log.info("manifest sessions recorded run_id=%s sessions=%d", run_id, len(entries))
    return len(entries)


def _report_doc(state: MigrationState, tally: _Tally, v: pd.DataFrame, sessions: int) -> dict:
    passed = bool(len(v) == tally.symbols and v["ok"].all())
    rows = v.assign(
        **{
            c: v[c].map(lambda d: d.isoformat() if pd.notna(d) else None)
            for c in ("first_session", "last_session", "target_first", "target_last")
        }
    )
    return {
        "version": 1,
        "run_id": state.run_id,
        "source_prefix": state.source_prefix,
        "sources": state.sources,
        "passed": passed,
        "started_at": state.started_at,
        "validated_at": now_iso(),
        "ingested_at_rule": INGESTED_AT_RULE,
        "totals": {
            "source_rows": tally.source_rows,
            "duplicates": tally.duplicates,
            "symbols": tally.symbols,
            "sessions": sessions,
            "first_session": _iso(v["first_session"].min()) if len(v) else None,
            "last_session": _iso(v["last_session"].max()) if len(v) else None,
            "target_rows": int(v["target_rows"].sum()),
            "superseded": int(v["superseded"].sum()),
            "failed_symbols": int((~v["ok"]).sum()),
        },
        "symbols": rows.to_dict(orient="records"),
        "cleanup": None,
    }


def _iso(d: object) -> str | None:
    return d.isoformat() if d is not None and pd.notna(d) else None  # type: ignore[union-attr]


def _start_state(store: Store, prefix: str, sources: list[dict]) -> MigrationState:
    """The state to continue (same export, unfinished) or a fresh one replacing whatever was there."""
    state, etag = load_state(store)
    if state is not None and state.matches(prefix, sources) and state.phase in ("writing", "written"):
        state.resumed += 1
        log.info(
            "migration resuming run_id=%s phase=%s after_symbol=%s", state.run_id, state.phase, state.written_through
        )
        state.save(store)
        return state
    run_id = new_run_id("migrate")
    fresh = MigrationState(run_id=run_id, source_prefix=prefix, sources=sources, etag=etag)
    fresh.save(store)
    log.info("migration started run_id=%s files=%d", run_id, len(sources))
    return fresh


def run_migration(
    settings: Settings,
    p: MigrateParams | None = None,
    *,
    store: Store | None = None,
    threads: int = 4,
    batch_symbols: int = 256,
    progress: bool = True,
    memory_limit: str | None = None,
) -> MigrationReport:
    """Migrate the DMS export under ``p.source_prefix/`` into bronze, validate, and (on request) clean up.

    ``threads`` write histories concurrently; the progress state is saved every ``batch_symbols`` symbols.
    ``memory_limit`` (default: the settings' ``CONDVEST_DUCKDB_MEMORY_LIMIT``, 3 GB) sizes the symbol groups
    (``GROUP_ROW_BYTES`` per source row) and caps the validation's DuckDB; the whole process stays below about
    1 GB above it.
    A failed validation is in the report (``raise_for_status()`` raises ``ValidationError``; the export is
    not touched). Raises ``ValidationError`` when a requested delete/backup is refused, ``CorruptObject``
    naming the file for an unreadable or ill-typed export file.
    """
    t0 = time.monotonic()
    c = (p or MigrateParams()).check()
    prefix, dry_run, delete_source, backup_source = c.source_prefix, c.dry_run, c.delete_source, c.backup_source
    params.count(threads, "threads", 1)
    params.count(batch_symbols, "batch_symbols", 1)
    memory_limit = memory_limit or settings.duckdb_memory_limit
    group_rows = max(1, size_bytes(memory_limit) // GROUP_ROW_BYTES)
    store = store or open_store(settings=settings)
    sources = sources_json(list_sources(store, prefix))
    report = load_report(store)
    if sources and report_covers(report, prefix, sources):
        out = _from_report(
            report, "already_migrated", f"already migrated and validated by run {report.get('run_id')}: nothing written"
        )
    elif not sources:
        gone = (report or {}).get("cleanup") or {}
        why = (
            f"; run {report.get('run_id')} migrated it and the export was "
            f"{'moved to a backup' if gone.get('action') == 'backup' else 'deleted'} at {gone.get('finished_at')}"
            if report and report.get("source_prefix") == prefix and gone
            else ""
        )
        out = MigrationReport("nothing_to_migrate", f"no *.parquet under {prefix}/{why}", prefix)
    elif dry_run:
        out = _dry_run(store, prefix, sources, threads, progress, group_rows)
    else:
        out = _migrate(store, prefix, sources, threads, progress, batch_symbols, group_rows, memory_limit)
    log.info("migration status=%s prefix=%s message=%s", out.status, prefix, out.message)
    if out.passed is False:
        out.cleanup = _cleanup(store, prefix, dry_run=True)  # what stays: a failed validation touches nothing
    elif delete_source or backup_source or dry_run:
        out.cleanup = _cleanup(store, prefix, delete=delete_source, backup=backup_source, dry_run=dry_run)
    else:
        out.cleanup = _cleanup(store, prefix)
    out.seconds = time.monotonic() - t0
    return out


def _dry_run(
    store: Store, prefix: str, sources: list[dict], threads: int, progress: bool, group_rows: int
) -> MigrationReport:
    tally = _Tally()
    with _stage(store, sources, threads, progress, group_rows) as export:
        for g in tqdm(range(len(export.groups)), desc="deduplicate", unit="group", disable=not progress):
            tally.add(export.group(g))
        merged = len(existing_histories(store) & set(export.symbols))
    return MigrationReport(
        "dry_run",
        f"dry run: would write {tally.symbols} histories ({merged} merged with existing ones); nothing written",
        prefix,
        sources=sources,
        **_totals(tally),
        merged_symbols=merged,
    )


def _stage(store: Store, sources: list[dict], threads: int, progress: bool, group_rows: int) -> StagedExport:
    infos = [ObjectInfo(str(s["key"]), int(s["size"]), str(s["etag"])) for s in sources]  # type: ignore[call-overload]
    return stage_export(store, infos, group_rows, threads=min(threads, 2), progress=progress)


def _totals(tally: _Tally) -> dict[str, object]:
    days, _ = tally.session_counts()
    epoch = dt.date(1970, 1, 1)
    return {
        "source_rows": tally.source_rows,
        "duplicates": tally.duplicates,
        "symbols": tally.symbols,
        "sessions": len(days),
        "first_session": epoch + dt.timedelta(days=int(days[0])) if len(days) else None,
        "last_session": epoch + dt.timedelta(days=int(days[-1])) if len(days) else None,
    }


def _migrate(
    store: Store,
    prefix: str,
    sources: list[dict],
    threads: int,
    progress: bool,
    batch_symbols: int,
    group_rows: int,
    memory_limit: str,
) -> MigrationReport:
    clock = time.monotonic()
    tally = _Tally()
    duck_limit = f"{max(256, size_bytes(memory_limit) // 10**6)}MB"  # DuckDB needs a little even on a tiny budget
    # the whole export is read and checked before any write: a bad export file stops the run here
    with _stage(store, sources, threads, progress, group_rows) as export:
        log.info(
            "migration read rows=%d symbols=%d groups=%d seconds=%.1f",
            export.rows,
            len(export.symbols),
            len(export.groups),
            time.monotonic() - clock,
        )
        state = _start_state(store, prefix, sources)
        before = _Before(state.files_written, state.rows_written, state.merged_symbols, state.resumed > 0)
        writing = state.phase == "writing"
        write_s, validate_s = _groups(store, export, state, tally, threads, progress, batch_symbols, duck_limit)
    if writing:
        state.phase = "written"
        state.save(store)
        log.info("migration write run_id=%s seconds=%.1f", state.run_id, write_s)
        crash_point("migrate.after_write")
    return _conclude(store, prefix, sources, state, tally, before, validate_s)


@dataclass(frozen=True)
class _Before:
    """The state's counts when this run took it over (a resumed run reports only what it wrote itself)."""

    files_written: int
    rows_written: int
    merged_symbols: int
    resumed: bool


def _groups(
    store: Store,
    export: StagedExport,
    state: MigrationState,
    tally: _Tally,
    threads: int,
    progress: bool,
    batch_symbols: int,
    duck_limit: str,
) -> tuple[float, float]:
    """Each symbol group written (unless a resumed run had written them all: it validates them again) and then
    validated against the export, into ``tally``; returns the seconds spent writing and validating."""
    writing = state.phase == "writing"
    existing = existing_histories(store) if writing else set()
    through = state.written_through
    todo = sum(1 for s in export.symbols if through is None or s > through) if writing else 0
    write_s = validate_s = 0.0
    n_batches = 0
    bar = (  # resumed after the writes: the groups are validated again
        tqdm(total=todo, desc="write bronze", unit="symbol", disable=not progress)
        if writing
        else tqdm(total=len(export.groups), desc="validate", unit="group", disable=not progress)
    )
    try:
        for g in range(len(export.groups)):
            clock = time.monotonic()
            src = export.group(g)
            if writing:
                done = write_histories(
                    store,
                    src,
                    state,
                    threads=threads,
                    batch_symbols=batch_symbols,
                    existing=existing,
                    batches_before=n_batches,
                    bar=bar,
                )
                n_batches += batches(len(done), batch_symbols)
            write_s += time.monotonic() - clock
            clock = time.monotonic()
            v = validate(store, src, memory_limit=duck_limit)  # the group's histories are final now
            tally.add(src, v)
            if not writing:
                bar.update(1)
            validate_s += time.monotonic() - clock
            del src
    finally:
        bar.close()
    return write_s, validate_s


def _conclude(
    store: Store,
    prefix: str,
    sources: list[dict],
    state: MigrationState,
    tally: _Tally,
    before: _Before,
    validate_s: float,
) -> MigrationReport:
    """After the writes: the manifest, then the validation report (kept), then the state's verdict."""
    sessions = _record_manifest(store, tally, state.run_id)
    crash_point("migrate.after_manifest")
    v = tally.validation()
    log.info("migration validate run_id=%s seconds=%.1f", state.run_id, validate_s)
    crash_point("migrate.after_validate")
    doc = _report_doc(state, tally, v, sessions)
    save_report(store, doc)
    state.phase = "complete" if doc["passed"] else "failed"
    state.save(store)
    out = MigrationReport(
        "migrated",
        "",
        prefix,
        run_id=state.run_id,
        sources=sources,
        **_totals(tally),
        files_written=state.files_written - before.files_written,
        rows_written=state.rows_written - before.rows_written,
        merged_symbols=state.merged_symbols - before.merged_symbols,
        resumed=before.resumed,
        passed=doc["passed"],
        report_key=REPORT_KEY,
        validation=v,
    )
    out.message = (
        f"{'resumed run ' + state.run_id + ': ' if before.resumed else ''}wrote {out.files_written} histories, "
        f"validation {'passed' if doc['passed'] else 'FAILED'}"
    )
    return out


def cleanup_sources(settings: Settings, p: MigrateParams | None = None, *, store: Store | None = None) -> pd.DataFrame:
    """The explicit cleanup step on its own: delete or back up the export when a passing validation report
    matches it exactly; one row per file (``key, size, etag, action, detail``). Refusal: ``ValidationError``."""
    c = (p or MigrateParams()).check()
    store = store or open_store(settings=settings)
    return _cleanup(store, c.source_prefix, delete=c.delete_source, backup=c.backup_source, dry_run=c.dry_run)
