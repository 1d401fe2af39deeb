"""One run at a time: a lease object in the lake, taken with conditional writes, renewed by a heartbeat.

    with lake_lock(store, "resample", lease_s=settings.lock_lease_s):   # BusyError naming a live holder
        ...

The lock is ``processing_metadata/_locks/<name>.lock``, a small JSON record naming its holder (``host``,
``pid``, ``run_id``, ``purpose``, a random ``token``), ``taken_at`` and ``expires_at``. Resample and
compaction share the lock ``resample``.

Protocol:

- **Take**: write the record with ``If-None-Match``. When the object exists, read it with its etag: a
  lease whose ``expires_at`` is in the past (its holder stopped renewing: it died) is taken over with a
  write conditional on that etag (``If-Match``), so of two contenders exactly one wins; the takeover is
  logged as a WARNING naming the previous holder. A live lease raises ``BusyError`` naming the holder and
  when its lease expires. A record without ``expires_at`` (written before leases existed) counts as
  expired once ``taken_at`` is older than the lease length; an unreadable record never expires by itself.
- **Heartbeat**: while the body runs, a daemon thread rewrites the record ``lease_s / 3`` after the last
  renewal was stamped, with a later ``expires_at``, conditional on the etag it last wrote. When that write
  finds the lock taken over, changed or gone, it logs an ERROR and stops renewing; the body is not
  interrupted. A storage error is logged and retried after ``lease_s / 6``. When taking the lock took a
  third of the lease or more (a slow store), the lease may have run out on arrival: one renewal right away
  proves it is still ours before the body starts (``BusyError`` when it was taken over meanwhile).
- **Release**: the Store API has no conditional delete, so release reads the record, checks that the
  token is ours and that our lease still has at least a third of its length to run, then deletes. The
  window: another run can take the lock over between that read and the delete only after our lease has
  expired, i.e. only if the delete is delayed by more than the remaining lease (at least ~``lease_s / 3``).
  A lease that is (nearly) expired at release is left in place: the next run takes it over.

Expiry compares the holder's ``expires_at`` with the contender's clock, so hosts' clocks must agree to
well within the lease length (NTP does). Operators: ``python -m condvest lock status`` shows the record
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
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from condvest.crash import crash_point
from condvest.errors import BusyError, ObjectNotFound, ParameterError, PreconditionFailed, StorageError
from condvest.lake import METADATA_PREFIX
from condvest.runs import new_run_id
from condvest.settings import DEFAULT_LOCK_LEASE_S
from condvest.storage import Store

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
    return rec if isinstance(rec, dict) else {"holder": "<unreadable lock object>"}


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
    """When the lease of holder record ``rec`` ends: its ``expires_at``, or ``taken_at + lease_s`` for a
    record written before leases existed; ``None`` when neither can be read (it never expires by itself)."""
    expires = _parse_time(rec.get("expires_at"))
    if expires is not None:
        return expires
    taken = _parse_time(rec.get("taken_at"))
    return None if taken is None else taken + dt.timedelta(seconds=lease_s)


def is_expired(rec: dict[str, Any], lease_s: float = DEFAULT_LOCK_LEASE_S, now: dt.datetime | None = None) -> bool:
    """True when the holder of ``rec`` stopped renewing long enough ago that its lock may be taken over."""
    expiry = lease_expiry(rec, lease_s)
    return expiry is not None and expiry <= (now or _now())


def describe_lease(rec: dict[str, Any], lease_s: float = DEFAULT_LOCK_LEASE_S, now: dt.datetime | None = None) -> str:
    """``live, expires at … (in 12 s)``, ``expired at … (3 s ago)`` or why the expiry is unknown."""
    expiry = lease_expiry(rec, lease_s)
    if expiry is None:
        return "live (no readable expires_at or taken_at: it does not expire by itself)"
    left = (expiry - (now or _now())).total_seconds()
    if left > 0:
        return f"live, expires at {_iso(expiry)} (in {left:.0f} s)"
    return f"expired at {_iso(expiry)} ({-left:.0f} s ago)"


def _describe(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "an unknown holder (lock vanished while checking)"
    purpose = f" ({rec['purpose']})" if rec.get("purpose") else ""
    return f"{rec.get('holder', '?')} run {rec.get('run_id', '?')}{purpose} since {rec.get('taken_at', '?')}"


def _busy(key: str, name: str, rec: dict[str, Any] | None, lease_s: float) -> BusyError:
    lease = describe_lease(rec, lease_s) if rec else "lease unknown"
    return BusyError(
        lock=key,
        holder=f"{_describe(rec)}, lease {lease}; a dead holder's lock is taken over once its lease expires, "
        f"or clear it now with: python -m condvest lock clear --name {name} --force (condvest.lake_lock.clear_lock)",
    )


def _stamp(rec: dict[str, Any], lease_s: float, *, taken: bool) -> dict[str, Any]:
    now = _now()
    out = {**rec, "renewed_at": _iso(now), "expires_at": _iso(now + dt.timedelta(seconds=lease_s))}
    if taken:
        out["taken_at"] = _iso(now)
    return out


def _take(store: Store, key: str, name: str, mine: dict[str, Any], lease_s: float) -> tuple[dict[str, Any], str, float]:
    """Write our record (fresh, or over an expired lease); returns it, its etag and when (``time.monotonic``)
    its times were stamped, or raises BusyError."""
    for _ in range(_TAKE_ATTEMPTS):
        stamped, rec = time.monotonic(), _stamp(mine, lease_s, taken=True)
        try:
            return rec, store.put(key, json.dumps(rec).encode(), if_none_match=True), stamped
        except PreconditionFailed:
            pass
        try:
            data, etag = store.get_with_etag(key)
        except ObjectNotFound:
            continue  # released between our write and our read: try again
        held = _decode(data)
        if not is_expired(held, lease_s):
            raise _busy(key, name, held, lease_s)
        stamped, rec = time.monotonic(), _stamp(mine, lease_s, taken=True)
        try:
            new_etag = store.put(key, json.dumps(rec).encode(), if_match=etag)
        except PreconditionFailed:
            continue  # another contender took it over (or the holder came back): read again
        expired = lease_expiry(held, lease_s)
        log.warning(
            "lock taken over lock=%s previous_holder=%s previous_run_id=%s previous_purpose=%s "
            "previous_taken_at=%s previous_expires_at=%s run_id=%s",
            key,
            held.get("holder", "?"),
            held.get("run_id", "?"),
            held.get("purpose", ""),
            held.get("taken_at", "?"),
            _iso(expired) if expired else "?",
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
        self.rec, self._due = rec, stamped + self.lease_s / 3
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


def _release(store: Store, key: str, mine: dict[str, Any], lease_s: float) -> None:
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
    expiry = lease_expiry(current, lease_s)
    if expiry is None or (expiry - _now()).total_seconds() < lease_s / 3:
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
    host = socket.gethostname()
    mine = {
        "holder": f"{host}:{os.getpid()}",
        "host": host,
        "pid": os.getpid(),
        "run_id": run_id or new_run_id(name),
        "purpose": purpose,
        "token": secrets.token_hex(8),
        "lease_s": lease_s,
    }
    rec, etag, stamped = _take(store, key, name, mine, lease_s)
    log.info("lock taken lock=%s run_id=%s lease_s=%g expires_at=%s", key, rec["run_id"], lease_s, rec["expires_at"])
    heartbeat = _Heartbeat(store, key, rec, etag, lease_s, stamped)
    if heartbeat.overdue():
        # the write took a third of the lease or more, so the lease may have run out on arrival and been taken
        # over: one renewal proves it is still ours before the body starts
        log.info("lock write was slow lock=%s run_id=%s; renewing before the body starts", key, rec["run_id"])
        try:
            heartbeat.renew()
        except PreconditionFailed:
            raise _busy(key, name, read_lock(store, name), lease_s) from None
    heartbeat.start()
    try:
        crash_point("lock.after_take")
        yield dict(rec)
    finally:
        heartbeat.stop()
        crash_point("lock.before_release")
        _release(store, key, heartbeat.rec, lease_s)


def clear_lock(
    store: Store, name: str = "resample", *, force: bool = True, lease_s: float = DEFAULT_LOCK_LEASE_S
) -> dict[str, Any] | None:
    """Delete lock ``name``; returns the holder record it removed (``None`` when it was free).

    With ``force=False`` a live lease is refused with ``BusyError`` naming its holder. Like release, this is
    read-then-delete: a run that takes an expired lock over between the two loses it (a small window).
    """
    key = lock_key(name)
    rec = read_lock(store, name)
    if rec is None:
        return None
    if not force and not is_expired(rec, lease_s):
        raise _busy(key, name, rec, lease_s)
    store.delete(key)
    log.warning("lock cleared lock=%s holder=%s lease=%s", key, _describe(rec), describe_lease(rec, lease_s))
    return rec
