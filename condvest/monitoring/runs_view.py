"""05_monitoring's Runs section (the run history and the failed runs, each with the line that failed) and its
warning that bronze changed after the last resample (so silver is behind although its checkpoints look current).

Pure: they take what ``snapshot.collect`` read (the run index, the manifest entries, the basis records, the
checkpoints) and return tables and text.

    failed_runs(runs, limit) -> DataFrame            the latest failed runs, newest first: where and why
    bronze_changed_after_resample(entries, basis, checkpoints) -> str   "" or one sentence saying what changed
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

__all__ = ["FAILED_COLUMNS", "bronze_changed_after_resample", "failed_runs"]

FAILED_COLUMNS = ["started_at", "notebook", "run_id", "cell", "line", "error", "pipeline", "html_url"]
_TIME = "%Y-%m-%d %H:%M"


def _error_parts(err: Any) -> tuple[str, str, str]:
    """(``cell 4, line 2``, the line that raised or the cell's first line, ``Ename: first line of the message``)."""
    if not isinstance(err, Mapping):
        return "", "", ""
    cell = f"cell {err.get('cell')}" if err.get("cell") is not None else ""
    if cell and err.get("lineno") is not None:
        cell += f", line {err.get('lineno')}"
    message = str(err.get("evalue") or "").strip().splitlines()
    error = str(err.get("ename") or "") + (f": {message[0][:160]}" if message else "")
    return cell, str(err.get("line") or err.get("source") or ""), error


def failed_runs(runs: pd.DataFrame, limit: int = 20) -> pd.DataFrame:
    """The latest ``limit`` runs that did not succeed (failed, killed), newest first: when, which notebook and
    run, the cell and the line that raised, the error, the pipeline, and the executed notebook's page."""
    if runs.empty:
        return pd.DataFrame(columns=FAILED_COLUMNS)
    bad = runs[~runs["status"].isin(["ok", "running"])].sort_values("started_at", kind="stable").tail(limit)
    bad = bad.iloc[::-1]
    parts = [_error_parts(e) for e in bad["error"]]
    out = pd.DataFrame(
        {
            "started_at": bad["started_at"].dt.strftime(_TIME),
            "notebook": [str(n).removesuffix(".ipynb") for n in bad["notebook"]],
            "run_id": bad["run_id"],
            "cell": [p[0] for p in parts],
            "line": [p[1] for p in parts],
            "error": [p[2] or str(s) for p, s in zip(parts, bad["status"], strict=True)],
            "pipeline": bad["pipeline"].fillna(""),
            "html_url": bad["html_url"].fillna(""),
        }
    )
    return out[FAILED_COLUMNS].reset_index(drop=True)


def _when(text: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def bronze_changed_after_resample(
    entries: Mapping[dt.date, Any], basis: Mapping[str, Any], checkpoints: Iterable[Mapping[str, Any]]
) -> str:
    """One sentence when bronze was written after the oldest silver checkpoint (a session fetched or re-fetched,
    a symbol's history rebased on a split), else ``""``: silver then lacks that change until 02_resample runs,
    although every checkpoint looks current. ``entries``: the manifest's sessions (``written_at``); ``basis``:
    the rebased symbols (``rebased_at``); ``checkpoints``: the silver checkpoints (``updated_at``)."""
    times = [(_when(c.get("updated_at")), c.get("interval")) for c in checkpoints]
    known = [(t, n) for t, n in times if t is not None]
    if not known:
        return ""
    resampled, interval = min(known, key=lambda x: x[0])
    sessions = sorted(d for d, e in entries.items() if (w := _when(getattr(e, "written_at", ""))) and w > resampled)
    rebased = sorted(s for s, b in basis.items() if (w := _when(getattr(b, "rebased_at", ""))) and w > resampled)
    if not sessions and not rebased:
        return ""
    what = []
    if sessions:
        shown = ", ".join(d.isoformat() for d in sessions[:3]) + (
            f" and {len(sessions) - 3} more" if len(sessions) > 3 else ""
        )
        what.append(f"{len(sessions)} session(s) written ({shown})")
    if rebased:
        shown = ", ".join(rebased[:3]) + (f" and {len(rebased) - 3} more" if len(rebased) > 3 else "")
        what.append(f"{len(rebased)} symbol(s) rebased on a split ({shown})")
    stamp = resampled.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"bronze changed after the last resample ({' and '.join(what)} after the {interval}-session checkpoint of "
        f"{stamp}): silver does not hold it yet; run 02_resample"
    )
