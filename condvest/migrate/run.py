"""03_migrate: the legacy AWS DMS export into the bronze layout, validated before anything is deleted.

    run_migration(settings, source_prefix="public/raw_ohlcv", dry_run=False, delete_source=False,
                  backup_source=False) -> MigrationReport
    cleanup_sources(settings, source_prefix="public/raw_ohlcv", delete_source=False, backup_source=False,
                    dry_run=False) -> pd.DataFrame

A run reads every ``*.parquet`` under ``source_prefix/`` with the explicit column mapping
(``migrate_read``), keeps one row per (symbol, session) (the newest DMS load time winning; the count of
duplicates is reported), writes one ``bronze/raw_ohlcv/symbol=SYM/data.parquet`` per symbol, merged with
any history already there (``migrate_write``), records every session in the bronze manifest (scope
"all", source "dms"), validates the result against the export (``migrate_validate``) and keeps the report
in ``processing_metadata/dms_migration_report.json``. Only then, and only on request, are the sources
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
import uuid
from dataclasses import dataclass, field

import pandas as pd

from condvest.crash import crash_point
from condvest.errors import ParameterError, ValidationError
from condvest.lake import DMS_PREFIX
from condvest.manifest import ALL, SessionEntry, record_sessions
from condvest.migrate.cleanup import CLEANUP_COLUMNS, report_covers
from condvest.migrate.cleanup import cleanup_sources as _cleanup
from condvest.migrate.read import SourceRows, check_source_prefix, list_sources, read_sources, sources_json
from condvest.migrate.state import REPORT_KEY, MigrationState, load_report, load_state, now_iso, save_report
from condvest.migrate.validate import COLUMNS, empty_validation, validate
from condvest.migrate.write import existing_histories, write_histories
from condvest.settings import Settings
from condvest.storage import ObjectInfo, Store, open_store

log = logging.getLogger(__name__)

__all__ = ["MigrationReport", "cleanup_sources", "run_migration"]

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

    def summary(self) -> pd.DataFrame:
        """One row per figure (no run id or timings, so the same lake gives the same table)."""
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

    def figures(self, cleanup: pd.DataFrame | None = None) -> dict[str, object]:
        """Headline figures for the run index (``cleanup``: the table of a separate ``cleanup_sources`` call)."""
        cleanup = self.cleanup if cleanup is None else cleanup
        return {
            "status": self.status,
            "source_files": len(self.sources),
            "source_rows": self.source_rows,
            "duplicates": self.duplicates,
            "symbols": self.symbols,
            "files_written": self.files_written,
            "validation_passed": self.passed,
            "cleanup": ", ".join(sorted(set(cleanup["action"]))),
            "seconds": round(self.seconds, 1),
        }


def _check_flags(dry_run: object, delete_source: object, backup_source: object) -> None:
    for name, v in (("dry_run", dry_run), ("delete_source", delete_source), ("backup_source", backup_source)):
        if not isinstance(v, bool):
            raise ParameterError(f"expected True or False, got {v!r}", parameter=name)
    if delete_source and backup_source:
        raise ParameterError("choose delete_source or backup_source, not both", parameter="backup_source")


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


def _record_manifest(store: Store, src: SourceRows, run_id: str) -> int:
    days, counts = src.session_counts()
    written_at = now_iso()
    epoch = dt.date(1970, 1, 1)
    entries = {
        epoch + dt.timedelta(days=int(d)): SessionEntry(ALL, int(c), int(c), "dms", run_id, written_at)
        for d, c in zip(days, counts, strict=True)
    }
    record_sessions(store, entries)
    log.info("manifest sessions recorded run_id=%s sessions=%d", run_id, len(entries))
    return len(entries)


def _report_doc(state: MigrationState, src: SourceRows, v: pd.DataFrame, sessions: int) -> dict:
    passed = bool(len(v) == len(src.symbols) and v["ok"].all())
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
            "source_rows": src.rows,
            "duplicates": src.duplicates,
            "symbols": len(src.symbols),
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
    run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    fresh = MigrationState(run_id=run_id, source_prefix=prefix, sources=sources, etag=etag)
    fresh.save(store)
    log.info("migration started run_id=%s files=%d", run_id, len(sources))
    return fresh


def run_migration(
    settings: Settings,
    source_prefix: str = DMS_PREFIX,
    dry_run: bool = False,
    delete_source: bool = False,
    backup_source: bool = False,
    *,
    store: Store | None = None,
    threads: int = 4,
    batch_symbols: int = 256,
    progress: bool = True,
) -> MigrationReport:
    """Migrate the DMS export under ``source_prefix/`` into bronze, validate, and (on request) clean up.

    ``threads`` write histories concurrently; the progress state is saved every ``batch_symbols`` symbols.
    Raises ``ValidationError`` when the validation fails (the report is kept) or when the requested
    delete/backup is refused; ``CorruptObject`` naming the file for an unreadable or ill-typed export file.
    """
    t0 = time.monotonic()
    prefix = check_source_prefix(source_prefix)
    _check_flags(dry_run, delete_source, backup_source)
    for name, n in (("threads", threads), ("batch_symbols", batch_symbols)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ParameterError(f"must be a positive integer, got {n!r}", parameter=name)
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
        out = _dry_run(store, prefix, sources, threads, progress)
    else:
        out = _migrate(store, prefix, sources, threads, progress, batch_symbols)
    log.info("migration status=%s prefix=%s message=%s", out.status, prefix, out.message)
    if delete_source or backup_source or dry_run:
        out.cleanup = _cleanup(store, prefix, delete=delete_source, backup=backup_source, dry_run=dry_run)
    else:
        out.cleanup = _cleanup(store, prefix)
    out.seconds = time.monotonic() - t0
    return out


def _dry_run(store: Store, prefix: str, sources: list[dict], threads: int, progress: bool) -> MigrationReport:
    src = _read(store, sources, threads, progress)
    merged = len(existing_histories(store) & set(src.symbols))
    return MigrationReport(
        "dry_run",
        f"dry run: would write {len(src.symbols)} histories ({merged} merged with existing ones); nothing written",
        prefix,
        sources=sources,
        **_totals(src),
        merged_symbols=merged,
    )


def _read(store: Store, sources: list[dict], threads: int, progress: bool) -> SourceRows:
    infos = [ObjectInfo(str(s["key"]), int(s["size"]), str(s["etag"])) for s in sources]  # type: ignore[call-overload]
    return read_sources(store, infos, threads=min(threads, 2), progress=progress)


def _totals(src: SourceRows) -> dict[str, object]:
    days, _ = src.session_counts()
    epoch = dt.date(1970, 1, 1)
    return {
        "source_rows": src.rows,
        "duplicates": src.duplicates,
        "symbols": len(src.symbols),
        "sessions": len(days),
        "first_session": epoch + dt.timedelta(days=int(days[0])) if len(days) else None,
        "last_session": epoch + dt.timedelta(days=int(days[-1])) if len(days) else None,
    }


def _migrate(
    store: Store, prefix: str, sources: list[dict], threads: int, progress: bool, batch_symbols: int
) -> MigrationReport:
    clock = time.monotonic()
    src = _read(store, sources, threads, progress)  # before any write: a bad export file stops the run here
    log.info(
        "migration read rows=%d duplicates=%d symbols=%d seconds=%.1f",
        src.rows,
        src.duplicates,
        len(src.symbols),
        time.monotonic() - clock,
    )
    state = _start_state(store, prefix, sources)
    resumed = state.resumed > 0
    files_before, rows_before, merged_before = state.files_written, state.rows_written, state.merged_symbols
    if state.phase == "writing":
        clock = time.monotonic()
        write_histories(store, src, state, threads=threads, batch_symbols=batch_symbols, progress=progress)
        state.phase = "written"
        state.save(store)
        log.info("migration write run_id=%s seconds=%.1f", state.run_id, time.monotonic() - clock)
        crash_point("migrate.after_write")
    sessions = _record_manifest(store, src, state.run_id)
    crash_point("migrate.after_manifest")
    clock = time.monotonic()
    v = validate(store, src)
    log.info("migration validate run_id=%s seconds=%.1f", state.run_id, time.monotonic() - clock)
    crash_point("migrate.after_validate")
    doc = _report_doc(state, src, v, sessions)
    save_report(store, doc)
    state.phase = "complete" if doc["passed"] else "failed"
    state.save(store)
    out = MigrationReport(
        "migrated",
        "",
        prefix,
        run_id=state.run_id,
        sources=sources,
        **_totals(src),
        files_written=state.files_written - files_before,
        rows_written=state.rows_written - rows_before,
        merged_symbols=state.merged_symbols - merged_before,
        resumed=resumed,
        passed=doc["passed"],
        report_key=REPORT_KEY,
        validation=v,
    )
    out.message = (
        f"{'resumed run ' + state.run_id + ': ' if resumed else ''}wrote {out.files_written} histories, "
        f"validation {'passed' if doc['passed'] else 'FAILED'}"
    )
    if not doc["passed"]:
        bad = v.loc[~v["ok"], "symbol"].tolist()
        raise ValidationError(
            f"migration run {state.run_id}: validation failed for {len(bad)} symbol(s) "
            f"(first: {', '.join(bad[:5])}); see {REPORT_KEY}; the export was not touched"
        )
    return out


def cleanup_sources(
    settings: Settings,
    source_prefix: str = DMS_PREFIX,
    delete_source: bool = False,
    backup_source: bool = False,
    dry_run: bool = False,
    *,
    store: Store | None = None,
) -> pd.DataFrame:
    """The explicit cleanup step on its own: delete or back up the export when a passing validation report
    matches it exactly; one row per file (``key, size, etag, action, detail``). Refusal: ``ValidationError``."""
    prefix = check_source_prefix(source_prefix)
    _check_flags(dry_run, delete_source, backup_source)
    store = store or open_store(settings=settings)
    return _cleanup(store, prefix, delete=delete_source, backup=backup_source, dry_run=dry_run)
