"""06_explore: read-only research over the lake with DuckDB (nothing is written, not even a checkpoint).

    lake = open_lake(settings, ExploreParams(symbols="BQFG,BSVU", interval=5, start="-3M", end=None))
    lake.views()                      the views: ``daily`` (bronze, deduplicated) and ``silver_<N>d``, with rows
    lake.bars(symbol, interval)       one symbol's bars in [start, end] (``start`` may be "-3M": back from end)
    lake.cross_section(over, on)      every symbol's trailing ``over``-session return at ``on``, on the calendar
    lake.gaps(symbol)                 sessions of a symbol's life without a bar, against the NYSE calendar
    lake.sessions(symbol)             its NYSE sessions, each flagged ``bar``; SQL: the table ``sessions``
    lake.sql("...")                   your own query over those views, as a DataFrame
    candles_figure(lake, symbol)      candlesticks with volume underneath (shared x axis), the open bar marked
    intervals_figure(lake, symbol)    the same period at several intervals, side by side
    shape_figure(lake)                symbols per year in bronze
    lake.raise_for_status()           ParameterError naming a listed symbol without any bar in the lake, with
                                      the symbols the lake holds

Modules: ``params`` (the parameters, checked once: ``ExploreParams.check() -> CheckedExplore``), ``lake`` (the
DuckDB views and queries), ``charts`` (plotly figures).
"""

from condvest.explore.charts import candles_figure, intervals_figure, shape_figure
from condvest.explore.lake import LakeViews, open_lake
from condvest.explore.params import CheckedExplore, ExploreParams, RelativeStart

__all__ = [
    "CheckedExplore",
    "ExploreParams",
    "RelativeStart",
    "LakeViews",
    "candles_figure",
    "intervals_figure",
    "open_lake",
    "shape_figure",
]
