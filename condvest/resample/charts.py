"""Reading silver bars back and drawing them (the 02_resample notebook's charts).

read_bars(settings, symbol, interval, since=None) -> DataFrame   interval 1: bronze daily bars, else silver
default_symbol(settings) -> str                          first symbol alphabetically ("" when none)
candlestick_figure(settings, symbol="", intervals=(1, 5, 21)) -> plotly Figure
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from condvest import params
from condvest.dms import readable_export
from condvest.lake import BRONZE_PREFIX, bronze_symbol_prefix, silver_prefix
from condvest.lake_read import connect, load_rows, register_dms
from condvest.settings import Settings
from condvest.storage import Store, open_store

log = logging.getLogger(__name__)

_COLUMNS = ["symbol", "date", "open", "high", "low", "close", "volume", "sessions"]


def default_symbol(settings: Settings, *, store: Store | None = None) -> str:
    """The first symbol in bronze, alphabetically ("" when bronze is empty)."""
    store = store or open_store(settings=settings)
    for o in store.list(f"{BRONZE_PREFIX}/symbol="):
        return o.key[len(BRONZE_PREFIX) + len("/symbol=") :].split("/")[0]
    return ""


def read_bars(
    settings: Settings, symbol: str, interval: int, *, since: dt.date | None = None, store: Store | None = None
) -> pd.DataFrame:
    """Bars of one symbol: the deduplicated daily bars (interval 1) or the silver bars of ``interval``; with
    ``since``, only silver bars labelled on or after it, read from the month files that can hold them (a
    chart of the last year opens about a dozen month files, not every one since 1962)."""
    symbol, interval = params.symbol(symbol, "symbol"), params.interval(interval, "interval")
    store = store or open_store(settings=settings)
    con = connect(store)
    try:
        if interval == 1:
            keys = [o.key for o in store.list(bronze_symbol_prefix(symbol))]
            dms = [o.key for o in readable_export(store)]
            if dms:
                register_dms(con, store, dms, {symbol})
            load_rows(con, store, "rows", keys, dms=bool(dms), symbols={symbol})
            df = con.execute(
                "SELECT symbol, date, open, high, low, close, volume, 1 AS sessions FROM rows ORDER BY date"
            ).df()
        else:
            return _silver_bars(store, symbol, interval, since)
    finally:
        con.close()
    return df


def _silver_bars(store: Store, symbol: str, interval: int, since: dt.date | None) -> pd.DataFrame:
    """``symbol``'s silver bars of ``interval`` labelled on or after ``since``: the listing starts at ``since``'s
    year and the month files are fetched at once (``Store.get_many``: on S3 a chart's dozen
    files are one round trip, not a dozen), each filtered to the symbol as it is read."""
    prefix = silver_prefix(interval)
    after = f"{prefix}year={since.year:04d}/" if since else None
    keys = [o.key for o in store.list(prefix, start_after=after) if _month_of(o.key) >= _month(since)]
    if not keys:
        return pd.DataFrame(columns=_COLUMNS)
    wanted = [("symbol", "==", symbol)] + ([("date", ">=", since)] if since else [])

    parts = [pq.read_table(pa.BufferReader(data), columns=_COLUMNS, filters=wanted) for _, data in store.get_many(keys)]
    table = pa.concat_tables(parts)
    df = table.sort_by("date").to_pandas(date_as_object=False)
    df["date"] = df["date"].astype("datetime64[us]")
    return df


_MONTH_RE = re.compile(r"/year=(\d{4})/month=(\d{2})/")


def _month(day: dt.date | None) -> tuple[int, int]:
    return (day.year, day.month) if day else (0, 0)


def _month_of(key: str) -> tuple[int, int]:
    """The (year, month) partition of a silver key; keys outside the layout sort last (always read)."""
    m = _MONTH_RE.search(key)
    return (int(m.group(1)), int(m.group(2))) if m else (9999, 12)


def candlestick_figure(
    settings: Settings,
    symbol: str = "",
    intervals: Sequence[int] = (1, 5, 21),
    last_days: int = 365,
    *,
    store: Store | None = None,
) -> object:
    """Candlesticks of ``symbol`` (default: the first one) at each interval, over its last ``last_days``."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    store = store or open_store(settings=settings)
    symbol = symbol or default_symbol(settings, store=store)
    if not symbol:
        fig = go.Figure()
        fig.update_layout(title="nothing to chart: bronze is empty", height=200)
        return fig
    labels = [f"{symbol} · {n}d" + (" (daily)" if n == 1 else "") for n in intervals]
    fig = make_subplots(rows=len(intervals), cols=1, subplot_titles=labels, vertical_spacing=0.08, shared_xaxes=True)
    since: dt.date | None = None  # known once the daily bars (the first panel, as a rule) were read
    for row, n in enumerate(intervals, start=1):
        df = read_bars(settings, symbol, n, since=since if n > 1 else None, store=store)
        if not df.empty:
            end = pd.to_datetime(df["date"]).max()
            df = df[pd.to_datetime(df["date"]) > end - pd.Timedelta(days=last_days)]
            if n == 1:  # silver panels end up to one bar earlier: keep a margin, the filter above trims
                since = (end - pd.Timedelta(days=last_days + 2 * max(intervals))).date()
        partial = df["sessions"] < n if len(df) else []
        fig.add_trace(
            go.Candlestick(
                x=df["date"],
                open=df["open"],
                high=df["high"],
                low=df["low"],
                close=df["close"],
                name=f"{n}d",
                showlegend=False,
            ),
            row=row,
            col=1,
        )
        if n > 1 and len(df) and bool(pd.Series(partial).any()):
            last = df[partial]
            fig.add_annotation(
                x=last["date"].iloc[-1], y=float(last["high"].iloc[-1]), text="open bar", showarrow=True, row=row, col=1
            )
        fig.update_xaxes(rangeslider_visible=False, row=row, col=1)
    fig.update_layout(
        height=300 * len(intervals),
        margin={"t": 40, "b": 20},
        title=f"{symbol}: daily bars and Fibonacci-interval silver bars",
    )
    return fig
