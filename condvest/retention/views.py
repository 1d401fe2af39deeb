"""The retention policy's monitoring views (``sql/004_retention_views.sql``) as DataFrames, and their charts."""

from __future__ import annotations

import dataclasses
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


def _read(conn: Any, view: str) -> pd.DataFrame:
    from psycopg import sql

    try:
        with conn.transaction():
            cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(view)))
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
    """v_retention_log_summary: the last 20 runs with their consistency column."""
    return _read(conn, "v_retention_log_summary")


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


def retention_log_figure(df: pd.DataFrame) -> Any:
    """Rows archived per run (last 20 runs), coloured by status."""
    import plotly.express as px

    data = (
        df.sort_values("run_id") if not df.empty else pd.DataFrame({"run_id": [], "records_archived": [], "status": []})
    )
    fig = px.bar(
        data,
        x="run_id",
        y="records_archived",
        color="status",
        title="Rows archived per run",
        labels={"run_id": "run", "records_archived": "rows archived"},
    )
    fig.update_layout(height=340)
    return fig
