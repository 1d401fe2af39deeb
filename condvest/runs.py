"""The run index: one JSON record object per run attempt under ``<runs>/index/``, read together with the legacy
``<runs>/index.jsonl`` (one line per run, written before this layout; never written any more).

A run writes its own record and nothing else: ``index/<run id>.json`` (a retry: ``index/<run id>.attempt-<n>.json``),
first as ``status: "running"`` (``claim_run``, with ``host``, ``pid`` and ``pid_started``; conditional on there
being none, so a run id is used once) before its notebook starts, rewritten every ``HEARTBEAT_S`` while it runs
(``RunningRecord``) and overwritten by its final record (``append_run``). No object is shared between runs, so an
append never races another run's and costs one PUT whatever the number of runs (the old single ``index.jsonl``
was rewritten whole by every append: quadratic traffic at thousands of shards, and a lost race failed a child
whose work had succeeded).

``read_records`` lists ``index/`` once (one paginated LIST on S3: 1,000 records a page), reads the records
concurrently (one GET each, ``READ_THREADS`` at a time) and folds them after the legacy lines. A record still
``running`` whose process is gone shows as ``killed`` (``killed_reason`` says why; ``finished_at`` is its last sign
of life, the object's modification time): on this host when its pid is not alive (``condvest.processes``), for
another host when its object has not been rewritten for ``KILLED_AFTER_S`` by the store's clock. A line or an
object that is not a JSON object (torn by a kill or a full disk) is skipped with a warning naming it.

Each record: ``run_id, notebook, status ("running"|"ok"|"failed"; "killed" as read), parameters, started_at,
finished_at (ISO UTC), duration_s, error (null or {cell, cell_index, source, ename, evalue}), results (merged result
figures), ipynb, html (keys relative to the runs root), pipeline, pipeline_run_id, stage, attempt``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from condvest.errors import ObjectNotFound, ParameterError, PreconditionFailed, StorageError
from condvest.processes import process_alive
from condvest.settings import Settings
from condvest.storage import ObjectInfo, Store, open_store, put_if_unchanged

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def new_run_id(label: str, now: dt.datetime | None = None) -> str:
    """``20261128T181500Z-01_fetch-a1b2c3``: UTC start time, what runs (a notebook, pipeline or stage), 6 random
    hex digits. The one form of run id: runner runs, fetch's quarantine and batch objects, resample and
    compaction state, migration reports and lake locks all name their run with it."""
    now = now or dt.datetime.now(dt.UTC)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in label) or "run"
    return f"{now.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{safe}-{secrets.token_hex(3)}"


COLUMNS = [
    "run_id",
    "notebook",
    "status",
    "started_at",
    "finished_at",
    "duration_s",
    "parameters",
    "results",
    "error",
    "ipynb",
    "html",
    "pipeline",
    "pipeline_run_id",
    "stage",
    "ipynb_url",
    "html_url",
    "attempt",
    "killed_reason",
    "vcpu_seconds",  # what the run used (runner/usage.py): CPU seconds of its process tree
    "gb_seconds",  # and its peak resident GB x wall seconds
]


#: the legacy index: one line per run, read (never written) so that existing lakes keep their history
INDEX_KEY = "index.jsonl"
#: one record object per run attempt
RECORDS_PREFIX = "index/"
#: seconds between rewrites of a running record (its heartbeat)
HEARTBEAT_S = 60.0
#: a running record of another host whose object is older than this (store's clock) is a killed run
KILLED_AFTER_S = 300.0
#: concurrent GETs of record objects
READ_THREADS = 16


def record_key(run_id: str, attempt: int = 1) -> str:
    """``index/<run id>.json``, ``index/<run id>.attempt-<n>.json`` for a retry (characters outside
    ``[A-Za-z0-9._-]`` become ``_``)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in str(run_id)) or "run"
    return f"{RECORDS_PREFIX}{safe}" + (f".attempt-{attempt}" if attempt > 1 else "") + ".json"


def _key_of(record: dict[str, Any]) -> str:
    attempt = record.get("attempt")
    n = attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 1
    run_id = record.get("run_id") or f"unnamed-{secrets.token_hex(4)}"
    return record_key(str(run_id), n)


def _encode(record: dict[str, Any]) -> bytes:
    return json.dumps(record, default=str, sort_keys=False).encode()


def append_run(store: Store, record: dict[str, Any]) -> None:
    """Write ``record`` as its run's record object (over the run's ``running`` record): one PUT, no other run's
    object read or written."""
    key = _key_of(record)
    store.put(key, _encode(record))
    log.info("run indexed run_id=%s status=%s record=%s", record.get("run_id"), record.get("status"), store.url(key))


def claim_run(store: Store, record: dict[str, Any]) -> str:
    """Write a run's first record (status ``running``) only when the run has none yet; returns its key. Raises
    ``ParameterError`` naming the record when this run id (and attempt) is used already."""
    key = _key_of(record)
    try:
        put_if_unchanged(store, key, _encode(record), None)  # only when there is none
    except PreconditionFailed:
        raise ParameterError(
            f"{record.get('run_id')!r} is already used by {store.url(key)}", parameter="run_id"
        ) from None
    log.info("run claimed run_id=%s record=%s", record.get("run_id"), store.url(key))
    return key


class RunningRecord:
    """Keeps a running run's record fresh: a daemon thread rewrites it every ``every_s`` seconds (``heartbeat_at``),
    so that a host that cannot ask this one's kernel sees the run alive by the object's age; ``stop()`` ends it
    (before the final record is written)."""

    def __init__(self, store: Store, record: dict[str, Any], every_s: float = HEARTBEAT_S) -> None:
        self.store, self.record, self.every_s = store, dict(record), every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"run-heartbeat-{record.get('run_id')}", daemon=True)

    def start(self) -> RunningRecord:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        key = _key_of(self.record)
        while not self._stop.wait(self.every_s):
            beat = {**self.record, "heartbeat_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")}
            try:
                self.store.put(key, _encode(beat))
            except StorageError as exc:  # the next beat tries again; the run itself goes on
                log.warning("run heartbeat failed run_id=%s error=%s", self.record.get("run_id"), exc)


def _parse_lines(store: Store) -> list[dict[str, Any]]:
    """The legacy ``index.jsonl``'s records in append order (none when it does not exist)."""
    try:
        data = store.get(INDEX_KEY)
    except ObjectNotFound:
        return []
    records = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        rec, why = _parse(line)
        if rec is None:
            log.warning("run index line skipped index=%s line=%d reason=%r", store.url(INDEX_KEY), n, why)
            continue
        records.append(rec)
    return records


def _parse(text: str | bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        rec = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return None, f"not JSON ({getattr(exc, 'msg', exc)}{where})"
    return (rec, "") if isinstance(rec, dict) else (None, "not a JSON object")


def _read_object(store: Store, info: ObjectInfo) -> dict[str, Any] | None:
    try:
        data = store.get(info.key)
    except ObjectNotFound:  # removed while listing
        return None
    rec, why = _parse(data)
    if rec is None:
        log.warning("run record skipped record=%s reason=%r", store.url(info.key), why)
        return None
    return _judged(rec, info)


def _judged(rec: dict[str, Any], info: ObjectInfo) -> dict[str, Any]:
    """A ``running`` record as it stands: ``killed`` when its process is gone (see the module docstring)."""
    if rec.get("status") != "running":
        return rec
    alive = process_alive(rec)
    age = info.age_s
    if alive is False:
        why = f"its process {rec.get('pid')} on {rec.get('host')} is gone"
    elif alive is None and age is not None and age > KILLED_AFTER_S:
        why = f"no sign of life for {age:.0f} s (its record is rewritten every {HEARTBEAT_S:.0f} s while it runs)"
    else:
        return rec
    last = dt.datetime.fromtimestamp(info.modified_at, dt.UTC) if info.modified_at is not None else None
    finished = last.isoformat(timespec="milliseconds") if last is not None else rec.get("started_at")
    return {**rec, "status": "killed", "killed_reason": why, "finished_at": finished}


def _sort_key(rec: dict[str, Any]) -> tuple[bool, str]:
    """By start time (ISO UTC strings sort as times), records without one last."""
    value = rec.get("started_at")
    return (False, value) if isinstance(value, str) else (True, "")


def read_records(store: Store) -> list[dict[str, Any]]:
    """Every run's record: the legacy index's lines in append order, then the record objects by start time (empty
    when nothing was recorded yet); a dead ``running`` record reads as ``killed``.

    A line or a record object that is not a JSON object (torn by a kill or a full disk while it was written) is
    skipped with a warning naming its line number or key: one bad record never hides the other runs. Cost on S3:
    one paginated LIST of ``index/`` and one GET per record (``READ_THREADS`` at a time)."""
    infos = [o for o in store.list(RECORDS_PREFIX) if o.key.endswith(".json")]
    return _parse_lines(store) + _read_objects(store, infos)


def _read_objects(store: Store, infos: list[ObjectInfo]) -> list[dict[str, Any]]:
    """The record objects ``infos`` read ``READ_THREADS`` at a time, by start time (unreadable ones left out)."""
    if not infos:
        return []
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, len(infos))) as pool:
        return sorted((r for r in pool.map(lambda o: _read_object(store, o), infos) if r is not None), key=_sort_key)


def newest_records(store: Store, count: int) -> tuple[list[dict[str, Any]], int]:
    """The newest ``count`` run records, oldest first, and how many runs the index holds in all. A record object's key
    starts with its run id, whose first field is its UTC start time, so the listing alone says which are newest:
    only those are read (one LIST of ``index/`` and at most ``count`` GETs, whatever the index's length). The
    legacy ``index.jsonl``'s lines fill in when fewer than ``count`` record objects exist."""
    infos = sorted((o for o in store.list(RECORDS_PREFIX) if o.key.endswith(".json")), key=lambda o: o.key)
    legacy = _parse_lines(store)
    total = len(legacy) + len(infos)
    chosen = infos[-count:] if count > 0 else []
    room = max(count - len(chosen), 0)
    return (legacy[-room:] if room else []) + _read_objects(store, chosen), total


def read_index(
    settings: Settings | None = None, *, runs_uri: str | None = None, expand_results: bool = False
) -> pd.DataFrame:
    """The run index as a DataFrame, oldest run first (one row per notebook run).

    Columns: ``COLUMNS`` (``status``: ok, failed, running or killed, see ``read_records``; ``started_at`` and
    ``finished_at`` as UTC timestamps; ``parameters``, ``results`` and ``error`` as dicts; ``ipynb_url``/``html_url``
    as full paths or ``s3://`` URLs). With ``expand_results`` every result figure also gets a column
    ``results.<name>``.
    """
    import pandas as pd

    settings = settings or Settings.from_env()
    store = open_store(runs_uri or settings.runs_uri, settings)
    records = read_records(store)
    df = pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=COLUMNS)
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    df["ipynb_url"] = [store.url(k) if isinstance(k, str) else None for k in df["ipynb"]]
    df["html_url"] = [store.url(k) if isinstance(k, str) else None for k in df["html"]]
    for col in ("started_at", "finished_at"):
        df[col] = pd.to_datetime(df[col], utc=True, format="ISO8601")
    df["duration_s"] = pd.to_numeric(df["duration_s"])
    df = df[COLUMNS].sort_values("started_at", kind="stable").reset_index(drop=True)
    if expand_results and len(df):
        extra = pd.json_normalize([r if isinstance(r, dict) else {} for r in df["results"]]).add_prefix("results.")
        df = pd.concat([df, extra], axis=1)
    return df
