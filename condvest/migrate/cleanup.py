"""The migration's only step that touches the export: delete it, or move it to ``<prefix>_backup/``.

It runs only when the validation report (``processing_metadata/dms_migration_report.json``) passed,
was made for this ``source_prefix``, and names exactly the files that are there now (same keys, sizes
and etags). Otherwise it refuses with ``ValidationError`` giving the reason, and touches nothing. The
report records that a cleanup started before the first file goes, so a cleanup killed half-way can
finish: then the files still there must be a subset of the report's, each unchanged.

A backup copies each file to ``<prefix>_backup/<same name>``, checks the copy's size, then deletes
the original (a copy already there with the same size is taken as done; a different one is refused).
"""

from __future__ import annotations

import logging

import pandas as pd

from condvest.crash import crash_point
from condvest.dms import REPORT_KEY, load_report, sources_json
from condvest.dms import report_covers as report_covers  # re-exported: condvest.migrate.run imports it here
from condvest.errors import ValidationError
from condvest.migrate.read import check_source_prefix, list_sources
from condvest.migrate.state import now_iso, save_report
from condvest.storage import Store

log = logging.getLogger(__name__)

CLEANUP_COLUMNS = ["key", "size", "etag", "action", "detail"]


def backup_key(source_prefix: str, key: str) -> str:
    p = check_source_prefix(source_prefix)
    return f"{p}_backup/{key[len(p) + 1 :]}"


def check_cleanup(store: Store, source_prefix: str, action: str) -> tuple[list[dict], dict | None, str | None]:
    """(current source files, the report, the reason to refuse or ``None`` when the cleanup may run)."""
    p = check_source_prefix(source_prefix)
    current = sources_json(list_sources(store, p))
    report = load_report(store)
    if not current:
        return current, report, None
    if report is None:
        return current, None, f"no validation report ({REPORT_KEY}): run the migration first"
    if not report.get("passed"):
        return current, report, f"the validation report of run {report.get('run_id')} did not pass"
    if report.get("source_prefix") != p:
        return current, report, (f"the validation report is for {report.get('source_prefix')!r}, not {p!r}")
    reported = {s["key"]: s for s in report["sources"]}
    changed = [s["key"] for s in current if reported.get(s["key"]) != s]
    if changed:
        return (
            current,
            report,
            (
                f"{len(changed)} source file(s) are new or changed since the validation "
                f"(first: {changed[0]}): run the migration again"
            ),
        )
    if len(current) != len(reported):
        started = (report.get("cleanup") or {}).get("action") == action
        if not started:
            gone = sorted(set(reported) - {s["key"] for s in current})
            return (
                current,
                report,
                (
                    f"{len(gone)} file(s) of the validated export are gone (first: {gone[0]}) "
                    "and no interrupted cleanup of this kind is recorded"
                ),
            )
    return current, report, None


def cleanup_sources(
    store: Store, source_prefix: str, *, delete: bool = False, backup: bool = False, dry_run: bool = False
) -> pd.DataFrame:
    """Delete (``delete``) or move (``backup``) the export; one row per file with what happened.

    With neither flag, or with ``dry_run``, nothing is touched and the table says what would happen.
    Raises ``ValidationError`` with the reason when the guard refuses (except in a dry run, where the
    refusal is the table's answer)."""
    if delete and backup:
        raise ValueError("delete and backup exclude each other (MigrateParams.check refuses both)")
    action = "backup" if backup else "delete" if delete else None
    current, report, reason = check_cleanup(store, source_prefix, action or "delete")
    rows = [[s["key"], s["size"], s["etag"]] for s in current]
    if action is None or dry_run:
        verb = {None: "kept", "delete": "would delete", "backup": "would move"}[action]
        detail = (
            "delete_source and backup_source are off"
            if action is None
            else f"refused: {reason}"
            if reason
            else "allowed: matches a passing validation report"
        )
        if action and reason:
            verb = "would refuse"
        elif action == "backup":
            detail += f" (to {check_source_prefix(source_prefix)}_backup/)"
        return pd.DataFrame([[*r, verb, detail] for r in rows], columns=CLEANUP_COLUMNS)
    if not current:
        log.info("cleanup nothing to do prefix=%s", source_prefix)
        return pd.DataFrame(columns=CLEANUP_COLUMNS)
    if reason is not None:
        log.warning("cleanup refused prefix=%s action=%s reason=%s", source_prefix, action, reason)
        raise ValidationError(f"refusing to {action} the DMS export under {source_prefix}/: {reason}")
    assert report is not None
    earlier = report.get("cleanup") or {}
    started = earlier.get("started_at") if earlier.get("action") == action else None
    report["cleanup"] = {
        "action": action,
        "started_at": started or now_iso(),
        "finished_at": None,
        "files": len(report["sources"]),
    }
    save_report(store, report)
    out = []
    for i, s in enumerate(current):
        key = str(s["key"])
        if action == "backup":
            dst = backup_key(source_prefix, key)
            have = store.head(dst)
            if have is not None and have.size != s["size"]:
                raise ValidationError(
                    f"refusing to move {key}: {dst} exists with another size ({have.size} vs {s['size']} bytes)"
                )
            if have is None:
                store.copy(key, dst)
                copied = store.head(dst)
                if copied is None or copied.size != s["size"]:
                    raise ValidationError(f"backup copy of {key} at {dst} does not match the source; source kept")
            store.delete(key)
            out.append([key, s["size"], s["etag"], "moved", dst])
        else:
            store.delete(key)
            out.append([key, s["size"], s["etag"], "deleted", "matched the passing validation report"])
        log.info("cleanup file action=%s key=%s", action, key)
        if i == 0:
            crash_point("migrate.cleanup")
    report["cleanup"]["finished_at"] = now_iso()
    save_report(store, report)
    log.info("cleanup done prefix=%s action=%s files=%d", source_prefix, action, len(out))
    return pd.DataFrame(out, columns=CLEANUP_COLUMNS)
