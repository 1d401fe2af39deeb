"""06_explore's figures: candlesticks with volume (the still-open bar marked), one period at several intervals
(a few readable date ticks a panel), the lake's shape. An unknown symbol draws a titled empty figure that
names it and the symbols the lake holds, never empty axes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from condvest.explore.lake import LakeViews


def _empty(title: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(title=title, height=200)
    return fig


def candles_figure(lake: LakeViews, symbol: str = "", interval: int | None = None) -> Any:
    """Candlesticks of ``symbol`` (default: the first parameter symbol) with its volume below, one x axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    symbol = symbol or (lake.symbols[0] if lake.symbols else "")
    if not symbol:
        return _empty("nothing to chart: bronze is empty (run 03_migrate or 01_fetch)")
    n = lake.interval if interval is None else interval
    if n != 1 and n not in lake.intervals:
        present = ", ".join(f"{i}" for i in lake.intervals) or "none"
        return _empty(f"no {n}-session bars in silver (present: {present}): run 02_resample, or choose interval=1")
    if symbol in lake.unknown():
        return _empty(f"{symbol}: unknown, no bar in the lake ({lake.held()})")
    df = lake.bars(symbol, n)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.75, 0.25], vertical_spacing=0.03)
    done, still_open = df[df["sessions"] >= n], df[df["sessions"] < n]
    fig.add_trace(
        go.Candlestick(
            x=done["date"], open=done["open"], high=done["high"], low=done["low"], close=done["close"], name=f"{n}d"
        ),
        row=1,
        col=1,
    )
    if not still_open.empty:  # the trailing bar of a silver interval, rewritten by every resample
        k = int(still_open["sessions"].iloc[-1])
        fig.add_trace(
            go.Candlestick(
                x=still_open["date"],
                open=still_open["open"],
                high=still_open["high"],
                low=still_open["low"],
                close=still_open["close"],
                name=f"open bar ({k} of {n} sessions)",
                increasing={"line": {"color": "#999"}, "fillcolor": "rgba(0,0,0,0)"},
                decreasing={"line": {"color": "#999"}, "fillcolor": "rgba(0,0,0,0)"},
            ),
            row=1,
            col=1,
        )
        fig.add_annotation(
            x=still_open["date"].iloc[-1],
            y=float(still_open["high"].iloc[-1]),
            text=f"open: {k} of {n} sessions",
            showarrow=True,
            arrowhead=2,
            row=1,
            col=1,
        )
    fig.add_trace(go.Bar(x=df["date"], y=df["volume"], name="volume", marker_color="#888"), row=2, col=1)
    fig.update_xaxes(rangeslider_visible=False)
    fig.update_yaxes(title_text="price", row=1, col=1)
    fig.update_yaxes(title_text="volume", row=2, col=1)
    label = "daily" if n == 1 else f"{n}-session bars"
    fig.update_layout(height=520, showlegend=False, margin={"t": 50, "b": 20}, title=f"{symbol}: {label}, with volume")
    return fig


def intervals_figure(lake: LakeViews, symbol: str = "", intervals: Sequence[int] = (1, 5, 21)) -> Any:
    """The same period of ``symbol`` at several intervals, side by side with one price axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    symbol = symbol or (lake.symbols[0] if lake.symbols else "")
    shown = [n for n in intervals if n == 1 or n in lake.intervals]
    if not symbol or not shown:
        return _empty("nothing to chart: bronze or silver is empty (run 02_resample)")
    if symbol in lake.unknown():
        return _empty(f"{symbol}: unknown, no bar in the lake ({lake.held()})")
    titles = ["daily" if n == 1 else f"{n} sessions" for n in shown]
    fig = make_subplots(rows=1, cols=len(shown), shared_yaxes=True, subplot_titles=titles, horizontal_spacing=0.04)
    for col, n in enumerate(shown, start=1):
        df = lake.bars(symbol, n)
        fig.add_trace(
            go.Candlestick(
                x=df["date"], open=df["open"], high=df["high"], low=df["low"], close=df["close"], name=f"{n}d"
            ),
            row=1,
            col=col,
        )
    # a few date ticks per panel, on two lines, so neighbouring panels' labels never collide
    fig.update_xaxes(rangeslider_visible=False, nticks=4, tickformat="%b %d<br>%Y", tickangle=0)
    fig.update_layout(
        height=420, showlegend=False, margin={"t": 60, "b": 20}, title=f"{symbol}: one period, {len(shown)} intervals"
    )
    return fig


def shape_figure(lake: LakeViews) -> Any:
    """Symbols with bars in bronze, per year."""
    import plotly.graph_objects as go

    df = lake.symbols_per_year()
    if df.empty:
        return _empty("bronze is empty")
    fig = go.Figure(go.Bar(x=df["year"], y=df["symbols"], name="symbols", marker_color="#4c78a8"))
    fig.update_layout(
        height=320, title="symbols with bars in bronze, per year", xaxis_title="year", yaxis_title="symbols"
    )
    return fig
