"""The bronze manifest: which sessions bronze holds completely, one small JSON object a year.

``bronze/_manifest/sessions_2025.json``::

    {"version": 1, "sessions": {"2025-10-17": {"scope": "all", "symbols": 5350, "rows": 5350,
                                               "source": "grouped", "run_id": "...", "written_at": "..."}}}

``scope`` is ``"all"`` when the session was fetched for every symbol (grouped daily, the migration),
or the sorted list of the symbols whose bars bronze holds (a symbol whose request failed is never
listed). A subset entry may also name ``absent``: symbols the source answered for whose trading life
does not include the session (before its first bar, e.g. listed later, or after its last bar in a
history backfill), and ``gaps``: symbols with no bar on a session inside their life (a halt, a bar
quarantined). ``absent`` counts as held for gap detection (there is nothing to fetch); ``gaps`` do not
(the next daily run asks again) and 05_monitoring shows them as WARN. Gap detection reads the year
objects that cover its window (one or two GETs) instead of listing millions of bronze objects. Updates
go through ``storage.update_object`` (a conditional read-modify-write, retried when another writer got there
first), so concurrent runs never lose each other's sessions.

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import BRONZE_PREFIX, MANIFEST_PREFIX, manifest_key, parse_bronze_key
from condvest.storage import Store, update_object

log = logging.getLogger(__name__)

ALL = "all"
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
    absent: tuple[str, ...] = ()  # outside their trading life on this session: nothing to fetch
    gaps: tuple[str, ...] = ()  # no bar inside their trading life (a halt): fetched again by the next run

    def covers(self, symbols: Iterable[str] | None) -> bool:
        """True when this entry holds every requested symbol (``None``: every symbol); a symbol outside its
        trading life on this session counts as held, a gap does not."""
        if self.scope == ALL:
            return True
        if symbols is None:
            return False
        return set(symbols) <= set(self.scope) | set(self.absent)

    def merged(self, newer: SessionEntry) -> SessionEntry:
        """This entry after ``newer`` wrote the same session (a daily session holds one bar per symbol)."""
        if newer.scope == ALL:
            return newer
        if self.scope == ALL:
            return replace(self, run_id=newer.run_id, written_at=newer.written_at)
        held = set(self.scope) | set(newer.scope)
        scope = tuple(sorted(held))
        absent = tuple(sorted((set(self.absent) | set(newer.absent)) - held))
        gaps = tuple(sorted((set(self.gaps) - set(newer.absent) | set(newer.gaps)) - held - set(absent)))
        return SessionEntry(
            scope, len(scope), len(scope), newer.source, newer.run_id, newer.written_at, absent=absent, gaps=gaps
        )

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["scope"] = self.scope if self.scope == ALL else list(self.scope)
        for name in ("absent", "gaps"):  # written only when there are any: older manifests read the same
            if d[name]:
                d[name] = list(d[name])
            else:
                del d[name]
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
            absent=tuple(d.get("absent", ())),  # type: ignore[arg-type]
            gaps=tuple(d.get("gaps", ())),  # type: ignore[arg-type]
        )


def _parse(key: str, raw: bytes) -> dict[dt.date, SessionEntry]:
    """A year object's entries; ``CorruptObject`` when it cannot be read (never overwritten)."""
    try:
        doc = json.loads(raw)
        return {dt.date.fromisoformat(d): SessionEntry.from_json(e) for d, e in doc["sessions"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # AttributeError: JSON of another shape
        raise CorruptObject(f"unreadable manifest: {exc}", key=key) from exc


def _dump(entries: Mapping[dt.date, SessionEntry]) -> bytes:
    doc = {"version": 1, "sessions": {d.isoformat(): entries[d].to_json() for d in sorted(entries)}}
    return json.dumps(doc, separators=(",", ":")).encode()


def _load(store: Store, year: int) -> dict[dt.date, SessionEntry]:
    key = manifest_key(year)
    try:
        return _parse(key, store.get(key))
    except ObjectNotFound:
        return {}


def read_sessions(store: Store, start: dt.date, end: dt.date) -> dict[dt.date, SessionEntry]:
    """Manifest entries for sessions in [start, end] (the year objects read concurrently: 05_monitoring reads
    sixty years of them, each a round trip on S3)."""
    out: dict[dt.date, SessionEntry] = {}
    years = range(start.year, end.year + 1)
    with ThreadPoolExecutor(max_workers=max(1, min(store.write_threads, len(years)))) as pool:
        for entries in pool.map(partial(_load, store), years):
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
    """Merge ``entries`` into the manifest (``storage.update_object`` per year: a lost race is retried). The years
    are independent objects, updated concurrently (the migration records sixty of them, each two round trips on
    S3); the first failure is raised after the others finished."""
    by_year: dict[int, dict[dt.date, SessionEntry]] = {}
    for d, e in entries.items():
        by_year.setdefault(d.year, {})[d] = e

    def update(year: int) -> None:
        new = by_year[year]
        done = update_object(
            store, manifest_key(year), partial(_merged, new), read=_parse, write=_dump, what="manifest update"
        )
        log.debug("manifest=updated key=%s sessions=%d attempt=%d", done.key, len(new), done.attempts)

    with ThreadPoolExecutor(max_workers=max(1, min(store.write_threads, len(by_year)))) as pool:
        list(pool.map(update, sorted(by_year)))


def _merged(
    new: Mapping[dt.date, SessionEntry], current: dict[dt.date, SessionEntry] | None
) -> dict[dt.date, SessionEntry]:
    out = dict(current or {})
    for d, e in new.items():
        out[d] = out[d].merged(e) if d in out else e
    return out


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
