"""One run at a time: a lock object in the lake, taken with a conditional write (If-None-Match).

    with lake_lock(store, "resample"):          # raises BusyError naming the holder when taken
        ...

The lock is ``processing_metadata/_locks/<name>.lock``, a small JSON object naming its holder (host, pid,
run id) and when it was taken. It is deleted on exit, also when the work raises. A process that is
killed leaves it behind; the next run then stops with ``BusyError`` showing holder and start time.
Clear a stale lock (after checking that holder is really gone) with ``clear_lock(store, name)`` or by
deleting that object (``aws s3 rm s3://<bucket>/processing_metadata/_locks/resample.lock``, or ``rm`` on a
local lake). A crashed resample leaves nothing else to repair: the next run repairs the silver layer.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from condvest.errors import BusyError, ObjectNotFound, ParameterError, PreconditionFailed
from condvest.lake import METADATA_PREFIX
from condvest.runs import new_run_id
from condvest.storage import Store

log = logging.getLogger(__name__)

#: locks in use; resample and compaction share one so that they never overlap
LOCK_NAMES = frozenset({"resample"})


def lock_key(name: str) -> str:
    if name not in LOCK_NAMES or not re.fullmatch(r"[a-z_]+", name):
        raise ParameterError(f"unknown lock {name!r}", parameter="lock")
    return f"{METADATA_PREFIX}/_locks/{name}.lock"


def read_lock(store: Store, name: str) -> dict | None:
    """The holder record of lock ``name``, or ``None`` when it is free."""
    try:
        return json.loads(store.get(lock_key(name)))
    except ObjectNotFound:
        return None
    except ValueError:
        return {"holder": "<unreadable lock object>"}


def _describe(rec: dict | None) -> str:
    if not rec:
        return "an unknown holder (lock vanished while checking)"
    return f"{rec.get('holder', '?')} run {rec.get('run_id', '?')} since {rec.get('taken_at', '?')}"


@contextmanager
def lake_lock(store: Store, name: str = "resample", run_id: str | None = None, purpose: str = "") -> Iterator[dict]:
    """Hold lock ``name`` for the body; ``BusyError`` at once when someone else holds it."""
    key = lock_key(name)
    rec = {
        "holder": f"{socket.gethostname()}:{os.getpid()}",
        "run_id": run_id or new_run_id(name),
        "purpose": purpose,
        "taken_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        store.put(key, json.dumps(rec).encode(), if_none_match=True)
    except PreconditionFailed:
        held = read_lock(store, name)
        raise BusyError(
            lock=key, holder=_describe(held) + f"; if that run is gone, delete {key} (condvest.lake_lock.clear_lock)"
        ) from None
    log.info("lock taken lock=%s run_id=%s", key, rec["run_id"])
    try:
        yield rec
    finally:
        current = read_lock(store, name)
        if current is not None and current.get("run_id") == rec["run_id"]:
            store.delete(key)
            log.info("lock released lock=%s run_id=%s", key, rec["run_id"])
        else:
            log.warning("lock not ours at release lock=%s holder=%s", key, _describe(current))


def clear_lock(store: Store, name: str = "resample") -> dict | None:
    """Delete a stale lock; returns the holder record it removed (``None`` when it was free)."""
    rec = read_lock(store, name)
    if rec is not None:
        store.delete(lock_key(name))
        log.warning("lock cleared lock=%s holder=%s", lock_key(name), _describe(rec))
    return rec
