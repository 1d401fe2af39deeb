"""The retention policy's monitoring views (``sql/004_retention_views.sql``) as DataFrames, and their charts."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pandas as pd

from condvest.errors import DatabaseError


def db_error(exc: Exception, table: str) -> DatabaseError:
    """A database failure as a ``DatabaseError`` naming the table: first line of the message and SQLSTATE."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    return DatabaseError(text + (f" (sqlstate {state})" if state else ""), table=table)


@dataclasses.dataclass(frozen=True)
class RetentionViews:
    distribution: pd.DataFrame
    statistics: pd.DataFrame
    log: pd.DataFrame


def interval_label(text: str | None) -> str | None:
    """PostgreSQL's interval text as the plan writes it: ``3 years 1 mon`` -> ``3 years 1 month``."""
    if text is None:
        return None
    return re.sub(r"\b(\d+) mons?\b", lambda m: f"{m.group(1)} month" + ("s" if m.group(1) != "1" else ""), text)


def _read(conn: Any, view: str) -> pd.DataFrame:
    from psycopg import sql
    from psycopg.types.string import TextLoader

    try:
        with conn.transaction():
            cur = conn.cursor()
            # intervals as PostgreSQL writes them ("3 years 1 mon"), not as a timedelta of 1125 days
            cur.adapters.register_loader("interval", TextLoader)
            cur.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(view)))
            rows = cur.fetchall()
            cols = [d.name for d in cur.description]
    except Exception as exc:
        raise db_error(exc, view) from exc
    return pd.DataFrame(rows, columns=cols)


def distribution(conn: Any) -> pd.DataFrame:
    """v_raw_ohlcv_data_distribution: rows per New York month, hot and archived."""
    return _read(conn, "v_raw_ohlcv_data_distribution")


def archive_statistics(conn: Any) -> pd.DataFrame:
    """v_archive_statistics: one row about the archive (rows, symbols, date span, last run, size)."""
    return _read(conn, "v_archive_statistics")


def retention_log(conn: Any) -> pd.DataFrame:
    """v_retention_log_summary: the last 20 runs with their consistency column (``retention`` as a label
    such as ``3 years 1 month``)."""
    df = _read(conn, "v_retention_log_summary")
    if "retention" in df.columns:
        df["retention"] = [interval_label(v) for v in df["retention"]]
    return df


def read_views(conn: Any) -> RetentionViews:
    """The three monitoring views as DataFrames."""
    return RetentionViews(distribution(conn), archive_statistics(conn), retention_log(conn))


def distribution_figure(df: pd.DataFrame) -> Any:
    """Stacked monthly bars: rows still in raw_ohlcv and rows in the archive."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_bar(x=df.get("month", []), y=df.get("archived_records", []), name="raw_ohlcv_archive")
    fig.add_bar(x=df.get("month", []), y=df.get("hot_records", []), name="raw_ohlcv (hot)")
    fig.update_layout(
        barmode="stack",
        title="Rows per month: hot cache and archive",
        xaxis_title="month",
        yaxis_title="rows",
        height=380,
    )
    return fig


def run_labels(df: pd.DataFrame) -> list[str]:
    """One category label per logged run: ``#<id> <started, UTC>`` (a run is a category, not a number)."""
    started = pd.to_datetime(df["started_at"], utc=True) if "started_at" in df.columns else [None] * len(df)
    return [
        f"#{rid} {t:%Y-%m-%d %H:%M}" if t is not None and not pd.isna(t) else f"#{rid}"
        for rid, t in zip(df["run_id"], started, strict=True)
    ]


def retention_log_figure(df: pd.DataFrame) -> Any:
    """Rows archived per run (last 20 runs, oldest left), one bar per run coloured by status."""
    import plotly.express as px

    if df.empty:
        data = pd.DataFrame({"run": [], "records_archived": [], "status": []})
    else:
        data = df.sort_values("run_id").assign(run=lambda d: run_labels(d))
    fig = px.bar(
        data,
        x="run",
        y="records_archived",
        color="status",
        color_discrete_map={"success": "#2ca02c", "skipped": "#999999", "failed": "#d62728"},
        title="Rows archived per run",
        labels={"run": "run (id, start UTC)", "records_archived": "rows archived"},
    )
    fig.update_xaxes(type="category", categoryorder="array", categoryarray=list(data["run"]))
    fig.update_layout(height=340)
    return fig
