"""One run at a time: a lease object in the lake, taken with conditional writes, renewed by a heartbeat.

    with lake_lock(store, "resample", lease_s=settings.lock_lease_s):   # BusyError naming a live holder
        ...

The lock is ``processing_metadata/_locks/<name>.lock``, a small JSON record naming its holder (``host``,
``pid``, ``run_id``, ``purpose``, a random ``token``), ``taken_at`` and ``expires_at``. Resample and
compaction share the lock ``resample``.

Protocol:

- **Take**: write the record with ``If-None-Match``. When the object exists, read it with its etag and ask the
  store how old it is (``Store.head``: the S3 server's ``LastModified`` against its ``Date``, a file's mtime
  against this host's clock): the lease is judged by the store's clock, never by the times the holder wrote.
  A holder is taken over (a write conditional on the etag read, ``If-Match``, so of two contenders exactly one
  wins; logged as a WARNING naming the previous holder) once the object has not been rewritten for one lease
  (the holder's ``lease_s``, else ours; plus the store's clock step, 1 s on S3), unless the holder runs on this
  host and its process is alive (``condvest.processes``: pid and its start time; in this process, a lock it
  holds): such a holder is never taken over, whatever its record or its clock says. A lock object that cannot
  be read (not JSON, the wrong shape) is judged by its age alone: expired after one lease. A live lease raises
  ``BusyError`` naming the holder and when its lease expires.
- **Heartbeat**: while the body runs, a daemon thread rewrites the record ``lease_s / 3`` after the last
  renewal was stamped (which refreshes the object's modification time), conditional on the etag it last wrote.
  When that write finds the lock taken over, changed or gone, it logs an ERROR and stops renewing; the body is
  not interrupted. A storage error is logged and retried after ``lease_s / 6``. When taking the lock took a
  third of the lease or more (a slow store), the lease may have run out on arrival: one renewal right away
  proves it is still ours before the body starts (``BusyError`` when it was taken over meanwhile).
- **Release**: the Store API has no conditional delete, so release reads the record, checks that the
  token is ours and that our lease still has at least a third of its length to run (measured from our last
  renewal on this process's monotonic clock: the store stamped the write later, so the store's age is never
  more), then deletes. The window: another run can take the lock over between that read and the delete only
  after our lease has expired, i.e. only if the delete is delayed by more than the remaining lease (at least
  ~``lease_s / 3``). A lease that is (nearly) expired at release is left in place: the next run takes it over.

The record's ``taken_at``, ``renewed_at`` and ``expires_at`` are the holder's clock, kept for people (``lock
status`` shows them); no decision reads them. Operators: ``python -m condvest lock status`` shows the record
and whether its lease is live; ``python -m condvest lock clear [--force]`` removes it (``clear_lock``).
Fault points for ``CONDVEST_CRASH_AT``: ``lock.after_take``, ``lock.after_renew``, ``lock.before_release``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from condvest.crash import crash_point
from condvest.errors import BusyError, ObjectNotFound, ParameterError, PreconditionFailed, StorageError
from condvest.lake import METADATA_PREFIX
from condvest.processes import host_name, process_alive, this_process
from condvest.runs import new_run_id
from condvest.settings import DEFAULT_LOCK_LEASE_S
from condvest.storage import ObjectInfo, Store

log = logging.getLogger(__name__)

#: locks in use; resample and compaction share one so that they never overlap
LOCK_NAMES = frozenset({"resample"})
#: how often entering retries when the lock vanishes or changes hands while it is being taken
_TAKE_ATTEMPTS = 5


def lock_key(name: str) -> str:
    if name not in LOCK_NAMES or not re.fullmatch(r"[a-z_]+", name):
        raise ParameterError(f"unknown lock {name!r}", parameter="lock")
    return f"{METADATA_PREFIX}/_locks/{name}.lock"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(data)
    except ValueError:
        rec = None
    return rec if isinstance(rec, dict) else {"holder": UNREADABLE}


#: what ``read_lock`` gives for a lock object that is not a JSON object (judged by its age alone)
UNREADABLE = "<unreadable lock object>"


def _check_lease(lease_s: float) -> float:
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float) or not lease_s > 0:
        raise ParameterError(f"lease must be a positive number of seconds, got {lease_s!r}", parameter="lease_s")
    return float(lease_s)


def read_lock(store: Store, name: str) -> dict[str, Any] | None:
    """The holder record of lock ``name``, or ``None`` when it is free."""
    try:
        return _decode(store.get(lock_key(name)))
    except ObjectNotFound:
        return None


def lease_expiry(rec: dict[str, Any], lease_s: float = DEFAULT_LOCK_LEASE_S) -> dt.datetime | None:
    """When the holder of ``rec`` said its lease ends, by its own clock: its ``expires_at``, or ``taken_at +
    lease_s`` for a record written before leases existed; ``None`` when neither can be read. For people only:
    whether a lease is live is judged by the store's clock (``judge_lease``)."""
    expires = _parse_time(rec.get("expires_at"))
    if expires is not None:
        return expires
    taken = _parse_time(rec.get("taken_at"))
    return None if taken is None else taken + dt.timedelta(seconds=lease_s)


#: tokens of the locks this process holds now (a holder with our pid is alive exactly while its token is here)
_HELD: set[str] = set()
_HELD_LOCK = threading.Lock()


def _holder_alive(rec: dict[str, Any]) -> bool | None:
    """Whether the holder's process is alive: asked of this host (``condvest.processes``); for our own pid, whether
    this process holds that lock now; ``None`` for another host's holder (unknown here)."""
    if rec.get("pid") == os.getpid() and rec.get("host") == host_name():
        with _HELD_LOCK:
            return rec.get("token") in _HELD
    return process_alive(rec)


@dataclass(frozen=True)
class Lease:
    """How a lock's lease stands, judged by the store's clock: ``live`` (it may not be taken over) and why, in words;
    ``left_s``: seconds until it expires by the store's clock unless renewed (negative: expired that long ago;
    ``None``: the store gave no times)."""

    live: bool
    why: str
    left_s: float | None


def _holder_lease(rec: dict[str, Any], lease_s: float) -> float:
    theirs = rec.get("lease_s")
    if isinstance(theirs, int | float) and not isinstance(theirs, bool) and theirs > 0:
        return float(theirs)
    return lease_s


def judge_lease(rec: dict[str, Any], info: ObjectInfo | None, lease_s: float = DEFAULT_LOCK_LEASE_S) -> Lease:
    """Whether holder record ``rec`` of a lock object that the store describes as ``info`` (``Store.head``) still
    holds its lease: never taken over while its process is alive on this host; otherwise live until the object
    has gone one lease (the holder's ``lease_s``, else ``lease_s``) without a rewrite, by the store's clock."""
    alive = _holder_alive(rec)
    lease = _holder_lease(rec, lease_s)
    age = info.age_s if info is not None else None
    if age is None or info is None or info.modified_at is None:  # a store that gives no times: the old rule
        expiry = lease_expiry(rec, lease)
        left = None if expiry is None else (expiry - _now()).total_seconds()
        clock = "by the holder's clock (the store gives no modification times)"
        at = expiry
    else:
        left = lease + info.clock_step_s - age
        at = dt.datetime.fromtimestamp(info.modified_at + lease + info.clock_step_s, dt.UTC)
        clock = "by the store's clock"
    when = f"at {_iso(at)} {clock}" if at is not None else clock
    if alive:
        process = f"its process {rec.get('pid')} is alive on this host ({rec.get('host')}), never taken over"
        until = f"; expires {when}, in {left:.0f} s, unless renewed" if left is not None else ""
        return Lease(True, f"live, {process}{until}", left)
    gone = "its process is gone, " if alive is False else ""
    if left is None:
        return Lease(True, f"live ({gone}no readable time: it does not expire by itself)", None)
    idle = f" ({gone}not renewed for {age:.0f} s of a {lease:g} s lease)" if age is not None else ""
    if left > 0:
        return Lease(True, f"live{idle}, expires {when}, in {left:.0f} s", left)
    return Lease(False, f"expired {when}, {-left:.0f} s ago{idle}", left)


def lock_status(store: Store, name: str, lease_s: float = DEFAULT_LOCK_LEASE_S) -> tuple[dict[str, Any], Lease] | None:
    """Lock ``name``'s holder record and how its lease stands (``judge_lease``), or ``None`` when it is free."""
    read = _read_held(store, lock_key(name))
    if read is None:
        return None
    rec, _, info = read
    return rec, judge_lease(rec, info, lease_s)


def _describe(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "an unknown holder (lock vanished while checking)"
    purpose = f" ({rec['purpose']})" if rec.get("purpose") else ""
    return f"{rec.get('holder', '?')} run {rec.get('run_id', '?')}{purpose} since {rec.get('taken_at', '?')}"


def _busy(key: str, name: str, rec: dict[str, Any] | None, lease: Lease | None) -> BusyError:
    state = lease.why if lease is not None else "lease unknown"
    return BusyError(
        lock=key,
        holder=f"{_describe(rec)}, lease {state}; a dead holder's lock is taken over once its lease expires, "
        f"or clear it now with: python -m condvest lock clear --name {name} --force (condvest.lake_lock.clear_lock)",
    )


def _stamp(rec: dict[str, Any], lease_s: float, *, taken: bool) -> dict[str, Any]:
    now = _now()
    out = {**rec, "renewed_at": _iso(now), "expires_at": _iso(now + dt.timedelta(seconds=lease_s))}
    if taken:
        out["taken_at"] = _iso(now)
    return out


def _read_held(store: Store, key: str) -> tuple[dict[str, Any], str, ObjectInfo] | None:
    """The lock object, its etag and what the store says of that version, or ``None`` when it is gone."""
    try:
        data, info = store.get_with_info(key)
    except ObjectNotFound:
        return None
    return _decode(data), info.etag, info


def _take(store: Store, key: str, name: str, mine: dict[str, Any], lease_s: float) -> tuple[dict[str, Any], str, float]:
    """Write our record (fresh, or over an expired lease); returns it, its etag and when (``time.monotonic``)
    its times were stamped, or raises BusyError."""
    for _ in range(_TAKE_ATTEMPTS):
        stamped, rec = time.monotonic(), _stamp(mine, lease_s, taken=True)
        try:
            return rec, store.put(key, json.dumps(rec).encode(), if_none_match=True), stamped
        except PreconditionFailed:
            pass
        read = _read_held(store, key)
        if read is None:
            continue  # released or renewed between our requests: try again
        held, etag, info = read
        lease = judge_lease(held, info, lease_s)
        if lease.live:
            raise _busy(key, name, held, lease)
        stamped, rec = time.monotonic(), _stamp(mine, lease_s, taken=True)
        try:
            new_etag = store.put(key, json.dumps(rec).encode(), if_match=etag)
        except PreconditionFailed:
            continue  # another contender took it over (or the holder came back): read again
        log.warning(
            "lock taken over lock=%s previous_holder=%s previous_run_id=%s previous_purpose=%s "
            "previous_taken_at=%s lease=%r run_id=%s",
            key,
            held.get("holder", "?"),
            held.get("run_id", "?"),
            held.get("purpose", ""),
            held.get("taken_at", "?"),
            lease.why,
            rec["run_id"],
        )
        return rec, new_etag, stamped
    raise BusyError(
        lock=key, holder=f"nobody for long: it changed hands {_TAKE_ATTEMPTS} times while this run tried to take it"
    )


class _Heartbeat:
    """Renews our lease a third of a lease after the last renewal was stamped (If-Match on the etag it last
    wrote), until stopped or lost; a slow write is followed by the next renewal at once."""

    def __init__(self, store: Store, key: str, rec: dict[str, Any], etag: str, lease_s: float, stamped: float) -> None:
        self.store, self.key, self.rec, self.etag, self.lease_s = store, key, rec, etag, lease_s
        self.stamped = stamped  # when (time.monotonic) the record last written was stamped
        self._due = stamped + lease_s / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lake-lock-heartbeat-{rec['run_id']}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def overdue(self) -> bool:
        return time.monotonic() >= self._due

    def renew(self) -> None:
        """One renewal; ``PreconditionFailed`` when the lock object is no longer the one we last wrote."""
        stamped, rec = time.monotonic(), _stamp(self.rec, self.lease_s, taken=False)
        self.etag = self.store.put(self.key, json.dumps(rec).encode(), if_match=self.etag)
        self.rec, self.stamped, self._due = rec, stamped, stamped + self.lease_s / 3
        log.debug("lock renewed lock=%s run_id=%s expires_at=%s", self.key, rec["run_id"], rec["expires_at"])
        crash_point("lock.after_renew")

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, self._due - time.monotonic())):
            if not self._beat():
                return

    def _beat(self) -> bool:
        try:
            self.renew()
        except PreconditionFailed:
            return self._recheck()
        except StorageError as exc:
            self._due = time.monotonic() + self.lease_s / 6
            log.warning("lock renewal failed lock=%s run_id=%s error=%s; retrying", self.key, self.rec["run_id"], exc)
        return True

    def _recheck(self) -> bool:
        """A renewal met another etag: ours after all (a lost response to our own write), or taken over."""
        try:
            data, etag = self.store.get_with_etag(self.key)
            current: dict[str, Any] | None = _decode(data)
        except ObjectNotFound:
            current, etag = None, ""
        except StorageError as exc:
            self._due = time.monotonic() + self.lease_s / 6
            log.warning("lock renewal check failed lock=%s error=%s; retrying", self.key, exc)
            return True
        if current is not None and current.get("token") == self.rec["token"]:
            self.rec, self.etag, self._due = current, etag, time.monotonic()  # ours: renew again at once
            return True
        log.error(
            "lock lost lock=%s run_id=%s now_held_by=%s; renewal stopped, the run goes on without the lock",
            self.key,
            self.rec["run_id"],
            _describe(current) if current else "nobody (the lock object was deleted)",
        )
        return False


def _release(store: Store, key: str, mine: dict[str, Any], lease_s: float, stamped: float) -> None:
    try:
        current: dict[str, Any] | None = _decode(store.get(key))
    except ObjectNotFound:
        current = None
    if current is None or current.get("token") != mine["token"]:
        log.warning(
            "lock not ours at release lock=%s run_id=%s holder=%s",
            key,
            mine["run_id"],
            _describe(current) if current else "nobody",
        )
        return
    if lease_s - (time.monotonic() - stamped) < lease_s / 3:
        # deleting now could remove the lock of a run that takes ours over in between: leave it to expire
        log.warning("lock lease nearly expired at release lock=%s run_id=%s; left for takeover", key, mine["run_id"])
        return
    store.delete(key)
    log.info("lock released lock=%s run_id=%s", key, mine["run_id"])


@contextmanager
def lake_lock(
    store: Store,
    name: str = "resample",
    run_id: str | None = None,
    purpose: str = "",
    lease_s: float = DEFAULT_LOCK_LEASE_S,
) -> Iterator[dict[str, Any]]:
    """Hold lock ``name`` for the body as a lease of ``lease_s`` seconds, renewed by a heartbeat thread.

    Raises ``BusyError`` at once when another run holds a live lease; takes over an expired one (see the
    module docstring). Yields our holder record as first written.
    """
    key = lock_key(name)
    lease_s = _check_lease(lease_s)
    me = this_process()
    mine = {
        "holder": f"{me['host']}:{me['pid']}",
        **me,
        "run_id": run_id or new_run_id(name),
        "purpose": purpose,
        "token": secrets.token_hex(8),
        "lease_s": lease_s,
    }
    rec, etag, stamped = _take(store, key, name, mine, lease_s)
    with _HELD_LOCK:
        _HELD.add(rec["token"])  # from here on this process answers for the holder: alive
    try:
        with _held(store, key, name, rec, etag, lease_s, stamped):
            yield dict(rec)
    finally:
        with _HELD_LOCK:
            _HELD.discard(rec["token"])


@contextmanager
def _held(
    store: Store, key: str, name: str, rec: dict[str, Any], etag: str, lease_s: float, stamped: float
) -> Iterator[None]:
    """The body under the lock just taken: renewed by a heartbeat, released at its end."""
    log.info("lock taken lock=%s run_id=%s lease_s=%g expires_at=%s", key, rec["run_id"], lease_s, rec["expires_at"])
    heartbeat = _Heartbeat(store, key, rec, etag, lease_s, stamped)
    if heartbeat.overdue():
        # the write took a third of the lease or more, so the lease may have run out on arrival and been taken
        # over: one renewal proves it is still ours before the body starts
        log.info("lock write was slow lock=%s run_id=%s; renewing before the body starts", key, rec["run_id"])
        try:
            heartbeat.renew()
        except PreconditionFailed:
            status = lock_status(store, name, lease_s)
            raise _busy(key, name, *(status or (None, None))) from None
    heartbeat.start()
    try:
        crash_point("lock.after_take")
        yield
    finally:
        heartbeat.stop()
        crash_point("lock.before_release")
        _release(store, key, heartbeat.rec, lease_s, heartbeat.stamped)


def clear_lock(
    store: Store, name: str = "resample", *, force: bool = True, lease_s: float = DEFAULT_LOCK_LEASE_S
) -> dict[str, Any] | None:
    """Delete lock ``name``; returns the holder record it removed (``None`` when it was free).

    With ``force=False`` a live lease (``judge_lease``: by the store's clock, a live process on this host) is
    refused with ``BusyError`` naming its holder. Like release, this is read-then-delete: a run that takes an
    expired lock over between the two loses it (a small window).
    """
    key = lock_key(name)
    status = lock_status(store, name, lease_s)
    if status is None:
        return None
    rec, lease = status
    if not force and lease.live:
        raise _busy(key, name, rec, lease)
    store.delete(key)
    log.warning("lock cleared lock=%s holder=%s lease=%r", key, _describe(rec), lease.why)
    return rec
