"""What ``python -m runner list`` and ``show`` print: the run index filtered, newest first, as a table or JSON,
and one run's summary with where its files are."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from condvest.errors import ParameterError
from runner.pipelines import PIPELINES

if TYPE_CHECKING:  # pandas is imported where a table is made: ``python -m runner run`` does not need it
    import pandas as pd


#: what a run's status can be as the index reads it (``condvest.runs.read_records``)
STATUSES = ("ok", "failed", "running", "killed")


def pipelines_text() -> str:
    """The named pipelines and their stages, for ``pipeline --help``."""
    lines = ["pipelines:"]
    for name, stages in PIPELINES.items():
        parts = []
        for s in stages:
            fixed = " ".join(f"{k}={v}" for k, v in s.parameters.items())
            parts.append(f"{s.notebook}" + (f" ({fixed})" if fixed else ""))
        lines.append(f"  {name:<8} " + " -> ".join(parts))
    return "\n".join(lines)


def _since(value: str) -> pd.Timestamp:
    """``2026-11-28``, an ISO time, or a span back from now: ``3d``, ``12h``, ``90m``."""
    import pandas as pd

    text = value.strip().lower()
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text[:-1].isdigit() and text[-1:] in units:
        return now - pd.Timedelta(**{units[text[-1]]: int(text[:-1])})
    try:
        ts = pd.Timestamp(text)
    except ValueError:
        problem = f"expected a date, a time or a span such as 3d, got {value!r}"
        raise ParameterError(problem, parameter="since") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def select_runs(
    df: pd.DataFrame, *, notebook: str | None = None, status: str | None = None, since: str | None = None
) -> pd.DataFrame:
    """The runs matching every filter, newest first. ``notebook`` matches ``05_monitoring`` or its file name."""
    if notebook:
        name = notebook if notebook.endswith(".ipynb") else f"{notebook}.ipynb"
        df = df[df["notebook"] == name]
    if status:
        if status not in STATUSES:
            raise ParameterError(f"expected one of {', '.join(STATUSES)}, got {status!r}", parameter="status")
        df = df[df["status"] == status]
    if since:
        df = df[df["started_at"] >= _since(since)]
    return df.sort_values("started_at", ascending=False, kind="stable").reset_index(drop=True)


def _record(row: pd.Series) -> dict[str, Any]:
    import pandas as pd

    out = {}
    for k, v in row.items():
        if isinstance(v, pd.Timestamp):
            v = v.isoformat()
        elif v is not None and not isinstance(v, dict | list | str) and pd.isna(v):
            v = None
        out[k] = v
    return out


def _missing(value: Any) -> bool:
    return value is None or value != value  # None, NaN, NaT


def runs_json(df: pd.DataFrame) -> str:
    return json.dumps([_record(r) for _, r in df.iterrows()], default=str, indent=1)


def runs_table(df: pd.DataFrame, limit: int) -> str:
    """Newest first: started, status, duration, notebook, run id, failing cell (a killed run: why it reads so)."""
    if df.empty:
        return "no runs recorded"
    lines = [f"{'started (UTC)':<20} {'status':<7} {'duration':>9}  {'notebook':<22} {'run id':<40} failing cell"]
    for r in df.head(limit).itertuples(index=False):
        err = r.error if isinstance(r.error, dict) else None
        cell = f"cell {err.get('cell')}: {err.get('ename')}" if err else ""
        if r.status == "killed":
            cell = f"killed: {r.killed_reason}"
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S") if not _missing(r.started_at) else ""
        took = f"{r.duration_s:>8.1f}s" if not _missing(r.duration_s) else f"{'-':>9}"
        lines.append(f"{started:<20} {r.status:<7} {took}  {r.notebook:<22} {r.run_id:<40} {cell}")
    return "\n".join(lines)


def _seconds(value: Any) -> str:
    """``12.3 s``, or ``unknown`` for a record without a duration (a run that never finished)."""
    try:
        return f"{float(value):.1f} s" if value is not None and value == value else "unknown"
    except (TypeError, ValueError):
        return "unknown"


def show_run(df: pd.DataFrame, run: str) -> str:
    """One run (by run id, or a pipeline run id: all its stages) as ``name: value`` lines."""
    rows = df[(df["run_id"] == run) | (df["pipeline_run_id"] == run)]
    if rows.empty:
        raise ParameterError(f"no run {run!r} in the run index (python -m runner list)", parameter="run")
    blocks = []
    for _, r in rows.sort_values("started_at", kind="stable").iterrows():
        rec = _record(r)
        lines = [
            f"run:        {rec['run_id']}",
            f"notebook:   {rec['notebook']}",
            f"status:     {rec['status']}",
            f"started:    {rec['started_at']}",
            f"duration:   {_seconds(rec.get('duration_s'))}",
            f"parameters: {json.dumps(rec['parameters'] or {}, default=str)}",
        ]
        if rec.get("pipeline"):
            shard = (rec.get("parameters") or {}).get("shard")
            if shard:
                lines.append(f"pipeline:   shard {shard} of sharded run {rec['pipeline_run_id']}")
            else:
                stage = int(rec["stage"]) if rec.get("stage") is not None else "?"
                lines.append(f"pipeline:   {rec['pipeline']} stage {stage} ({rec['pipeline_run_id']})")
        if rec.get("results"):
            lines.append(f"results:    {json.dumps(rec['results'], default=str)}")
        if rec.get("status") == "killed":
            lines.append(f"killed:     {rec.get('killed_reason')}; last sign of life {rec.get('finished_at')}")
        if isinstance(rec.get("error"), dict):
            e = rec["error"]
            at = f", line {e['lineno']}" if e.get("lineno") is not None else ""
            text = e.get("line") or e.get("source")
            lines.append(f"error:      cell {e.get('cell')}{at} (`{text}`): {e.get('ename')}: {e.get('evalue')}")
        lines.append(f"html:       {rec['html_url'] or 'not rendered'}")
        lines.append(f"ipynb:      {rec['ipynb_url'] or 'not written'}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
