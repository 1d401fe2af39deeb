"""The run index: one JSON line per notebook run in ``<runs>/index.jsonl``.

Appends go through ``storage.update_object``: a read-modify-write guarded by a conditional put, retried with
jittered backoff when another run wrote in between, so concurrent runs never lose each other's lines.

Each line: ``run_id, notebook, status ("ok"|"failed"), parameters, started_at, finished_at (ISO UTC),
duration_s, error (null or {cell, cell_index, source, ename, evalue}), results (merged result figures),
ipynb, html (keys relative to the runs root), pipeline, pipeline_run_id, stage``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from functools import partial
from typing import TYPE_CHECKING, Any

from condvest.errors import ObjectNotFound
from condvest.settings import Settings
from condvest.storage import Store, open_store, update_object

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

INDEX_KEY = "index.jsonl"


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
    "vcpu_seconds",  # what the run used (runner/usage.py): CPU seconds of its process tree
    "gb_seconds",  # and its peak resident GB x wall seconds
]


def append_run(store: Store, record: dict[str, Any]) -> None:
    """Append one record to the store's ``index.jsonl`` (``storage.update_object``: retried on a lost race)."""
    line = (json.dumps(record, default=str, sort_keys=False) + "\n").encode()
    done = update_object(store, INDEX_KEY, partial(_appended, line), what=f"appending run {record.get('run_id')}")
    log.info("run indexed run_id=%s index=%s attempt=%d", record.get("run_id"), store.url(INDEX_KEY), done.attempts)


def _appended(line: bytes, data: bytes | None) -> bytes:
    """The index with ``line`` appended (a last line without its newline gets one first)."""
    if not data:
        return line if data is None else data + line
    return (data if data.endswith(b"\n") else data + b"\n") + line


def read_records(store: Store) -> list[dict[str, Any]]:
    """Every record of the store's run index, in append order (empty when there is no index yet).

    A line that is not a JSON object (torn by a kill or a full disk while it was appended) is skipped with a
    warning naming its number: one bad line never hides the other runs (appends start on a fresh line)."""
    try:
        data = store.get(INDEX_KEY)
    except ObjectNotFound:
        return []
    records = []
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            rec, why = None, f"not JSON ({exc.msg} at column {exc.colno})"
        else:
            why = "not a JSON object"
        if not isinstance(rec, dict):
            log.warning("run index line skipped index=%s line=%d reason=%r", store.url(INDEX_KEY), n, why)
            continue
        records.append(rec)
    return records


def read_index(
    settings: Settings | None = None, *, runs_uri: str | None = None, expand_results: bool = False
) -> pd.DataFrame:
    """The run index as a DataFrame, oldest run first (one row per notebook run).

    Columns: ``COLUMNS`` (``started_at``/``finished_at`` as UTC timestamps; ``parameters``, ``results`` and
    ``error`` as dicts; ``ipynb_url``/``html_url`` as full paths or ``s3://`` URLs). With
    ``expand_results`` every result figure also gets a column ``results.<name>``.
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
