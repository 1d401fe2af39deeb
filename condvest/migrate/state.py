"""The migration's two objects in ``processing_metadata/``: its progress state and its validation report.

``dms_migration_state.json`` is the progress of the current (or last) run: which export it reads (keys,
sizes, etags), its phase (``writing`` -> ``written`` -> ``complete`` or ``failed``) and the last symbol
whose history is written (symbols are written in sorted order, in batches; the state is saved after
each batch). A killed run leaves it behind and the next run with the same export resumes after that
symbol. Every save is conditional on the etag of the previous one, so two runs that interleave stop
with ``BusyError`` instead of both writing.

``dms_migration_report.json`` (``condvest.dms.REPORT_KEY``; read by ``condvest.dms.load_report``, which the
export's readers share) is the validation report: the source files (key, size, etag), totals,
one row per symbol (source and target rows, first and last session, checksums) and ``passed``. The
delete/backup step trusts nothing else, and records in it that it started and finished.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field

from condvest.dms import REPORT_KEY
from condvest.dms import load_report as load_report  # re-exported: migrate reads its report here
from condvest.errors import BusyError, CorruptObject, ObjectNotFound, PreconditionFailed
from condvest.lake import METADATA_PREFIX
from condvest.storage import Store, put_if_unchanged

log = logging.getLogger(__name__)

STATE_KEY = f"{METADATA_PREFIX}/dms_migration_state.json"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class MigrationState:
    run_id: str
    source_prefix: str
    sources: list[dict[str, object]]
    phase: str = "writing"  # writing | written | complete | failed
    written_through: str | None = None  # last symbol (sorted order) whose data.parquet is written
    files_written: int = 0
    rows_written: int = 0
    merged_symbols: int = 0
    started_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    resumed: int = 0  # how many times a later run picked this state up
    etag: str | None = field(default=None, repr=False, compare=False)

    def matches(self, source_prefix: str, sources: list[dict[str, object]]) -> bool:
        return self.source_prefix == source_prefix and self.sources == sources

    def to_json(self) -> bytes:
        d = asdict(self)
        d.pop("etag")
        return json.dumps({"version": 1, **d}, indent=1).encode()

    def save(self, store: Store) -> None:
        """Write the state, conditional on the etag of the last save (or on its absence)."""
        self.updated_at = now_iso()
        try:
            self.etag = put_if_unchanged(store, STATE_KEY, self.to_json(), self.etag)
        except PreconditionFailed:
            raise BusyError(
                lock=STATE_KEY,
                holder="another migration run (the state changed under this run "
                f"{self.run_id}); let it finish, then run again",
            ) from None
        log.debug("migration state saved run_id=%s phase=%s through=%s", self.run_id, self.phase, self.written_through)


def load_state(store: Store) -> tuple[MigrationState | None, str | None]:
    """The saved state (``None`` when there is none) and the object's etag (for the next conditional put)."""
    try:
        raw, etag = store.get_with_etag(STATE_KEY)
    except ObjectNotFound:
        return None, None
    try:
        doc = json.loads(raw)
        doc.pop("version", None)
        state = MigrationState(**doc)
    except (ValueError, TypeError, AttributeError) as exc:  # AttributeError: JSON of another shape
        raise CorruptObject(f"unreadable migration state: {exc}; delete it to start over", key=STATE_KEY) from exc
    state.etag = etag
    return state, etag


def save_report(store: Store, doc: dict) -> str:
    body = json.dumps(doc, indent=1, default=str).encode()
    etag = store.put(REPORT_KEY, body)
    log.info("migration report written key=%s passed=%s bytes=%d", REPORT_KEY, doc.get("passed"), len(body))
    return etag
