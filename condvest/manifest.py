"""The bronze manifest: which sessions bronze holds completely, one small JSON object a year.

``bronze/_manifest/sessions_2025.json``::

    {"version": 1, "sessions": {"2025-10-17": {"scope": "all", "symbols": 5350, "rows": 5350,
                                               "source": "grouped", "run_id": "...", "written_at": "..."}}}

``scope`` is ``"all"`` when the session was fetched for every symbol (grouped daily, the migration),
or the sorted list of symbols a subset run wrote. Gap detection reads the year objects that cover its
window (one or two GETs) instead of listing millions of bronze objects. Updates are read-modify-write
with a conditional put, retried when another writer got there first, so concurrent runs never lose
each other's sessions.

A lake without any manifest object (one written by the previous pipeline) gets one built once, by 01_fetch's
gap detection, from a listing of the previous fetcher's daily files (``build_from_listing``, with a progress
bar); from then on the manifest is kept as usual and bronze is never listed again for gap detection.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from condvest.errors import CorruptObject, ObjectNotFound, PreconditionFailed, StorageError
from condvest.lake import BRONZE_PREFIX, MANIFEST_PREFIX, manifest_key, parse_bronze_key
from condvest.storage import Store

log = logging.getLogger(__name__)

ALL = "all"
_MAX_ATTEMPTS = 20
#: in a manifest built from a listing, a session whose daily files cover at least this share of the symbols of
#: the busiest session counts as complete (``ALL``): the previous fetcher fetched every symbol each session
LISTING_ALL_SHARE = 0.9


@dataclass(frozen=True)
class SessionEntry:
    scope: str | tuple[str, ...]
    symbols: int
    rows: int
    source: str
    run_id: str = ""
    written_at: str = ""

    def covers(self, symbols: Iterable[str] | None) -> bool:
        """True when this entry holds every requested symbol (``None``: every symbol)."""
        if self.scope == ALL:
            return True
        if symbols is None:
            return False
        return set(symbols) <= set(self.scope)

    def merged(self, newer: SessionEntry) -> SessionEntry:
        """This entry after ``newer`` wrote the same session (a daily session holds one bar per symbol)."""
        if newer.scope == ALL:
            return newer
        if self.scope == ALL:
            return replace(self, run_id=newer.run_id, written_at=newer.written_at)
        scope = tuple(sorted(set(self.scope) | set(newer.scope)))
        return SessionEntry(scope, len(scope), len(scope), newer.source, newer.run_id, newer.written_at)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["scope"] = self.scope if self.scope == ALL else list(self.scope)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> SessionEntry:
        scope = d["scope"]
        return cls(
            scope=ALL if scope == ALL else tuple(scope),  # type: ignore[arg-type]
            symbols=int(d.get("symbols", 0)),
            rows=int(d.get("rows", 0)),  # type: ignore[arg-type]
            source=str(d.get("source", "")),
            run_id=str(d.get("run_id", "")),
            written_at=str(d.get("written_at", "")),
        )


def _load(store: Store, year: int) -> tuple[dict[dt.date, SessionEntry], str | None]:
    key = manifest_key(year)
    try:
        raw, etag = store.get_with_etag(key)
    except ObjectNotFound:
        return {}, None
    try:
        doc = json.loads(raw)
        return {dt.date.fromisoformat(d): SessionEntry.from_json(e) for d, e in doc["sessions"].items()}, etag
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(f"unreadable manifest: {exc}", key=key) from exc


def read_sessions(store: Store, start: dt.date, end: dt.date) -> dict[dt.date, SessionEntry]:
    """Manifest entries for sessions in [start, end]."""
    out: dict[dt.date, SessionEntry] = {}
    for year in range(start.year, end.year + 1):
        entries, _ = _load(store, year)
        out.update({d: e for d, e in entries.items() if start <= d <= end})
    return out


def missing_sessions(store: Store, sessions: Iterable[dt.date], symbols: Iterable[str] | None = None) -> list[dt.date]:
    """The sessions (from the calendar) that bronze does not hold for ``symbols`` (``None``: all)."""
    sessions = sorted(sessions)
    if not sessions:
        return []
    wanted = None if symbols is None else list(symbols)
    have = read_sessions(store, sessions[0], sessions[-1])
    return [d for d in sessions if d not in have or not have[d].covers(wanted)]


def record_sessions(store: Store, entries: Mapping[dt.date, SessionEntry]) -> None:
    """Merge ``entries`` into the manifest (conditional read-modify-write per year, retried on a race)."""
    by_year: dict[int, dict[dt.date, SessionEntry]] = {}
    for d, e in entries.items():
        by_year.setdefault(d.year, {})[d] = e
    for year, new in sorted(by_year.items()):
        key = manifest_key(year)
        for attempt in range(_MAX_ATTEMPTS):
            current, etag = _load(store, year)
            for d, e in new.items():
                current[d] = current[d].merged(e) if d in current else e
            doc = {"version": 1, "sessions": {d.isoformat(): current[d].to_json() for d in sorted(current)}}
            body = json.dumps(doc, separators=(",", ":")).encode()
            try:
                if etag is None:
                    store.put(key, body, if_none_match=True)
                else:
                    store.put(key, body, if_match=etag)
                log.debug("manifest=updated key=%s sessions=%d attempt=%d", key, len(new), attempt)
                break
            except PreconditionFailed:
                continue
        else:
            raise StorageError(f"manifest update lost {_MAX_ATTEMPTS} races in a row", key=key)


def has_manifest(store: Store) -> bool:
    """True when bronze has at least one manifest object (one small listing)."""
    return next(iter(store.list(MANIFEST_PREFIX + "/")), None) is not None


def _written_by_previous_fetcher(store: Store, key: str) -> bool:
    """True when the daily file ``key`` has the previous fetcher's shape (no ``date`` column)."""
    try:
        return "date" not in pq.read_schema(io.BytesIO(store.get(key))).names
    except (ObjectNotFound, pa.ArrowException, OSError):
        return False


def build_from_listing(store: Store, *, progress: bool = True) -> int:
    """Record the sessions of the previous fetcher's daily files (``symbol=X/date=D.parquet``) from one
    listing of bronze: a session holding at least ``LISTING_ALL_SHARE`` of the busiest session's symbols as
    ``ALL``, any other as its list of symbols (source ``listing``). One file per session is opened to check
    its shape: sessions written by the workbench itself are left out (its fetch records them in the manifest
    when it finishes, so a run that crashed before that fetches them again). Histories (``data.parquet``)
    are not opened. Returns the sessions recorded."""
    by_day: dict[dt.date, set[str]] = {}
    sample: dict[dt.date, str] = {}
    with tqdm(desc="listing bronze for the manifest", unit=" objects", disable=None if progress else True) as bar:
        for o in store.list(f"{BRONZE_PREFIX}/symbol="):
            bar.update(1)
            parsed = parse_bronze_key(o.key)
            if parsed is not None and parsed[1] is not None:
                by_day.setdefault(parsed[1], set()).add(parsed[0])
                sample.setdefault(parsed[1], o.key)
    old = {d for d in sorted(by_day) if _written_by_previous_fetcher(store, sample[d])}
    if not old:
        return 0
    top = max(len(by_day[d]) for d in old)
    entries = {
        d: SessionEntry(ALL if len(s) >= LISTING_ALL_SHARE * top else tuple(sorted(s)), len(s), len(s), "listing")
        for d, s in by_day.items()
        if d in old
    }
    record_sessions(store, entries)
    log.info("manifest=built_from_listing sessions=%d first=%s last=%s", len(entries), min(old), max(old))
    return len(entries)
