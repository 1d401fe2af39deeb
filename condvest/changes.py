"""The bronze change log: what the daily writers changed, so a daily 02_resample reads what changed instead of
listing bronze (tens of thousands of objects, a page of 1,000 per round trip on S3).

``bronze/_changes/<run_id>-<uuid>.parquet`` (columns ``key``, ``etag``): one object per call of
``condvest.bronze.write_daily_files``, naming each daily file it wrote and the version it left; a run that wrote
nothing (a settled session without revisions) still leaves an empty one, naming its run.

    record_changes(store, keys, etags, run_id)      write one change object (``bronze.write_daily_files``)
    Watch / read_watch / save_watch                  what a resample state saw of the log, the manifest and the
                                                     split basis (``resample_state/<run>/watch.json``)
    changed_objects(store, watch, journal) -> Delta | None
                                                     bronze's changes since ``watch`` from the log alone, or
                                                     ``None`` when something else may have changed bronze
    snapshot(store, previous) -> Watch               a watch of the lake as it is now
    consume(store, keys)                             delete change objects every checkpoint has seen

The log is trusted only in a lake the workbench fetches into (it has a manifest), and only where it is
complete: every other writer of bronze leaves a trace the watch compares (a fetch in history mode, the
migration and a sharded commit record manifest sessions under a run that has no change object; a split rebase
rewrites the basis; compaction writes a journal). Any such trace, more than ``MAX_CHANGES`` change objects, or
no watch (a state written before the log existed) makes the resampler list bronze as before. A file written
into bronze by hand, beside the workbench, is not seen by an incremental run: ``force_full_resample=True``
rebuilds from a listing (as for silver edited by hand).
"""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from condvest.errors import CorruptObject, ObjectNotFound
from condvest.lake import BASIS_KEY, CHANGES_PREFIX, MANIFEST_PREFIX, change_key
from condvest.storage import Store

log = logging.getLogger(__name__)

#: beyond this many unread change objects one listing of bronze is cheaper than a GET per object
MAX_CHANGES = 200
#: run ids kept in a watch (the runs whose daily writes the states have read; manifest entries naming them are
#: explained by the log)
_KEEP_RUNS = 2000
_SCHEMA = pa.schema([("key", pa.string()), ("etag", pa.string())])


def record_changes(store: Store, keys: Sequence[str], etags: Sequence[str], run_id: str | None) -> str:
    """One change object naming ``keys`` at versions ``etags`` (written by ``run_id``); returns its key."""
    key = change_key(run_id, uuid.uuid4().hex[:12])
    table = pa.table({"key": pa.array(list(keys), pa.string()), "etag": pa.array(list(etags), pa.string())})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    store.put(key, buf.getvalue())
    return key


def _run_of(key: str) -> str:
    """The run id a change object's key names (``-`` when the writer had none)."""
    name = key[len(CHANGES_PREFIX) + 1 :].removesuffix(".parquet")
    return name.rpartition("-")[0]


@dataclass
class Watch:
    """What a resample state saw: the change objects it read (``consumed``), the runs they came from, the manifest
    (etag per year object, run id per session) and the split basis's etag."""

    consumed: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    manifest_etags: dict[str, str] = field(default_factory=dict)
    manifest_runs: dict[str, str] = field(default_factory=dict)
    basis: str | None = None

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes) -> Watch:
        try:
            doc = json.loads(raw)
            return cls(
                consumed=list(doc["consumed"]),
                runs=list(doc["runs"]),
                manifest_etags=dict(doc["manifest_etags"]),
                manifest_runs=dict(doc["manifest_runs"]),
                basis=doc.get("basis"),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject(f"unreadable resample watch: {exc}", key=key) from exc


def read_watch(store: Store, key: str) -> Watch | None:
    """The watch saved at ``key``; ``None`` when there is none (a state written before the change log)."""
    try:
        return Watch.from_json(key, store.get(key))
    except ObjectNotFound:
        return None


def save_watch(store: Store, key: str, watch: Watch) -> None:
    store.put(key, watch.to_json())


def _manifest(store: Store, previous: Watch | None) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """The manifest's year objects' etags (one listing) and the run id per session, re-reading only the years
    whose object changed since ``previous``; also the sessions whose run id changed."""
    etags = {o.key: o.etag for o in store.list(MANIFEST_PREFIX + "/") if o.key.endswith(".json")}
    old_etags = previous.manifest_etags if previous else {}
    runs = dict(previous.manifest_runs) if previous else {}
    changed = [k for k, e in etags.items() if old_etags.get(k) != e]
    gone = [k for k in old_etags if k not in etags]
    touched: set[str] = set()
    for k in gone:
        year = k.rsplit("_", 1)[-1].removesuffix(".json")
        for day in [d for d in runs if d.startswith(year)]:
            touched.add(day)
            del runs[day]
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(changed)))) as pool:
        docs = list(pool.map(lambda k: (k, _get_or_none(store, k)), changed))
    for k, raw in docs:
        if raw is None:
            continue
        try:
            sessions = json.loads(raw)["sessions"]
            now = {d: str(e.get("run_id", "")) for d, e in sessions.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptObject(f"unreadable manifest: {exc}", key=k) from exc
        year = k.rsplit("_", 1)[-1].removesuffix(".json")
        for d in [d for d in runs if d.startswith(year) and d not in now]:
            touched.add(d)
            del runs[d]
        for d, r in now.items():
            if runs.get(d) != r:
                touched.add(d)
                runs[d] = r
    return etags, runs, touched


def _get_or_none(store: Store, key: str) -> bytes | None:
    try:
        return store.get(key)
    except ObjectNotFound:
        return None


def _basis_etag(store: Store) -> str | None:
    h = store.head(BASIS_KEY)
    return h.etag if h is not None else None


def snapshot(store: Store, previous: Watch | None = None) -> Watch:
    """A watch of the lake now: every change object present counts as read. Take it before listing bronze (an
    object the listing sees may then be in the log as well; never the other way round)."""
    listed = [o.key for o in store.list(CHANGES_PREFIX + "/")]
    etags, runs, _ = _manifest(store, previous)
    kept = list(dict.fromkeys([*(previous.runs if previous else []), *map(_run_of, listed)]))[-_KEEP_RUNS:]
    return Watch(listed, kept, etags, runs, _basis_etag(store))


@dataclass(frozen=True)
class Delta:
    """Bronze's changes since a watch, from the log: ``objects`` key -> etag (``None``: gone), the new watch."""

    objects: dict[str, str | None]
    watch: Watch


def changed_objects(store: Store, watch: Watch | None) -> Delta | None:
    """Bronze's changes since ``watch`` read from the change log, or ``None`` when the log cannot tell (see the
    module docstring): then bronze is listed."""
    if watch is None:
        return None
    listed = [o.key for o in store.list(CHANGES_PREFIX + "/")]
    seen = set(watch.consumed)
    new = [k for k in listed if k not in seen]
    if len(new) > MAX_CHANGES:
        log.info("changes=too_many count=%d (bronze is listed instead)", len(new))
        return None
    etags, runs, touched = _manifest(store, watch)
    if not etags:  # no manifest: a lake the workbench does not fetch into (its writers may not keep the log)
        return None
    basis = _basis_etag(store)
    if basis != watch.basis:
        log.info("changes=basis_changed (bronze is listed)")
        return None
    known = set(watch.runs) | {_run_of(k) for k in listed}
    unexplained = sorted(d for d in touched if runs.get(d, "") not in known)
    if unexplained:
        log.info("changes=manifest_unexplained sessions=%s (bronze is listed)", ",".join(unexplained[:5]))
        return None
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(new)))) as pool:
        tables = list(pool.map(lambda k: _read_change(store, k), new))
    seen_at: dict[str, set[str]] = {}
    for t in tables:
        for k, e in zip(t.column("key").to_pylist(), t.column("etag").to_pylist(), strict=True):
            seen_at.setdefault(k, set()).add(e)
    objects: dict[str, str | None] = {k: next(iter(es)) for k, es in seen_at.items() if len(es) == 1}
    for k in [k for k, es in seen_at.items() if len(es) > 1]:  # written twice since: which version is there now
        h = store.head(k)
        objects[k] = h.etag if h is not None else None
    kept = list(dict.fromkeys([*watch.runs, *map(_run_of, listed)]))[-_KEEP_RUNS:]
    return Delta(objects, Watch(listed, kept, etags, runs, basis))


def _read_change(store: Store, key: str) -> pa.Table:
    try:
        return pq.read_table(io.BytesIO(store.get(key))).cast(_SCHEMA)
    except ObjectNotFound:
        return _SCHEMA.empty_table()
    except (pa.ArrowException, OSError) as exc:
        raise CorruptObject(f"unreadable bronze change object: {exc}", key=key) from exc


def consume(store: Store, keys: Sequence[str]) -> int:
    """Delete change objects that every checkpoint's state has read."""
    return store.delete_many(keys)
